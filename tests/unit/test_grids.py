"""Latent grids: lerp, slerp, the 4-corner interpolation matrix and traversals."""
from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ConfigError
from shared.grids import interpolation_matrix, lerp, slerp, traversal

RNG = np.random.default_rng(0)


class TestLerpSlerp:
    def test_lerp_endpoints_and_midpoint(self):
        a, b = RNG.normal(size=5), RNG.normal(size=5)
        np.testing.assert_allclose(lerp(a, b, 0.0), a)
        np.testing.assert_allclose(lerp(a, b, 1.0), b)
        np.testing.assert_allclose(lerp(a, b, 0.5), (a + b) / 2)

    def test_lerp_vector_t_shape(self):
        a, b = np.zeros(3), np.ones(3)
        out = lerp(a, b, np.linspace(0, 1, 4))
        assert out.shape == (4, 3)
        np.testing.assert_allclose(out[:, 0], [0, 1 / 3, 2 / 3, 1])

    def test_slerp_endpoints_and_constant_norm(self):
        a, b = RNG.normal(size=8), RNG.normal(size=8)
        b *= np.linalg.norm(a) / np.linalg.norm(b)
        ts = np.linspace(0, 1, 11)
        path = slerp(a, b, ts)
        np.testing.assert_allclose(path[0], a, atol=1e-12)
        np.testing.assert_allclose(path[-1], b, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a), rtol=1e-10)

    def test_slerp_orthogonal_quarter_circle(self):
        out = slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5)
        np.testing.assert_allclose(out, [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)

    def test_slerp_equal_angle_steps(self):
        a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
        path = slerp(a, b, np.linspace(0, 1, 5))
        unit = path / np.linalg.norm(path, axis=1, keepdims=True)
        angles = np.arccos(np.clip(np.sum(unit[:-1] * unit[1:], axis=1), -1, 1))
        np.testing.assert_allclose(angles, np.pi / 8, atol=1e-10)

    @pytest.mark.parametrize("b_scale", [1.0, 3.0, 1 + 1e-9, -1.0])
    def test_slerp_near_parallel_falls_back_to_lerp(self, b_scale):
        a = np.array([0.3, -1.2, 0.5])
        b = a * b_scale
        out = slerp(a, b, np.linspace(0, 1, 7))
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, lerp(a, b, np.linspace(0, 1, 7)), atol=1e-7)

    def test_slerp_zero_vector_finite(self):
        out = slerp(np.zeros(3), np.ones(3), 0.5)
        np.testing.assert_allclose(out, [0.5, 0.5, 0.5])

    def test_shape_mismatch(self):
        with pytest.raises(ConfigError, match="same shape"):
            slerp(np.zeros(3), np.zeros(4), 0.5)
        with pytest.raises(ConfigError, match="same shape"):
            lerp(np.float64(1.0), np.float64(2.0), 0.5)


class TestInterpolationMatrix:
    @pytest.mark.parametrize("spherical", [False, True])
    def test_corners_exact(self, spherical):
        corners = RNG.normal(size=(4, 6))
        m = interpolation_matrix(corners, 5, slerp=spherical)
        assert m.shape == (5, 5, 6)
        np.testing.assert_allclose(m[0, 0], corners[0], atol=1e-12)
        np.testing.assert_allclose(m[0, -1], corners[1], atol=1e-12)
        np.testing.assert_allclose(m[-1, 0], corners[2], atol=1e-12)
        np.testing.assert_allclose(m[-1, -1], corners[3], atol=1e-12)

    def test_edges_linear(self):
        tl, tr, bl, br = corners = RNG.normal(size=(4, 3))
        m = interpolation_matrix(corners, 7)
        f = np.linspace(0, 1, 7)
        np.testing.assert_allclose(m[0], lerp(tl, tr, f))
        np.testing.assert_allclose(m[-1], lerp(bl, br, f))
        np.testing.assert_allclose(m[:, 0], lerp(tl, bl, f))
        np.testing.assert_allclose(m[:, -1], lerp(tr, br, f))

    def test_interior_bilinear(self):
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # x = column, y = row fraction
        m = interpolation_matrix(corners, 5)
        f = np.linspace(0, 1, 5)
        np.testing.assert_allclose(m[..., 0], np.broadcast_to(f[None, :], (5, 5)))
        np.testing.assert_allclose(m[..., 1], np.broadcast_to(f[:, None], (5, 5)))
        tl, tr, bl, br = corners = RNG.normal(size=(4, 4))
        m = interpolation_matrix(corners, 5)
        s, t = 0.25, 0.75
        np.testing.assert_allclose(m[1, 3], (1 - s) * (1 - t) * tl + (1 - s) * t * tr + s * (1 - t) * bl + s * t * br)

    def test_slerp_rows_then_columns(self):
        tl, tr, bl, br = corners = RNG.normal(size=(4, 5))
        m = interpolation_matrix(corners, 4, slerp=True)
        f = np.linspace(0, 1, 4)
        np.testing.assert_allclose(m[:, 0], slerp(tl, bl, f), atol=1e-12)
        np.testing.assert_allclose(m[:, -1], slerp(tr, br, f), atol=1e-12)
        np.testing.assert_allclose(m[2], slerp(m[2, 0], m[2, -1], f), atol=1e-12)

    def test_slerp_constant_norm_for_equal_norm_corners(self):
        corners = RNG.normal(size=(4, 16))
        corners *= 3.0 / np.linalg.norm(corners, axis=1, keepdims=True)
        m = interpolation_matrix(corners, 6, slerp=True)
        np.testing.assert_allclose(np.linalg.norm(m, axis=-1), 3.0, rtol=1e-10)
        lin = interpolation_matrix(corners, 6)
        assert np.linalg.norm(lin, axis=-1).min() < 2.9  # bilinear shrinks towards the centre

    @pytest.mark.parametrize("corners,n,match", [(np.zeros((3, 4)), 5, "corners"), (np.zeros(4), 5, "corners"),
                                                 (np.zeros((4, 2)), 1, "`n`"), (np.zeros((4, 2)), 2.0, "`n`")])
    def test_bad_input(self, corners, n, match):
        with pytest.raises(ConfigError, match=match):
            interpolation_matrix(corners, n)


class TestTraversal:
    def test_sets_dimension(self):
        z = np.arange(4, dtype=float)
        out = traversal(z, [1, 3], [-2.0, 0.0, 2.0])
        assert out.shape == (2, 3, 4)
        np.testing.assert_allclose(out[0, :, 1], [-2, 0, 2])
        np.testing.assert_allclose(out[1, :, 3], [-2, 0, 2])
        np.testing.assert_allclose(out[0][:, [0, 2, 3]], np.broadcast_to(z[[0, 2, 3]], (3, 3)))
        np.testing.assert_allclose(out[1][:, [0, 1, 2]], np.broadcast_to(z[[0, 1, 2]], (3, 3)))

    def test_relative(self):
        z = np.array([1.0, 5.0])
        out = traversal(z, [1], [-1.0, 1.0], relative=True)
        np.testing.assert_allclose(out[0], [[1.0, 4.0], [1.0, 6.0]])

    @pytest.mark.parametrize("z,dims,values,match", [(np.zeros((2, 2)), [0], [1.0], "`z`"),
                                                     (np.zeros(3), [3], [1.0], "`dims`"),
                                                     (np.zeros(3), [0.5], [1.0], "`dims`"),
                                                     (np.zeros(3), [], [1.0], "non-empty")])
    def test_bad_input(self, z, dims, values, match):
        with pytest.raises(ConfigError, match=match):
            traversal(z, dims, values)
