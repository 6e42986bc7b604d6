"""facevae.cnn_backend end to end on synthetic faces: train -> load -> evaluate through shared.api."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shared.api import build_config, evaluate, load_model, train
from shared.data import load as load_faces
from shared.data.splits import Split
from shared.errors import ConfigError
from shared.evaluation import AGE_BAND_NAMES
from shared.faces import ETHNICITY_NAMES, GENDER_NAMES

SPEC = "synthetic:900"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small multi-task CNN (shared trunk, three heads), trained for a few seconds of CPU."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core box: one thread wastes no CPU spinning
    cfg = build_config(backend="torch", model="cnn", data=SPEC, task="all", preset="default",
                       channels=(8, 16, 32, 64), hidden_dims=(64,), epochs=5, batch_size=32, lr=2e-3,
                       augment=False, label_smoothing=0.0, device="cpu")
    try:
        out = train(cfg, tmp_path_factory.mktemp("cnn") / "run")
        yield out, evaluate(out)
    finally:
        torch.set_num_threads(threads)


def test_each_task_learns_well_above_chance(run):
    run_dir, metrics = run
    faces = load_faces(SPEC)
    split = Split.load(run_dir / "split.json", faces)
    train_labels = faces.labels.iloc[split.train]
    test_labels = faces.labels.iloc[split.test]
    majority = {t: test_labels[t].value_counts(normalize=True).max() for t in ("gender", "ethnicity")}
    assert metrics["gender"]["accuracy"] >= majority["gender"] + 0.2, (metrics["gender"]["accuracy"], majority)
    assert metrics["ethnicity"]["accuracy"] >= majority["ethnicity"] + 0.2
    assert metrics["ethnicity"]["balanced_accuracy"] >= 0.2 + 0.2  # chance is 1/5
    baseline = np.abs(test_labels["age"].to_numpy() - np.median(train_labels["age"])).mean()
    assert metrics["age"]["mae"] < 0.75 * baseline, (metrics["age"]["mae"], baseline)


def test_eval_json_reports_groups_and_figures(run):
    run_dir, metrics = run
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["n_faces"] == metrics["n_faces"] == 90 and saved["data"].endswith("(test split)")
    g = saved["gender"]
    assert g["class_names"] == list(GENDER_NAMES) and set(g["per_class"]) == set(GENDER_NAMES)
    cm = np.array(g["confusion_matrix"])
    assert cm.sum() == 90
    norm = np.array(g["confusion_matrix_normalized"])
    np.testing.assert_allclose(norm, cm / cm.sum(axis=1, keepdims=True))
    assert saved["ethnicity"]["class_names"] == list(ETHNICITY_NAMES)
    for task, key in (("gender", "accuracy"), ("ethnicity", "macro_f1"), ("age", "mae")):
        groups = saved[task]["by_group"]
        assert set(groups) == {"ethnicity", "gender", "age_band"}
        assert set(groups["age_band"]) <= set(AGE_BAND_NAMES)
        assert sum(v["n"] for v in groups["gender"].values()) == 90
        assert all(key in v for v in groups["age_band"].values())
    assert saved["age"]["rmse"] >= saved["age"]["mae"] > 0
    names = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"gender_confusion.png", "ethnicity_confusion.png", "gender_by_age_band.png",
            "age_by_age_band.png"} <= names


def test_loaded_classifier_predicts_and_extracts_features(run):
    run_dir, _ = run
    clf = load_model(run_dir)
    assert clf.task == "all" and clf.config.model.family == "cnn"
    faces = load_faces("synthetic:40")
    pred = clf.predict(faces.images)
    assert pred["gender"].shape == pred["ethnicity"].shape == pred["age"].shape == (40,)
    np.testing.assert_allclose(pred["ethnicity_proba"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred["gender"], pred["gender_proba"].argmax(1))
    from_float = clf.predict(faces.floats())
    np.testing.assert_allclose(from_float["age"], pred["age"], rtol=1e-5, atol=1e-4)
    feats = clf.features(faces.images)
    assert feats.shape == (40, clf.feature_dim) == (40, 64) and np.isfinite(feats).all()
    assert clf.features(faces.images[:0]).shape == (0, 64)
    with pytest.raises(ConfigError, match="images"):
        clf.predict(np.zeros((2, 32, 32), np.uint8))


def test_default_preset_averages_with_the_mirror_image(run):
    run_dir, _ = run
    clf = load_model(run_dir)
    assert clf.flip_average  # default preset
    images = load_faces("synthetic:20").images
    with_flip = clf.predict(images)
    clf.flip_average = False
    plain, mirrored = clf.predict(images), clf.predict(images[:, :, ::-1])
    np.testing.assert_allclose(with_flip["age"], (plain["age"] + mirrored["age"]) / 2, rtol=1e-4, atol=1e-3)
