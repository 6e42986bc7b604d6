"""The Kaggle layout (``age,ethnicity,gender,img_name,pixels``) in ``.csv``, ``.csv.gz`` and ``.parquet``.

A plain CSV (or its gzip) is read without building a Python or Arrow string per row: the text is
inflated with ``zlib`` in large blocks, line ends and commas are found with numpy, the small label
fields go through Arrow's CSV reader, and the ``pixels`` field of every line is parsed in place by the
byte parser of :mod:`shared.data.pixel_parser`. Files that need a real CSV parser (quotes, ``\\r``,
non-ASCII bytes, ``pixels`` not last, ragged lines) and parquet files are read by Arrow, whose string
buffer goes through the same byte parser, so both routes give the same faces and the same messages.
"""
from __future__ import annotations

import gzip
import logging
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.data.pixel_parser import parse_spans
from shared.data.validate import Report, check_labels
from shared.errors import DataError
from shared.faces import Faces

__all__ = ["COLUMNS", "read_table", "parse_pixels", "load_table", "format_pixels", "write_table", "resize_images"]

log = logging.getLogger(__name__)

COLUMNS = ("age", "ethnicity", "gender", "img_name", "pixels")
_ROWS_PER_CHUNK = 2048
_SNIFF_BYTES = 1 << 16  # a NUL byte here marks a binary file, not CSV text
_INFLATE_BLOCK = 1 << 22  # zlib inflates faster fed in blocks than in one call on the whole file
_CONVERT = pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS}, strings_can_be_null=True)


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
            table = pacsv.read_csv(path, convert_options=_CONVERT)  # decompresses .gz itself
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


def _arrow_spans(pixels: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrow's string buffer as uint8 plus each row's ``[start, end)`` in it (nulls are empty spans)."""
    if isinstance(pixels, pa.ChunkedArray):
        pixels = pixels.combine_chunks()
    dtype = np.int64 if pa.types.is_large_string(pixels.type) else np.int32
    offsets = np.frombuffer(pixels.buffers()[1], dtype=dtype)[pixels.offset:pixels.offset + len(pixels) + 1]
    offsets = offsets.astype(np.int64)
    data = pixels.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return raw, offsets[:-1], offsets[1:]


def parse_pixels(pixels: pa.Array, file: Path) -> tuple[np.ndarray, np.ndarray, list[DataError]]:
    """Parse a column of pixel strings into ``(N, P)`` uint8, P the value count most rows have.

    Returns:
        ``(images, ok, problems)``: rows that failed hold zeros; ``ok`` marks valid rows; one DataError
        per bad row (wrong count, non-integer or out-of-range value, missing).

    Raises:
        DataError: no row holds values, or the usual count is not a square (H·W with H = W).
    """
    raw, starts, ends = _arrow_spans(pixels)
    return parse_spans(raw, starts, ends, file, rows_per_chunk=_ROWS_PER_CHUNK)


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinear resize of ``(N, S, S)`` uint8 faces to ``image_size`` with Pillow (as the folder loader)."""
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
                     for im in images]) if len(images) else np.zeros((0, image_size, image_size), np.uint8)


def _read_bytes(path: Path, ext: str) -> bytes | None:
    """The file's text; gzip members are inflated by ``zlib`` in 4 MiB input blocks (``None``: not clean gzip)."""
    data = path.read_bytes()
    if ext == ".csv":
        return data
    parts: list[bytes] = []
    view = memoryview(data)
    while view.nbytes:
        inflater = zlib.decompressobj(wbits=31)
        for i in range(0, view.nbytes, _INFLATE_BLOCK):
            parts.append(inflater.decompress(view[i:i + _INFLATE_BLOCK]))
            if inflater.eof:
                break
        if not inflater.eof:  # truncated: the Arrow path words the error
            return None
        view = memoryview(inflater.unused_data + view[i + _INFLATE_BLOCK:])  # the next gzip member, if any
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_direct(path: Path, ext: str) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray] | None:
    """A plain CSV read without Arrow's string column: label table, text bytes and each row's pixel span.

    Only files whose reading is unambiguous take this path (ASCII, no quotes, ``\\n`` line ends, no NUL,
    ``pixels`` the last column, every line with the header's field count); ``None`` sends anything else
    to :func:`read_table`, which gives the same result or names the problem.
    """
    try:
        data = _read_bytes(path, ext)
    except (OSError, zlib.error):
        return None
    if data is None or not data.isascii() or b'"' in data or b"\r" in data or b"\0" in data:
        return None
    first = data.find(b"\n")
    header = data[:first if first >= 0 else len(data)].decode()
    names = header.split(",")
    if not header or names[-1] != "pixels" or len(set(names)) != len(names) or not set(COLUMNS) <= set(names) or any(
            re.fullmatch(r"(.+)\.\d+", n) for n in names):
        return None
    # str.find is a memchr: a short Python loop per line beats whole-file numpy masks (203 MB of new pages)
    commas, size = len(names) - 1, len(data)
    starts, pixel_starts, ends = [], [], []
    pos = first + 1 if first >= 0 else size
    while pos < size:
        end = data.find(b"\n", pos)
        end = size if end < 0 else end
        if end > pos:  # Arrow skips empty lines; rows are numbered without them
            at = pos
            for _ in range(commas):
                at = data.find(b",", at, end) + 1
                if at == 0:
                    return None
            if data.find(b",", at, end) >= 0:
                return None
            starts.append(pos)
            pixel_starts.append(at)
            ends.append(end)
        pos = end + 1
    if not starts:
        return None
    lines = [header[:-len(",pixels")].encode()]
    lines += [data[s:e - 1] for s, e in zip(starts, pixel_starts)]
    try:
        labels = pacsv.read_csv(pa.BufferReader(b"\n".join(lines) + b"\n"), convert_options=_CONVERT)
    except (pa.ArrowException, ValueError):
        return None
    if labels.num_rows != len(starts):
        return None
    return labels, np.frombuffer(data, dtype=np.uint8), np.array(pixel_starts), np.array(ends)


def load_table(path: Path, image_size: int, report: Report) -> Faces:
    """Faces of a Kaggle-layout file; bad rows are recorded in ``report`` and skipped.

    Raises:
        DataError: fatal problems (see :mod:`shared.data`), or no valid row at all.
    """
    ext = _suffix(path)
    direct = _read_direct(path, ext) if ext != ".parquet" and path.is_file() and path.stat().st_size else None
    if direct is None:
        table = read_table(path)
        images, ok_px, problems = parse_pixels(table.column("pixels"), path)
    else:
        table, text, starts, ends = direct
        images, ok_px, problems = parse_spans(text, starts, ends, path, rows_per_chunk=_ROWS_PER_CHUNK,
                                              null_values=_CONVERT.null_values)
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
    images = (images if ok.all() else images[ok]).reshape(-1, side, side)  # no 54 MB copy when all rows pass
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
