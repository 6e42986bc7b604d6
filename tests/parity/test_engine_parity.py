"""Engine parity: ``shared.api.train`` on each backend from the same weights gives the same epochs.

Both runs go through the one loop (:mod:`shared.training`): the same batches and the same ε every
step, the same β, the same learning rate per epoch; only the engines differ. Starting weights come
from one torch model (``initial_weights``), the TF run receives them converted.

Tolerances (float32; the engines sum in different orders and the differences grow with steps),
observed over 3 epochs of 5 steps in brackets:

* training ``loss``/``distortion`` (epoch means): rtol 1e-4 (≤ 6e-6);
* validation ``loss``/``distortion``: rtol 1e-3 (≤ 3.2e-4). Validation runs BatchNorm on its
  moving statistics, and torch accumulates the *unbiased* batch variance (× n/(n−1)) where Keras
  keeps the biased one: with n = 2048 values per channel that alone is a 5e-4 relative difference
  in the variance (see test_training_parity.py);
* ``rate`` terms: atol 0.05 nats (≤ 0.03): the rate of these tiny models is 0.02–4 nats, a small
  difference of large terms, so a relative tolerance would measure only its size.

The weight-decay cases also check that the decay moved the validation loss far more than its
tolerance, so a backend that ignored ``weight_decay`` would fail here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from facevae import weights_io as torch_io  # noqa: E402
from facevae.models import ConvVAE  # noqa: E402
from shared import api  # noqa: E402
from shared.runs import read_metrics  # noqa: E402

TOLERANCES = {"train_loss": dict(rel=1e-4), "train_distortion": dict(rel=1e-4),
              "val_loss": dict(rel=1e-3), "val_distortion": dict(rel=1e-3),
              "train_rate": dict(abs=0.05), "val_rate": dict(abs=0.05)}


def _config(backend: str, **train):
    base = dict(epochs=3, batch_size=32, lr=5e-3, early_stopping=0, seed=4, device="cpu")
    base.update(train)
    # bernoulli: the tolerances above were measured with it; the default learned-σ loss (D/2·log MSE per
    # face) weighs each face by 1/MSE and amplifies the backends' float rounding step after step
    return api.build_config(backend=backend, model="vae", data="synthetic:200", image_size=32, latent_dim=4,
                            channels=(4, 8), hidden_dims=(16,), likelihood="bernoulli", **base)


def _start_weights(seed: int = 0) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    return torch_io.export_plan_weights(ConvVAE(_config("torch").model))


def _train_both(tmp_path, name: str, **train) -> tuple[list[dict], list[dict]]:
    weights = _start_weights()
    runs = {b: api.train(_config(b, **train), tmp_path / f"{name}-{b}", initial_weights=weights)
            for b in ("torch", "tf")}
    return read_metrics(runs["torch"]), read_metrics(runs["tf"])


def _assert_same_epochs(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == list(range(len(a)))
    for ra, rb in zip(a, b):
        assert ra["lr"] == pytest.approx(rb["lr"], rel=1e-12)
        for key, tol in TOLERANCES.items():
            assert rb[key] == pytest.approx(ra[key], **tol), (ra["epoch"], key, ra[key], rb[key])


# optimizer, weight decay, schedule: adam's decay is L2 in the gradient, adamw's decoupled
CASES = {
    "adam": dict(optimizer="adam", schedule="cosine"),
    "adam-l2": dict(optimizer="adam", weight_decay=0.5, schedule="cosine"),
    "adamw": dict(optimizer="adamw", weight_decay=2.0, schedule="cosine", grad_clip=50.0),
    "sgd-l2": dict(optimizer="sgd", lr=1e-4, weight_decay=0.5, schedule="constant"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_both_backends_train_the_same_epochs(tmp_path, case):
    t, k = _train_both(tmp_path, case, **CASES[case])
    _assert_same_epochs(t, k)
    assert t[-1]["train_loss"] < t[0]["train_loss"]


def _weight_norm(run) -> float:
    from facevae_tf import weights_io as tf_io
    from shared.runs import load_run_config

    io = torch_io if load_run_config(run).backend == "torch" else tf_io
    _, weights = io.load_run_weights(run)
    return float(np.sqrt(sum(np.sum(w.astype(np.float64) ** 2) for k, w in weights.items()
                             if k.endswith("kernel"))))


@pytest.mark.parametrize("case", ["adam-l2", "adamw"])
def test_weight_decay_shrinks_the_weights_alike_on_both(tmp_path, case):
    kwargs = dict(CASES[case])
    weights = _start_weights()
    decayed = {b: _weight_norm(api.train(_config(b, **kwargs), tmp_path / b, initial_weights=weights))
               for b in ("torch", "tf")}
    kwargs["weight_decay"] = 0.0
    plain = _weight_norm(api.train(_config("torch", **kwargs), tmp_path / "plain", initial_weights=weights))
    assert decayed["tf"] == pytest.approx(decayed["torch"], rel=1e-3)
    assert decayed["torch"] < 0.97 * plain  # the decay moved the weights 30× beyond the tolerance


def test_resume_with_an_edited_learning_rate_and_more_epochs_applies_on_both(tmp_path):
    weights = _start_weights()
    records = {}
    for backend in ("torch", "tf"):
        run = api.train(_config(backend, epochs=2, schedule="constant"), tmp_path / backend, initial_weights=weights)
        config = json.loads((run / "config.json").read_text())
        config["train"].update(lr=1e-3, epochs=4)
        (run / "config.json").write_text(json.dumps(config))
        api.train(None, run, resume=True)
        records[backend] = read_metrics(run)
    for rec in records.values():
        assert [r["lr"] for r in rec] == pytest.approx([5e-3, 5e-3, 1e-3, 1e-3])
    _assert_same_epochs(records["torch"], records["tf"])


class _Features:
    """A fixed random projection standing in for the CNN: Fréchet distance needs only ``features``."""

    def __init__(self) -> None:
        self.w = np.random.default_rng(0).standard_normal((32 * 32, 8)).astype(np.float32)

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(images, np.float32).reshape(len(images), -1) @ self.w


def test_a_converted_run_samples_the_same_faces_and_frechet_distance(tmp_path):
    from facevae import backend as torch_backend
    from facevae_tf import backend as tf_backend
    from shared.evaluation import summarize_generative

    run = api.train(_config("torch", epochs=1), tmp_path / "torch")
    moved = api.convert(run, to="tf", out=tmp_path / "tf")
    a, b = torch_backend.load(run), tf_backend.load(moved)
    np.testing.assert_allclose(b.sample(16, seed=3), a.sample(16, seed=3), atol=1e-4)
    assert not np.allclose(a.sample(16, seed=3), a.sample(16, seed=4), atol=1e-3)  # z matters
    faces = api.load_run_data(a.config).subset(np.arange(64))
    per = {"neg_elbo": np.zeros(64), "rate": np.zeros(64), "psnr": np.zeros(64), "ssim": np.zeros(64)}
    fd = [summarize_generative(m, faces, per, iwae_k=0, seed=5, n_parameters=0, classifier=_Features())
          ["frechet_distance"] for m in (a, b)]
    assert fd[1] == pytest.approx(fd[0], rel=1e-4) and fd[0] > 0


def test_bad_inputs_raise_the_same_error_on_both_adapters(tmp_path):
    from facevae import backend as torch_backend
    from facevae_tf import backend as tf_backend
    from shared.errors import ConfigError

    run = api.train(_config("torch", epochs=1), tmp_path / "torch")
    models = (torch_backend.load(run), tf_backend.load(api.convert(run, to="tf", out=tmp_path / "tf")))
    for model in models:
        with pytest.raises(ConfigError, match=r"z must have shape \(N, 4\)"):
            model.decode(np.zeros((2, 5), np.float32))
        with pytest.raises(ConfigError, match=r"images must have shape \(N, 32, 32\)"):
            model.encode(np.zeros((2, 48, 48), np.uint8))
        with pytest.raises(ConfigError, match="`n` must be a non-negative integer"):
            model.sample(-1, seed=0)
        assert model.decode(np.zeros((0, 4), np.float32)).shape == (0, 32, 32)


def test_both_backends_initialise_every_layer_from_the_same_distribution():
    """U(±1/√fan_in) for every kernel and bias on both sides (shared.architecture): the spread of each
    layer's initial weights agrees within sampling error, and nothing exceeds the bound."""
    from facevae_tf import weights_io as tf_io
    from facevae_tf.engine import seed_everything
    from facevae_tf.models import build_model
    from shared.architecture import vae_plan
    from shared.config import ModelConfig
    from shared.weight_layout import convert_weights

    cfg = ModelConfig(latent_dim=32)  # the default preset at full size
    torch.manual_seed(0)
    t = torch_io.export_plan_weights(ConvVAE(cfg))
    seed_everything(0)
    k = convert_weights(tf_io.export_plan_weights(build_model(cfg)), vae_plan(cfg), src="tf", dst="torch")
    checked = 0
    for key, a in t.items():
        if not key.endswith("kernel"):
            continue
        prefix = key[:-len("kernel")]
        bound = 1.0 / np.sqrt(a[0].size)  # torch layout: fan_in = a[0].size for conv, deconv and dense
        for role in ("kernel", "bias"):
            x, y = t[prefix + role], k[prefix + role]
            assert np.abs(x).max() <= bound + 1e-7 and np.abs(y).max() <= bound + 1e-7, prefix + role
            if x.size >= 256:  # uniform on ±bound: std bound/√3
                assert np.std(x) == pytest.approx(bound / np.sqrt(3), rel=0.1), prefix + role
                assert np.std(y) == pytest.approx(bound / np.sqrt(3), rel=0.1), prefix + role
                checked += 1
    assert checked >= 10
