"""Seeded, stratified train/val/test splits that keep exact-duplicate faces together.

Strata are gender × ethnicity × age band (:func:`shared.faces.age_band`); data sets with an
``identity`` column and unknown labels (ORL) are stratified on identity. Faces with identical
pixels form one group that goes to a single split, so a test face never has a copy in training.

Assignment: groups are ordered by stratum and, inside a stratum, by a seeded random key; walking
that order, a group joins the held-out split whose running count lags its target share
(``fraction × faces seen so far``) by at least half the group, else train. Every stratum thus gets
its share of val and test up to one group, and the totals match the fractions.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import RunError
from shared.faces import Faces, age_band
from shared.runs import atomic_write_json

__all__ = ["Split", "make_split", "duplicate_groups", "strata", "fingerprint"]

_VERSION = 1


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """Group id per face; faces with identical pixels share an id (ids in order of first appearance)."""
    rows = np.ascontiguousarray(images.reshape(len(images), -1))
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # renumber groups by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.ravel()].astype(np.int64)


def strata(faces: Faces) -> np.ndarray:
    """Stratum id per face: gender × ethnicity × age band (identity for identity-only data)."""
    lab = faces.labels
    gender, eth, age = (lab[c].to_numpy(dtype=np.int64) for c in ("gender", "ethnicity", "age"))
    if "identity" in lab.columns and (gender < 0).all():
        return lab["identity"].to_numpy(dtype=np.int64)
    return (np.clip(gender, -1, 1) + 1) * 100 + (np.clip(eth, -1, 4) + 1) * 10 + age_band(np.maximum(age, 0))


def fingerprint(faces: Faces) -> str:
    """BLAKE2b digest of the pixels and the age/ethnicity/gender labels (ties a split to its faces)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(faces.images).tobytes())
    for c in ("age", "ethnicity", "gender"):
        h.update(faces.labels[c].to_numpy(dtype=np.int64).tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Split:
    """Integer index arrays of one split and what it was made from.

    Attributes:
        train, val, test: sorted int64 positions into the faces.
        n: number of faces split.
        n_duplicates: faces that exactly repeat an earlier face (kept in their first copy's split).
        n_duplicate_groups: distinct faces that occur more than once.
        seed, val_fraction, test_fraction: how the split was made.
        fingerprint: :func:`fingerprint` of the faces.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    n: int
    n_duplicates: int
    n_duplicate_groups: int
    seed: int
    val_fraction: float
    test_fraction: float
    fingerprint: str

    def summary(self) -> str:
        """One line: sizes, duplicates and seed."""
        return (f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)} faces, "
                f"stratified on gender x ethnicity x age band, seed {self.seed}; "
                f"{self.n_duplicates} exact-duplicate faces in {self.n_duplicate_groups} groups kept in one split")

    def to_dict(self) -> dict[str, Any]:
        return {"version": _VERSION, "n": self.n, "fingerprint": self.fingerprint, "seed": self.seed,
                "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "n_duplicates": self.n_duplicates, "n_duplicate_groups": self.n_duplicate_groups,
                "train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON, atomically."""
        return atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path, faces: Faces) -> "Split":
        """Read a split saved by :meth:`save` and check it belongs to ``faces``.

        Raises:
            RunError: the file is missing or malformed, or was made for other faces.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            parts = {k: np.asarray(d[k], dtype=np.int64) for k in ("train", "val", "test")}
            split = cls(**parts, n=int(d["n"]), n_duplicates=int(d["n_duplicates"]),
                        n_duplicate_groups=int(d.get("n_duplicate_groups", 0)), seed=int(d["seed"]),
                        val_fraction=float(d["val_fraction"]), test_fraction=float(d["test_fraction"]),
                        fingerprint=str(d["fingerprint"]))
        except FileNotFoundError:
            raise RunError(f"{path}: no split file") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{path}: not a valid split file ({type(exc).__name__}: {exc})") from None
        if split.n != len(faces):
            raise RunError(f"{path}: the split was made for {split.n} faces but the data has {len(faces)}; "
                           "load the same data (SPEC and image size) the run was trained on")
        allidx = np.concatenate([split.train, split.val, split.test])
        if len(allidx) != split.n or len(np.unique(allidx)) != split.n or (allidx < 0).any() or (allidx >= split.n).any():
            raise RunError(f"{path}: train/val/test indices do not cover 0..{split.n - 1} exactly once")
        got = fingerprint(faces)
        if got != split.fingerprint:
            raise RunError(f"{path}: the faces differ from those the split was made for (fingerprint "
                           f"{got} != {split.fingerprint}); load the same data the run was trained on")
        return split


def make_split(faces: Faces, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> Split:
    """A seeded split stratified on gender × ethnicity × age band with duplicate faces grouped.

    Args:
        faces: the faces to split.
        val_fraction, test_fraction: shares held out (each in [0, 0.5]).
        seed: seeds the order inside each stratum.

    Raises:
        RunError: fractions out of range.
    """
    if not (0 <= val_fraction <= 0.5 and 0 <= test_fraction <= 0.5):
        raise RunError(f"val_fraction and test_fraction must be in [0, 0.5]. Received: "
                       f"val_fraction={val_fraction}, test_fraction={test_fraction}")
    n = len(faces)
    groups = duplicate_groups(faces.images)
    n_groups = int(groups.max()) + 1 if n else 0
    sizes = np.bincount(groups, minlength=n_groups)
    first = np.full(n_groups, n, dtype=np.int64)
    np.minimum.at(first, groups, np.arange(n))
    group_stratum = strata(faces)[first] if n else np.zeros(0, np.int64)
    key = np.random.default_rng(seed).random(n_groups)
    order = np.lexsort((key, group_stratum))
    assign = np.zeros(n_groups, dtype=np.int8)  # 0 train, 1 val, 2 test
    seen = held_val = held_test = 0
    for g in order:  # one step per distinct face; cheap next to loading
        size = int(sizes[g])
        seen += size
        lag_val, lag_test = val_fraction * seen - held_val, test_fraction * seen - held_test
        if max(lag_val, lag_test) >= size / 2:
            if lag_test >= lag_val:
                assign[g], held_test = 2, held_test + size
            else:
                assign[g], held_val = 1, held_val + size
    per_face = assign[groups]
    return Split(train=np.flatnonzero(per_face == 0), val=np.flatnonzero(per_face == 1),
                 test=np.flatnonzero(per_face == 2), n=n, n_duplicates=int((sizes - 1).sum()),
                 n_duplicate_groups=int((sizes > 1).sum()), seed=seed, val_fraction=val_fraction,
                 test_fraction=test_fraction, fingerprint=fingerprint(faces))
