"""Run folders: atomic writes, config/split/metrics files and their fixed names.

Layout of one run: ``config.json``, ``split.json``, ``metrics.jsonl`` (one JSON object per epoch),
``checkpoints/`` (``last`` and ``best``), ``figures/*.png``, ``eval.json``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from shared.config import RunConfig
from shared.errors import RunError

__all__ = ["CONFIG", "SPLIT", "METRICS", "EVAL", "CHECKPOINTS", "FIGURES", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "append_metrics", "read_metrics", "truncate_metrics",
           "load_run_config", "figures_dir", "checkpoints_dir", "to_jsonable"]

CONFIG, SPLIT, METRICS, EVAL = "config.json", "split.json", "metrics.jsonl", "eval.json"
CHECKPOINTS, FIGURES = "checkpoints", "figures"


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain JSON types; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``metrics.jsonl`` (flushed, one line)."""
    path = Path(run_dir) / METRICS
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(to_jsonable(record), sort_keys=True) + "\n")
        fh.flush()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` (empty list when absent)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, keep_epochs: int) -> None:
    """Keep only records with ``epoch < keep_epochs`` (used on resume), rewritten atomically."""
    records = [r for r in read_metrics(run_dir) if r.get("epoch", 0) < keep_epochs]
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The ``RunConfig`` of a run folder; :class:`RunError` when the folder is not a run."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"{run_dir}: not a run folder (no {CONFIG})")
    return RunConfig.load(run_dir / CONFIG)


def figures_dir(run_dir: Path) -> Path:
    path = Path(run_dir) / FIGURES
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoints_dir(run_dir: Path) -> Path:
    path = Path(run_dir) / CHECKPOINTS
    path.mkdir(parents=True, exist_ok=True)
    return path

