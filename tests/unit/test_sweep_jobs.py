"""Sweeps that use the hardware: ``jobs`` worker processes, ``shard`` slices and the merging ``report``."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared import api
from shared.cli import main
from shared.errors import ConfigError, RunError
from shared.sweep import report, sweep
from shared.sweep_jobs import Point, check_shard, parse_shard, run_points, shard_points, worker_threads
from tests.unit.test_sweep import base, fake  # noqa: F401  (fixtures: the fake backend, a tiny base config)

SIZE = 32
GRID = dict(latent_dims=(2, 4, 8), betas=(0.1, 1.0))
NAMES = ["d2_b0.1", "d2_b1", "d4_b0.1", "d4_b1", "d8_b0.1", "d8_b1"]


def _runs(out: Path) -> list[dict]:
    """sweep.json's rows without the folder (two sweeps in two folders are compared)."""
    rows = json.loads((out / "sweep.json").read_text())["runs"]
    return [{k: v for k, v in r.items() if k != "run_dir"} for r in rows]


# --------------------------------------------------------------------------- shards

@pytest.mark.parametrize("text, words", [("2/2", "[0, 1]"), ("0/0", "[1, 10000]"), ("0/10001", "[1, 10000]"),
                                         ("1", "I/N"), ("a/b", "I/N"), ("-1/2", "I/N"), ("1/2/3", "I/N")])
def test_bad_shard_is_one_clear_line(text, words):
    with pytest.raises(ConfigError) as info:
        parse_shard(text)
    message = str(info.value)
    assert "`shard`" in message and words in message and text in message and "\n" not in message


def test_shard_forms():
    assert parse_shard(" 3 / 8 ") == (3, 8) and check_shard((0, 1)) == (0, 1) and check_shard("9999/10000")
    for bad in ((True, 2), (0,), [0.0, 2], None):
        with pytest.raises(ConfigError, match="`shard` must be a pair"):
            check_shard(bad)


def test_shards_cover_the_grid_once_in_a_fixed_order():
    points = [Point(n, None, Path(n)) for n in NAMES]
    slices = [[p.name for p in shard_points(points, (i, 4))] for i in range(4)]
    assert slices == [["d2_b0.1", "d8_b0.1"], ["d2_b1", "d8_b1"], ["d4_b0.1"], ["d4_b1"]]
    assert [p.name for p in shard_points(points, None)] == NAMES


def test_shards_then_report_equal_one_full_sweep(fake, base, tmp_path):
    out = tmp_path / "sharded"
    first = sweep(base, out, shard=(0, 2), **GRID)
    assert first.name == "sweep_shard" and list(first.table["name"]) == ["d2_b0.1", "d4_b0.1", "d8_b0.1"]
    assert not (out / "sweep.json").exists() and not (out / "figures").exists()   # a shard writes no table
    sweep(base, out, shard="1/2", **GRID)
    assert sorted(name for name, _ in fake.trained) == sorted(NAMES)             # each point trained once
    merged = report(out)
    full = sweep(base, tmp_path / "full", **GRID)
    assert _runs(out) == _runs(tmp_path / "full")                                 # same rows, same order
    assert merged.table.drop(columns="run_dir").equals(full.table.drop(columns="run_dir"))
    assert (out / "sweep.md").read_text() == (tmp_path / "full" / "sweep.md").read_text()
    assert sorted(p.name for p in merged.paths) == ["rate_distortion.png", "reconstructions.png", "sweep.json",
                                                    "sweep.md"]
    assert "missing" not in merged.info and merged.images.shape == full.images.shape


def test_report_lists_missing_and_unevaluated_points(fake, base, tmp_path):
    out = tmp_path / "sw"
    sweep(base, out, shard=(0, 3), **GRID)          # d2_b0.1, d4_b1
    (out / "d4_b1" / "eval.json").unlink()          # as if its shard was killed after training
    res = report(out)
    assert list(res.table["name"]) == ["d2_b0.1"]
    assert res.info["missing"] == ["d2_b1", "d4_b0.1", "d8_b0.1", "d8_b1"] and res.info["unevaluated"] == ["d4_b1"]
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["missing"] == res.info["missing"] and saved["unevaluated"] == ["d4_b1"]
    assert "not started: d2_b1, d4_b0.1, d8_b0.1, d8_b1" in (out / "sweep.md").read_text()
    assert fake.evaluated.count("d4_b1") == 1       # the report trains and evaluates nothing


def test_report_refuses_runs_of_different_sweeps(fake, base, tmp_path):
    import dataclasses
    out = tmp_path / "sw"
    sweep(base, out, latent_dims=(2,), betas=(1.0,))
    other = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=3))
    sweep(other, out, latent_dims=(4,), betas=(1.0,))
    with pytest.raises(RunError, match=r"d2_b1 and d4_b1 are runs of different sweeps \(train.epochs: 1 vs 3\)"):
        report(out)
    (out / "d4_b1").rename(out / "d8_b1")
    with pytest.raises(RunError, match="belongs in d4_b1"):
        report(out)


def test_a_shard_accepts_the_files_other_shards_are_writing(fake, base, tmp_path):
    out = tmp_path / "sw"
    out.mkdir()
    (out / ".grid.json.x1y2.tmp").write_text("{")     # another shard between its write and its rename
    sweep(base, out, shard=(1, 6), **GRID)
    assert json.loads((out / "grid.json").read_text())["points"] == NAMES and fake.trained == [("d2_b1", False)]


def test_report_of_nothing_is_refused(tmp_path):
    with pytest.raises(RunError, match="no such sweep folder"):
        report(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="holds no grid-point run"):
        report(tmp_path / "empty")


# --------------------------------------------------------------------------- failures and jobs

def test_a_failing_point_does_not_stop_the_others(fake, base, tmp_path, monkeypatch):
    train = fake.train

    def flaky(config, out, **kw):
        if Path(out).name == "d4_b0.1":
            raise ValueError("boom\nsecond line")
        return train(config, out, **kw)

    monkeypatch.setattr(api, "train", flaky)
    out = tmp_path / "sw"
    with pytest.raises(RunError, match=r"1 of 6 grid points failed \(d4_b0.1: ValueError: boom second line\)"):
        sweep(base, out, **GRID)
    assert sorted(fake.evaluated) == sorted(set(NAMES) - {"d4_b0.1"})   # the points after it ran too
    assert not (out / "sweep.json").exists()
    monkeypatch.setattr(api, "train", train)
    sweep(base, out, **GRID)                                             # the re-run retries only the failure
    assert [name for name, _ in fake.trained].count("d4_b0.1") == 1 and len(_runs(out)) == 6


def test_bad_jobs_refused_before_training(fake, base, tmp_path):
    for jobs in (0, 257, 1.5, True):
        with pytest.raises(ConfigError, match="`jobs` must be an integer in \\[1, 256\\]"):
            sweep(base, tmp_path / "sw", jobs=jobs, **GRID)
    assert fake.trained == [] and not (tmp_path / "sw").exists()


def threads_task(point, iwae_k, verbose):
    """A worker task (module level: sent by name): the worker's thread setting, or a failure."""
    if point.name == "bad":
        raise RunError(f"{point.run_dir}: cannot train")
    import torch
    return {"omp": os.environ["OMP_NUM_THREADS"], "torch": torch.get_num_threads(), "verbose": verbose,
            "pid": os.getpid(), "iwae_k": iwae_k}


def test_worker_processes_limit_threads_and_report_failures():
    points = [Point(n, None, Path("/nowhere") / n) for n in ("a", "bad", "c")]
    results, failures = run_points(points, jobs=2, iwae_k=5, task=threads_task)
    assert failures == {"bad": "RunError: /nowhere/bad: cannot train"}
    threads = worker_threads(2)
    assert sorted(results) == ["a", "c"]
    for r in results.values():
        assert r["omp"] == str(threads) and r["torch"] == threads and r["verbose"] is False and r["iwae_k"] == 5
        assert r["pid"] != os.getpid()


def test_jobs_2_gives_the_same_metrics_as_jobs_1(tmp_path):
    """Real torch training, tiny: the worker processes reproduce the in-process numbers bit for bit."""
    torch = pytest.importorskip("torch")
    tiny = api.build_config(backend="torch", model="vae", data="synthetic:240", image_size=SIZE, epochs=1,
                            channels=(8, 16), hidden_dims=(32,), test_fraction=0.2)
    grid = dict(latent_dims=(2, 4), betas=(1.0,), iwae_k=2)
    before = torch.get_num_threads()
    torch.set_num_threads(worker_threads(2))  # float sums depend on the thread count: use the workers' one
    try:
        one = sweep(tiny, tmp_path / "one", jobs=1, save=False, **grid)
    finally:
        torch.set_num_threads(before)
    two = sweep(tiny, tmp_path / "two", jobs=2, save=False, **grid)
    metrics = ["rate", "distortion", "neg_elbo", "iwae", "psnr", "ssim"]
    assert one.table[metrics].notna().all().all()
    assert one.table[metrics].equals(two.table[metrics])
    for name in ("d2_b1", "d4_b1"):
        a = json.loads((tmp_path / "one" / name / "eval.json").read_text())
        b = json.loads((tmp_path / "two" / name / "eval.json").read_text())
        assert {k: v for k, v in a.items() if isinstance(v, float)} == {k: v for k, v in b.items()
                                                                         if isinstance(v, float)}


# --------------------------------------------------------------------------- command line

def test_cli_shard_then_report(fake, tmp_path, capsys):
    out = tmp_path / "sw"
    flags = ["sweep", "--data", "synthetic:80", "--image-size", str(SIZE), "--epochs", "1", "--test-fraction", "0.2",
             "--latent-dims", "2,4", "--betas", "1", "--out", str(out)]
    for i in (0, 1):
        assert main([*flags, "--shard", f"{i}/2"]) == 0
        assert f"shard {i}/2 done (1 of 2 grid points); run `facevae sweep --report --out {out}`" in \
            capsys.readouterr().out
    assert not (out / "sweep.json").exists()
    assert main(["sweep", "--report", "--out", str(out)]) == 0
    assert "sweep.md" in capsys.readouterr().out and len(_runs(out)) == 2


@pytest.mark.parametrize("argv, words", [(["--shard", "2/2"], "`shard` must have an index i in [0, n-1]"),
                                         (["--shard", "x"], "`shard` must be I/N"),
                                         (["--report", "--jobs", "2"], "--report trains nothing")])
def test_cli_bad_sweep_flags_are_one_line(fake, tmp_path, capsys, argv, words):
    rc = main(["sweep", "--data", "synthetic:80", "--out", str(tmp_path / "sw"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("facevae: error: ") and words in err, err
    assert fake.trained == []
