"""The README pastes as written: its Python cells run (on tiny synthetic data) and its commands parse.

The Python cells run in order in one namespace, as a notebook would, in a temporary folder. Sizes
are shrunk by a fixed list of substitutions (epochs, face counts, the real CSV's path) so the cells
run in seconds; the substitutions never change which functions are called or with which options.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
REAL_CSV = "../shared/data/age_gender_part1.csv.gz"
# (pattern, replacement): applied to every Python cell before it runs
SHRINK = [
    (r"epochs=\d+", "epochs=1"),
    (r"synthetic:\d+", "synthetic:240"),
    (r"\biwae_k=\d+", "iwae_k=2"),
    (r"\bsteps=\d+", "steps=3"),
    (r"\biterations=\d+", "iterations=2"),
    (r"\bn=\d{3,}", "n=16"),
]


def _blocks(lang: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _commands() -> list[str]:
    """Every shell command line of the README's bash blocks (continuations joined, comments dropped)."""
    lines: list[str] = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_the_readme_has_python_cells_and_commands():
    assert len(_blocks("python")) >= 3
    assert any(c.startswith(("facevae ", ".venv/bin/facevae ")) for c in _commands())


def _facevae_argv(command: str) -> list[str] | None:
    """The CLI arguments of a ``facevae`` command line, also behind env assignments, ``python -m`` or ``torchrun``."""
    parts = shlex.split(command)
    while parts and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", parts[0]):  # TF_CONFIG='...' facevae ...
        parts = parts[1:]
    if not parts:
        return None
    if parts[0].endswith("facevae"):
        return parts[1:]
    if "-m" in parts[:-1] and parts[parts.index("-m") + 1] in ("facevae", "facevae_tf"):
        return parts[parts.index("-m") + 2:]  # python -m facevae_tf ..., torchrun ... -m facevae ...
    return None


@pytest.mark.parametrize("command", [c for c in _commands() if _facevae_argv(c) is not None])
def test_every_facevae_command_parses(command):
    """Flags and values are what the CLI accepts (the command is parsed, not run)."""
    from shared.cli import build_parser

    argv = _facevae_argv(command)
    assert "|" not in command.replace("||", ""), f"a choice list is not a command: {command}"
    assert "\\|" not in command
    build_parser().parse_args(argv)  # argparse exits (SystemExit) on a flag or value it refuses


def test_benchmark_commands_name_the_venv_python_and_exist():
    for command in _commands():
        parts = shlex.split(command)
        scripts = [p for p in parts if p.startswith("benchmarks/") and p.endswith(".py")]
        if scripts:
            assert parts[0] == ".venv/bin/python", f"use .venv/bin/python (works without activating): {command}"
            assert (REPO / scripts[0]).is_file(), command


def test_python_cells_run_in_order(tmp_path, monkeypatch):
    from shared.data import convert

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tiny_csv = convert("synthetic:240", tmp_path / "faces.csv.gz", image_size=48)
    namespace: dict = {"__name__": "__readme__"}
    for i, cell in enumerate(_blocks("python")):
        code = cell.replace(REAL_CSV, str(tiny_csv))
        for pattern, repl in SHRINK:
            code = re.sub(pattern, repl, code)
        try:
            exec(compile(code, f"README python cell {i + 1}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - report which cell failed and why
            pytest.fail(f"README python cell {i + 1} failed: {type(exc).__name__}: {exc}\n---\n{cell}")
