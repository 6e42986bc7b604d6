"""A numpy byte parser for the ``pixels`` field: whitespace-separated integers 0-255, no per-row strings.

The input is one byte buffer plus the ``[start, end)`` span of each row's field in it: Arrow's string
buffer and offsets, or the decompressed CSV itself with the spans found by :mod:`shared.data.kaggle`.
A chunk of rows is parsed with a few whole-array passes: every byte is classed (digit, whitespace,
other); a value starts at a digit that follows a non-digit or opens a row, and ends at a digit whose
next byte does not continue it; the value at its last byte is ``d₀ + 10·d₋₁ + 100·d₋₂`` over the digits
of the same value, so no Python loop runs per row or per value. Any whitespace (tabs, runs of spaces,
newlines, leading or trailing blanks) separates values, as ``str.split()`` does. Rows with another
value count, a byte that is neither digit nor whitespace, a value of four or more digits, or a value
above 255 take the slow path, which splits that row's text to name the exact problem (or accepts it:
``0255`` is 255, as a naive ``int`` parse says). numpy releases the GIL in these passes, so chunks run
in threads.
"""
from __future__ import annotations

import math
import os
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shared.data.validate import majority
from shared.errors import DataError

__all__ = ["parse_spans", "diagnose_row"]

_CHUNK_BYTES = 1 << 20
_CLASS = np.zeros(256, dtype=np.uint8)  # 0: other byte, 1: digit, 2: whitespace (str.split's ASCII set)
_CLASS[ord("0"):ord("9") + 1] = 1
_CLASS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = 2


def diagnose_row(text: str | None, n_pixels: int, file: object, row: int) -> tuple[np.ndarray | None, DataError | None]:
    """Slow path for one row: its ``n_pixels`` values, or the exact problem (count, non-integer, range).

    Returns:
        ``(values, None)`` for a valid row, ``(None, error)`` otherwise.
    """
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
    values = np.array(tokens, dtype=np.int64)
    if ((values > 255) | (values < 0)).any():
        col = int(np.argmax((values > 255) | (values < 0)))
        return None, DataError(f"value {col} is {int(values[col])}, out of range; expected integers 0-255",
                               file=file, row=row, field="pixels")
    return values, None


def _parse_chunk(raw: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value counts, a "needs the slow path" flag per row, and every value (uint8, row after row)."""
    n = len(starts)
    a, b = int(starts[0]), int(ends[-1])
    rs, re = starts - a, ends - a
    filled = re > rs
    slow = np.zeros(n, dtype=bool)
    if b <= a:
        return np.zeros(n, dtype=np.int64), slow, np.zeros(0, np.uint8)
    text = raw[a:b]
    digit = text - np.uint8(48)
    tok = digit < 10
    if (rs[1:] > re[:-1]).any():  # bytes between rows (other CSV fields, line ends) are no row's: mask them
        seg = np.empty(2 * n - 1, dtype=np.int64)
        seg[0::2], seg[1::2] = re - rs, rs[1:] - re[:-1]
        infield = np.repeat(np.arange(2 * n - 1) % 2 == 0, seg)
        tok &= infield
    else:
        infield = None
    cont = np.zeros_like(tok)  # this digit continues the value of the byte before ...
    np.logical_and(tok[1:], tok[:-1], out=cont[1:])
    cont[rs[filled]] = False  # ... unless it opens a row (Arrow's rows touch: "...12" + "34...")
    end = tok.copy()
    end[:-1] &= ~cont[1:]
    digit *= tok
    # uint8 arithmetic: the value's last byte holds d + 10·d₋₁ + 100·d₋₂ modulo 256, which is the value
    # whenever it is at most 255; larger ones (hundreds digit above 2, or 2 with the rest above 55) are flagged
    tens = digit[:-1] * cont[1:]
    tens *= np.uint8(10)
    value = digit.copy()
    value[1:] += tens
    two = cont[2:] & cont[1:-1]
    hundreds = digit[:-2] * two
    over = np.flatnonzero((hundreds > 2) | ((hundreds == 2) & (value[2:] > 55))) + 2
    hundreds *= np.uint8(100)
    value[2:] += hundreds
    positions = np.flatnonzero(end)
    counts = np.diff(np.searchsorted(positions, rs), append=positions.size)
    # bytes that are neither a digit nor a space are rare: find them, then class them exactly
    other = ~tok & (text != 32)
    if infield is not None:
        other &= infield
    odd = np.flatnonzero(other)
    odd = odd[_CLASS[text[odd]] != 2]
    long = np.flatnonzero(two[1:] & cont[1:-2]) + 3  # a fourth digit: the slow path reads the number
    for where in (odd, long, over):
        if where.size:
            slow[np.searchsorted(rs, where, side="right") - 1] = True
    counts[~filled], slow[~filled] = 0, False
    return counts, slow, value[positions]


def parse_spans(raw: np.ndarray, starts: np.ndarray, ends: np.ndarray, file: object, *,
                rows_per_chunk: int = 2048, null_values: Collection[str] = ()) -> tuple[np.ndarray, np.ndarray, list[DataError]]:
    """Parse each row's ``raw[starts[i]:ends[i]]`` into ``(N, P)`` uint8, P the value count most rows have.

    Args:
        raw: uint8 buffer holding the fields (rows in order, spans not overlapping).
        starts, ends: byte span of each row's field.
        file: named in the error messages.
        rows_per_chunk: rows parsed by one whole-array pass.
        null_values: field texts that mean "missing" (Arrow's CSV null markers), reported as such.

    Returns:
        ``(images, ok, problems)``: rows that failed hold zeros; ``ok`` marks valid rows; one DataError
        per bad row (wrong count, non-integer or out-of-range value, missing), ordered by row.

    Raises:
        DataError: no row holds values, or the usual count is not a square (H·W with H = W).
    """
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    n = len(starts)
    # a chunk of about 1 MiB stays in the CPU cache through the dozen passes over it
    per_row = max(1, int(ends[-1] - starts[0]) // n) if n else 1
    rows_per_chunk = max(1, min(rows_per_chunk, _CHUNK_BYTES // per_row))
    bounds = list(range(0, n, rows_per_chunk))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        parts = list(pool.map(lambda s: _parse_chunk(raw, starts[s:s + rows_per_chunk], ends[s:s + rows_per_chunk]),
                              bounds))
    counts = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    if not (counts > 0).any():
        raise DataError("every row is empty; expected H*W whitespace-separated integers 0-255", file=file,
                        field="pixels")
    n_pixels = int(majority(counts[counts > 0])[0])
    side = math.isqrt(n_pixels)
    if side * side != n_pixels:
        raise DataError(f"most rows have {n_pixels} values, which is not a square image; expected H*W values "
                        "with H = W (e.g. 2304 for 48x48)", file=file, field="pixels")
    images = np.zeros((n, n_pixels), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    slow_rows: list[np.ndarray] = [np.zeros(0, np.int64)]
    for s, (c, slow, values) in zip(bounds, parts):
        fast = (c == n_pixels) & ~slow
        if fast.all():
            block = values.reshape(len(c), n_pixels)
        else:  # gather the fast rows' values out of the chunk's run of values
            offsets = np.concatenate([[0], np.cumsum(c)[:-1]])
            block = values[offsets[fast][:, None] + np.arange(n_pixels)]
        if fast.all():
            images[s:s + len(c)], ok[s:s + len(c)] = block, True
        else:
            images[s + np.flatnonzero(fast)], ok[s + np.flatnonzero(fast)] = block, True
            slow_rows.append(s + np.flatnonzero(~fast))
    nulls = set(null_values)
    problems: list[DataError] = []
    for row in sorted(np.concatenate(slow_rows).tolist()):
        text = bytes(raw[starts[row]:ends[row]]).decode("utf-8", errors="replace")
        vals, err = diagnose_row(None if text in nulls else text, n_pixels, file, row)
        if err is not None:
            problems.append(err)
        else:
            images[row], ok[row] = vals, True
    return images, ok, problems

