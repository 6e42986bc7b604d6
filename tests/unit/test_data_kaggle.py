"""Kaggle-layout files (.csv, .csv.gz, .parquet): parsing, validation messages, resizing, caching."""
from __future__ import annotations

import gzip
import logging

import numpy as np
import pandas as pd
import pytest

from shared.data import load, load_with_report
from shared.data.kaggle import format_pixels, parse_pixels
from shared.errors import DataError

HEADER = "age,ethnicity,gender,img_name,pixels"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))


def _pixels(seed: int, n: int = 16) -> str:
    return " ".join(str(v) for v in np.random.default_rng(seed).integers(0, 256, n))


def _row(i: int, pixels: str | None = None, age="25", eth="1", gender="0", name=None) -> str:
    return f"{age},{eth},{gender},{name if name is not None else f'2017{i:04d}.jpg.chip.jpg'},{_pixels(i) if pixels is None else pixels}"


def _write(tmp_path, rows, name="faces.csv", header=HEADER):
    path = tmp_path / name
    text = "\n".join([header, *rows]) + "\n"
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


class TestParse:
    def test_values_and_shape_match_a_naive_parse(self, tmp_path):
        rows = [_row(i) for i in range(5)]
        faces = load(str(_write(tmp_path, rows)), image_size=4)
        expected = np.stack([np.array(_pixels(i).split(" "), dtype=np.uint8).reshape(4, 4) for i in range(5)])
        assert faces.images.dtype == np.uint8 and faces.images.shape == (5, 4, 4)
        np.testing.assert_array_equal(faces.images, expected)
        assert list(faces.labels.columns) == ["age", "ethnicity", "gender", "img_name"]
        assert faces.labels["age"].dtype == np.int64 and list(faces.labels.index) == list(range(5))
        assert faces.labels["img_name"].iloc[3] == "20170003.jpg.chip.jpg"

    def test_gzip_and_parquet_give_the_same_faces(self, tmp_path):
        rows = [_row(i) for i in range(6)]
        plain = load(str(_write(tmp_path, rows)), image_size=4)
        gz = load(str(_write(tmp_path, rows, "faces.csv.gz")), image_size=4)
        pd.DataFrame([r.split(",") for r in rows], columns=HEADER.split(",")).to_parquet(tmp_path / "f.parquet")
        pq = load(str(tmp_path / "f.parquet"), image_size=4)
        for other in (gz, pq):
            np.testing.assert_array_equal(plain.images, other.images)
            pd.testing.assert_frame_equal(plain.labels, other.labels)

    def test_chunks_and_extra_spaces(self, tmp_path, monkeypatch):
        import shared.data.kaggle as kaggle
        monkeypatch.setattr(kaggle, "_ROWS_PER_CHUNK", 3)  # several chunks, one with a slow-path row
        rows = [_row(i) for i in range(8)]
        rows[4] = _row(4, " " + _pixels(4).replace(" ", "  ", 2) + " ")
        faces = load(str(_write(tmp_path, rows)), image_size=4)
        assert len(faces) == 8
        np.testing.assert_array_equal(faces.images[4].ravel(), np.array(_pixels(4).split(), dtype=np.uint8))

    def test_format_pixels_round_trips(self):
        images = np.random.default_rng(0).integers(0, 256, (7, 3, 3), dtype=np.uint8)
        images[0, 0, 0], images[0, -1, -1] = 0, 255
        text = format_pixels(images).to_pylist()
        assert text[0].split()[0] == "0" and text[0].endswith(" 255")
        back, ok, problems = parse_pixels(format_pixels(images), "x.csv")
        assert ok.all() and not problems
        np.testing.assert_array_equal(back.reshape(7, 3, 3), images)


class TestSkippedRows:
    """Row problems are reported (file, row, field, expectation) and the row is skipped."""

    @pytest.mark.parametrize("bad_row, field, words", [
        (_row(2, pixels=" ".join(["1"] * 15)), "pixels", "15 values; expected 16 (4x4)"),
        (_row(2, pixels=_pixels(2).replace(" ", " x", 1)), "pixels", "not an integer"),
        (_row(2, pixels=_pixels(2, 15) + " 12.5"), "pixels", "'12.5', not an integer"),
        (_row(2, pixels=_pixels(2, 15) + " 256"), "pixels", "value 15 is 256, out of range; expected integers 0-255"),
        (_row(2, pixels=_pixels(2, 15) + " -1"), "pixels", "value 15 is '-1', not an integer"),
        (_row(2, pixels=""), "pixels", "missing value"),
        (_row(2, age=""), "age", "missing value; expected an integer in 0-116"),
        (_row(2, age="117"), "age", "out of range '117'; expected an integer in 0-116"),
        (_row(2, age="twenty"), "age", "not an integer"),
        (_row(2, gender="2"), "gender", "expected an integer in 0-1"),
        (_row(2, eth="5"), "ethnicity", "expected an integer in 0-4"),
        (_row(2, eth="1.5"), "ethnicity", "not an integer"),
        (_row(2, name=""), "img_name", "missing value"),
    ])
    def test_bad_row_is_named_and_skipped(self, tmp_path, caplog, bad_row, field, words):
        rows = [_row(0), _row(1), bad_row, _row(3)]
        path = _write(tmp_path, rows)
        with caplog.at_level(logging.WARNING):
            faces, info = load_with_report(str(path), image_size=4)
        assert len(faces) == 3
        assert faces.labels["img_name"].tolist() == [f"2017{i:04d}.jpg.chip.jpg" for i in (0, 1, 3)]
        assert len(info["skipped"]) == 1
        entry = info["skipped"][0]
        assert entry["item"] == 2 and entry["field"] == field
        assert str(path) in entry["message"] and "row 2" in entry["message"] and words in entry["message"]
        assert entry["message"] in caplog.text

    def test_out_of_range_in_the_fast_path(self, tmp_path):
        rows = [_row(i) for i in range(4)]
        rows[1] = _row(1, pixels="300 " + _pixels(1, 15))
        faces, info = load_with_report(str(_write(tmp_path, rows)), image_size=4)
        assert len(faces) == 3 and "value 0 is 300" in info["skipped"][0]["message"]

    def test_every_row_bad_is_fatal(self, tmp_path):
        path = _write(tmp_path, [_row(0, age="200"), _row(1, age="300")])
        with pytest.raises(DataError, match=r"no valid faces: all 2 rows have problems \(first: .*row 0"):
            load(str(path), image_size=4)


class TestFatal:
    def test_missing_column(self, tmp_path):
        path = _write(tmp_path, ["25,1,x.jpg," + _pixels(0)], header="age,ethnicity,img_name,pixels")
        with pytest.raises(DataError, match=r"faces.csv: field 'gender': missing column\(s\) gender; expected columns"):
            load(str(path), image_size=4)

    def test_empty_file(self, tmp_path):
        (tmp_path / "e.csv").write_text("")
        with pytest.raises(DataError, match=r"e.csv: empty file"):
            load(str(tmp_path / "e.csv"))

    def test_header_only(self, tmp_path):
        with pytest.raises(DataError, match="no data rows"):
            load(str(_write(tmp_path, [])))

    def test_truncated_gzip(self, tmp_path):
        good = _write(tmp_path, [_row(i) for i in range(200)], "g.csv.gz").read_bytes()
        (tmp_path / "t.csv.gz").write_bytes(good[: len(good) // 2])
        with pytest.raises(DataError, match=r"t.csv.gz: not a readable gzip-compressed CSV"):
            load(str(tmp_path / "t.csv.gz"), image_size=4)

    def test_not_gzip(self, tmp_path):
        (tmp_path / "n.csv.gz").write_bytes(b"this is not gzip data at all")
        with pytest.raises(DataError, match="not a readable gzip-compressed CSV"):
            load(str(tmp_path / "n.csv.gz"), image_size=4)

    def test_corrupt_parquet(self, tmp_path):
        (tmp_path / "c.parquet").write_bytes(b"PAR1 garbage garbage")
        with pytest.raises(DataError, match=r"c.parquet: not a readable parquet file"):
            load(str(tmp_path / "c.parquet"), image_size=4)

    def test_non_square_pixel_count(self, tmp_path):
        path = _write(tmp_path, [_row(i, pixels=_pixels(i, 15)) for i in range(3)])
        with pytest.raises(DataError, match=r"field 'pixels': most rows have 15 values, which is not a square"):
            load(str(path), image_size=4)

    def test_missing_path_and_unknown_type(self, tmp_path):
        with pytest.raises(DataError, match="no such file"):
            load(str(tmp_path / "absent.csv"))
        (tmp_path / "x.txt").write_text("hi")
        with pytest.raises(DataError, match="unsupported file type"):
            load(str(tmp_path / "x.txt"))


def test_other_sizes_are_resized(tmp_path):
    rows = [_row(i, pixels=" ".join(["200"] * 64)) for i in range(3)]
    faces, info = load_with_report(str(_write(tmp_path, rows)), image_size=4)
    assert faces.images.shape == (3, 4, 4) and (faces.images == 200).all()
    assert any("8x8; resized to 4x4" in n for n in info["notes"])


class TestCache:
    def test_second_load_hits_the_cache(self, tmp_path):
        path = _write(tmp_path, [_row(i) for i in range(4)] + [_row(9, age="999")])
        first, info1 = load_with_report(str(path), image_size=4)
        second, info2 = load_with_report(str(path), image_size=4)
        assert info1["cache_hit"] is False and info2["cache_hit"] is True
        assert info2["cache_file"].startswith(str(tmp_path / "cache"))
        np.testing.assert_array_equal(first.images, second.images)
        pd.testing.assert_frame_equal(first.labels, second.labels)
        assert info2["skipped"] == info1["skipped"] and len(info2["skipped"]) == 1  # reported again
        assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix == ".tmp"]  # atomic: no leftovers

    def test_changed_content_misses_and_other_size_misses(self, tmp_path):
        path = _write(tmp_path, [_row(i) for i in range(4)])
        load(str(path), image_size=4)
        assert load_with_report(str(path), image_size=8)[1]["cache_hit"] is False
        path = _write(tmp_path, [_row(i) for i in range(5)])
        faces, info = load_with_report(str(path), image_size=4)
        assert info["cache_hit"] is False and len(faces) == 5

    def test_touched_but_unchanged_file_still_hits(self, tmp_path):
        import os
        path = _write(tmp_path, [_row(i) for i in range(4)])
        load(str(path), image_size=4)
        os.utime(path, ns=(10**9, 10**9))  # new stat signature -> re-hash -> same content key
        assert load_with_report(str(path), image_size=4)[1]["cache_hit"] is True
        assert len(list((tmp_path / "cache" / "digests").iterdir())) == 2

    def test_damaged_entry_is_rebuilt(self, tmp_path, caplog):
        path = _write(tmp_path, [_row(i) for i in range(4)])
        entry = load_with_report(str(path), image_size=4)[1]["cache_file"]
        with open(entry, "wb") as fh:
            fh.write(b"broken")
        with caplog.at_level(logging.WARNING):
            faces, info = load_with_report(str(path), image_size=4)
        assert info["cache_hit"] is False and len(faces) == 4 and "unreadable cache entry" in caplog.text
        assert load_with_report(str(path), image_size=4)[1]["cache_hit"] is True
