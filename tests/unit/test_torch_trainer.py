"""The torch engine under the shared loop: resume equality, NaN stop, safe loading, schedules, early stopping."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from facevae.checkpoint import checkpoint_path, load_checkpoint  # noqa: E402
from facevae.engine import NonFiniteLossError, fit, load_weights, select_device, to_tensors  # noqa: E402
from shared.config import ModelConfig, RunConfig, TrainConfig  # noqa: E402
from shared.errors import FaceVAEError, RunError  # noqa: E402
from shared.runs import read_metrics  # noqa: E402
from tests.unit.torch_vae_helpers import single_thread  # noqa: E402, F401


class Tiny(nn.Module):
    """Conv + BN + dropout regressor of the mean pixel: exercises buffers and the global RNG."""

    def __init__(self, nan_at_step: int = -1, stop_at_step: int = -1, constant: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(4, 1)
        self.nan_at_step, self.stop_at_step, self.constant = nan_at_step, stop_at_step, constant
        self.calls = 0

    def loss_terms(self, batch, beta=None):
        x = batch["images"]  # (B, 1, H, W)
        h = self.drop(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3))  # (B, 4)
        pred = self.head(h).squeeze(1)
        mse = ((pred - batch["target"]) ** 2).mean()
        if self.constant:
            mse = mse * 0 + 1.0
        if self.training:
            if self.calls == self.stop_at_step:
                raise KeyboardInterrupt  # simulates an interrupted run
            if self.calls == self.nan_at_step:
                mse = mse * float("nan")
            self.calls += 1
        return {"loss": mse, "mae": (pred - batch["target"]).abs().mean()}


def _data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 12, 12), dtype=np.uint8)
    return {"images": images, "target": images.mean(axis=(1, 2)).astype(np.float32) / 255.0}


def _config(**train) -> RunConfig:
    base = dict(epochs=4, batch_size=16, lr=1e-2, optimizer="adamw", schedule="cosine", early_stopping=0,
                grad_clip=1.0, seed=3, device="cpu")
    base.update(train)
    return RunConfig(model=ModelConfig(family="cnn", image_size=48), train=TrainConfig(**base))


def _model(**kw) -> Tiny:
    torch.manual_seed(0)
    return Tiny(**kw)


TRAIN, VAL = _data(70, 1), _data(30, 2)
STEPS_PER_EPOCH = 70 // 16 + 1  # 4 full batches + a tail of 6


class TestResume:
    def test_interrupted_run_resumes_to_identical_weights(self, tmp_path: Path):
        full = _model()
        fit(full, TRAIN, VAL, _config(), tmp_path / "full")

        part = _model(stop_at_step=2 * STEPS_PER_EPOCH + 1)  # interrupted inside epoch 3
        with pytest.raises(KeyboardInterrupt):
            fit(part, TRAIN, VAL, _config(), tmp_path / "part")
        assert load_checkpoint(checkpoint_path(tmp_path / "part", "last"))["loop"]["epoch"] == 2
        resumed = _model()  # a fresh process: new model object, state comes from last.pt
        fit(resumed, TRAIN, VAL, _config(), tmp_path / "part", resume=True)

        a, b = full.state_dict(), resumed.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        assert [r["epoch"] for r in read_metrics(tmp_path / "part")] == [0, 1, 2, 3]
        full_m, part_m = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
        assert [r["val_loss"] for r in full_m] == [r["val_loss"] for r in part_m]

    def test_best_and_last_of_one_epoch_are_serialised_once_and_identical(self, tmp_path: Path, monkeypatch):
        import facevae.engine as engine_module

        encoded = []
        real = engine_module.encode_checkpoint
        monkeypatch.setattr(engine_module, "encode_checkpoint", lambda state: encoded.append(1) or real(state))
        fit(_model(), TRAIN, VAL, _config(epochs=1), tmp_path / "one")
        best, last = (checkpoint_path(tmp_path / "one", w).read_bytes() for w in ("best", "last"))
        assert best == last and len(encoded) == 1  # epoch 1 always improves: one serialisation, two files
        assert load_checkpoint(checkpoint_path(tmp_path / "one", "best"))["loop"]["epoch"] == 1
        fit(_model(), TRAIN, VAL, _config(epochs=2, lr=0.0), tmp_path / "flat")  # lr 0: epoch 2 cannot improve
        ckpts = {w: load_checkpoint(checkpoint_path(tmp_path / "flat", w))["loop"]["epoch"] for w in ("best", "last")}
        assert ckpts == {"best": 1, "last": 2}  # a stale buffer would have written epoch 1 into 'last'

    def test_resume_without_checkpoint_is_a_run_error(self, tmp_path: Path):
        with pytest.raises(RunError, match="nothing to resume"):
            fit(_model(), TRAIN, VAL, _config(), tmp_path, resume=True)

    def test_same_seed_same_weights(self, tmp_path: Path):
        m1, m2 = _model(), _model()
        fit(m1, TRAIN, VAL, _config(epochs=2), tmp_path / "a")
        fit(m2, TRAIN, VAL, _config(epochs=2), tmp_path / "b")
        assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))


class TestNonFinite:
    def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(self, tmp_path: Path):
        k = 2 * STEPS_PER_EPOCH + 1  # second step of epoch 2
        with pytest.raises(NonFiniteLossError, match=rf"global step {k} \(epoch 2\)") as info:
            fit(_model(nan_at_step=k), TRAIN, VAL, _config(), tmp_path)
        assert isinstance(info.value, FaceVAEError)
        state = load_checkpoint(checkpoint_path(tmp_path, "last"))
        assert state["loop"]["epoch"] == 2
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
        assert len(read_metrics(tmp_path)) == 2


class TestSafeLoading:
    def test_malicious_pickle_is_refused(self, tmp_path: Path):
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        path = checkpoint_path(tmp_path, "best")
        path.parent.mkdir(parents=True)
        torch.save({"model": Evil()}, path)
        with pytest.raises(RunError, match="refused"):
            load_weights(_model(), tmp_path)
        assert not marker.exists()
        # plain pickle would have executed it: the refusal is what protects us
        with open(path, "rb") as fh:
            assert b"open" in fh.read()

    def test_load_weights_round_trip_and_mismatch(self, tmp_path: Path):
        trained = _model()
        fit(trained, TRAIN, VAL, _config(epochs=1), tmp_path)
        fresh = load_weights(_model(), tmp_path, "last")
        assert not fresh.training
        assert all(torch.equal(p, q) for p, q in zip(trained.state_dict().values(), fresh.state_dict().values()))
        with pytest.raises(RunError, match="does not fit"):
            load_weights(nn.Linear(3, 3), tmp_path)
        with pytest.raises(RunError, match="which"):
            load_weights(_model(), tmp_path, "final")


class TestRecipe:
    def test_seed_schedule_metrics_and_best(self, tmp_path: Path):
        best = fit(_model(), TRAIN, VAL, _config(epochs=3, schedule="seed", lr=0.01, optimizer="adam"), tmp_path)
        records = read_metrics(tmp_path)
        assert [r["lr"] for r in records] == pytest.approx([0.01, 0.005, 0.01 / 3])
        for key in ("epoch", "lr", "seconds", "images_per_s", "train_loss", "train_mae", "val_loss", "val_mae"):
            assert key in records[0]
        assert best["val_loss"] == min(r["val_loss"] for r in records)
        assert load_checkpoint(checkpoint_path(tmp_path, "best"))["loop"]["epoch"] == best["epoch"] + 1
        json.dumps(best)

    def test_early_stopping(self, tmp_path: Path):
        fit(_model(constant=True), TRAIN, VAL, _config(epochs=10, early_stopping=2), tmp_path)
        assert len(read_metrics(tmp_path)) == 3  # best at epoch 0, then 2 epochs without improvement

    def test_training_reduces_loss(self, tmp_path: Path):
        fit(_model(), TRAIN, VAL, _config(epochs=6, lr=3e-2), tmp_path)
        records = read_metrics(tmp_path)
        assert records[-1]["train_loss"] < records[0]["train_loss"]


class TestData:
    def test_to_tensors(self):
        out = to_tensors({"images": np.full((3, 5, 5), 255, np.uint8), "gender": np.array([0, 1, 1])},
                         torch.device("cpu"))
        assert out["images"].shape == (3, 1, 5, 5) and out["images"].dtype == torch.float32
        assert float(out["images"].max()) == 1.0
        assert out["gender"].dtype == torch.int64
        with pytest.raises(FaceVAEError, match="rows"):
            to_tensors({"images": np.zeros((3, 5, 5), np.uint8), "age": np.zeros(2)}, torch.device("cpu"))

    def test_select_device(self):
        assert select_device("cpu").type == "cpu"
        assert select_device("auto").type in ("cpu", "cuda")
        with pytest.raises(FaceVAEError, match="device"):
            select_device("tpu")
