"""Safe, checksummed, atomic checkpoints: ``weights_only=True`` loading, SHA-256 over every byte.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(weights_only=True)`` can read it and loading never executes code.

File format ``facevae-checkpoint/1``: the line ``FACEVAE-CHECKPOINT/1``, a line with the hex
SHA-256 of the payload, then the payload (the bytes ``torch.save(state)`` writes). Every byte is
covered: a damaged magic line is not a checkpoint, a damaged digest or payload fails the check,
so a flipped bit is refused instead of loading other numbers. The file is written atomically
(temporary file + rename), so a crash leaves the previous checkpoint.
"""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import torch

from shared.errors import RunError
from shared.io import atomic_write_bytes
from shared.runs import CHECKPOINTS

__all__ = ["checkpoint_path", "save_checkpoint", "encode_checkpoint", "write_checkpoint", "load_checkpoint", "has_checkpoint", "CHECKPOINT_NAMES", "FORMAT"]

log = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("last", "best")
FORMAT = "facevae-checkpoint/1"
_MAGIC = b"FACEVAE-CHECKPOINT/1\n"
_DIGEST_LEN = 64 + 1  # hex SHA-256 and its newline
_ZIP_MAGIC = b"PK\x03\x04"  # what plain torch.save files (written before checksums) start with


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """``run_dir/checkpoints/{which}.pt``.

    Raises:
        RunError: ``which`` is not ``last`` or ``best``.
    """
    if which not in CHECKPOINT_NAMES:
        raise RunError(f"`which` must be one of {set(CHECKPOINT_NAMES)}. Received: which={which!r}")
    return Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def has_checkpoint(run_dir: Path, which: str) -> bool:
    """True when ``checkpoints/{which}.pt`` exists (whether it is intact is checked when loading)."""
    return checkpoint_path(run_dir, which).is_file()


def encode_checkpoint(state: dict[str, Any]) -> memoryview:
    """The bytes of a checkpoint file holding ``state``, built in one buffer.

    The header and a digest placeholder go first and the digest is patched in place, so a large
    state (the ``seed`` VAE's is about 1 GB with its Adam moments) is never copied again.
    """
    buf = io.BytesIO()
    buf.write(_MAGIC + b"0" * (_DIGEST_LEN - 1) + b"\n")
    torch.save(state, buf)
    view = buf.getbuffer()
    start = len(_MAGIC)
    view[start:start + _DIGEST_LEN - 1] = hashlib.sha256(view[start + _DIGEST_LEN:]).hexdigest().encode("ascii")
    return view


def write_checkpoint(path: Path, data: bytes | memoryview) -> Path:
    """Write the bytes of :func:`encode_checkpoint` atomically to ``path``."""
    return atomic_write_bytes(Path(path), data)


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Serialise ``state``, prefix its SHA-256 and write it atomically to ``path``."""
    return write_checkpoint(path, encode_checkpoint(state))


def _damaged(path: Path, what: str) -> RunError:
    return RunError(f"{path}: checkpoint is damaged ({what}); it cannot be trusted: restore it from a "
                    f"copy, or train the run again")


def _payload(path: Path, data: bytes) -> bytes:
    """The verified payload of a ``facevae-checkpoint/1`` file; a legacy plain torch file as is."""
    if data.startswith(_MAGIC):
        digest, payload = data[len(_MAGIC):len(_MAGIC) + _DIGEST_LEN], data[len(_MAGIC) + _DIGEST_LEN:]
        if hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" != digest:
            raise _damaged(path, "checksum mismatch")
        return payload
    if data.startswith(_ZIP_MAGIC):
        # written before checksums existed: still loadable (weights_only), but damage cannot be detected
        log.warning("%s: checkpoint has no checksum (older format); loading it unverified", path)
        return data
    raise _damaged(path, "not a facevae checkpoint header" if data else "empty file")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint with ``weights_only=True``: arbitrary pickled objects are refused.

    Files of the older format (a plain ``torch.save`` zip, no checksum) are still loaded, with a
    warning, since they cannot be verified; anything else without the ``facevae-checkpoint/1``
    header is refused.

    Raises:
        RunError: the file is missing, damaged (checksum mismatch, truncated, unreadable), or holds
            something other than plain tensors and containers (e.g. a pickle whose ``__reduce__``
            would run code).
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"{path}: checkpoint cannot be read ({exc.strerror or exc})") from None
    payload = _payload(path, data)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the unpickler means "do not use this file"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunError(f"{path}: refused to load checkpoint (not a plain weights file, or damaged): {first}") from None
    if not isinstance(state, dict):
        raise RunError(f"{path}: checkpoint must hold a dict, found {type(state).__name__}")
    return state
