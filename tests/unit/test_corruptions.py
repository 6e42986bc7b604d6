"""Corruptions: noise, masks and the classical baselines."""
from __future__ import annotations

import numpy as np
import pytest

from shared.corruptions import (apply_mask, box_mask, gaussian_noise, mean_fill, mean_filter, median_filter,
                                random_mask)
from shared.errors import ConfigError

RNG = np.random.default_rng(0)


class TestGaussianNoise:
    def test_clipped_dtype_and_sigma(self):
        x = RNG.random((64, 48, 48)).astype(np.float32)
        y = gaussian_noise(x, 0.1, seed=1)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert y.min() >= 0.0 and y.max() <= 1.0
        mid = (x > 0.3) & (x < 0.7)  # far from the clip bounds the noise is untouched
        assert abs((y - x)[mid].std() - 0.1) < 0.005

    def test_clipping_at_bounds(self):
        y = gaussian_noise(np.ones((4, 8, 8)), 0.5, seed=0)
        assert y.max() == 1.0 and y.min() >= 0.0 and (y < 1).any()

    def test_deterministic_and_zero_sigma(self):
        x = RNG.random((3, 5, 5))
        np.testing.assert_array_equal(gaussian_noise(x, 0.2, 3), gaussian_noise(x, 0.2, 3))
        assert not np.array_equal(gaussian_noise(x, 0.2, 3), gaussian_noise(x, 0.2, 4))
        np.testing.assert_array_equal(gaussian_noise(x, 0.0), x)
        assert gaussian_noise(x[0], 0.1).shape == (5, 5)

    @pytest.mark.parametrize("images,sigma,match", [(np.zeros((2, 4, 4), np.uint8), 0.1, "dtype"),
                                                    (np.zeros(4), 0.1, "shape"),
                                                    (np.zeros((4, 4)), -0.1, "sigma"),
                                                    (np.zeros((4, 4)), float("nan"), "sigma")])
    def test_bad_input(self, images, sigma, match):
        with pytest.raises(ConfigError, match=match):
            gaussian_noise(images, sigma)


class TestMasks:
    def test_box_48_matches_seed_slice(self):
        m = box_mask(48)
        expected = np.zeros((48, 48), bool)
        expected[5:20, 5:40] = True
        np.testing.assert_array_equal(m, expected)
        rows, cols = np.nonzero(m)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 19, 5, 39)
        assert m.sum() == 15 * 35

    @pytest.mark.parametrize("size", [32, 64, 96])
    def test_box_scales(self, size):
        m = box_mask(size)
        assert m.shape == (size, size)
        rows, cols = np.nonzero(m)
        s = size / 48
        assert abs(rows.min() - 5 * s) <= 0.5 and abs(rows.max() + 1 - 20 * s) <= 0.5
        assert abs(cols.min() - 5 * s) <= 0.5 and abs(cols.max() + 1 - 40 * s) <= 0.5
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one solid rectangle

    def test_box_custom_and_bad(self):
        assert box_mask(10, rows=(0, 10), cols=(0, 10), base=10).all()
        with pytest.raises(ConfigError, match="rows"):
            box_mask(48, rows=(20, 5))
        with pytest.raises(ConfigError, match="cols"):
            box_mask(48, cols=(5, 49))
        with pytest.raises(ConfigError, match="image_size"):
            box_mask(0)

    def test_random_mask_exact_fraction_per_image(self):
        m = random_mask((5, 10, 10), 0.3, seed=2)
        assert m.dtype == bool and m.shape == (5, 10, 10)
        np.testing.assert_array_equal(m.sum(axis=(1, 2)), 30)
        assert not np.array_equal(m[0], m[1])  # each image its own pattern
        np.testing.assert_array_equal(m, random_mask((5, 10, 10), 0.3, seed=2))
        assert random_mask((4, 4), 0.0).sum() == 0 and random_mask((4, 4), 1.0).all()

    @pytest.mark.parametrize("shape,fraction,match", [((4,), 0.5, "shape"), ((4, 4), 1.5, "fraction"),
                                                      ((4, 0), 0.5, "shape")])
    def test_random_mask_bad(self, shape, fraction, match):
        with pytest.raises(ConfigError, match=match):
            random_mask(shape, fraction)

    def test_apply_mask(self):
        x = RNG.random((2, 4, 4))
        m = np.zeros((4, 4), bool)
        m[1, 2] = True
        y = apply_mask(x, m, fill=0.5)
        assert (y[:, 1, 2] == 0.5).all()
        y[:, 1, 2] = x[:, 1, 2]
        np.testing.assert_array_equal(y, x)
        assert x[0, 1, 2] != 0.5  # input untouched
        with pytest.raises(ConfigError, match="boolean"):
            apply_mask(x, m.astype(int))
        with pytest.raises(ConfigError, match="does not match"):
            apply_mask(x, np.zeros((3, 3), bool))


class TestBaselines:
    def test_mean_filter_known(self):
        x = np.zeros((5, 5))
        x[2, 2] = 9.0
        y = mean_filter(x)
        expected = np.zeros((5, 5))
        expected[1:4, 1:4] = 1.0
        np.testing.assert_allclose(y, expected)
        np.testing.assert_allclose(mean_filter(np.full((2, 4, 4), 0.3)), 0.3)

    def test_median_filter_removes_impulse(self):
        x = np.full((5, 5), 0.2)
        x[2, 2] = 1.0
        np.testing.assert_allclose(median_filter(x), 0.2)
        ramp = np.tile(np.arange(5.0), (5, 1))
        np.testing.assert_allclose(median_filter(ramp)[:, 1:4], ramp[:, 1:4])  # edges preserved inside

    def test_filters_do_not_mix_images(self):
        x = np.zeros((3, 6, 6))
        x[1] = 1.0
        for fn in (mean_filter, median_filter):
            y = fn(x, size=3)
            np.testing.assert_allclose(y[0], 0.0)
            np.testing.assert_allclose(y[1], 1.0)
            np.testing.assert_allclose(y[2], 0.0)

    def test_filter_bad_size(self):
        with pytest.raises(ConfigError, match="size"):
            mean_filter(np.zeros((4, 4)), size=0)

    def test_mean_fill(self):
        x = np.array([[[0.0, 1.0], [0.5, 0.9]], [[0.2, 0.4], [0.6, 0.0]]])
        m = np.array([[False, False], [False, True]])
        y = mean_fill(x, m)
        np.testing.assert_allclose(y[0, 1, 1], 0.5)
        np.testing.assert_allclose(y[1, 1, 1], 0.4)
        np.testing.assert_array_equal(y[:, ~m], x[:, ~m])
        with pytest.raises(ConfigError, match="every pixel"):
            mean_fill(x, np.ones((2, 2), bool))
