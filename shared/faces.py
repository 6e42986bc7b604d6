"""The in-memory face set every layer passes around, and the label vector of conditional models.

Faces a user holds in memory (their own filtering of a data set, or arrays from elsewhere) become a
checked :class:`Faces` through :func:`as_faces`; :func:`write_faces` / :func:`read_faces` store them
as one ``.npz`` file (what a run trained on in-memory faces keeps in its folder).
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
import pandas as pd

from shared.config import LABEL_DIM
from shared.errors import ConfigError, DataError

__all__ = ["Faces", "LABEL_COLUMNS", "AGE_SCALE", "label_vectors", "ETHNICITY_NAMES", "GENDER_NAMES",
           "AGE_BANDS", "age_band", "as_faces", "write_faces", "read_faces"]

log = logging.getLogger(__name__)

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


_DATA_HELP = ("`data` must be a SPEC string, a Faces, or a tuple (images, labels) with images (N, H, W) uint8 "
              "or float in [0, 1] and labels a DataFrame with age, ethnicity and gender columns")


def _images_uint8(images: Any) -> np.ndarray:
    """``images`` as contiguous ``(N, S, S)`` uint8; floats must lie in [0, 1], integers in [0, 255]."""
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]  # (N, H, W, 1), the channels-last layout
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] != arr.shape[2]:
        raise DataError(f"must be a non-empty array of square grayscale images (N, S, S); got shape "
                        f"{arr.shape}", field="images")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind in "iu":
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(f"integer pixels must be in 0-255; got {arr.min()}-{arr.max()}", field="images")
        return np.ascontiguousarray(arr.astype(np.uint8))
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise DataError(f"float pixels must be finite and in [0, 1]; got {np.nanmin(arr):.4g}-"
                            f"{np.nanmax(arr):.4g} (NaN/inf: {int((~np.isfinite(arr)).sum())})", field="images")
        return np.ascontiguousarray(np.round(arr * 255.0).astype(np.uint8))
    raise DataError(f"must hold uint8 or float pixels; got dtype {arr.dtype}", field="images")


def _checked_labels(labels: Any, n: int) -> pd.DataFrame:
    from shared.data.validate import check_labels

    if not isinstance(labels, pd.DataFrame):
        raise ConfigError(f"{_DATA_HELP}. Received: labels of type {type(labels).__name__}")
    missing = [c for c in ("age", "ethnicity", "gender") if c not in labels.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; have {list(labels.columns)}", field="labels")
    if len(labels) != n:
        raise DataError(f"has {len(labels)} rows for {n} images; one row per image is needed", field="labels")
    frame = labels.reset_index(drop=True)
    if "img_name" not in frame.columns:  # names only label figures and reports: make up stable ones
        frame = frame.assign(img_name=[f"face_{i:06d}" for i in range(n)])
    checked, ok, problems = check_labels(frame, "labels")
    if problems:
        raise DataError(f"{len(problems)} row(s) have invalid labels; first: {problems[0]}", field="labels")
    return checked


def as_faces(data: Any, *, image_size: Optional[int] = None) -> Faces:
    """A checked :class:`Faces` from a ``Faces`` or an ``(images, labels)`` pair held in memory.

    Args:
        data: a :class:`Faces`, or ``(images, labels)``: images ``(N, S, S)`` (or ``(N, S, S, 1)``)
            uint8, integers in 0-255 or floats in [0, 1] (rounded to uint8); labels a DataFrame
            with one row per image and integer ``age`` (0-116), ``ethnicity`` (0-4) and ``gender``
            (0/1) columns; ``img_name`` is optional (made up when absent); other columns are dropped.
        image_size: resize (bilinear, as the file loaders do) to this side; ``None`` keeps the size.

    Returns:
        The faces, labels re-indexed from 0.

    Raises:
        ConfigError: ``data`` is neither a Faces nor a pair.
        DataError: bad shape, pixel range or labels (names the field and the first bad row).
    """
    if isinstance(data, Faces):
        images, labels = data.images, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        raise ConfigError(f"{_DATA_HELP}. Received: data of type {type(data).__name__}")
    images = _images_uint8(images)
    labels = _checked_labels(labels, len(images))
    if image_size is not None and images.shape[1] != image_size:
        from shared.data.kaggle import resize_images

        log.info("in-memory faces are %dx%d; resized to %dx%d (bilinear)", images.shape[1], images.shape[2],
                 image_size, image_size)
        images = resize_images(images, image_size)
    return Faces(images, labels)


def write_faces(path: str | Path, faces: Faces) -> Path:
    """Store ``faces`` in one ``.npz`` (images + one array per label column), written atomically."""
    from shared.io import atomic_write_bytes

    arrays: dict[str, np.ndarray] = {"images": np.ascontiguousarray(faces.images, dtype=np.uint8)}
    for c in faces.labels.columns:
        col = faces.labels[c]
        arrays[f"label_{c}"] = (col.to_numpy(dtype=np.int64) if pd.api.types.is_integer_dtype(col)
                                else col.astype(str).to_numpy(dtype=str))
    arrays["meta"] = np.array(json.dumps({"columns": [str(c) for c in faces.labels.columns], "version": 1}))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(Path(path), buf.getvalue())


def read_faces(path: str | Path) -> Faces:
    """The faces of a file written by :func:`write_faces`.

    Raises:
        DataError: the file is missing or is not such a file (names it).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            columns = json.loads(str(z["meta"]))["columns"]
            images = z["images"]
            cols = {c: z[f"label_{c}"] for c in columns}
    except FileNotFoundError:
        raise DataError("no such file (the faces a run was trained on are stored there)", file=path) from None
    except Exception as exc:  # zip, key and JSON errors all mean "not our file"
        raise DataError(f"not a facevae faces file ({type(exc).__name__}: {exc})", file=path) from None
    labels = pd.DataFrame({c: (pd.array(v.astype(object), dtype="str") if v.dtype.kind == "U" else v)
                           for c, v in cols.items()})
    return Faces(images, labels)
