"""shared.evaluation: metric orientation on hand-built cases, group metrics, Fréchet distance."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared.evaluation import (AGE_BAND_NAMES, classification_metrics, confusion_matrix, frechet_distance,
                               metrics_by_group, normalize_rows, regression_metrics)
from shared.runs import to_jsonable


def _from_cm(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) realising the count matrix ``cm`` (rows = true)."""
    t, p = [], []
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            t += [i] * int(cm[i, j])
            p += [j] * int(cm[i, j])
    return np.array(t), np.array(p)


class TestOrientation:
    # true class 0: 8 faces (6 right, 2 called class 1); true class 1: 2 faces (1 right, 1 called 0)
    CM = np.array([[6, 2], [1, 1]])

    def test_confusion_matrix_rows_are_true_class(self):
        t, p = _from_cm(self.CM)
        np.testing.assert_array_equal(confusion_matrix(t, p, 2), self.CM)
        assert confusion_matrix([0], [1], 2)[0, 1] == 1  # true 0 predicted 1 -> row 0, column 1

    def test_precision_and_recall_not_swapped(self):
        t, p = _from_cm(self.CM)
        m = classification_metrics(t, p, ("a", "b"))
        # recall = diagonal / row sum (true faces); precision = diagonal / column sum (predictions)
        assert m["per_class"]["a"]["recall"] == pytest.approx(6 / 8)
        assert m["per_class"]["a"]["precision"] == pytest.approx(6 / 7)
        assert m["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
        assert m["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
        assert m["per_class"]["a"]["support"] == 8 and m["per_class"]["b"]["support"] == 2
        assert m["accuracy"] == pytest.approx(7 / 10)
        assert m["balanced_accuracy"] == pytest.approx((6 / 8 + 1 / 2) / 2)
        f1_a = 2 * (6 / 7) * (6 / 8) / (6 / 7 + 6 / 8)
        f1_b = 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
        assert m["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)

    def test_normalised_per_true_class(self):
        t, p = _from_cm(self.CM)
        norm = np.array(classification_metrics(t, p, ("a", "b"))["confusion_matrix_normalized"])
        np.testing.assert_allclose(norm, [[0.75, 0.25], [0.5, 0.5]])
        np.testing.assert_allclose(norm.sum(axis=1), 1.0)
        # the diagonal of the row-normalised matrix is the per-class recall
        assert norm[1, 1] == pytest.approx(0.5)

    def test_absent_class_is_nan_not_zero_and_json_null(self):
        norm = normalize_rows(np.array([[3, 1, 0], [0, 0, 0], [0, 1, 1]]))
        assert np.isnan(norm[1]).all()
        m = classification_metrics(np.array([0, 0, 2]), np.array([0, 0, 0]), ("a", "b", "c"))
        assert np.isnan(m["per_class"]["b"]["recall"]) and np.isnan(m["per_class"]["c"]["precision"])
        assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.0) / 2)  # over classes present
        assert json.loads(json.dumps(to_jsonable(m)))["per_class"]["b"]["recall"] is None

    def test_rejects_out_of_range_labels(self):
        with pytest.raises(ValueError, match="class indices"):
            confusion_matrix(np.array([0, 5]), np.array([0, 1]), 2)


def test_regression_metrics():
    m = regression_metrics(np.array([10.0, 20.0, 30.0]), np.array([12.0, 17.0, 30.0]))
    assert m["mae"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(13 / 3))
    assert m["bias"] == pytest.approx(-1 / 3)
    assert regression_metrics(np.zeros(0), np.zeros(0))["n"] == 0


def test_metrics_by_group_splits_every_attribute():
    labels = pd.DataFrame({"age": [5, 15, 25, 45, 70, 70], "gender": [0, 1, 0, 1, 0, 0],
                           "ethnicity": [0, 1, 2, 3, 4, 4]})
    truth = np.array([0, 1, 0, 1, 0, 0])
    pred = np.array([0, 1, 1, 1, 0, 1])
    out = metrics_by_group(labels, lambda idx: classification_metrics(truth[idx], pred[idx], ("m", "f")))
    assert list(out["age_band"]) == list(AGE_BAND_NAMES) == ["0-9", "10-19", "20-39", "40-59", "60+"]
    assert out["age_band"]["60+"]["accuracy"] == pytest.approx(0.5)
    assert out["age_band"]["20-39"]["accuracy"] == 0.0
    assert out["gender"]["male"]["n"] == 4 and out["gender"]["female"]["accuracy"] == 1.0
    assert out["ethnicity"]["Others"]["n"] == 2 and set(out["ethnicity"]) == {"White", "Black", "Asian",
                                                                                "Indian", "Others"}


class TestFrechet:
    def test_identical_sets_are_zero(self):
        x = np.random.default_rng(0).normal(size=(300, 8))
        assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)

    def test_known_1d_gaussians(self):
        # N(m1, s1²) vs N(m2, s2²): (m1 - m2)² + (s1 - s2)²; use exact moments via symmetric samples
        rng = np.random.default_rng(1)
        z = rng.normal(size=200_000)
        z = (z - z.mean()) / z.std(ddof=1)
        a, b = 1.0 + 2.0 * z, -1.0 + 0.5 * z
        assert frechet_distance(a, b) == pytest.approx(4.0 + 1.5 ** 2, rel=1e-6)

    def test_mean_shift_in_many_dims_and_rank_deficient_covariance(self):
        rng = np.random.default_rng(2)
        x = rng.normal(size=(40, 64))  # fewer rows than features: singular covariances
        d = frechet_distance(x, x + 1.0)
        assert d == pytest.approx(64.0, rel=1e-3)

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="same F"):
            frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
