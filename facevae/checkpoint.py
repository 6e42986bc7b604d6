"""Safe, atomic checkpoints: ``torch.save`` into memory, atomic rename, ``weights_only=True`` loading.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(weights_only=True)`` can read it and loading never executes code.
"""
from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from shared.errors import RunError
from shared.runs import CHECKPOINTS, atomic_write_bytes

__all__ = ["checkpoint_path", "save_checkpoint", "load_checkpoint", "CHECKPOINT_NAMES"]

log = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("last", "best")


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """``run_dir/checkpoints/{which}.pt``.

    Raises:
        RunError: ``which`` is not ``last`` or ``best``.
    """
    if which not in CHECKPOINT_NAMES:
        raise RunError(f"`which` must be one of {set(CHECKPOINT_NAMES)}. Received: which={which!r}")
    return Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Serialise ``state`` in memory and write it atomically (temp file + rename) to ``path``."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: arbitrary pickled objects are refused.

    Raises:
        RunError: the file is missing, or holds something other than plain tensors and containers
            (e.g. a pickle whose ``__reduce__`` would run code).
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise RunError(f"{path}: refused to load checkpoint (not a plain weights file): "
                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise RunError(f"{path}: checkpoint must hold a dict, found {type(state).__name__}")
    return state
