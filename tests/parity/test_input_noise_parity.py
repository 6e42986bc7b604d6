"""Denoising-VAE parity: one engine training step with ``input_noise`` on both backends from the same weights.

Both engines (:class:`facevae.engine.TorchEngine`, :class:`facevae_tf.engine.TFEngine`) start from one
torch model trained for a few clean steps (at initialisation the decoder barely uses z, so the encoder's
input would hardly show in the terms), get the very same faces, ε and input noise from
:mod:`shared.training` and take one SGD step; the torch model puts
``clamp(x + noise, 0, 1)`` into its encoder through ``batch["noise"]``, the Keras model through
``x_in``. Both must score the clean faces.

Tolerances: the terms use those of the engine parity tests (``test_engine_parity.py``: loss and
distortion rtol 1e-4, rate atol 0.05 nats); the weights after the step those of the training parity
tests (atol 1e-4 + rtol 1e-3; BatchNorm moving statistics left out: the two frameworks update the
variance with different conventions, see ``test_training_parity.py``). SGD, not Adam: Adam's first
step is ``lr·sign(g)``, which would turn the rounding noise of gradients that are zero in exact
arithmetic (conv biases before a BatchNorm) into full-size differences.

Mutation sanity: the same step without the noise gives terms and weights that differ from the noisy
step's by far more than these tolerances, so a backend that ignored the noise (or scored the noisy
faces) would fail here. Observed: the backends agree to ~1e-7 relative on the terms and ~2e-7 on the
weights; the noise moves the loss by 4e-3 relative (40x its tolerance), the rate by 0.56 nats (11x) and
the first conv kernel by 3e-2.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from facevae import weights_io as torch_io  # noqa: E402
from facevae.engine import TorchEngine  # noqa: E402
from facevae.models import ConvVAE  # noqa: E402
from facevae_tf import weights_io as tf_io  # noqa: E402
from facevae_tf.engine import TFEngine  # noqa: E402
from shared import training  # noqa: E402
from shared.architecture import vae_plan  # noqa: E402
from shared.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from shared.weight_layout import convert_weights  # noqa: E402
from tests.parity.parity_helpers import random_images, small_config, tf_from_torch  # noqa: E402

TERM_TOL = {"loss": dict(rel=1e-4), "distortion": dict(rel=1e-4), "rate": dict(abs=0.05)}
W_ATOL, W_RTOL = 1e-4, 1e-3
SIGMA, BATCH, SEED, LR = 0.3, 16, 3, 1e-2
PRETRAIN = 40  # clean Adam steps of the start weights


def _config(backend: str, input_noise: float) -> RunConfig:
    train = TrainConfig(device="cpu", optimizer="sgd", lr=LR, batch_size=BATCH, seed=SEED, input_noise=input_noise)
    return RunConfig(backend=backend, model=_model_config(), train=train, data=DataConfig(image_size=32))


def _model_config():
    return small_config("default", 32, likelihood="bernoulli", beta=1.0)


def _start_model(cfg, faces: np.ndarray, steps: int = PRETRAIN) -> ConvVAE:
    """A torch VAE briefly trained on clean faces (so its decoder uses z and the encoder's input matters)."""
    torch.manual_seed(0)
    vae = ConvVAE(cfg)
    opt = torch.optim.Adam(vae.parameters(), lr=5e-3)
    x = torch.from_numpy(faces).unsqueeze(1)
    for _ in range(steps):
        loss = vae.loss_terms({"images": x})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae


def _step(tmp_path, name: str, noisy: bool) -> dict:
    """One training step on each backend from the same start weights: terms and updated weights (torch layout)."""
    cfg = _model_config()
    faces = random_images(48, 32, seed=4)  # (N, 32, 32) float32 in [0, 1]
    vae = _start_model(cfg, faces[:32])
    model = tf_from_torch(vae)
    train, val = faces[:32], faces[32:]
    sigma = SIGMA if noisy else 0.0
    no_labels = np.zeros((32, 0), np.float32)
    engines = {
        "torch": TorchEngine(vae, {"images": train}, {"images": val}, _config("torch", sigma),
                             tmp_path / f"{name}-torch"),
        "tf": TFEngine(model, {"x": train[..., None], "y": no_labels}, {"x": val[..., None], "y": no_labels[:16]},
                       _config("tf", sigma), tmp_path / f"{name}-tf"),
    }
    idx = training.batch_plan(32, BATCH, SEED, 0)[0]
    eps = training.train_noise(SEED, 0, 0, BATCH, cfg.latent_dim)
    noise = training.input_noise(SEED, 0, 0, BATCH, (32, 32), SIGMA) if noisy else None
    out = {}
    for backend, engine in engines.items():
        engine.set_lr(LR)
        step = engine.train_step(idx, 1.0, eps, noise=noise) if noisy else engine.train_step(idx, 1.0, eps)
        terms = engine.scalars([step])[0]
        if backend == "torch":
            weights = torch_io.export_plan_weights(vae)
        else:
            weights = convert_weights(tf_io.export_plan_weights(model), vae_plan(cfg), src="tf", dst="torch")
        out[backend] = (terms, {k: v for k, v in weights.items() if not k.endswith(("moving_mean", "moving_var"))})
    out["start"] = torch_io.export_plan_weights(_start_model(cfg, faces[:32]))
    return out


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    root = tmp_path_factory.mktemp("input_noise_parity")
    return {"noisy": _step(root, "noisy", True), "clean": _step(root, "clean", False)}


def _far(a: float, b: float, tol: dict) -> bool:
    """``a`` and ``b`` differ by more than ``tol`` (pytest.approx's rel or abs)."""
    return b != pytest.approx(a, **tol)


def test_one_noisy_step_gives_the_same_terms_on_both(steps):
    t, k = steps["noisy"]["torch"][0], steps["noisy"]["tf"][0]
    for key, tol in TERM_TOL.items():
        assert k[key] == pytest.approx(t[key], **tol), (key, t[key], k[key])


def test_one_noisy_step_gives_the_same_weights_on_both(steps):
    t, k = steps["noisy"]["torch"][1], steps["noisy"]["tf"][1]
    start, moved = steps["noisy"]["start"], 0.0
    for key in t:
        np.testing.assert_allclose(k[key], t[key], atol=W_ATOL, rtol=W_RTOL, err_msg=key)
        moved = max(moved, float(np.abs(t[key] - start[key]).max()))
    assert moved > 10 * W_ATOL  # the step moved the weights far more than the tolerance


def test_the_noise_changes_terms_and_weights_beyond_the_tolerances(steps):
    """Mutation sanity: a backend that ignored the noise would produce the clean step, which fails the checks above."""
    for backend in ("torch", "tf"):
        noisy, clean = steps["noisy"][backend], steps["clean"][backend]
        assert all(_far(noisy[0][key], clean[0][key], tol) for key, tol in TERM_TOL.items()), backend
        first = next(iter(noisy[1]))  # the first conv kernel sees the encoder's input directly
        assert not np.allclose(noisy[1][first], clean[1][first], atol=W_ATOL, rtol=W_RTOL), backend
    # the clean and noisy steps agree across backends too: the difference is the noise, not the framework
    assert steps["clean"]["tf"][0]["loss"] == pytest.approx(steps["clean"]["torch"][0]["loss"], rel=1e-4)
