"""The notebook-style walkthrough in examples/ runs top to bottom (tiny sizes, both backends)."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest

from tests.conftest import REPO

WALKTHROUGH = REPO / "examples" / "walkthrough.py"


def test_the_walkthrough_is_cells_with_markdown():
    text = WALKTHROUGH.read_text(encoding="utf-8")
    assert text.count("# %%") >= 10 and "# %% [markdown]" in text


def test_the_walkthrough_runs(tmp_path):
    pytest.importorskip("tensorflow")
    env = {**os.environ, "FACEVAE_WALKTHROUGH_TINY": "1", "FACEVAE_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(WALKTHROUGH)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dB on TensorFlow (same weights)" in proc.stdout
    runs = next(tmp_path.glob("facevae-walkthrough-*"))
    for name in ("vae", "vae_tf", "cvae"):
        assert (runs / name / "config.json").is_file()
    assert (runs / "vae" / "figures" / "training_curves.png").is_file()
    assert (runs / "inpaint.pdf").read_bytes()[:4] == b"%PDF"
