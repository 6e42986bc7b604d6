"""The shared epoch loop (shared.training) against a numpy engine: what the loop decides, backend-free.

The fake engine fits a scalar mean by gradient descent and records every call, so each rule of the
loop — batches, noise, warm-up, write order, resume, early stopping, NaN policy, learning guard —
is checked without a framework.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from shared import training
from shared.config import ModelConfig, RunConfig, TrainConfig
from shared.errors import ConfigError, NonFiniteLossError, RunError
from shared.runs import append_metrics, read_metrics


class NumpyEngine:
    """Fits ``w`` to the mean of ``data``; checkpoints are dicts in memory (or in ``store``)."""

    def __init__(self, n_train=50, n_val=20, noise_dim=3, store=None, nan_at=-1, fail_save_at=None):
        rng = np.random.default_rng(0)
        self.train, self.val = rng.normal(2.0, 1.0, n_train), rng.normal(2.0, 1.0, n_val)
        self.n_train, self.n_val, self.noise_dim = n_train, n_val, noise_dim
        self.w, self.lr, self.steps = 0.0, 0.0, 0
        self.store = {} if store is None else store
        self.calls: list[tuple] = []
        self.nan_at, self.fail_save_at = nan_at, fail_save_at

    def set_lr(self, lr):
        self.lr = lr
        self.calls.append(("lr", lr))

    def train_step(self, idx, beta, eps):
        self.calls.append(("step", tuple(idx), beta, None if eps is None else eps.copy()))
        grad = 2 * (self.w - self.train[idx].mean())
        self.w -= self.lr * grad
        loss = float(((self.train[idx] - self.w) ** 2).mean())
        if self.steps == self.nan_at:
            loss = math.nan
        self.steps += 1
        return {"loss": loss, "rate": 1.0}

    def val_step(self, idx, beta, eps):
        self.calls.append(("val", tuple(idx), beta))
        return {"loss": float(((self.val[idx] - self.w) ** 2).mean()), "rate": 1.0}

    def scalars(self, terms):
        return [dict(t) for t in terms]

    def extra_val_metrics(self):
        return {"w": self.w}

    def save(self, which, loop_state):
        self.calls.append(("save", which, loop_state["epoch"]))
        if self.fail_save_at == (which, loop_state["epoch"]):
            raise KeyboardInterrupt
        self.store[which] = {"w": self.w, "loop": json.loads(json.dumps(loop_state))}

    def restore(self, which):
        self.w = self.store[which]["w"]
        return dict(self.store[which]["loop"])

    def has_checkpoint(self, which):
        return which in self.store

    def reconstruct_val(self):
        return None


def _config(**train) -> RunConfig:
    base = dict(epochs=4, batch_size=16, lr=0.1, early_stopping=0, seed=7)
    base.update(train)
    return RunConfig(model=ModelConfig(kl_warmup_epochs=2, beta=3.0), train=TrainConfig(**base))


class TestBatchesAndNoise:
    def test_tail_rule_and_seeded_order(self):
        assert training.n_batches(50, 16) == 4 and training.n_batches(49, 16) == 3  # a 1-face tail is dropped
        a, b = training.batch_plan(50, 16, 7, 0), training.batch_plan(50, 16, 7, 0)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert sorted(np.concatenate(a).tolist()) == list(range(50))
        assert not all(np.array_equal(x, y) for x, y in zip(a, training.batch_plan(50, 16, 7, 1)))

    def test_noise_is_a_function_of_its_position(self):
        e = training.train_noise(1, 2, 3, 5, 4)
        assert e.shape == (5, 4) and e.dtype == np.float32
        np.testing.assert_array_equal(e, training.train_noise(1, 2, 3, 5, 4))
        assert not np.array_equal(e, training.train_noise(1, 2, 4, 5, 4))
        np.testing.assert_array_equal(training.val_noise(1, 6, 4), training.val_noise(1, 6, 4))

    def test_engine_gets_the_plan_warmup_beta_and_target_beta_in_validation(self, tmp_path):
        engine = NumpyEngine()
        training.fit(engine, _config(), tmp_path)
        steps = [c for c in engine.calls if c[0] == "step"]
        assert len(steps) == 4 * 4
        first = training.batch_plan(50, 16, 7, 0)
        assert [s[1] for s in steps[:4]] == [tuple(b) for b in first]
        np.testing.assert_array_equal(steps[1][3], training.train_noise(7, 0, 1, 16, 3))
        assert [s[2] for s in steps[::4]] == pytest.approx([1.0, 2.0, 3.0, 3.0])  # β(e+1)/(W+1), W=2
        assert {c[2] for c in engine.calls if c[0] == "val"} == {3.0}
        records = read_metrics(tmp_path)
        assert [r["lr"] for r in records] == pytest.approx([0.1] * 4)
        assert "val_w" in records[0] and records[-1]["train_loss"] < records[0]["train_loss"]


    def test_small_data_shrinks_the_batch_to_keep_enough_steps(self, tmp_path):
        cfg = TrainConfig(batch_size=32, min_steps_per_epoch=32)
        assert cfg.batch_size_for(480) == 15 and cfg.batch_size_for(7054) == 32
        assert cfg.batch_size_for(100) == 8 and TrainConfig(batch_size=32).batch_size_for(480) == 32
        engine = NumpyEngine(n_train=200)
        training.fit(engine, _config(epochs=1, batch_size=32, min_steps_per_epoch=16), tmp_path)
        assert len([c for c in engine.calls if c[0] == "step"]) == 17  # 16 batches of 12 and a tail of 8

    def test_a_batch_size_the_user_gives_is_used_as_given(self):
        from shared.config import default_train_config
        assert default_train_config("vae", "default").min_steps_per_epoch == 32
        assert default_train_config("vae", "default", batch_size=64).min_steps_per_epoch == 0


class TestWriteOrderAndResume:
    def test_metrics_line_comes_after_the_checkpoint_that_covers_it(self, tmp_path):
        engine = NumpyEngine()
        seen = []
        original = engine.save

        def save(which, state):
            seen.append((which, len(read_metrics(tmp_path))))
            original(which, state)

        engine.save = save
        training.fit(engine, _config(epochs=2), tmp_path)
        assert [n for which, n in seen if which == "last"] == [0, 1]  # line e is written after 'last' of e

    def test_crash_between_checkpoint_and_metrics_is_repaired_on_resume(self, tmp_path):
        store = {}
        full = NumpyEngine()
        training.fit(full, _config(), tmp_path / "full")
        crashed = NumpyEngine(store=store, fail_save_at=("last", 3))  # dies while saving epoch 3's 'last'
        with pytest.raises(KeyboardInterrupt):
            training.fit(crashed, _config(), tmp_path / "run")
        # simulate the other window: 'last' of epoch 2 written, its metrics line lost
        lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        (tmp_path / "run" / "metrics.jsonl").write_text("\n".join(lines[:1]) + "\n")
        training.fit(NumpyEngine(store=store), _config(), tmp_path / "run", resume=True)
        a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "run")
        assert [r["epoch"] for r in b] == [0, 1, 2, 3]
        assert [r["val_loss"] for r in b] == pytest.approx([r["val_loss"] for r in a])

    def test_resume_applies_an_edited_learning_rate_and_more_epochs(self, tmp_path, caplog):
        store = {}
        training.fit(NumpyEngine(store=store), _config(epochs=2), tmp_path)
        with caplog.at_level("INFO"):
            training.fit(NumpyEngine(store=store), _config(epochs=3, lr=0.05), tmp_path, resume=True)
        assert [r["lr"] for r in read_metrics(tmp_path)] == pytest.approx([0.1, 0.1, 0.05])
        assert "lr changed from 0.1 to 0.05" in caplog.text

    def test_resume_without_checkpoint_says_what_to_do(self, tmp_path):
        with pytest.raises(RunError, match="nothing to resume.*without --resume"):
            training.fit(NumpyEngine(), _config(), tmp_path, resume=True)

    def test_empty_split_is_a_config_error(self, tmp_path):
        with pytest.raises(ConfigError, match="val=0"):
            training.fit(NumpyEngine(n_val=0), _config(), tmp_path)


class TestStopping:
    def test_nan_names_the_global_step_and_keeps_the_last_good_epoch(self, tmp_path):
        engine = NumpyEngine(nan_at=9)  # epoch 2, its second step
        with pytest.raises(NonFiniteLossError, match=r"global step 9 \(epoch 2\)"):
            training.fit(engine, _config(), tmp_path)
        assert engine.store["last"]["loop"]["epoch"] == 2 and len(read_metrics(tmp_path)) == 2

    def test_early_stopping_and_a_stopped_run_stays_stopped(self, tmp_path):
        engine = NumpyEngine()
        engine.val = np.full(20, 0.0)  # the fit moves w away from 0: validation only gets worse
        training.fit(engine, _config(epochs=10, early_stopping=2), tmp_path)
        assert len(read_metrics(tmp_path)) == 3
        store = engine.store
        training.fit(NumpyEngine(store=store), _config(epochs=10, early_stopping=2), tmp_path, resume=True)
        assert len(read_metrics(tmp_path)) == 3  # the same config: it stays stopped
        engine = NumpyEngine(store=store)
        engine.val = np.full(20, 0.0)
        training.fit(engine, _config(epochs=12, early_stopping=2), tmp_path, resume=True)
        assert len(read_metrics(tmp_path)) > 3  # more epochs asked for: it trains on (until patience runs out again)


class TestLearningGuard:
    def test_healthy_run_has_no_findings(self):
        assert training.learning_guard([{"val_loss": 3.0}, {"val_loss": 2.0}], rate=5.0, psnr=20.0,
                                       mean_face_psnr=14.0) == []

    def test_each_finding(self):
        found = training.learning_guard([{"val_loss": 1.0}, {"val_loss": 2.0}, {"val_loss": 1.5}], rate=0.01,
                                        psnr=14.05, mean_face_psnr=14.0)
        assert len(found) == 3
        assert "never improved on epoch 1" in found[0]
        assert "posterior collapse" in found[1]
        assert "no better than the mean face" in found[2]

    def test_guard_runs_at_the_end_of_training(self, tmp_path, caplog):
        engine = NumpyEngine()
        engine.val = np.full(20, -50.0)
        engine.reconstruct_val = lambda: (np.full((4, 2, 2), 0.5), np.full((4, 2, 2), 0.9), np.full((2, 2), 0.5))
        with caplog.at_level("WARNING"):
            best = training.fit(engine, _config(epochs=2), tmp_path)
        assert any("never improved" in w for w in best["warnings"])
        assert any("mean face" in w for w in best["warnings"])
        assert "mean face" in caplog.text


def test_torn_metrics_from_an_older_crash_do_not_break_resume(tmp_path):
    store = {}
    training.fit(NumpyEngine(store=store), _config(epochs=2), tmp_path)
    with open(Path(tmp_path) / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "val_lo')
    training.fit(NumpyEngine(store=store), _config(epochs=3), tmp_path, resume=True)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 1, 2]
    append_metrics(tmp_path, {"epoch": 3})
    assert read_metrics(tmp_path)[-1] == {"epoch": 3}
