"""Resume with updates extends a finished run, on both backends; updates that cannot apply are refused."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from shared import api, training
from shared.errors import ConfigError
from shared.runs import read_metrics
from tests.unit.test_training_loop import NumpyEngine, _config as loop_config
from tests.unit.torch_vae_helpers import single_thread  # noqa: F401  (autouse: one torch thread)

TINY = dict(image_size=32, channels=(8, 16), hidden_dims=(32,), latent_dim=4, epochs=1, batch_size=16,
            device="cpu", early_stopping=0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))


def _train(backend: str, out):
    config = api.build_config(backend=backend, model="vae", data="synthetic:240", **TINY)
    return api.train(config, out, verbose=False)


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    pytest.importorskip("torch")
    return _train("torch", tmp_path_factory.mktemp("extend") / "run")


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_a_finished_run_is_extended_by_more_epochs(tmp_path, backend, torch_run):
    pytest.importorskip("torch" if backend == "torch" else "tensorflow")
    if backend == "torch":
        run = shutil.copytree(torch_run, tmp_path / "run")
    else:
        run = _train("tf", tmp_path / "run")
    before = read_metrics(run)
    assert [r["epoch"] for r in before] == [0]
    api.train(None, run, resume=True, updates={"epochs": 2}, verbose=False)
    after = read_metrics(run)
    assert [r["epoch"] for r in after] == [0, 1]
    assert after[0] == before[0]  # the first epoch is kept as it was, the second one is new
    assert after[1]["step"] > after[0]["step"] and np.isfinite(after[1]["val_loss"])
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2


@pytest.mark.parametrize("updates, match", [
    ({"latent_dim": 8}, r"cannot change \['latent_dim'\]"),
    ({"seed": 3}, r"cannot change \['seed'\].*seeds"),
    ({"optimizer": "sgd"}, r"cannot change \['optimizer'\]"),
    ({"epochs": 0}, r"`epochs` must be"),
    ({"lr": -1.0}, r"`lr` must be"),
    ({"epoch": 3}, r"unknown training field\(s\) \['epoch'\].*epochs"),
])
def test_updates_that_cannot_apply_are_refused_and_change_nothing(torch_run, updates, match):
    config = (torch_run / "config.json").read_bytes()
    with pytest.raises(ConfigError, match=match):
        api.train(None, torch_run, resume=True, updates=updates, verbose=False)
    assert (torch_run / "config.json").read_bytes() == config


def test_fewer_epochs_than_already_trained_is_refused(tmp_path, torch_run):
    run = shutil.copytree(torch_run, tmp_path / "run")
    api.train(None, run, resume=True, updates={"epochs": 2}, verbose=False)
    with pytest.raises(ConfigError, match=r"`epochs` must be at least 2, the epochs .* already trained"):
        api.train(None, run, resume=True, updates={"epochs": 1}, verbose=False)


def test_updates_are_written_and_logged(tmp_path, torch_run, caplog):
    run = shutil.copytree(torch_run, tmp_path / "run")
    with caplog.at_level("INFO", logger="shared"):
        api.train(None, run, resume=True, updates={"epochs": 2, "lr": 1e-3, "batch_size": 8}, verbose=False)
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["epochs"], train["lr"], train["batch_size"], train["min_steps_per_epoch"]) == (2, 1e-3, 8, 0)
    assert "lr changes from" in caplog.text and "epochs changes from 1 to 2" in caplog.text
    assert read_metrics(run)[1]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi / 2)))


def test_new_runs_take_no_updates(tmp_path):
    config = api.build_config(backend="torch", model="vae", data="synthetic:240", **TINY)
    with pytest.raises(ConfigError, match="resume only"):
        api.train(config, tmp_path / "run", updates={"epochs": 3})
    assert not (tmp_path / "run").exists()


def test_an_early_stopped_run_trains_on_when_epochs_grows(tmp_path):
    engine = NumpyEngine()
    engine.val = np.full(20, 0.0)  # validation only gets worse: stops after early_stopping epochs
    training.fit(engine, loop_config(epochs=10, early_stopping=2), tmp_path)
    assert len(read_metrics(tmp_path)) == 3
    training.fit(NumpyEngine(store=engine.store), loop_config(epochs=12, early_stopping=2), tmp_path, resume=True)
    assert len(read_metrics(tmp_path)) > 3
