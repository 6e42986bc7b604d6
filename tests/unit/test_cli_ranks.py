"""The CLI under ``torchrun``: only rank 0 prints and logs at INFO; TensorFlow's INFO records stay quiet.

The logging levels are checked in a fresh interpreter: ``logging.basicConfig`` does nothing in a
process whose root logger already has handlers, as pytest's does.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import main
from tests.conftest import REPO

_LEVELS = """
import json, logging
from shared.cli import main
code = main([*{verbose}, "data", "inspect", "synthetic:20", "--image-size", "32"])
print(json.dumps([code, logging.getLogger().level, logging.getLogger("tensorflow").getEffectiveLevel()]))
"""


def _levels(tmp_path: Path, rank: int | None, verbose: bool = False) -> tuple[int, int, int]:
    """``(exit code, root level, tensorflow's effective level)`` after ``main`` in a process of ``rank``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", FACEVAE_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    if rank is not None:
        env.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    script = _LEVELS.format(verbose='["-v"]' if verbose else "[]")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("rank, verbose, root", [(None, False, "INFO"), (0, False, "INFO"), (1, False, "WARNING"),
                                                 (1, True, "DEBUG")])
def test_log_levels(tmp_path, rank, verbose, root):
    code, root_level, tf_level = _levels(tmp_path, rank, verbose)
    assert code == 0
    assert logging.getLevelName(root_level) == root  # rank 1 does not repeat rank 0's INFO lines
    # TensorFlow's device-placement INFO records ("Reduce to /device:CPU:0 ...") are hidden unless -v
    assert logging.getLevelName(tf_level) == ("DEBUG" if verbose else "WARNING")


@pytest.mark.parametrize("rank, prints", [(0, True), (1, False)])
def test_only_the_writer_prints_where_it_wrote(tmp_path, monkeypatch, capsys, rank, prints):
    pytest.importorskip("torch")  # --backend torch is checked to be installed
    import shared.api

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    out = tmp_path / "run"
    # every rank returns the run from train(); what it does under torchrun is tested in test_ddp_torch
    monkeypatch.setattr(shared.api, "train", lambda config, out, **kw: shared.api.Run(out))
    assert main(["train", "--backend", "torch", "--model", "vae", "--data", "synthetic:20", "--out", str(out)]) == 0
    assert (f"wrote: {out}" in capsys.readouterr().out) is prints


def test_verbose_train_prints_each_epoch_line_once(tmp_path):
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", FACEVAE_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    argv = ["-v", "train", "--data", "synthetic:120", "--image-size", "32", "--channels", "8,16", "--hidden-dims",
            "32", "--epochs", "2", "--out", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-m", "facevae", *argv], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.replace("\r", "\n").splitlines()
    for epoch in (1, 2):  # printed through tqdm; its DEBUG log copy must not print it a second time
        assert sum(f"epoch {epoch}/2  train" in line for line in lines) == 1, proc.stderr[-3000:]
    assert any(line.startswith("DEBUG ") for line in lines)  # -v still shows the other DEBUG records
