"""benchmarks/gpu_checks.sh, the prepared GPU run of issue 12: every step's plumbing, tiny, on the CPU.

The script is meant for a lent GPU machine, where a broken step would waste minutes of a 15-minute
loan; here each step runs on a few synthetic faces (the compile step is left out: a minute on 2
cores) and must succeed, report its line, and leave its JSON in OUT.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[2]


def test_every_step_runs_and_reports(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECKS_DEVICE": "cpu", "GPU_CHECKS_TINY": "1", "PY": sys.executable,
           "GPU_CHECKS_SKIP": "seed_bf16_compile", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_checks.sh"), "synthetic:300", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, proc.stderr
    lines = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+rc=(\d+)", summary, flags=re.M)}
    assert lines == {"seed_bf16": 0, "precision": 0, "batched_sweep": 0}, (out / "log.txt").read_text()[-3000:]
    assert "seed_bf16_compile skipped" in summary
    seed = json.loads((out / "seed_workload_bf16.json").read_text())
    assert seed["complete"] and seed["device"].startswith("cpu") and len(seed["models"]) == 2
    rows = json.loads((out / "precision.json").read_text())["rows"]
    assert sorted(r["precision"] for r in rows) == ["32", "bf16"]
    assert (out / "batched_sweep.json").is_file()
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back
