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


def _saved(tmp_path):
    checkpoint.save(tmp_path, "last", _ckpt(1.0)[1])
    folder = tmp_path / "checkpoints" / "last"
    return folder, sorted(folder.glob("ckpt.*"))


def test_checksums_cover_every_file(tmp_path):
    folder, files = _saved(tmp_path)
    import json
    assert sorted(json.loads((folder / "checksums.json").read_text())) == [p.name for p in files]
    assert {p.name.split("-")[0] for p in files} == {"ckpt.index", "ckpt.data"}


@pytest.mark.parametrize("with_checksums", [True, False], ids=["checksums", "tf_crc_only"])
def test_damaged_files_are_refused(tmp_path, with_checksums):
    folder, files = _saved(tmp_path)
    if not with_checksums:  # a folder written before checksums.json: TF's own CRCs must catch it
        (folder / "checksums.json").unlink()
    for path in files:
        good = path.read_bytes()
        n = len(good)
        damages = [good[:n // 2], good[:n - 1], b""]
        for offset in (0, n // 2, n - 1):
            flipped = bytearray(good)
            flipped[offset] ^= 0x01
            damages.append(bytes(flipped))
        for damaged in damages:
            path.write_bytes(damaged)
            with pytest.raises(RunError, match="checkpoint is damaged"):
                _read(tmp_path)
        path.write_bytes(good)
    np.testing.assert_array_equal(_read(tmp_path), [1.0, 1.0, 1.0])


def test_damaged_checksum_file_is_refused(tmp_path):
    folder, _ = _saved(tmp_path)
    (folder / "checksums.json").write_text("[1")
    with pytest.raises(RunError, match="damaged"):
        _read(tmp_path)
