"""Sweep bookkeeping with shared.api.train/evaluate replaced by fast fakes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from shared import api
from shared.errors import ConfigError, RunError
from shared.runs import lock_run
from shared.sweep import run_name, sweep
from tests.unit.test_studio import LinearVAE

SIZE = 32


class FakeBackend:
    """Stands in for api.train / api.evaluate / api.load_model; records every call."""

    def __init__(self, split_seeds: dict[str, int] | None = None):
        self.trained: list[tuple[str, bool]] = []
        self.evaluated: list[str] = []
        self.split_seeds = split_seeds or {}
        self.models: dict[str, LinearVAE] = {}

    def train(self, config, out, *, resume=False):
        from shared.data.splits import make_split

        out = Path(out)
        self.trained.append((out.name, resume))
        if not resume:
            faces = api.load_run_data(config)
            seed = self.split_seeds.get(out.name, config.data.split_seed)
            out.mkdir(parents=True, exist_ok=True)
            make_split(faces, val_fraction=0.1, test_fraction=0.2, seed=seed).save(out / "split.json")
            config.save(out / "config.json")
        (out / "checkpoints").mkdir(exist_ok=True)
        (out / "checkpoints" / "last.pt").write_bytes(b"fake")
        return out

    def evaluate(self, run_dir, *, data=None, iwae_k=64, classifier=None, seed=0):
        from shared.runs import atomic_write_json, load_run_config

        run_dir = Path(run_dir)
        self.evaluated.append(run_dir.name)
        m = load_run_config(run_dir).model
        result = {"data": "synthetic:80 (test split)", "rate": 3.0 * m.latent_dim * m.beta ** -0.5,
                  "distortion": 400.0 / m.latent_dim, "neg_elbo": 1.0, "iwae": 0.9, "psnr": 20.0, "ssim": 0.5,
                  "iwae_k_used": iwae_k}
        atomic_write_json(run_dir / "eval.json", result)
        return result

    def load_model(self, run_dir):
        from shared.runs import load_run_config
        key = str(run_dir)
        if key not in self.models:
            config = load_run_config(run_dir)
            self.models[key] = LinearVAE(api.load_run_data(config).images, config.model.latent_dim, config)
        return self.models[key]


@pytest.fixture()
def fake(monkeypatch):
    backend = FakeBackend()
    for name in ("train", "evaluate", "load_model"):
        monkeypatch.setattr(api, name, getattr(backend, name))
    return backend


@pytest.fixture()
def base():
    return api.build_config(backend="torch", model="vae", data="synthetic:80", image_size=SIZE, epochs=1,
                            test_fraction=0.2)


def test_run_name():
    assert run_name(16, 0.1) == "d16_b0.1" and run_name(4, 1.0) == "d4_b1"


def test_sweep_writes_table_and_figures(fake, base, tmp_path):
    res = sweep(base, tmp_path / "sw", latent_dims=(2, 4), betas=(0.1, 1.0), iwae_k=3)
    out = tmp_path / "sw"
    assert res.info["out"] == str(out)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("d")) == ["d2_b0.1", "d2_b1", "d4_b0.1", "d4_b1"]
    result = json.loads((out / "sweep.json").read_text())
    assert [(r["latent_dim"], r["beta"]) for r in result["runs"]] == [(2, 0.1), (2, 1.0), (4, 0.1), (4, 1.0)]
    assert result["runs"][0]["distortion"] == pytest.approx(200.0) and result["iwae_k"] == 3
    assert result["n_test"] > 0
    # each run was trained with the grid's latent size and β, everything else from base
    cfg = json.loads((out / "d4_b0.1" / "config.json").read_text())
    assert cfg["model"]["latent_dim"] == 4 and cfg["model"]["beta"] == 0.1 and cfg["data"] == base.data.to_dict()
    assert (out / "sweep.md").read_text().count("\n| ") == 5      # header + 4 runs
    assert (out / "figures" / "rate_distortion.png").is_file()
    assert (out / "figures" / "reconstructions.png").is_file()
    # the result: one table row per grid point, equal to sweep.json's runs
    pd.testing.assert_frame_equal(res.table, pd.DataFrame(result["runs"]), check_like=True)
    assert sorted(p.name for p in res.paths) == ["rate_distortion.png", "reconstructions.png", "sweep.json", "sweep.md"]
    assert isinstance(res.figure, Figure) and "nats/face" in res.figure.axes[0].get_xlabel()
    assert res.figure.axes[0].get_title().startswith("rate–distortion")
    assert res.images.shape[:2] == (5, min(8, result["n_test"]))          # originals + 4 models
    assert res.extra["reconstructions"].paths == [out / "figures" / "reconstructions.png"]


def test_sweep_save_false_and_format(fake, base, tmp_path):
    out = tmp_path / "sw"
    res = sweep(base, out, latent_dims=(2,), betas=(1.0,), save=False)
    assert not (out / "sweep.json").exists() and not (out / "sweep.md").exists() and not (out / "figures").exists()
    assert res.paths == [] and len(res.table) == 1 and isinstance(res.figure, Figure)
    assert (out / "d2_b1" / "eval.json").is_file()                      # the run itself is trained
    res = sweep(base, out, latent_dims=(2,), betas=(1.0,), fmt="svg")   # the finished run is reused
    assert (out / "figures" / "rate_distortion.svg").read_bytes().startswith(b"<?xml")
    assert fake.trained == [("d2_b1", False)]


def test_bad_format_refused_before_training(fake, base, tmp_path):
    with pytest.raises(ConfigError, match="`fmt`"):
        sweep(base, tmp_path / "sw", latent_dims=(2,), betas=(1.0,), fmt="gif")
    assert fake.trained == [] and not (tmp_path / "sw").exists()


def test_rerun_skips_complete_runs_and_resumes_incomplete(fake, base, tmp_path):
    out = tmp_path / "sw"
    sweep(base, out, latent_dims=(2, 4), betas=(1.0,))
    assert fake.trained == [("d2_b1", False), ("d4_b1", False)] and fake.evaluated == ["d2_b1", "d4_b1"]
    (out / "d4_b1" / "eval.json").unlink()          # as if interrupted after training d4_b1
    sweep(base, out, latent_dims=(2, 4), betas=(1.0,))
    assert fake.trained[2:] == [("d4_b1", True)]    # resumed, not retrained from scratch
    assert fake.evaluated[2:] == ["d4_b1"]
    assert len(json.loads((out / "sweep.json").read_text())["runs"]) == 2


def test_run_stopped_before_its_first_checkpoint_starts_again(fake, base, tmp_path):
    out = tmp_path / "sw"
    sweep(base, out, latent_dims=(2,), betas=(1.0,))
    for name in ("eval.json", "checkpoints/last.pt"):
        (out / "d2_b1" / name).unlink()
    sweep(base, out, latent_dims=(2,), betas=(1.0,))
    assert fake.trained == [("d2_b1", False), ("d2_b1", False)]
    assert (out / "d2_b1" / "eval.json").is_file()


def test_folder_with_other_config_is_refused(fake, base, tmp_path):
    out = tmp_path / "sw"
    sweep(base, out, latent_dims=(2,), betas=(1.0,))
    import dataclasses
    other = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=2))
    with pytest.raises(RunError, match="different config"):
        sweep(other, out, latent_dims=(2,), betas=(1.0,))


def test_folder_that_is_not_a_sweep_is_refused_untouched(fake, base, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    base.save(run / "config.json")
    for folder, words in ((mine, "notes.txt"), (run, "a run")):
        before = sorted(p.name for p in folder.iterdir())
        with pytest.raises(RunError, match=f"is not a sweep folder \\(it holds {words}"):
            sweep(base, folder, latent_dims=(2,), betas=(1.0,))
        assert sorted(p.name for p in folder.iterdir()) == before
    assert fake.trained == []


def test_sweep_in_use_is_refused(fake, base, tmp_path):
    out = tmp_path / "sw"
    with lock_run(out):
        with pytest.raises(RunError, match="in use by pid"):
            sweep(base, out, latent_dims=(2,), betas=(1.0,))
    assert fake.trained == []


def test_grid_point_failed_before_its_first_checkpoint_restarts_through_api_train(fake, base, tmp_path,
                                                                                 monkeypatch):
    """The real api.train rules (lock, restart of a checkpoint-less run) under a fake backend."""
    monkeypatch.undo()  # the real api.train this time
    for name in ("evaluate", "load_model"):
        monkeypatch.setattr(api, name, getattr(fake, name))
    calls = []

    class Backend:
        @staticmethod
        def train(config, faces, split, run_dir, *, resume=False):
            calls.append((Path(run_dir).name, resume))
            if len(calls) == 1:
                (Path(run_dir) / "metrics.jsonl").write_text('{"epoch": 0, "half": ')
                raise KeyboardInterrupt        # Ctrl-C before the first checkpoint
            (Path(run_dir) / "checkpoints").mkdir(exist_ok=True)
            (Path(run_dir) / "checkpoints" / "last.pt").write_bytes(b"ckpt")

    monkeypatch.setattr(api, "get_backend", lambda name: Backend)
    out = tmp_path / "sw"
    with pytest.raises(KeyboardInterrupt):
        sweep(base, out, latent_dims=(2,), betas=(1.0,))
    sweep(base, out, latent_dims=(2,), betas=(1.0,))
    assert calls == [("d2_b1", False), ("d2_b1", False)]
    assert not (out / "d2_b1" / "metrics.jsonl").exists()
    assert (out / "sweep.json").is_file()


def test_different_test_split_is_refused(monkeypatch, base, tmp_path):
    backend = FakeBackend(split_seeds={"d4_b1": 7})
    for name in ("train", "evaluate", "load_model"):
        monkeypatch.setattr(api, name, getattr(backend, name))
    with pytest.raises(RunError, match="test split differs"):
        sweep(base, tmp_path / "sw", latent_dims=(2, 4), betas=(1.0,))


def test_bad_grid(base, tmp_path):
    with pytest.raises(ConfigError):
        sweep(base, tmp_path, latent_dims=(), betas=(1.0,))
    cnn = api.build_config(backend="torch", model="cnn", data="synthetic:80", image_size=SIZE)
    with pytest.raises(ConfigError, match="generative"):
        sweep(cnn, tmp_path, latent_dims=(2,), betas=(1.0,))


def test_reconstruction_rows_use_the_same_test_faces(fake, base, tmp_path, monkeypatch):
    import shared.plotting as plotting
    seen = {}
    monkeypatch.setattr(plotting, "comparison_rows",
                        lambda rows, path=None, title=None, **kw: seen.update(rows=rows) or Figure())
    sweep(base, tmp_path / "sw", latent_dims=(2, 4), betas=(1.0,))
    rows = seen["rows"]
    assert list(rows) == ["originals", "d=2 β=1", "d=4 β=1"]
    from shared.data.splits import Split
    faces = api.load_run_data(base)
    test = np.asarray(Split.load(tmp_path / "sw" / "d2_b1" / "split.json", faces).test)
    np.testing.assert_allclose(rows["originals"], faces.subset(test[:len(rows["originals"])]).floats())
    assert all(r.shape == rows["originals"].shape for r in rows.values())
