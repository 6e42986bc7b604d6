"""UTKFace image folders: labels from file names, pixels decoded in a thread pool.

Names follow ``[age]_[gender]_[race]_[date&time].jpg[.chip.jpg]``. The face's ``img_name`` is the
part after the labels (``20170110183726390.jpg.chip.jpg``), as in the Kaggle file, so converting a
folder reproduces that layout. Each image is converted to grayscale (Pillow ``L``), centre-cropped
to a square when it is not one, and resized bilinearly — which reproduces the public Kaggle
pixels exactly.
"""
from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from shared.data.validate import LABEL_RANGES, Report, majority
from shared.errors import DataError
from shared.faces import Faces

__all__ = ["NAME_PATTERN", "parse_name", "list_folder", "to_square_gray", "load_folder"]

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^(?P<age>\d+)_(?P<gender>\d+)_(?P<ethnicity>\d+)_(?P<rest>\d[^_]*\.(?:jpe?g|png))"
                          r"(?:\.chip\.jpg)?$", re.IGNORECASE)
_EXPECTED = "[age]_[gender]_[race]_[date&time].jpg[.chip.jpg]"


def parse_name(name: str, folder: Path) -> tuple[int, int, int, str]:
    """``(age, ethnicity, gender, img_name)`` from a UTKFace file name.

    Raises:
        DataError: the name does not follow the pattern or a label is out of range.
    """
    m = NAME_PATTERN.match(name)
    if m is None:
        raise DataError(f"file name does not match {_EXPECTED}", file=folder, row=name, field="img_name")
    values = {k: int(m.group(k)) for k in ("age", "gender", "ethnicity")}
    for key, (lo, hi) in LABEL_RANGES.items():
        if not lo <= values[key] <= hi:
            raise DataError(f"{key} {values[key]} in the file name is out of range; expected {lo}-{hi}",
                            file=folder, row=name, field=key)
    return values["age"], values["ethnicity"], values["gender"], name[m.start("rest"):]


def list_folder(folder: Path) -> list[str]:
    """Sorted entry names of ``folder``."""
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        raise DataError(f"cannot list folder ({exc.strerror})", file=folder) from None


def to_square_gray(image, size: int) -> np.ndarray:
    """A Pillow image -> ``(size, size)`` uint8: grayscale, centre-cropped to a square, bilinear resize."""
    from PIL import Image
    gray = image.convert("L")
    w, h = gray.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        gray = gray.crop((left, top, left + s, top + s))
    return np.asarray(gray.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, tuple[int, int] | None, str | None]:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return to_square_gray(im, size), im.size, None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"


def load_folder(folder: Path, image_size: int, report: Report, names: list[str] | None = None) -> Faces:
    """Faces of a UTKFace folder; malformed names, unreadable files and odd-sized images are skipped.

    Raises:
        DataError: the folder holds no valid face.
    """
    names = list_folder(folder) if names is None else names
    entries: list[tuple[str, tuple[int, int, int, str]]] = []
    for name in names:
        if not (folder / name).is_file():
            report.skip(DataError("not a regular file; expected an image", file=folder, row=name, field="file"))
            continue
        try:
            entries.append((name, parse_name(name, folder)))
        except DataError as exc:
            report.skip(exc)
    workers = min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(tqdm(pool.map(lambda e: _decode(folder / e[0], image_size), entries),
                            total=len(entries), desc="decoding images", unit="img", disable=None, leave=False))
    readable = [i for i, d in enumerate(decoded) if d[2] is None]
    for i, d in enumerate(decoded):
        if d[2] is not None:
            report.skip(DataError(f"not a readable image ({d[2]})", file=folder, row=entries[i][0], field="file"))
    if not readable:
        raise DataError(f"no valid faces: none of {len(names)} entries is a readable image named {_EXPECTED}",
                        file=folder)
    sizes = np.array([decoded[i][1] for i in readable])
    common, count = majority(sizes)
    keep = []
    for i, size in zip(readable, sizes):
        if tuple(size) != tuple(common):
            report.skip(DataError(f"image is {size[0]}x{size[1]}; expected {common[0]}x{common[1]} like the "
                                  f"other {count} images", file=folder, row=entries[i][0], field="size"))
        else:
            keep.append(i)
    if common[0] != common[1]:
        report.notes.append(f"{folder}: {common[0]}x{common[1]} images centre-cropped to squares")
    report.skipped.sort(key=lambda e: str(e["item"]))
    labels = pd.DataFrame([entries[i][1] for i in keep], columns=["age", "ethnicity", "gender", "img_name"])
    labels = labels.astype({"age": np.int64, "ethnicity": np.int64, "gender": np.int64, "img_name": "str"})
    return Faces(np.stack([decoded[i][0] for i in keep]), labels)
