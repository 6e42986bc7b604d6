"""Where a run's faces are: recorded path and fingerprint, moved data, in-memory faces, eval files per data."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from shared import api
from shared.config import DataConfig, RunConfig
from shared.data import content_fingerprint, convert, load
from shared.errors import ConfigError, DataError, RunError
from shared.faces import Faces, as_faces, read_faces, write_faces
from tests.unit.torch_vae_helpers import single_thread  # noqa: F401  (autouse: one torch thread)

SIZE = 32
TINY = dict(image_size=SIZE, channels=(8, 16), hidden_dims=(32,), latent_dim=4, epochs=1, batch_size=16,
            device="cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))


def kaggle_csv(path, n: int = 60, seed: int = 0):
    """A Kaggle-layout CSV of ``n`` random 32x32 faces with varied labels."""
    rng = np.random.default_rng(seed)
    rows = ["age,ethnicity,gender,img_name,pixels"]
    for i in range(n):
        pixels = " ".join(str(v) for v in rng.integers(0, 256, SIZE * SIZE))
        rows.append(f"{rng.integers(1, 90)},{i % 5},{i % 2},face{i:03d}.jpg,{pixels}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _config(spec: str) -> RunConfig:
    opts = dict(TINY)
    return api.build_config(backend="torch", model="vae", data=spec, **opts)


class TestFingerprint:
    def test_same_faces_from_csv_and_parquet_match_and_other_faces_do_not(self, tmp_path):
        csv = kaggle_csv(tmp_path / "a.csv")
        parquet = convert(str(csv), tmp_path / "a.parquet", image_size=SIZE)
        a, b = load(str(csv), SIZE), load(str(parquet), SIZE)
        assert len(content_fingerprint(a)) == 64
        assert content_fingerprint(a) == content_fingerprint(b)
        other = load(str(kaggle_csv(tmp_path / "b.csv", seed=1)), SIZE)
        assert content_fingerprint(other) != content_fingerprint(a)
        relabelled = Faces(a.images, a.labels.assign(age=a.labels["age"] + 1))
        assert content_fingerprint(relabelled) != content_fingerprint(a)

    def test_old_configs_load_and_provenance_is_not_part_of_identity(self):
        old = RunConfig().to_dict()
        del old["data"]["path"], old["data"]["fingerprint"]
        cfg = RunConfig.from_dict(old)
        assert cfg.data.path == "" and cfg.data.fingerprint == ""
        recorded = DataConfig(path="/x/faces.csv", fingerprint="a" * 64)
        assert recorded == DataConfig()
        with pytest.raises(ConfigError, match="`fingerprint`"):
            DataConfig(fingerprint="not-a-digest")


class TestInMemoryFaces:
    def test_float_images_and_labels_become_checked_faces(self):
        images = np.random.default_rng(0).random((6, SIZE, SIZE)).astype(np.float32)
        labels = pd.DataFrame({"age": [20] * 6, "ethnicity": [0, 1, 2, 3, 4, 0], "gender": [0, 1] * 3})
        faces = as_faces((images, labels))
        assert faces.images.dtype == np.uint8 and faces.images.shape == (6, SIZE, SIZE)
        np.testing.assert_array_equal(faces.images, np.round(images * 255).astype(np.uint8))
        assert list(faces.labels.columns) == ["age", "ethnicity", "gender", "img_name"]
        assert as_faces(faces, image_size=48).images.shape == (6, 48, 48)

    @pytest.mark.parametrize("images, labels, error, match", [
        (np.zeros((3, 32, 30), np.uint8), None, DataError, "square"),
        (np.full((3, 32, 32), 1.5, np.float32), None, DataError, r"\[0, 1\]"),
        (np.zeros((3, 32, 32), np.uint8), pd.DataFrame({"age": [1, 2, 3]}), DataError, "missing column"),
        (np.zeros((3, 32, 32), np.uint8), pd.DataFrame({"age": [1, 2, 300], "ethnicity": 0, "gender": 0}),
         DataError, "row 2.*age"),
        (np.zeros((3, 32, 32), np.uint8), "labels.csv", ConfigError, "DataFrame"),
    ])
    def test_bad_arrays_are_refused_with_what_is_wrong(self, images, labels, error, match):
        if labels is None:
            labels = pd.DataFrame({"age": [1, 2, 3], "ethnicity": 0, "gender": 0})
        with pytest.raises(error, match=match):
            as_faces((images, labels))

    def test_neither_spec_nor_faces_is_a_config_error(self):
        with pytest.raises(ConfigError, match="SPEC string, a Faces"):
            as_faces(123)

    def test_faces_file_round_trip_and_run_spec_is_not_a_data_spec(self, tmp_path):
        faces = load("synthetic:20", SIZE)
        back = read_faces(write_faces(tmp_path / "faces.npz", faces))
        np.testing.assert_array_equal(back.images, faces.images)
        pd.testing.assert_frame_equal(back.labels, faces.labels, check_dtype=False)
        assert content_fingerprint(back) == content_fingerprint(faces)
        with pytest.raises(DataError, match="inside a run folder"):
            load("run:faces.npz", SIZE)


def test_eval_file_names():
    assert api.eval_file_name("/data/faces.csv.gz") == "eval_faces.json"
    assert api.eval_file_name("other set.parquet") == "eval_other_set.json"
    assert api.eval_file_name("synthetic:200") == "eval_synthetic_200.json"
    assert api.eval_file_name(load("synthetic:5", SIZE)) == "eval_memory.json"


def test_moved_data_is_found_named_and_checked(tmp_path, monkeypatch):
    """A run on a CSV given as a relative path: another working directory, a move, other faces."""
    work = tmp_path / "work"
    work.mkdir()
    csv = kaggle_csv(work / "faces.csv")
    monkeypatch.chdir(work)
    run = api.train(_config("faces.csv"), tmp_path / "run", verbose=False)
    recorded = json.loads((run / "config.json").read_text())["data"]
    assert recorded["spec"] == "faces.csv" and recorded["path"] == str(csv.resolve())
    assert recorded["fingerprint"] == content_fingerprint(load(str(csv), SIZE))

    monkeypatch.chdir(tmp_path)  # the relative spec no longer resolves: the recorded absolute path does
    first = api.evaluate(run)
    assert first["written_to"] == str(run / "eval.json") and first["n_faces"] > 0

    moved = shutil.move(str(csv), tmp_path / "elsewhere.csv")
    with pytest.raises(RunError, match=r"data faces.csv moved or was deleted \(recorded at .*faces.csv\); pass "
                                       r"--run-data NEW_PATH"):
        api.evaluate(run)
    again = api.evaluate(run, run_data=moved)  # the run's test split, its faces read from the new place
    assert again["n_faces"] == first["n_faces"] and again["psnr"] == pytest.approx(first["psnr"])

    eval_json = (run / "eval.json").read_bytes()
    every = api.evaluate(run, data=moved)  # every face of that file, in its own file
    assert every["n_faces"] == 60 and every["written_to"] == str(run / "eval_elsewhere.json")
    assert (run / "eval.json").read_bytes() == eval_json

    other = kaggle_csv(tmp_path / "other.csv", seed=3)
    with pytest.raises(RunError, match="not the faces this run was trained on"):
        api.evaluate(run, run_data=other)

    resumed = api.train(None, run, resume=True, updates={"epochs": 2}, data=moved, verbose=False)
    data = resumed.config.data
    assert data.path == str(moved.resolve()) and data.fingerprint == recorded["fingerprint"]
    assert api.evaluate(run)["n_faces"] == first["n_faces"]  # found at the recorded new place


def test_in_memory_faces_are_kept_in_the_run(tmp_path):
    faces = load("synthetic:240", SIZE)
    young = faces.subset(np.flatnonzero(faces.labels["age"].to_numpy() < 60))
    run = api.train(_config("synthetic"), tmp_path / "run", data=young, verbose=False)
    cfg = run.config
    assert cfg.data.spec == "run:faces.npz" and cfg.data.path == ""
    assert cfg.data.fingerprint == content_fingerprint(young)
    moved = shutil.move(str(run), tmp_path / "moved")  # the run folder carries its faces along
    got = api.run_faces(moved, cfg)
    np.testing.assert_array_equal(got.images, young.images)
    assert api.evaluate(moved)["n_faces"] > 0
