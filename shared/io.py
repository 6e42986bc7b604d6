"""Atomic file writes and JSON conversion, shared by every module that writes a file.

This module imports nothing from the package, so :mod:`shared.config` and :mod:`shared.runs` can
both use it without importing each other.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["atomic_write_with", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "to_jsonable", "file_mode"]

_umask_lock = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # elsewhere the only way is to set it and put it back; the lock keeps our own threads out of the gap
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file (``0o666`` less the umask)."""
    return 0o666 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every OS/file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_with(path: Path, write: Callable[[BinaryIO], Any], *, durable: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash leaves either the old file or the new one, never a torn file; a killed writer may leave
    a hidden ``.NAME.*.tmp`` file, which :func:`shared.runs.lock_run` removes from run folders.
    The file gets the usual ``0o666 & ~umask`` mode (``mkstemp`` alone would make it ``0600``, so
    a teammate could not read a shared run). ``durable`` syncs the file and the rename to disk;
    a cache, which is rebuilt when an entry does not load, writes without it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), file_mode())
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> Path:
    """Write ``data`` durably and atomically to ``path`` (:func:`atomic_write_with`)."""
    return atomic_write_with(path, lambda fh: fh.write(data))


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
