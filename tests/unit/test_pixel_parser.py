"""The numpy byte parser of ``pixels`` gives exactly what a naive per-row ``split()`` parse gives."""
from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pytest

from shared.data import load_with_report
from shared.data.kaggle import _read_direct, parse_pixels
from shared.data.pixel_parser import diagnose_row, parse_spans

HEADER = "age,ethnicity,gender,img_name,pixels"
SEPARATORS = [" ", "  ", "\t", " \t ", "\x0b", "\x0c", "\x1f"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))


def _odd_text(values: np.ndarray, rng: np.random.Generator) -> str:
    """Values joined by random whitespace runs, with random padding and zero-padded numbers."""
    seps = rng.choice(SEPARATORS, size=len(values) + 1)
    words = [f"{v:03d}" if rng.random() < 0.05 else str(v) for v in values.tolist()]
    body = "".join(w + s for w, s in zip(words, seps[1:]))
    return (seps[0] if rng.random() < 0.5 else "") + (body if rng.random() < 0.5 else body.rstrip())


def _naive(texts: list[str], side: int) -> np.ndarray:
    return np.stack([np.array(t.split(), dtype=np.int64) for t in texts]).astype(np.uint8).reshape(-1, side, side)


@pytest.mark.parametrize("name", ["odd.csv", "odd.csv.gz"])
def test_odd_whitespace_matches_the_naive_parse_byte_for_byte(tmp_path, name):
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (300, 8, 8), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    texts = [_odd_text(im.ravel(), rng) for im in images]
    body = "\n".join([HEADER, *[f"{i % 90},{i % 5},{i % 2},f{i}.jpg,{t}" for i, t in enumerate(texts)]]) + "\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(body.encode()) if name.endswith(".gz") else body.encode())
    assert _read_direct(path, ".csv.gz" if name.endswith(".gz") else ".csv") is not None  # the fast route ran
    faces, info = load_with_report(str(path), image_size=8, use_cache=False)
    assert info["skipped"] == []
    assert faces.images.tobytes() == _naive(texts, 8).tobytes() == images.tobytes()
    # the same rows quoted go through Arrow's reader and the same byte parser
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("\n".join([HEADER, *[f'1,0,1,q{i}.jpg,"{t}"' for i, t in enumerate(texts)]]) + "\n")
    assert _read_direct(quoted, ".csv") is None
    assert load_with_report(str(quoted), image_size=8, use_cache=False)[0].images.tobytes() == images.tobytes()


def test_rows_that_touch_in_arrows_buffer_stay_apart():
    images, ok, problems = parse_pixels(pa.array(["1 2 3 45", "67 8 9 0", None, "255 0 1 2"]), "x.csv")
    assert len(problems) == 1 and problems[0].row == 2 and "missing value" in str(problems[0])
    assert ok.tolist() == [True, True, False, True]
    assert images.tolist() == [[1, 2, 3, 45], [67, 8, 9, 0], [0, 0, 0, 0], [255, 0, 1, 2]]


@pytest.mark.parametrize("seed", range(6))
def test_random_rows_give_the_per_row_answers(seed):
    """Valid, out-of-range, long, signed, decimal, non-ASCII, empty and short rows, parsed in small chunks."""
    rng = np.random.default_rng(seed)
    tokens = ["0", "7", "42", "199", "255", "256", "260", "300", "999", "0255", "1000", "-1", "1.5", "x", "é"]
    weights = np.array([8, 8, 8, 8, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], float)
    texts = []
    for _ in range(120):
        kind = rng.random()
        if kind < 0.6:
            vals = rng.integers(0, 256, 9)
            texts.append(" ".join(map(str, vals)))
        elif kind < 0.95:
            words = rng.choice(tokens, size=rng.integers(7, 11), p=weights / weights.sum())
            texts.append("\t".join(words))
        else:
            texts.append("   ")
    raw = np.frombuffer("".join(texts).encode(), dtype=np.uint8)
    lengths = [len(t.encode()) for t in texts]
    ends = np.cumsum(lengths)
    images, ok, problems = parse_spans(raw, ends - lengths, ends, "r.csv", rows_per_chunk=7)
    expected = {}
    for row, text in enumerate(texts):
        vals, err = diagnose_row(text, 9, "r.csv", row)
        expected[row] = (vals, str(err) if err else None)
    by_row = {e.row: str(e) for e in problems}
    for row, (vals, err) in expected.items():
        assert by_row.get(row) == err, (row, texts[row])
        assert ok[row] == (err is None)
        if err is None:
            assert images[row].tolist() == vals.tolist()


@pytest.mark.real_data
def test_real_file_matches_the_naive_parse(real_data):
    import pandas as pd
    path = real_data / "age_gender_part1.csv.gz"
    faces, info = load_with_report(str(path), image_size=48, use_cache=False)
    frame = pd.read_csv(path)
    naive = np.stack([np.array(s.split(" "), dtype=np.uint8) for s in frame["pixels"]]).reshape(-1, 48, 48)
    assert info["skipped"] == [] and faces.images.tobytes() == naive.tobytes()
    assert faces.labels["age"].tolist() == frame["age"].tolist()
