"""SSIM and PSNR: torchmetrics (torch backend) and ``tf.image`` (TF backend) on the same images.

Constants each side uses (both evaluation modules call them with their defaults, ``data_range`` /
``max_val`` L = 1.0):

* SSIM, ``torchmetrics.functional.image.structural_similarity_index_measure`` (1.9): Gaussian
  window σ = 1.5, size ``2·int(3.5σ + 0.5) + 1`` = 11, K1 = 0.01, K2 = 0.03, C1 = (K1·L)²,
  C2 = (K2·L)²; σ² terms clamped at 0. Border: the images are **reflect-padded** by 5 pixels and
  the SSIM map is averaged over all H×W centres (the crop in its source applies only to the
  contrast-sensitivity output).
* SSIM, ``tf.image.ssim``: Gaussian window 11, σ = 1.5, K1 = 0.01, K2 = 0.03, **'VALID'**
  filtering: the map is averaged over the (H−10)×(W−10) centres whose window lies inside the image.
* On the same centres (torchmetrics' full map cropped by 5 pixels) the two agree to ≈ 1e-5
  (tolerance ``SSIM_ATOL``). torchmetrics' default average differs: the reflect-padded border is
  53 % of the centres at 32×32 and 37 % at 48×48, and we measured differences up to 0.15 (32×32)
  and 0.06 (48×48) on these pairs. facevae therefore reports the valid-centre SSIM on both backends
  (``facevae.evaluation.ssim_valid`` crops torchmetrics' map) and in ``shared.image_metrics.ssim``;
  ``test_backend_evaluations_report_the_same_ssim`` holds them to it.
* PSNR: ``10·log10(L² / MSE)`` per image over all pixels on both sides (torchmetrics with
  ``reduction='none', dim=(1, 2, 3)``; ``tf.image.psnr`` reduces the last three axes);
  tolerance ``PSNR_ATOL_DB`` = 1e-4 dB.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure  # noqa: E402

from shared.image_metrics import ssim as numpy_ssim  # noqa: E402
from tests.parity.parity_helpers import protocol_pair, random_images, small_config  # noqa: E402

SSIM_ATOL = 5e-5  # float32 filtering in two libraries; observed <= 1e-5
PSNR_ATOL_DB = 1e-4


def _pairs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces and degraded copies (noise of several strengths, a blur, a shift): ``(N, H, W)`` each."""
    x = random_images(6, size, seed=size)
    rng = np.random.default_rng(size)
    noisy = np.clip(x + rng.normal(0, 1, x.shape) * np.array([0.02, 0.05, 0.1, 0.3, 0, 0])[:, None, None], 0, 1)
    noisy[4] = (x[4] + np.roll(x[4], 1, 0) + np.roll(x[4], 1, 1) + np.roll(x[4], 1, (0, 1))) / 4  # blur
    noisy[5] = np.roll(x[5], 2, 1)  # shift
    return x.astype(np.float32), noisy.astype(np.float32)


def _torch_metrics(a: np.ndarray, b: np.ndarray, valid: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """PSNR and SSIM of torchmetrics; ``valid`` averages the SSIM map over tf's valid centres only."""
    ta, tb = torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None]
    psnr = peak_signal_noise_ratio(tb, ta, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim, ssim_map = structural_similarity_index_measure(tb, ta, data_range=1.0, reduction="none",
                                                         return_full_image=True)
    if valid:
        ssim = ssim_map[..., 5:-5, 5:-5].reshape(len(a), -1).mean(-1)
    return psnr.numpy(), ssim.numpy()


def _tf_metrics(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ka, kb = tf.constant(a[..., None]), tf.constant(b[..., None])
    return tf.image.psnr(kb, ka, max_val=1.0).numpy(), tf.image.ssim(kb, ka, max_val=1.0).numpy()


@pytest.mark.parametrize("size", [32, 48])
def test_ssim_on_the_same_centres_and_psnr_agree(size):
    a, b = _pairs(size)
    (p1, s1), (p2, s2) = _torch_metrics(a, b, valid=True), _tf_metrics(a, b)
    np.testing.assert_allclose(s2, s1, atol=SSIM_ATOL)
    np.testing.assert_allclose(numpy_ssim(b, a), s2, atol=SSIM_ATOL)  # shared's numpy SSIM: same convention
    np.testing.assert_allclose(p2, p1, atol=PSNR_ATOL_DB)
    assert np.ptp(s1) > 0.1 and np.all(s1 < 1)  # the pairs span a range of qualities


@pytest.mark.parametrize("size,at_least", [(32, 0.05), (48, 0.02)])
def test_reported_ssim_differs_by_the_border_convention(size, at_least):
    """torchmetrics' default (reflect-padded border) vs tf's valid region: a real, documented gap."""
    a, b = _pairs(size)
    full, valid = _torch_metrics(a, b)[1], _torch_metrics(a, b, valid=True)[1]
    assert np.max(np.abs(full - valid)) > at_least
    np.testing.assert_allclose(_tf_metrics(a, b)[1], valid, atol=SSIM_ATOL)


def test_identical_images_give_ssim_one_on_both():
    a = random_images(2, 32)
    assert np.allclose(_torch_metrics(a, a)[1], 1.0, atol=1e-6)
    assert np.allclose(_tf_metrics(a, a)[1], 1.0, atol=1e-6)


@pytest.fixture(scope="module")
def backend_metrics():
    """Each backend's own per-image evaluation (iwae off) on the same weights and faces."""
    from facevae.evaluation import per_image_metrics as torch_metrics
    from facevae_tf.evaluation import per_image_metrics as tf_metrics
    from shared.synthetic import generate_faces

    pt, ptf = protocol_pair(small_config("default", 48), seed=4)
    faces = generate_faces(12, 48, seed=5)
    return torch_metrics(pt, faces.images, iwae_k=0), tf_metrics(ptf, faces, iwae_k=0)


def test_backend_evaluations_report_the_same_psnr_and_rate(backend_metrics):
    m1, m2 = backend_metrics
    np.testing.assert_allclose(m2["psnr"], m1["psnr"], atol=PSNR_ATOL_DB)
    np.testing.assert_allclose(m2["rate"], m1["rate"], rtol=1e-5)  # analytic KL: no noise involved


def test_backend_evaluations_report_the_same_ssim(backend_metrics):
    m1, m2 = backend_metrics
    np.testing.assert_allclose(m2["ssim"], m1["ssim"], atol=SSIM_ATOL)
    assert np.ptp(m1["ssim"]) > 0  # a real spread of values, not a constant
