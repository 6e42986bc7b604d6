"""Atomic ``tf.train.Checkpoint`` folders: ``checkpoints/last`` and ``checkpoints/best``.

Each checkpoint is a folder holding one ``tf.train.Checkpoint`` (prefix ``ckpt``). It is written
into a hidden temporary folder beside its final name and then renamed into place, so a crash
leaves the previous checkpoint (or, between the two renames, its ``.NAME.old-*`` copy, which
:func:`restore` falls back to) and never a torn one.
"""
from __future__ import annotations

import contextlib
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


def has_checkpoint(run_dir: Path, which: str) -> bool:
    """True when ``checkpoints/{which}`` (or its interrupted-swap copy) can be restored."""
    return _readable(checkpoint_dir(run_dir, which)) is not None


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
        # ckpt.write leaves no index file; this marker says the folder is complete
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
        RunError: the checkpoint is missing or does not fit ``ckpt``.
    """
    folder = _readable(checkpoint_dir(run_dir, which))
    if folder is None:
        raise RunError(f"{run_dir}: no '{which}' checkpoint in checkpoints/ (was the run trained?)")
    try:
        status = ckpt.read(str(folder / _PREFIX))
        if partial:
            status.expect_partial().assert_existing_objects_matched()
        else:
            status.assert_consumed()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise RunError(f"{folder}: checkpoint does not fit the model: {str(exc).splitlines()[0]}") from None
    return folder
