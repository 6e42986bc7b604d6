"""Splits: stratification, seeded reproducibility, duplicate grouping, save/load and mismatch detection."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared.data.splits import Split, duplicate_groups, make_split, strata
from shared.errors import RunError
from shared.faces import Faces


def _faces(n=1000, seed=0, dup_every=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 6, 6), dtype=np.uint8)
    if dup_every:
        for i in range(dup_every, n, dup_every):
            images[i] = images[i - 1]
    labels = pd.DataFrame({"age": rng.integers(0, 90, n), "ethnicity": rng.integers(0, 5, n),
                           "gender": rng.integers(0, 2, n), "img_name": [f"f{i}.jpg" for i in range(n)]})
    return Faces(images, labels)


def test_partition_sizes_and_disjointness():
    split = make_split(_faces(), val_fraction=0.1, test_fraction=0.2, seed=3)
    allidx = np.concatenate([split.train, split.val, split.test])
    assert np.array_equal(np.sort(allidx), np.arange(1000))
    assert abs(len(split.val) - 100) <= 2 and abs(len(split.test) - 200) <= 2
    assert all(np.all(np.diff(a) > 0) for a in (split.train, split.val, split.test))
    assert "train" in split.summary() and "seed 3" in split.summary()


def test_every_stratum_gets_its_share():
    faces = _faces(4000)
    split = make_split(faces, 0.1, 0.1, seed=0)
    s = strata(faces)
    for stratum in np.unique(s):
        members = np.flatnonzero(s == stratum)
        in_test = np.isin(members, split.test).sum()
        in_val = np.isin(members, split.val).sum()
        assert abs(in_test - 0.1 * len(members)) <= 1.5 and abs(in_val - 0.1 * len(members)) <= 1.5


def test_seeded_and_reproducible():
    faces = _faces()
    a, b, c = make_split(faces, seed=1), make_split(faces, seed=1), make_split(faces, seed=2)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.test, c.test)


def test_duplicates_kept_in_one_split_and_counted():
    faces = _faces(600, dup_every=5)  # rows 5, 10, ... copy their predecessor
    groups = duplicate_groups(faces.images)
    assert groups[5] == groups[4] and groups[4] != groups[3] and groups.max() + 1 == 600 - 119
    split = make_split(faces, 0.2, 0.2, seed=0)
    assert split.n_duplicates == 119 and split.n_duplicate_groups == 119
    where = np.zeros(600, dtype=int)
    where[split.val], where[split.test] = 1, 2
    assert all(where[i] == where[i - 1] for i in range(5, 600, 5))
    assert "119 exact-duplicate faces" in split.summary()


def test_identity_only_data_is_stratified_by_identity():
    n = 400
    labels = pd.DataFrame({"age": -1, "ethnicity": -1, "gender": -1, "img_name": [f"s{i}" for i in range(n)],
                           "identity": np.repeat(np.arange(40), 10)}, index=range(n))
    faces = Faces(np.random.default_rng(0).integers(0, 256, (n, 4, 4), dtype=np.uint8), labels)
    split = make_split(faces, 0.1, 0.1)
    per_identity = np.bincount(labels["identity"].to_numpy()[split.test], minlength=40)
    assert per_identity.min() >= 0 and per_identity.max() <= 2 and len(split.test) == 40


def test_save_load_round_trip(tmp_path):
    faces = _faces()
    split = make_split(faces, seed=4)
    split.save(tmp_path / "split.json")
    assert json.loads((tmp_path / "split.json").read_text())["n"] == 1000
    back = Split.load(tmp_path / "split.json", faces)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(back, part), getattr(split, part))
    assert back.to_dict() == split.to_dict() and back.seed == 4 and back.fingerprint == split.fingerprint


class TestMismatch:
    def test_other_size(self, tmp_path):
        make_split(_faces()).save(tmp_path / "split.json")
        with pytest.raises(RunError, match="made for 1000 faces but the data has 999"):
            Split.load(tmp_path / "split.json", _faces().subset(np.arange(999)))

    def test_same_size_other_faces(self, tmp_path):
        make_split(_faces()).save(tmp_path / "split.json")
        with pytest.raises(RunError, match="faces differ from those the split was made for"):
            Split.load(tmp_path / "split.json", _faces(seed=9))

    def test_changed_label(self, tmp_path):
        faces = _faces()
        make_split(faces).save(tmp_path / "split.json")
        labels = faces.labels.copy()
        labels.loc[0, "age"] = labels.loc[0, "age"] + 1
        with pytest.raises(RunError, match="fingerprint"):
            Split.load(tmp_path / "split.json", Faces(faces.images, labels))

    def test_missing_or_malformed_file(self, tmp_path):
        with pytest.raises(RunError, match="no split file"):
            Split.load(tmp_path / "absent.json", _faces())
        (tmp_path / "bad.json").write_text("{not json")
        with pytest.raises(RunError, match="not a valid split file"):
            Split.load(tmp_path / "bad.json", _faces())

    def test_tampered_indices(self, tmp_path):
        faces = _faces()
        d = make_split(faces).to_dict()
        d["test"] = d["test"][:-1]
        (tmp_path / "s.json").write_text(json.dumps(d))
        with pytest.raises(RunError, match="exactly once"):
            Split.load(tmp_path / "s.json", faces)


def test_bad_fractions():
    with pytest.raises(RunError, match="val_fraction"):
        make_split(_faces(10), val_fraction=0.7)
