"""UTKFace folders: labels from names, grayscale + resize, and every skipped-file case."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from shared.data import load, load_with_report
from shared.data.image_folder import parse_name, to_square_gray
from shared.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))


def _jpeg(folder, name, size=(20, 20), value=100):
    folder.mkdir(exist_ok=True)
    rgb = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = value, value // 2, 255 - value
    Image.fromarray(rgb).save(folder / name, quality=95)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "utk"
    _jpeg(d, "25_0_1_20170101000000001.jpg.chip.jpg", value=10)
    _jpeg(d, "3_1_4_20170101000000002.jpg.chip.jpg", value=120)
    _jpeg(d, "70_0_2_20170101000000003.jpg", value=240)
    return d


class TestNames:
    def test_parse_name(self, tmp_path):
        assert parse_name("25_1_3_20170116174525125.jpg.chip.jpg", tmp_path) == (25, 3, 1, "20170116174525125.jpg.chip.jpg")
        assert parse_name("1_0_0_20161219140623097.jpg", tmp_path) == (1, 0, 0, "20161219140623097.jpg")

    @pytest.mark.parametrize("name, field, words", [
        ("61_1_20170109142408075.jpg.chip.jpg", "img_name", "does not match [age]_[gender]_[race]_[date&time]"),
        ("readme.txt", "img_name", "does not match"),
        ("25_2_1_20170101.jpg", "gender", "gender 2 in the file name is out of range; expected 0-1"),
        ("25_0_7_20170101.jpg", "ethnicity", "expected 0-4"),
        ("130_0_1_20170101.jpg", "age", "expected 0-116"),
    ])
    def test_bad_names(self, tmp_path, name, field, words):
        with pytest.raises(DataError) as info:
            parse_name(name, tmp_path)
        assert info.value.field == field and info.value.row == name and words in str(info.value)
        assert str(tmp_path) in str(info.value)


class TestLoad:
    def test_labels_pixels_and_order(self, folder):
        faces = load(str(folder), image_size=8)
        assert faces.images.shape == (3, 8, 8) and faces.images.dtype == np.uint8
        names = sorted(p.name for p in folder.iterdir())
        assert faces.labels["img_name"].tolist() == [n.split("_", 3)[3] for n in names]
        assert faces.labels[["age", "gender", "ethnicity"]].values.tolist() == [[25, 0, 1], [3, 1, 4], [70, 0, 2]]
        with Image.open(folder / names[0]) as im:
            expected = np.asarray(im.convert("L").resize((8, 8), Image.BILINEAR))
        np.testing.assert_array_equal(faces.images[0], expected)

    def test_skipped_entries_are_reported(self, folder, caplog):
        _jpeg(folder, "61_1_20170109142408075.jpg.chip.jpg")  # malformed name, as in UTKFace
        (folder / "40_1_0_20170101000000009.jpg.chip.jpg").write_bytes(b"not a jpeg")
        (folder / "notes.txt").write_text("hello")
        (folder / "30_0_0_2017sub.jpg").mkdir()
        _jpeg(folder, "33_1_1_20170101000000010.jpg", size=(30, 30))  # mixed sizes
        with caplog.at_level(logging.WARNING):
            faces, info = load_with_report(str(folder), image_size=8)
        assert len(faces) == 3
        by_item = {e["item"]: e for e in info["skipped"]}
        assert set(by_item) == {"61_1_20170109142408075.jpg.chip.jpg", "40_1_0_20170101000000009.jpg.chip.jpg",
                                "notes.txt", "30_0_0_2017sub.jpg", "33_1_1_20170101000000010.jpg"}
        assert "not a readable image" in by_item["40_1_0_20170101000000009.jpg.chip.jpg"]["message"]
        assert "not a regular file" in by_item["30_0_0_2017sub.jpg"]["message"]
        assert "image is 30x30; expected 20x20 like the other 3 images" in by_item["33_1_1_20170101000000010.jpg"]["message"]
        for entry in info["skipped"]:
            assert str(folder) in entry["message"] and entry["item"] in entry["message"]
            assert entry["message"] in caplog.text

    def test_no_valid_image_is_fatal(self, tmp_path):
        (tmp_path / "empty").mkdir()
        with pytest.raises(DataError, match="no valid faces"):
            load(str(tmp_path / "empty"))
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "1_0_0_2017.jpg").write_bytes(b"garbage")
        with pytest.raises(DataError, match=r"junk: no valid faces"):
            load(str(tmp_path / "junk"))

    def test_second_load_is_cached_and_content_keyed(self, folder):
        first, info1 = load_with_report(str(folder), image_size=8)
        again, info2 = load_with_report(str(folder), image_size=8)
        assert (info1["cache_hit"], info2["cache_hit"]) == (False, True)
        np.testing.assert_array_equal(first.images, again.images)
        _jpeg(folder, "25_0_1_20170101000000001.jpg.chip.jpg", value=200)  # same name, new content
        changed, info3 = load_with_report(str(folder), image_size=8)
        assert info3["cache_hit"] is False and not np.array_equal(changed.images[0], first.images[0])


def test_non_square_images_are_centre_cropped():
    rgb = np.zeros((40, 20), dtype=np.uint8)
    rgb[10:30] = 200  # the centred 20x20 square is bright, the rest dark
    out = to_square_gray(Image.fromarray(rgb), 10)
    assert out.shape == (10, 10) and (out == 200).all()
