"""Atomic TF checkpoints: a failed write keeps the previous checkpoint, an interrupted swap is recovered."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from facevae_tf import checkpoint  # noqa: E402
from shared.errors import RunError  # noqa: E402


def _ckpt(value: float):
    v = tf.Variable(np.full(3, value, np.float32))
    return v, tf.train.Checkpoint(v=v)


def _read(run) -> np.ndarray:
    v, ck = _ckpt(0.0)
    checkpoint.restore(run, "last", ck)
    return v.numpy()


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    _, ck = _ckpt(1.0)
    checkpoint.save(tmp_path, "last", ck)
    _, ck2 = _ckpt(2.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck2, "write", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, "last", ck2)
    np.testing.assert_array_equal(_read(tmp_path), [1.0, 1.0, 1.0])
    assert not list((tmp_path / "checkpoints").glob(".*")), "temporary folder left behind"


def test_overwrite_and_interrupted_swap(tmp_path):
    for value in (1.0, 2.0):
        checkpoint.save(tmp_path, "last", _ckpt(value)[1])
    np.testing.assert_array_equal(_read(tmp_path), [2.0, 2.0, 2.0])
    # a crash between the two renames leaves only the hidden old copy: it is still restorable
    (tmp_path / "checkpoints" / "last").rename(tmp_path / "checkpoints" / ".last.old-deadbeef")
    assert checkpoint.has_checkpoint(tmp_path, "last")
    np.testing.assert_array_equal(_read(tmp_path), [2.0, 2.0, 2.0])


def test_missing_or_mismatched_checkpoint(tmp_path):
    with pytest.raises(RunError, match="no 'best' checkpoint"):
        checkpoint.restore(tmp_path, "best", _ckpt(0.0)[1])
    checkpoint.save(tmp_path, "last", _ckpt(1.0)[1])
    with pytest.raises(RunError, match="does not fit"):
        checkpoint.restore(tmp_path, "last", tf.train.Checkpoint(w=tf.Variable(np.zeros((2, 2), np.float32))))
