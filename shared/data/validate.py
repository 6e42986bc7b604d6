"""Label checks and the record of skipped items shared by every loader.

Every problem is a :class:`~shared.errors.DataError` (file, row or file name, field, what was
expected); fatal ones are raised, per-item ones are collected in a :class:`Report`, logged as one
warning each and listed by :func:`shared.data.inspect`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shared.errors import DataError

__all__ = ["LABEL_RANGES", "UNKNOWN", "Report", "check_labels", "majority"]

log = logging.getLogger(__name__)

LABEL_RANGES = {"age": (0, 116), "ethnicity": (0, 4), "gender": (0, 1)}
UNKNOWN = -1  # label value of data sets that do not carry the label (ORL: identity only)
_MAX_LOGGED = 20  # warnings logged one by one; the rest are summarised in one line


@dataclass
class Report:
    """What a loader skipped and noticed, beside the faces it returns.

    Attributes:
        source: kind of data (``kaggle-csv``, ``kaggle-parquet``, ``utkface-folder``, ``orl``, ``synthetic``).
        path: the file or folder read (``None`` for synthetic faces).
        skipped: one entry per skipped row or file: ``item`` (row or file name), ``field``, ``message``.
        notes: facts worth telling the user (resizing, sentinel labels, …).
    """

    source: str
    path: str | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, error: DataError) -> None:
        """Record one skipped item (its DataError names file, row and field)."""
        self.skipped.append({"item": error.row, "field": error.field, "message": str(error)})

    def log(self) -> None:
        """One warning per skipped item (the first few), then a summary line."""
        for entry in self.skipped[:_MAX_LOGGED]:
            log.warning("skipped %s", entry["message"])
        if len(self.skipped) > _MAX_LOGGED:
            log.warning("skipped %d more items of %s (see `facevae data inspect`)",
                        len(self.skipped) - _MAX_LOGGED, self.path)
        for note in self.notes:
            log.info("%s", note)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "skipped": list(self.skipped), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        return cls(d["source"], d.get("path"), list(d.get("skipped", [])), list(d.get("notes", [])))


def check_labels(df: pd.DataFrame, file: object, row_names: list | None = None) -> tuple[pd.DataFrame, np.ndarray, list[DataError]]:
    """Validate the label columns of ``df`` without a per-row Python loop on the happy path.

    Args:
        df: columns ``age``, ``ethnicity``, ``gender`` (any dtype) and ``img_name``.
        file: the file named in messages.
        row_names: what to call each row in messages (default: its 0-based position).

    Returns:
        ``(labels, ok, problems)``: labels with int64 label columns and str ``img_name`` (rows that
        failed hold 0), a boolean mask of valid rows and one DataError per problem (first per row).
    """
    n = len(df)
    ok = np.ones(n, dtype=bool)
    problems: dict[int, DataError] = {}
    out: dict[str, Any] = {}

    def where(i: int) -> object:
        return int(i) if row_names is None else row_names[i]

    for col, (lo, hi) in LABEL_RANGES.items():
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        missing = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
        bad_type = ~missing & (np.isnan(num) | (num != np.round(num)))
        bad_range = ~missing & ~bad_type & ((num < lo) | (num > hi))
        for mask, what in ((missing, "missing value"), (bad_type, "not an integer"), (bad_range, "out of range")):
            for i in np.flatnonzero(mask & ok):
                shown = "" if what == "missing value" else f" {raw.iloc[i]!r}"
                problems[int(i)] = DataError(f"{what}{shown}; expected an integer in {lo}-{hi}",
                                             file=file, row=where(i), field=col)
            ok &= ~mask
        out[col] = np.where(ok | ~np.isnan(num), np.nan_to_num(num), 0).astype(np.int64)
    names = df["img_name"]
    missing = names.isna().to_numpy() | (names.astype(str).str.strip() == "").to_numpy()
    for i in np.flatnonzero(missing & ok):
        problems[int(i)] = DataError("missing value; expected a file name", file=file, row=where(i), field="img_name")
    ok &= ~missing
    out["img_name"] = names.astype(str).to_numpy(dtype=object)
    labels = pd.DataFrame({"age": out["age"], "ethnicity": out["ethnicity"], "gender": out["gender"],
                           "img_name": pd.array(out["img_name"], dtype="str")})
    return labels, ok, [problems[i] for i in sorted(problems)]


def majority(values: np.ndarray) -> tuple[Any, int]:
    """The most frequent value of ``values`` (ties: the smallest) and how often it occurs."""
    uniq, counts = np.unique(values, return_counts=True, axis=0)
    k = int(np.argmax(counts))
    return uniq[k], int(counts[k])
