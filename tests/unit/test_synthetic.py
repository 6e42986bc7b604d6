"""Synthetic faces: determinism, schema, marginals and label-driven visible factors."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from shared.errors import ConfigError, FaceVAEError
from shared.faces import LABEL_COLUMNS, Faces
from shared.synthetic import ETHNICITY_PROBS, GENDER1_PROB, generate_faces


@pytest.fixture(scope="module")
def faces() -> Faces:
    return generate_faces(2000, 48, seed=0)


def _logreg_accuracy(x: np.ndarray, y: np.ndarray, n_train: int, steps: int = 200, lr: float = 0.5) -> float:
    """Held-out accuracy of a tiny L2-regularised logistic regression trained by gradient descent."""
    mu, sd = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    a, b = (x[:n_train] - mu) / sd, (x[n_train:] - mu) / sd
    w, c = np.zeros(a.shape[1]), 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ w + c)))
        w -= lr * (a.T @ (p - y[:n_train]) / n_train + 1e-3 * w)
        c -= lr * float((p - y[:n_train]).mean())
    return float(((b @ w + c > 0) == y[n_train:]).mean())


def _pooled(f: Faces, k: int = 4) -> np.ndarray:
    n, h, w = f.images.shape
    return f.floats().reshape(n, h // k, k, w // k, k).mean((2, 4)).reshape(n, -1).astype(np.float64)


class TestShapesAndSchema:
    @pytest.mark.parametrize("size", [32, 48, 64])
    def test_shapes_dtypes(self, size):
        f = generate_faces(10, size, seed=1)
        assert isinstance(f, Faces)
        assert f.images.shape == (10, size, size) and f.images.dtype == np.uint8
        assert list(f.labels.columns) == list(LABEL_COLUMNS)
        assert list(f.labels.index) == list(range(10))
        for col in ("age", "ethnicity", "gender"):
            assert f.labels[col].dtype == np.int64
        assert f.images.std() > 20  # not a blank canvas

    def test_label_ranges_and_names(self, faces):
        lab = faces.labels
        assert lab["age"].between(0, 116).all()
        assert set(lab["gender"].unique()) == {0, 1}
        assert set(lab["ethnicity"].unique()) == {0, 1, 2, 3, 4}
        assert lab["img_name"].iloc[123] == "synthetic_000123.png"
        assert all(re.fullmatch(r"synthetic_\d{6}\.png", s) for s in lab["img_name"])

    def test_marginals_realistic(self, faces):
        lab = faces.labels
        assert abs(lab["gender"].mean() - GENDER1_PROB) < 0.04
        props = lab["ethnicity"].value_counts(normalize=True).sort_index().to_numpy()
        np.testing.assert_allclose(props, ETHNICITY_PROBS, atol=0.035)
        assert 0.07 < (lab["age"] < 5).mean() < 0.16  # many young children, as in UTKFace
        assert 20 <= lab["age"].median() <= 35
        assert lab["age"].max() > 80

    def test_empty(self):
        f = generate_faces(0)
        assert f.images.shape == (0, 48, 48) and len(f.labels) == 0
        assert list(f.labels.columns) == list(LABEL_COLUMNS)

    @pytest.mark.parametrize("kwargs,field", [({"n": -1}, "n"), ({"n": 2.5}, "n"), ({"n": True}, "n"),
                                              ({"n": 2, "image_size": 31}, "image_size"),
                                              ({"n": 2, "seed": -3}, "seed"), ({"n": 2, "seed": "a"}, "seed")])
    def test_bad_arguments(self, kwargs, field):
        with pytest.raises(ConfigError, match=f"`{field}`.*Received") as info:
            generate_faces(**kwargs)
        assert isinstance(info.value, FaceVAEError)


class TestDeterminism:
    def test_same_arguments_same_bytes(self):
        a, b = generate_faces(40, 48, seed=7), generate_faces(40, 48, seed=7)
        assert a.images.tobytes() == b.images.tobytes()
        pd.testing.assert_frame_equal(a.labels, b.labels)

    def test_face_i_independent_of_n(self):
        small, big = generate_faces(5, 48, seed=3), generate_faces(300, 48, seed=3)  # 300 crosses a chunk edge
        np.testing.assert_array_equal(small.images, big.images[:5])
        pd.testing.assert_frame_equal(small.labels, big.labels.iloc[:5])
        again = generate_faces(270, 48, seed=3)
        np.testing.assert_array_equal(again.images[260:], big.images[260:270])

    def test_seed_changes_faces(self):
        a, b = generate_faces(20, seed=0), generate_faces(20, seed=1)
        assert not np.array_equal(a.images, b.images)
        assert not a.labels[["age", "gender", "ethnicity"]].equals(b.labels[["age", "gender", "ethnicity"]])


class TestLabelsDriveVisibleFactors:
    def test_gender_hair_beside_the_face(self, faces):
        # Long hair (mostly gender 1) darkens the columns beside the lower face relative to the background.
        x, g = faces.floats(), faces.labels["gender"].to_numpy()
        diff = x[g == 1].mean(0) - x[g == 0].mean(0)
        beside = np.r_[diff[21:33, 8:15].ravel(), diff[21:33, 33:40].ravel()]
        centre = diff[21:33, 20:28]
        assert beside.mean() < -0.05
        assert abs(centre.mean()) < abs(beside.mean())

    def test_gender_linearly_learnable(self, faces):
        y = faces.labels["gender"].to_numpy().astype(float)
        acc = _logreg_accuracy(_pooled(faces), y, n_train=1500)
        assert acc > 0.6  # chance ~0.52

    def test_ethnicity_skin_tone(self, faces):
        centre = faces.floats()[:, 20:30, 18:30].mean((1, 2))
        e = faces.labels["ethnicity"].to_numpy()
        means = [centre[e == k].mean() for k in range(5)]
        assert means[0] > means[2] > means[4] > means[3] > means[1]

    def test_age_linearly_learnable(self, faces):
        y = (faces.labels["age"].to_numpy() >= 50).astype(float)
        acc = _logreg_accuracy(_pooled(faces), y, n_train=1500)
        assert acc > (1 - y[1500:].mean()) + 0.05  # beats predicting the majority class
