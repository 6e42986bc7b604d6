"""Atomic ``tf.train.Checkpoint`` folders: ``checkpoints/last`` and ``checkpoints/best``.

Each checkpoint is a folder holding one ``tf.train.Checkpoint`` (prefix ``ckpt``). It is written
into a hidden temporary folder beside its final name and then renamed into place, so a crash
leaves the previous checkpoint (or, between the two renames, its ``.NAME.old-*`` copy, which
:func:`restore` falls back to) and never a torn one.

Besides TF's own CRCs, ``checksums.json`` holds the SHA-256 of every file of the checkpoint, so any
damaged byte is refused with :class:`RunError` before TF reads the files (folders written before
this file existed are still restored, relying on TF's CRCs).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path

import tensorflow as tf

from shared.errors import RunError
from shared.runs import checkpoints_dir

__all__ = ["CHECKPOINT_NAMES", "save", "restore", "checkpoint_dir", "has_checkpoint", "named_variables",
           "model_checkpoint"]

CHECKPOINT_NAMES = ("last", "best")
_PREFIX = "ckpt"
_CHECKSUMS = "checksums.json"


def named_variables(variables) -> tf.Module:
    """A trackable holding ``variables`` under their Keras paths (``encoder_00_conv/kernel`` ...).

    Keras 3 keeps sub-layers in its own list wrappers, which ``tf.train.Checkpoint`` does not
    traverse; naming every variable explicitly saves all of them (BatchNorm statistics and flow
    weights included) under keys that do not depend on Python attribute layout.

    Raises:
        ValueError: two variables share a path.
    """
    root = tf.Module()
    for v in variables:
        key = v.path.replace("/", "__")
        if key in vars(root):
            raise ValueError(f"two variables share the path {v.path!r}; layer names must be unique")
        setattr(root, key, v)
    return root


def model_checkpoint(model, **extra) -> tf.train.Checkpoint:
    """``tf.train.Checkpoint`` of every variable of ``model`` (under ``model``) plus ``extra`` trackables."""
    return tf.train.Checkpoint(model=named_variables(model.variables), **extra)


def checkpoint_dir(run_dir: Path, which: str) -> Path:
    """``run_dir/checkpoints/{which}``; ``which`` is ``last`` or ``best``."""
    if which not in CHECKPOINT_NAMES:
        raise ValueError(f"`which` must be one of {set(CHECKPOINT_NAMES)}. Received: which={which!r}")
    return Path(run_dir) / "checkpoints" / which


def _readable(folder: Path) -> Path | None:
    """The folder itself when complete, else a leftover ``.NAME.old-*`` copy from an interrupted swap."""
    if (folder / "checkpoint").is_file():
        return folder
    olds = sorted(folder.parent.glob(f".{folder.name}.old-*"), key=lambda p: p.stat().st_mtime)
    return next((p for p in reversed(olds) if (p / "checkpoint").is_file()), None)


def saved_variable_names(run_dir: Path, which: str) -> set[str]:
    """Names of the variables stored in ``checkpoints/{which}`` (empty when there is no readable one)."""
    folder = _readable(checkpoint_dir(run_dir, which))
    if folder is None:
        return set()
    try:
        return set(tf.train.load_checkpoint(str(folder / _PREFIX)).get_variable_to_shape_map())
    except Exception:  # noqa: BLE001 - a damaged file: restore() names the damage
        return set()


def has_checkpoint(run_dir: Path, which: str) -> bool:
    """True when ``checkpoints/{which}`` (or its interrupted-swap copy) can be restored."""
    return _readable(checkpoint_dir(run_dir, which)) is not None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_checksums(folder: Path) -> None:
    sums = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.name.startswith(_PREFIX + ".")}
    (folder / _CHECKSUMS).write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")


def _damaged(folder: Path, what: str) -> RunError:
    return RunError(f"{folder}: checkpoint is damaged ({what}); it cannot be trusted: restore it from a "
                    f"copy, or train the run again")


def _verify(folder: Path) -> None:
    """Check every file listed in ``checksums.json`` (absent in older folders: TF's CRCs only)."""
    listing = folder / _CHECKSUMS
    if not listing.is_file():
        return
    try:
        sums = json.loads(listing.read_text(encoding="utf-8"))
        expected = {str(k): str(v) for k, v in sums.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise _damaged(folder, f"unreadable {_CHECKSUMS}: {exc}") from None
    if not any(name.startswith(_PREFIX + ".index") for name in expected):
        raise _damaged(folder, f"{_CHECKSUMS} lists no {_PREFIX}.index")
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise _damaged(folder, f"{name} is missing")
        if _sha256(path) != digest:
            raise _damaged(folder, f"checksum mismatch in {name}")


@contextlib.contextmanager
def _quiet_absl():
    """Hide TF's per-write INFO lines ('Sharding callback duration') for the duration of one write."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def save(run_dir: Path, which: str, ckpt: tf.train.Checkpoint) -> Path:
    """Write ``ckpt`` to ``checkpoints/{which}`` atomically (temporary folder + rename).

    Returns:
        The checkpoint folder.
    """
    final = checkpoint_dir(run_dir, which)
    checkpoints_dir(run_dir)
    tag = uuid.uuid4().hex[:8]
    tmp = final.parent / f".{which}.tmp-{tag}"
    try:
        with _quiet_absl():
            ckpt.write(str(tmp / _PREFIX))
        _write_checksums(tmp)
        # ckpt.write leaves no index file; this marker (written last) says the folder is complete
        (tmp / "checkpoint").write_text(f'model_checkpoint_path: "{_PREFIX}"\n')
        old = final.parent / f".{which}.old-{tag}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in final.parent.glob(f".{which}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def restore(run_dir: Path, which: str, ckpt: tf.train.Checkpoint, *, partial: bool = False) -> Path:
    """Restore ``ckpt`` from ``checkpoints/{which}``.

    Args:
        partial: allow objects in the file that ``ckpt`` does not hold (e.g. the optimizer when
            loading a model for inference).

    Raises:
        RunError: the checkpoint is missing, damaged (checksum, truncation, unreadable files) or does
            not fit ``ckpt``.
    """
    folder = _readable(checkpoint_dir(run_dir, which))
    if folder is None:
        raise RunError(f"{run_dir}: no '{which}' checkpoint in checkpoints/ (was the run trained?)")
    _verify(folder)
    prefix = str(folder / _PREFIX)
    try:
        # reading every tensor once makes TF check its CRCs before anything is assigned
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as exc:  # noqa: BLE001 - DataLossError, OutOfRangeError, protobuf DecodeError, ...
        raise _damaged(folder, _first_line(exc)) from None
    try:
        status = ckpt.read(prefix)
        if partial:
            status.expect_partial().assert_existing_objects_matched()
        else:
            status.assert_consumed()
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as exc:
        raise _damaged(folder, _first_line(exc)) from None
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise RunError(f"{folder}: checkpoint does not fit the model: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - anything else while reading is a damaged file
        raise _damaged(folder, _first_line(exc)) from None
    return folder


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
