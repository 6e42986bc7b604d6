"""UTKFace image folders: labels from file names, pixels decoded in a thread pool.

Names follow ``[age]_[gender]_[race]_[date&time].jpg[.chip.jpg]``. The face's ``img_name`` is the
part after the labels (``20170110183726390.jpg.chip.jpg``), as in the Kaggle file, so converting a
folder reproduces that layout. Each image is converted to 8-bit grayscale (see
:func:`to_gray8`), centre-cropped to a square when it is not one, and resized bilinearly — which
reproduces the public Kaggle pixels exactly.

Entries that cannot be faces are reported and skipped, never fatal on their own: a symbolic link
loop, a dangling link, a non-file, a name that is not valid UTF-8 (it could not be stored as an
``img_name`` or printed) and a file that fails to decode.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from shared.data.validate import LABEL_RANGES, Report, majority
from shared.errors import DataError
from shared.faces import Faces

__all__ = ["NAME_PATTERN", "parse_name", "list_folder", "printable_name", "entry_problem", "to_gray8",
           "to_square_gray", "load_folder"]

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
    """Sorted entry names of ``folder`` (undecodable bytes kept as surrogates, as :func:`os.listdir` does)."""
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        raise DataError(f"cannot list folder ({exc.strerror})", file=folder) from None


def printable_name(name: str) -> str:
    """``name`` with bytes that are not UTF-8 shown as ``\\xNN`` (safe to print, log and store)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def entry_problem(path: Path) -> str | None:
    """Why the folder entry ``path`` cannot be an image file, or ``None`` when it is a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop; expected an image file"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"dangling symbolic link (target {os.readlink(path)!r} does not exist); expected an image file"
        return f"cannot be read ({exc.strerror}); expected an image file"
    return None if stat.S_ISREG(mode) else "not a regular file; expected an image"


# Pillow's convert("L") clips wide modes at 255 (a 16-bit face turns white): they are scaled instead.
_SIXTEEN_BIT = 65535.0


def _scaled_gray(values: np.ndarray) -> np.ndarray:
    """``I`` / ``F`` gray values -> uint8 by scaling; the mode does not say the bit depth, so the values do."""
    v = values.astype(np.float64)
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1 and values.dtype.kind == "f":
        v = v * 255.0
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= _SIXTEEN_BIT:
        v = v / 257.0
    else:
        v = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    return np.clip(np.rint(np.nan_to_num(v, nan=0.0)), 0, 255).astype(np.uint8)


def to_gray8(image):
    """Any Pillow image -> an 8-bit grayscale (``L``) Pillow image, by scaling, never clipping.

    ``I;16*`` (16-bit) values are divided by 257. ``I`` (32-bit integer) and ``F`` (float) images
    carry no bit depth, so their values decide: floats within [0, 1] are multiplied by 255, values
    within 0-255 are kept, values within 0-65535 are divided by 257, anything else (negatives, wider
    ranges) is scaled from its min-max range to 0-255. Palette, alpha, 1-bit and colour modes go
    through Pillow's own ``L`` conversion (alpha is dropped).
    """
    from PIL import Image
    if image.mode == "L":
        return image
    if image.mode.startswith("I;16"):
        return Image.fromarray(np.rint(np.asarray(image).astype(np.float64) / 257.0).astype(np.uint8))
    if image.mode in ("I", "F"):
        return Image.fromarray(_scaled_gray(np.asarray(image)))
    try:
        return image.convert("L")
    except ValueError:  # LAB, HSV, PA, ...: no direct route to L
        return image.convert("RGB").convert("L")


def to_square_gray(image, size: int) -> np.ndarray:
    """A Pillow image -> ``(size, size)`` uint8: grayscale, centre-cropped to a square, bilinear resize."""
    from PIL import Image
    gray = to_gray8(image)
    w, h = gray.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        gray = gray.crop((left, top, left + s, top + s))
    return np.asarray(gray.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, tuple[int, int] | None, str | None]:
    from PIL import Image
    try:
        with Image.open(path) as im:
            return to_square_gray(im, size), im.size, None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types; one bad file is skipped
        return None, None, f"{type(exc).__name__}: {exc}"


def load_folder(folder: Path, image_size: int, report: Report, names: list[str] | None = None) -> Faces:
    """Faces of a UTKFace folder; malformed names, unreadable files and odd-sized images are skipped.

    Raises:
        DataError: the folder holds no valid face.
    """
    names = list_folder(folder) if names is None else names
    entries: list[tuple[str, tuple[int, int, int, str]]] = []
    for name in names:
        shown = printable_name(name)
        if shown != name:
            report.skip(DataError("file name is not valid UTF-8; rename the file", file=folder, row=shown,
                                  field="img_name"))
            continue
        problem = entry_problem(folder / name)
        if problem is not None:
            report.skip(DataError(problem, file=folder, row=name, field="file"))
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
    if not names:
        raise DataError(f"no valid faces: empty folder; expected UTKFace images named {_EXPECTED}", file=folder)
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
