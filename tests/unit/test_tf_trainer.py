"""TF trainer: metrics and checkpoints, resume equality, NaN stop, schedules, end-to-end through shared.api."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from facevae_tf import backend, checkpoint  # noqa: E402
from facevae_tf.models import FaceVAE, build_model  # noqa: E402
from facevae_tf.engine import NonFiniteLossError, enable_determinism, lr_at  # noqa: E402
from shared.config import TrainConfig  # noqa: E402
from shared.errors import FaceVAEError, RunError  # noqa: E402
from shared.runs import read_metrics  # noqa: E402
from tests.unit.tf_test_helpers import new_run_dir, split_of, tiny_faces, tiny_run_config  # noqa: E402

N, VAL, TEST = 100, 20, 10  # 70 train faces, batch 32 -> 3 steps per epoch (tail of 6)


@pytest.fixture(scope="module")
def faces():
    return tiny_faces(N, seed=1)


@pytest.fixture(scope="module")
def split():
    return split_of(N, VAL, TEST)


def _weights(run_dir, which="last"):
    config = tiny_run_config("vae")
    model = build_model(config.model)
    checkpoint.restore(run_dir, which, checkpoint.model_checkpoint(model), partial=True)
    return [v.numpy() for v in model.variables]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, faces, split):
    """A 4-epoch run, a 2-epoch run resumed to 4 epochs, and a copy of the 2-epoch run.

    Switches on TF op determinism for the rest of the test process (see facevae_tf.engine).
    """
    enable_determinism(0)
    root = tmp_path_factory.mktemp("tf_trainer")
    full_cfg, half_cfg = tiny_run_config("vae", epochs=4), tiny_run_config("vae", epochs=2)
    full = new_run_dir(root, "full", full_cfg)
    backend.train(full_cfg, faces, split, full)
    part = new_run_dir(root, "part", half_cfg)
    backend.train(half_cfg, faces, split, part)
    copy = root / "half"
    shutil.copytree(part, copy)
    backend.train(full_cfg, faces, split, part, resume=True)
    return {"full": full, "resumed": part, "half": copy}


class TestTraining:
    def test_metrics_and_checkpoints(self, runs):
        run = runs["full"]
        records = read_metrics(run)
        assert [r["epoch"] for r in records] == [0, 1, 2, 3]
        expected = {"epoch", "lr", "seconds", "images_per_s", "step"} | {
            f"{p}_{t}" for p in ("train", "val") for t in ("loss", "distortion", "rate", "elbo", "beta")}
        assert expected <= set(records[0])
        assert records[-1]["step"] == 12  # 3 steps per epoch
        assert checkpoint.has_checkpoint(run, "last") and checkpoint.has_checkpoint(run, "best")
        assert not list((run / "checkpoints").glob(".*")), "temporary checkpoint folders left behind"
        assert records[-1]["train_loss"] < records[0]["train_loss"]
        best_epoch = int(np.argmin([r["val_loss"] for r in records]))
        same = all(np.array_equal(a, b) for a, b in zip(_weights(run, "best"), _weights(run, "last")))
        assert same == (best_epoch == 3)  # 'best' holds the best epoch's weights, 'last' the final ones

    def test_resume_matches_uninterrupted_run(self, runs):
        a, b = _weights(runs["full"]), _weights(runs["resumed"])
        assert len(a) == len(b) > 0
        for va, vb in zip(a, b):
            np.testing.assert_array_equal(va, vb)
        ra, rb = read_metrics(runs["full"]), read_metrics(runs["resumed"])
        assert [r["epoch"] for r in rb] == [0, 1, 2, 3]
        assert [r["val_loss"] for r in ra] == [r["val_loss"] for r in rb]

    def test_resume_without_checkpoint_fails(self, tmp_path, faces, split):
        config = tiny_run_config("vae", epochs=1)
        run = new_run_dir(tmp_path, "empty", config)
        with pytest.raises(RunError, match="nothing to resume"):
            backend.train(config, faces, split, run, resume=True)

    def test_nan_stops_with_step_and_keeps_last_good_checkpoint(self, runs, faces, split, monkeypatch):
        run = runs["half"]
        good = _weights(run)
        original = FaceVAE.loss_terms

        def poisoned(self, *args, **kwargs):
            terms = dict(original(self, *args, **kwargs))
            terms["loss"] = terms["loss"] * float("nan")
            return terms

        monkeypatch.setattr(FaceVAE, "loss_terms", poisoned)
        with pytest.raises(NonFiniteLossError, match="global step 6") as info:
            backend.train(tiny_run_config("vae", epochs=3), faces, split, run, resume=True)
        assert isinstance(info.value, FaceVAEError)
        for va, vb in zip(good, _weights(run)):
            np.testing.assert_array_equal(va, vb)
        assert len(read_metrics(run)) == 2


class TestSchedules:
    def test_lr_schedules(self):
        cfg = TrainConfig(lr=1.0, epochs=4, schedule="cosine")
        assert lr_at(cfg, 0) == pytest.approx(1.0) and lr_at(cfg, 2) == pytest.approx(0.5)
        assert lr_at(TrainConfig(lr=1.0, schedule="seed"), 3) == pytest.approx(0.25)
        assert lr_at(TrainConfig(lr=0.3), 9) == pytest.approx(0.3)

    def test_kl_warmup_trains_without_nan(self, tmp_path):
        """β never starts at 0 (0·inf was NaN at step 21 once), and a warm-up run finishes with finite losses."""
        api = pytest.importorskip("shared.api")
        config = api.build_config(backend="tf", model="vae", data="synthetic:96", image_size=32, latent_dim=4,
                                  channels=(4, 8), hidden_dims=(16,), epochs=3, batch_size=32, lr=0.01,
                                  kl_warmup_epochs=2, early_stopping=0)
        records = read_metrics(api.train(config, tmp_path / "warm"))
        assert [r["train_beta"] for r in records] == pytest.approx([1 / 3, 2 / 3, 1.0])
        assert all(np.isfinite(r["train_loss"]) for r in records)


class TestEndToEnd:
    """Training through shared.api on synthetic faces, then evaluation (early stopping on, patience 1)."""

    @pytest.mark.parametrize("family", ["vae", "iaf"])  # cvae: tests/unit/test_tf_conditional.py
    def test_api_train_and_evaluate(self, tmp_path, family):
        api = pytest.importorskip("shared.api")
        extra = dict(flow_steps=2, flow_hidden=16, context_dim=8) if family == "iaf" else {}
        epochs = 3
        config = api.build_config(backend="tf", model=family, data="synthetic:160", image_size=32, latent_dim=4,
                                  channels=(4, 8), hidden_dims=(16,), epochs=epochs, batch_size=32, lr=0.01,
                                  early_stopping=1, **extra)
        run = api.train(config, tmp_path / family)
        records = read_metrics(run)
        losses = [r["val_loss"] for r in records]
        assert all(math.isfinite(v) for v in losses)
        # early stopping (patience 1): the run ends right after the first epoch that is not a new best
        worse = [i for i in range(1, len(losses)) if losses[i] >= min(losses[:i])]
        assert len(losses) == (worse[0] + 1 if worse else epochs)
        result = api.evaluate(run, iwae_k=4)
        saved = json.loads((run / "eval.json").read_text())
        assert saved["family"] == family and saved["neg_elbo"] == pytest.approx(result["neg_elbo"])
        for key in ("neg_elbo", "rate", "distortion", "neg_iwae", "psnr", "ssim"):
            assert math.isfinite(result[key]), key
        assert result["neg_iwae"] <= result["neg_elbo"] + 1.0
        assert result["rate"] >= 0 and 0 < result["psnr"] < 60
        assert set(result["by_group"]) >= {"gender", "ethnicity"}
        model = api.load_model(run)
        labels = np.zeros((2, 7), np.float32) if model.conditional else None
        assert model.sample(2, 0, labels).shape == (2, 32, 32)
        if family == "vae":
            masked = model.sample(2, 1)
            mask = np.zeros((2, 32, 32), bool)
            mask[:, 8:16, 8:24] = True
            out = backend.inpaint_optimize(model, masked, mask, steps=3)
            assert out.shape == (2, 32, 32) and np.isfinite(out).all()


class TestDevice:
    def test_cuda_without_gpu_is_a_config_error(self):
        from facevae_tf.engine import device_scope
        from shared.errors import ConfigError

        if tf.config.list_physical_devices("GPU"):
            pytest.skip("a GPU is visible")
        with pytest.raises(ConfigError, match="'cuda'"):
            device_scope("cuda")
        with device_scope("cpu"):
            assert "CPU" in tf.constant(1.0).device
