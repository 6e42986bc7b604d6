"""The Kaggle layout (``age,ethnicity,gender,img_name,pixels``) in ``.csv``, ``.csv.gz`` and ``.parquet``.

Pixels are parsed without a Python loop per row: the values of every row are counted in one pass
over Arrow's byte buffer (a value starts wherever a non-whitespace byte follows whitespace, so tabs,
runs of spaces and leading or trailing whitespace all separate values), and each chunk of rows with
the usual count is joined and parsed by one ``np.fromstring`` call (which releases the GIL, so
chunks run in a few threads), then range-checked as an array. Only rows with another count, or the
rows of a chunk whose text does not parse, are looked at one by one, to name the exact problem.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.data.validate import Report, check_labels, majority
from shared.errors import DataError
from shared.faces import Faces

__all__ = ["COLUMNS", "read_table", "parse_pixels", "load_table", "format_pixels", "write_table", "resize_images"]

log = logging.getLogger(__name__)

COLUMNS = ("age", "ethnicity", "gender", "img_name", "pixels")
_ROWS_PER_CHUNK = 2048
_SNIFF_BYTES = 1 << 16  # a NUL byte here marks a binary file, not CSV text


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in (".csv.gz", ".csv", ".parquet"):
        if name.endswith(ext):
            return ext
    raise DataError("unsupported file type; expected .csv, .csv.gz or .parquet", file=path)


def read_table(path: Path) -> pa.Table:
    """Read a Kaggle-layout table with every column present and ``pixels`` as strings.

    Raises:
        DataError: unreadable, empty, corrupt or truncated file, or missing columns.
    """
    ext = _suffix(path)
    if not path.is_file():
        raise DataError("no such file", file=path)
    if path.stat().st_size == 0:
        raise DataError("empty file; expected a header line 'age,ethnicity,gender,img_name,pixels' and data rows",
                        file=path)
    if ext == ".csv":
        with open(path, "rb") as fh:
            if b"\0" in fh.read(_SNIFF_BYTES):
                raise DataError("binary data (NUL bytes), not a text CSV; expected a header line "
                                "'age,ethnicity,gender,img_name,pixels' and data rows", file=path)
    try:
        if ext == ".parquet":
            table = pq.read_table(path)
        else:
            opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS}, strings_can_be_null=True)
            table = pacsv.read_csv(path, convert_options=opts)  # decompresses .gz itself
    except (OSError, pa.ArrowException, ValueError) as exc:
        text = _printable(str(exc).splitlines()[0]) if str(exc).strip() else type(exc).__name__
        if "Empty CSV" in text:
            raise DataError("empty file; expected a header line 'age,ethnicity,gender,img_name,pixels' and data "
                            "rows", file=path) from None
        kind = {".csv.gz": "a readable gzip-compressed CSV", ".parquet": "a readable parquet file"}.get(ext, "a readable CSV")
        raise DataError(f"not {kind} ({type(exc).__name__}: {text})", file=path) from None
    try:
        names = table.column_names
    except UnicodeDecodeError:
        raise DataError("the header line is not UTF-8 text; expected 'age,ethnicity,gender,img_name,pixels'",
                        file=path) from None
    _check_duplicates(names, path)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; expected columns {','.join(COLUMNS)}, "
                        f"found {_printable(','.join(names)) or 'none'}", file=path, field=missing[0])
    if table.num_rows == 0:
        raise DataError("no data rows (header only); expected at least one face", file=path)
    if not pa.types.is_string(table.schema.field("pixels").type) and not pa.types.is_large_string(
            table.schema.field("pixels").type):
        raise DataError(f"pixels stored as {table.schema.field('pixels').type}; expected strings of "
                        "space-separated integers", file=path, field="pixels")
    return table


def _printable(text: str, limit: int = 120) -> str:
    """Parser messages quote the file's bytes: keep them printable and short."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_duplicates(names: list[str], path: Path) -> None:
    """A repeated column (or pandas' renamed ``pixels.1``) leaves it unclear which values are meant."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"column '{name}' appears more than once (duplicate header); expected each of "
                            f"{','.join(COLUMNS)} once", file=path, field=name)
        seen.add(name)
    for name in names:
        m = re.fullmatch(r"(.+)\.\d+", name)
        if m and m.group(1) in COLUMNS and m.group(1) in seen:
            raise DataError(f"column '{name}' looks like a renamed duplicate of '{m.group(1)}'; expected each of "
                            f"{','.join(COLUMNS)} once", file=path, field=name)


def _diagnose(text: str | None, n_pixels: int, file: Path, row: int) -> tuple[np.ndarray | None, DataError | None]:
    """Slow path for one row that failed the byte check: its pixels, or the exact problem."""
    tokens = (text or "").split()
    if not tokens:
        return None, DataError(f"missing value; expected {n_pixels} whitespace-separated integers 0-255",
                               file=file, row=row, field="pixels")
    bad = next((k for k, t in enumerate(tokens) if not t.isascii() or not t.isdigit()), None)
    if bad is not None:
        return None, DataError(f"value {bad} is {tokens[bad]!r}, not an integer; expected integers 0-255",
                               file=file, row=row, field="pixels")
    if len(tokens) != n_pixels:
        side = math.isqrt(n_pixels)
        return None, DataError(f"{len(tokens)} values; expected {n_pixels} ({side}x{side})",
                               file=file, row=row, field="pixels")
    return np.array(tokens, dtype=np.int64), None


def _value_counts(pixels: pa.StringArray) -> np.ndarray:
    """Whitespace-separated values per row, from Arrow's byte buffer a chunk of rows at a time (0: null or blank)."""
    dtype = np.int64 if pa.types.is_large_string(pixels.type) else np.int32
    offsets = np.frombuffer(pixels.buffers()[1], dtype=dtype)[pixels.offset:pixels.offset + len(pixels) + 1]
    offsets = offsets.astype(np.int64)
    data = pixels.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    counts = np.empty(len(pixels), dtype=np.int64)
    for start in range(0, len(pixels), _ROWS_PER_CHUNK):
        o = offsets[start:start + _ROWS_PER_CHUNK + 1]
        rel = o - o[0]
        text = raw[o[0]:o[-1]] > 32  # whitespace is 9-13 and 32; other control bytes fail the parse anyway
        starts = np.empty_like(text)
        starts[:1] = text[:1]
        np.greater(text[1:], text[:-1], out=starts[1:])  # a value starts where text follows whitespace ...
        first = rel[:-1][rel[:-1] < text.size]
        starts[first] = text[first]  # ... or where a row starts, whatever ended the row before
        counts[start:start + len(o) - 1] = np.diff(np.searchsorted(np.flatnonzero(starts), rel))
    return counts


def _out_of_range(values: np.ndarray, file: Path, row: int) -> DataError:
    col = int(np.argmax((values > 255) | (values < 0)))
    return DataError(f"value {col} is {int(values[col])}, out of range; expected integers 0-255",
                     file=file, row=row, field="pixels")


def _fast_parse(chunk: pa.StringArray, n_rows: int, n_pixels: int) -> np.ndarray | None:
    """All rows of ``chunk`` parsed in one call, or ``None`` when some text is not plain integers."""
    text = " ".join(chunk.to_pylist())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy warns when it stops at bad text
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    return values.reshape(n_rows, n_pixels) if values.size == n_rows * n_pixels else None


def parse_pixels(pixels: pa.Array, file: Path) -> tuple[np.ndarray, np.ndarray, list[DataError]]:
    """Parse a column of pixel strings into ``(N, P)`` uint8, P the value count most rows have.

    Returns:
        ``(images, ok, problems)``: rows that failed hold zeros; ``ok`` marks valid rows; one DataError
        per bad row (wrong count, non-integer or out-of-range value, missing).

    Raises:
        DataError: no row holds values, or the usual count is not a square (H·W with H = W).
    """
    if isinstance(pixels, pa.ChunkedArray):
        pixels = pixels.combine_chunks()
    counts = _value_counts(pixels)
    if not (counts > 0).any():
        raise DataError("every row is empty; expected H*W whitespace-separated integers 0-255", file=file,
                        field="pixels")
    n_pixels = int(majority(counts[counts > 0])[0])
    side = math.isqrt(n_pixels)
    if side * side != n_pixels:
        raise DataError(f"most rows have {n_pixels} values, which is not a square image; expected H*W values "
                        "with H = W (e.g. 2304 for 48x48)", file=file, field="pixels")
    n = len(pixels)
    images = np.zeros((n, n_pixels), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    problems: list[DataError] = []

    def fast_chunk(start: int) -> np.ndarray:
        """Parse the chunk's rows with the usual count into ``images``; return the rows left for the slow path."""
        chunk = pixels.slice(start, _ROWS_PER_CHUNK)
        fast = counts[start:start + len(chunk)] == n_pixels
        rows = np.flatnonzero(fast)
        values = _fast_parse(pc.filter(chunk, pa.array(fast)), rows.size, n_pixels) if rows.size else None
        if values is None:  # bad text somewhere in the chunk: every row gets the careful look
            return start + np.arange(len(chunk))
        bad = (values.view(np.uint64) > 255).any(axis=1)  # negatives wrap to huge values: one pass
        images[start + rows[~bad]] = values[~bad]
        ok[start + rows[~bad]] = True
        return start + np.concatenate([np.flatnonzero(~fast), rows[bad]])

    # np.fromstring releases the GIL, so chunks parse in parallel threads
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        slow = np.sort(np.concatenate(list(pool.map(fast_chunk, range(0, n, _ROWS_PER_CHUNK)))))
    for row in slow.tolist():
        vals, err = _diagnose(pixels[row].as_py(), n_pixels, file, row)
        if err is None and ((vals > 255) | (vals < 0)).any():
            err = _out_of_range(vals, file, row)
        if err is not None:
            problems.append(err)
        else:
            images[row], ok[row] = vals, True
    problems.sort(key=lambda e: e.row)
    return images, ok, problems


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinear resize of ``(N, S, S)`` uint8 faces to ``image_size`` with Pillow (as the folder loader)."""
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
                     for im in images]) if len(images) else np.zeros((0, image_size, image_size), np.uint8)


def load_table(path: Path, image_size: int, report: Report) -> Faces:
    """Faces of a Kaggle-layout file; bad rows are recorded in ``report`` and skipped.

    Raises:
        DataError: fatal problems (see :mod:`shared.data`), or no valid row at all.
    """
    table = read_table(path)
    images, ok_px, problems = parse_pixels(table.column("pixels"), path)
    frame = pd.DataFrame({c: table.column(c).to_pandas() for c in COLUMNS[:4]})
    labels, ok_lab, label_problems = check_labels(frame, path)
    by_row = {e.row: e for e in label_problems}
    by_row.update({e.row: e for e in problems})  # a row reports its pixel problem first
    for row in sorted(by_row):
        report.skip(by_row[row])
    ok = ok_px & ok_lab
    if not ok.any():
        first = by_row[min(by_row)]
        raise DataError(f"no valid faces: all {len(ok)} rows have problems (first: {first})", file=path)
    side = math.isqrt(images.shape[1])
    images = images[ok].reshape(-1, side, side)
    if side != image_size:
        report.notes.append(f"{path}: faces are {side}x{side}; resized to {image_size}x{image_size} (bilinear)")
        images = resize_images(images, image_size)
    return Faces(images, labels[ok].reset_index(drop=True))


def format_pixels(images: np.ndarray) -> pa.Array:
    """``(N, H, W)`` uint8 -> Arrow strings of space-separated integers, built without a per-row loop."""
    flat = images.reshape(len(images), -1)
    digits = np.zeros((256, 4), dtype=np.uint8)
    width = np.zeros(256, dtype=np.int64)
    for v in range(256):
        s = f"{v} ".encode()
        digits[v, : len(s)] = np.frombuffer(s, dtype=np.uint8)
        width[v] = len(s)
    chunks = []
    for start in range(0, len(flat), _ROWS_PER_CHUNK):
        block = flat[start:start + _ROWS_PER_CHUNK]
        w = width[block]
        w[:, -1] -= 1  # no trailing space
        mask = np.arange(4) < w[..., None]
        data = digits[block][mask]
        offsets = np.concatenate([[0], np.cumsum(w.sum(axis=1))]).astype(np.int32)
        chunks.append(pa.StringArray.from_buffers(len(block), pa.py_buffer(offsets), pa.py_buffer(data.tobytes())))
    return pa.chunked_array(chunks, type=pa.string())


def write_table(faces: Faces, dest: Path) -> bytes:
    """The bytes of ``faces`` in the Kaggle layout, in the format named by ``dest``'s suffix."""
    ext = _suffix(dest)
    lab = faces.labels
    table = pa.table({"age": pa.array(lab["age"].to_numpy(dtype=np.int64)),
                      "ethnicity": pa.array(lab["ethnicity"].to_numpy(dtype=np.int64)),
                      "gender": pa.array(lab["gender"].to_numpy(dtype=np.int64)),
                      "img_name": pa.array(lab["img_name"].astype(str).to_numpy(dtype=object), type=pa.string()),
                      "pixels": format_pixels(faces.images)})
    sink = pa.BufferOutputStream()
    if ext == ".parquet":
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()
    sink.write(",".join(COLUMNS).encode() + b"\n")
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    data = sink.getvalue().to_pybytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if ext == ".csv.gz" else data
