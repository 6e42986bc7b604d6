"""The in-memory face set every layer passes around, and the label vector of conditional models."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from shared.config import LABEL_DIM

__all__ = ["Faces", "LABEL_COLUMNS", "AGE_SCALE", "label_vectors", "ETHNICITY_NAMES", "GENDER_NAMES",
           "AGE_BANDS", "age_band"]

LABEL_COLUMNS = ("age", "ethnicity", "gender", "img_name")
ETHNICITY_NAMES = ("White", "Black", "Asian", "Indian", "Others")
GENDER_NAMES = ("male", "female")
AGE_SCALE = 100.0  # conditional models see age / 100: 0-116 years -> 0-1.16, "about [0, 1]"
AGE_BANDS = ((0, 9), (10, 19), (20, 39), (40, 59), (60, 200))


class Faces(NamedTuple):
    """Grayscale faces and their labels.

    Attributes:
        images: ``(N, H, W)`` uint8.
        labels: DataFrame with ``age`` (int years), ``ethnicity`` (0-4), ``gender`` (0 male, 1 female)
            and ``img_name`` (str), one row per image, index 0..N-1.
    """

    images: np.ndarray
    labels: pd.DataFrame

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> "Faces":
        """The faces at integer positions ``index``, labels re-indexed from 0."""
        index = np.asarray(index, dtype=np.int64)
        return Faces(self.images[index], self.labels.iloc[index].reset_index(drop=True))

    def floats(self) -> np.ndarray:
        """Images as float32 in [0, 1], shape ``(N, H, W)``."""
        return self.images.astype(np.float32) / 255.0


def label_vectors(labels: pd.DataFrame) -> np.ndarray:
    """Conditioning vectors ``(N, 7)`` float32: gender (0/1), ethnicity one-hot (5), age / AGE_SCALE."""
    n = len(labels)
    out = np.zeros((n, LABEL_DIM), dtype=np.float32)
    out[:, 0] = labels["gender"].to_numpy(dtype=np.float32)
    out[np.arange(n), 1 + labels["ethnicity"].to_numpy(dtype=np.int64)] = 1.0
    out[:, 6] = labels["age"].to_numpy(dtype=np.float32) / AGE_SCALE
    return out


def age_band(age: np.ndarray | pd.Series) -> np.ndarray:
    """Index into :data:`AGE_BANDS` (0-9, 10-19, 20-39, 40-59, 60+) for each age."""
    edges = np.array([b[1] for b in AGE_BANDS[:-1]]) + 1
    return np.searchsorted(edges, np.asarray(age), side="right")
