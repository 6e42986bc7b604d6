"""The CNN pipeline on the real UTKFace faces (skipped when ../shared/data is absent)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facevae import cnn_backend
from shared.api import build_config
from shared.data import load
from shared.data.splits import make_split
from shared.evaluation import AGE_BAND_NAMES
from shared.faces import ETHNICITY_NAMES

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def real(real_data):
    faces = load(str(real_data / "age_gender_part1.csv.gz"), image_size=48)
    return faces, make_split(faces, val_fraction=0.1, test_fraction=0.1, seed=0)


def _config(real_data, **kw):
    return build_config(backend="torch", model="cnn", data=str(real_data / "age_gender_part1.csv.gz"),
                        device="cpu", **kw)


def test_evaluation_covers_every_group_of_the_test_split(real, real_data, tmp_path):
    """An untrained classifier still yields every metric for every ethnicity and age band."""
    faces, split = real
    torch.manual_seed(0)
    cfg = _config(real_data, task="all", preset="default")
    clf = cnn_backend.CNNClassifier(cnn_backend.build_cnn(cfg).eval(), cfg)
    test = faces.subset(split.test)
    metrics = cnn_backend.evaluate(clf, test, iwae_k=0, out_dir=tmp_path)
    assert metrics["gender"]["n"] == len(test) == len(split.test)
    assert set(metrics["ethnicity"]["by_group"]["ethnicity"]) == set(ETHNICITY_NAMES)
    assert list(metrics["age"]["by_group"]["age_band"]) == list(AGE_BAND_NAMES)
    cm = np.array(metrics["ethnicity"]["confusion_matrix"])
    support = [metrics["ethnicity"]["per_class"][n]["support"] for n in ETHNICITY_NAMES]
    np.testing.assert_array_equal(cm.sum(axis=1), support)  # rows are the true classes
    assert (tmp_path / "figures" / "ethnicity_confusion.png").is_file()


@pytest.mark.slow
def test_default_gender_learns_on_real_faces(real, real_data, tmp_path):
    """Two epochs of the default recipe already beat the majority class by a wide margin."""
    faces, split = real
    cfg = _config(real_data, task="gender", preset="default", epochs=2)
    cfg.save(tmp_path / "config.json")  # what shared.api.train writes before calling the backend
    cnn_backend.train(cfg, faces, split, tmp_path)
    clf = cnn_backend.load(tmp_path)
    test = faces.subset(split.test)
    acc = cnn_backend.evaluate(clf, test, iwae_k=0)["gender"]["accuracy"]
    majority = test.labels["gender"].value_counts(normalize=True).max()
    assert acc > majority + 0.2, (acc, majority)
