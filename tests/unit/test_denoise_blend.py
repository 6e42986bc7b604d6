"""The VAE ⊕ PCA denoiser (``shared.denoise_blend``): hand cases for the tuning, and what it is applied as."""
from __future__ import annotations

import numpy as np
import pytest

from shared.baselines import PCA
from shared.denoise_blend import ALPHAS, BlendBasis, blend_denoise, fit_blend, noisy_faces
from shared.errors import ConfigError
from shared.image_metrics import psnr


def _span_faces(n: int, seed: int, k: int = 6, side: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Faces that lie exactly in a k-dimensional affine subspace (PCA-k recovers them), and the fitted PCA."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((side * side, k)))[0].T  # (k, D) orthonormal rows
    codes = np.random.default_rng(seed).standard_normal((n, k)) * 0.08
    faces = (0.5 + codes @ basis).reshape(n, side, side)
    return np.clip(faces, 0, 1).astype(np.float32), basis


@pytest.fixture(scope="module")
def span():
    train, _ = _span_faces(400, seed=1)
    val, _ = _span_faces(60, seed=2)
    test, _ = _span_faces(40, seed=3)
    return PCA().fit(train, 24), val, test


class _Model:
    """A stand-in for a generative model: ``reconstruct`` is a fixed function of the noisy faces."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def reconstruct(self, images, labels=None):
        self.calls.append(np.array(images))
        return self.fn(np.asarray(images, np.float32))


def _mean_psnr(a, b) -> float:
    return float(np.mean(psnr(a, b)))


def test_a_perfect_vae_gets_all_the_weight(span):
    pca, val, _ = span
    noisy = noisy_faces(val, 0.2, seed=5)
    fit = fit_blend(val, noisy, val, pca)
    assert fit.alpha == 1.0 and fit.val_psnr == pytest.approx(_mean_psnr(val, val))


def test_a_useless_vae_gets_none_and_pca_at_the_span_size_wins(span):
    pca, val, test = span
    model = _Model(lambda x: np.full_like(x, 0.1))  # the same dark face whatever the input
    noisy = noisy_faces(test, 0.2, seed=6)
    out, fit = blend_denoise(model, noisy, BlendBasis(pca, val), 0.2, seed=7)
    assert fit.alpha == 0.0
    assert fit.d == 8  # the smallest d of the grid holding the 6-dimensional span: more d, more noise kept
    np.testing.assert_allclose(out, pca.truncated(fit.d).project(noisy), atol=1e-6)
    assert _mean_psnr(out, test) > _mean_psnr(noisy, test) + 10


def test_complementary_errors_blend_to_better_than_both(span):
    """A VAE whose error is independent of PCA's: the blend beats each alone on the validation faces,
    and the (d, α) chosen there carries over to the held-out faces."""
    pca, val, test = span
    rng = np.random.default_rng(8)

    def vae_like(x):  # the clean face (looked up) plus an error of its own, independent of the noise
        clean = val if len(x) == len(val) else test
        return np.clip(clean + 0.05 * rng.standard_normal(clean.shape).astype(np.float32), 0, 1)

    model = _Model(vae_like)
    noisy = noisy_faces(test, 0.5, seed=9)
    vae_alone = vae_like(noisy)
    out, fit = blend_denoise(model, noisy, BlendBasis(pca, val), 0.5, seed=10, vae_out=vae_alone)
    assert 0.0 < fit.alpha < 1.0
    pca_best = max(_mean_psnr(pca.truncated(d).project(noisy), test) for d in (8, 16, 24))
    score = _mean_psnr(out, test)
    assert score > _mean_psnr(vae_alone, test) + 0.5 and score > pca_best + 0.5


def test_validation_faces_get_their_own_noise_and_the_scored_faces_are_not_read_for_tuning(span):
    pca, val, test = span
    model = _Model(lambda x: x)
    noisy = noisy_faces(test, 0.3, seed=11)
    blend_denoise(model, noisy, BlendBasis(pca, val), 0.3, seed=12)
    tuned_on, applied_to = model.calls
    np.testing.assert_array_equal(tuned_on, noisy_faces(val, 0.3, seed=12))
    np.testing.assert_array_equal(applied_to, noisy)


def test_the_grid_keeps_both_ends_and_the_blend_never_loses_to_either_on_validation(span):
    pca, val, _ = span
    assert ALPHAS[0] == 0.0 and ALPHAS[-1] == 1.0
    noisy = noisy_faces(val, 0.3, seed=13)
    vae = np.clip(noisy * 0.3 + 0.35, 0, 1).astype(np.float32)  # a poor, shrunken denoiser
    fit = fit_blend(vae, noisy, val, pca)
    direct = fit.alpha * vae + (1 - fit.alpha) * pca.truncated(fit.d).project(noisy)  # the blend, made and scored
    assert fit.val_psnr == pytest.approx(_mean_psnr(direct, val), abs=1e-6)
    assert 0 < fit.alpha < 1
    assert fit.val_psnr >= _mean_psnr(vae, val)
    assert fit.val_psnr >= max(_mean_psnr(pca.truncated(d).project(noisy), val) for d in (8, 16, 24))


def test_bad_inputs_are_refused(span):
    pca, val, _ = span
    with pytest.raises(ConfigError, match="validation faces"):
        BlendBasis.from_faces(val, val[:0])
    with pytest.raises(ConfigError, match="same shape"):
        fit_blend(val[:3], val[:4], val[:4], pca)
    with pytest.raises(ConfigError, match="no PCA size"):
        fit_blend(val, val, val, pca, dims=(100,))
    basis = BlendBasis.from_faces(val, val)  # 60 faces: at most 60 components, whatever the default cap
    assert basis.pca.n_components == 60 and basis.n_train == 60
