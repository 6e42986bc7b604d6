"""The real UTKFace files beside the checkout (../shared/data): CSV and JPEG folder agree face for face."""
from __future__ import annotations

import numpy as np
import pytest

from shared.data import convert, load, load_with_report
from shared.data.splits import make_split
from shared.data.image_folder import NAME_PATTERN, list_folder, parse_name
from shared.errors import DataError

pytestmark = pytest.mark.real_data

N_FACES = 8818
MALFORMED = {"61_1_20170109142408075.jpg.chip.jpg", "61_3_20170109150557335.jpg.chip.jpg"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("facevae-cache")


@pytest.fixture(autouse=True)
def _cache(cache_dir, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(cache_dir))


@pytest.fixture(scope="module")
def csv_faces(real_data, cache_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEVAE_CACHE", str(cache_dir))
        return load_with_report(str(real_data / "age_gender_part1.csv.gz"))


def test_csv_gives_8818_faces_with_the_labels_of_the_file_names(real_data, csv_faces):
    faces, info = csv_faces
    assert faces.images.shape == (N_FACES, 48, 48) and faces.images.dtype == np.uint8
    assert info["skipped"] == [] and info["cache_hit"] is False
    lab = faces.labels
    names = {f"{a}_{g}_{e}_{n}" for a, g, e, n in zip(lab["age"], lab["gender"], lab["ethnicity"], lab["img_name"])}
    on_disk = set(list_folder(real_data / "utkface_part1"))
    assert len(names) == N_FACES and names <= on_disk and on_disk - names == MALFORMED
    assert lab["gender"].isin([0, 1]).all() and lab["ethnicity"].between(0, 4).all() and lab["age"].between(1, 116).all()


def test_csv_second_load_is_cached(real_data, csv_faces):
    again, info = load_with_report(str(real_data / "age_gender_part1.csv.gz"))
    assert info["cache_hit"] is True
    np.testing.assert_array_equal(again.images, csv_faces[0].images)


def test_split_of_the_real_faces_reports_duplicates(csv_faces):
    split = make_split(csv_faces[0], seed=0)
    assert len(split.train) + len(split.val) + len(split.test) == N_FACES
    assert split.n_duplicates > 0 and abs(len(split.test) - N_FACES / 10) <= 5


def test_folder_names_give_the_csv_labels_and_two_malformed_names(real_data, csv_faces):
    folder = real_data / "utkface_part1"
    parsed, bad = [], set()
    for name in list_folder(folder):
        try:
            parsed.append(parse_name(name, folder))
        except DataError:
            bad.add(name)
    assert bad == MALFORMED
    csv_labels = csv_faces[0].labels[["age", "ethnicity", "gender", "img_name"]]
    assert parsed == list(csv_labels.itertuples(index=False, name=None))


def test_folder_sample_decodes_to_the_csv_pixels(real_data, csv_faces, tmp_path):
    folder = tmp_path / "sample"  # links to 150 real files + 1 malformed name, outside the repository
    folder.mkdir()
    names = list_folder(real_data / "utkface_part1")
    picks = [n for n in names if n not in MALFORMED][::59] + sorted(MALFORMED)[:1]
    for name in picks:
        (folder / name).symlink_to(real_data / "utkface_part1" / name)
    faces, info = load_with_report(str(folder))
    assert [e["item"] for e in info["skipped"]] == sorted(MALFORMED)[:1]
    csv = csv_faces[0]
    full = [f"{a}_{g}_{e}_{n}" for a, g, e, n in csv.labels[["age", "gender", "ethnicity", "img_name"]].itertuples(
        index=False, name=None)]
    rows = [full.index(n) for n in picks[:-1]]
    assert len(faces) == len(rows) == 150
    np.testing.assert_array_equal(faces.images, csv.images[rows])  # grayscale + bilinear resize = the CSV pixels
    assert faces.labels.equals(csv.labels.iloc[rows].reset_index(drop=True))


@pytest.mark.slow
def test_folder_gives_the_same_faces_and_skips_the_two_malformed_names(real_data, csv_faces, tmp_path):
    folder = real_data / "utkface_part1"
    faces, info = load_with_report(str(folder))
    assert {e["item"] for e in info["skipped"]} == MALFORMED
    assert all(e["field"] == "img_name" and "does not match" in e["message"] for e in info["skipped"])
    csv = csv_faces[0]
    assert faces.labels.equals(csv.labels)
    np.testing.assert_array_equal(faces.images, csv.images)  # grayscale + bilinear resize reproduces the CSV
    assert all(NAME_PATTERN.match(n) is None for n in MALFORMED)
    # converting the folder writes the Kaggle layout back (the decode above is cached)
    out = convert(str(folder), tmp_path / "utk.parquet")
    back = load(str(out))
    np.testing.assert_array_equal(back.images, csv.images)
    assert back.labels.equals(csv.labels)
