"""`shared` and the CLI's data commands never load torch or tensorflow."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

_SCRIPT = """
import json, sys, io, contextlib
import shared, shared.data, shared.data.splits, shared.api, shared.cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = shared.cli.main(["data", "inspect", "synthetic:50"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "keras", "tf_keras", "jax"))
print(json.dumps({"code": code, "heavy": heavy, "n": json.loads(out.getvalue())["n"]}))
"""


def test_shared_and_data_inspect_load_no_framework(tmp_path):
    env = {**os.environ, "FACEVAE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "heavy": [], "n": 50}
