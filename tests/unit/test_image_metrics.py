"""PSNR and SSIM: identities, known values and agreement with torchmetrics."""
from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ConfigError
from shared.image_metrics import gaussian_window, psnr, ssim

RNG = np.random.default_rng(0)
SSIM_TOL = 1e-10  # numpy float64 vs torchmetrics float64: measured max |diff| 2.2e-16 (float32 torch: 2.7e-7)


class TestPSNR:
    def test_identical_is_inf(self):
        x = RNG.random((3, 8, 8))
        out = psnr(x, x)
        assert out.shape == (3,) and np.isposinf(out).all()
        assert psnr(x[0], x[0]) == float("inf")

    def test_known_mse(self):
        a = np.zeros((2, 4, 4))
        b = a + np.array([0.1, 0.01])[:, None, None]  # MSE 1e-2 and 1e-4
        np.testing.assert_allclose(psnr(a, b), [20.0, 40.0])
        np.testing.assert_allclose(psnr(a * 255, b * 255, data_range=255.0), [20.0, 40.0])
        assert isinstance(psnr(a[0], b[0]), float)

    def test_uint8_inputs(self):
        a = np.zeros((4, 4), np.uint8)
        b = np.full((4, 4), 255, np.uint8)
        assert psnr(a, b, data_range=255) == pytest.approx(0.0)  # no uint8 wrap-around

    def test_mask_selects_pixels(self):
        a = np.zeros((1, 4, 4))
        b = a.copy()
        b[0, 0, 0] = 0.1
        m = np.zeros((4, 4), bool)
        m[0, :2] = True  # 2 pixels, one wrong by 0.1 -> MSE 0.005
        np.testing.assert_allclose(psnr(a, b, mask=m), [10 * np.log10(1 / 0.005)])
        np.testing.assert_allclose(psnr(a, b), [10 * np.log10(16 / 0.01)])

    @pytest.mark.parametrize("kwargs,match", [({"b": np.zeros((3, 3))}, "same shape"),
                                              ({"data_range": 0.0}, "data_range"),
                                              ({"mask": np.zeros((4, 4), bool)}, "no pixel"),
                                              ({"mask": np.zeros((4, 4))}, "boolean"),
                                              ({"mask": np.zeros((3, 3), bool)}, "does not match")])
    def test_bad_input(self, kwargs, match):
        args = {"a": np.zeros((4, 4)), "b": np.ones((4, 4)), **kwargs}
        with pytest.raises(ConfigError, match=match):
            psnr(**args)


class TestSSIM:
    def test_identity_and_range(self):
        x = RNG.random((4, 32, 32))
        np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-12)
        y = np.clip(x + RNG.normal(0, 0.2, x.shape), 0, 1)
        s = ssim(x, y)
        assert ((s > -1) & (s < 1)).all()
        assert ssim(x, np.clip(x + RNG.normal(0, 0.05, x.shape), 0, 1)).mean() > s.mean()

    def test_window(self):
        w = gaussian_window()
        assert w.shape == (11,) and w.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(w, w[::-1])
        assert w[5] / w[4] == pytest.approx(np.exp(0.5 / 1.5**2))

    def test_constant_images(self):
        a, b = np.full((16, 16), 0.5), np.full((16, 16), 0.3)
        c1 = (0.01) ** 2
        assert ssim(a, b) == pytest.approx((2 * 0.15 + c1) / (0.25 + 0.09 + c1))

    @pytest.mark.parametrize("a,b,match", [(np.zeros((8, 8)), np.zeros((8, 9)), "same shape"),
                                           (np.zeros((10, 10)), np.zeros((10, 10)), "at least")])
    def test_bad_input(self, a, b, match):
        with pytest.raises(ConfigError, match=match):
            ssim(a, b)

    def test_matches_torchmetrics(self):
        torch = pytest.importorskip("torch")
        tm = pytest.importorskip("torchmetrics.functional.image")
        a = RNG.random((6, 48, 48))
        b = np.clip(a + RNG.normal(0, 0.15, a.shape), 0, 1)
        b[:2] = RNG.random((2, 48, 48))  # unrelated pairs too
        def valid_ref(x, y):  # torchmetrics' full SSIM map cropped to the valid centres
            _, smap = tm.structural_similarity_index_measure(torch.from_numpy(x[:, None]), torch.from_numpy(y[:, None]),
                                                             data_range=1.0, reduction="none", return_full_image=True)
            return smap[..., 5:-5, 5:-5].reshape(len(x), -1).mean(-1).numpy()

        np.testing.assert_allclose(ssim(a, b), valid_ref(b, a), atol=SSIM_TOL, rtol=0)
        odd = RNG.random((2, 33, 40))
        np.testing.assert_allclose(ssim(odd[:1] * 0.9, odd[1:]), valid_ref(odd[:1] * 0.9, odd[1:]), atol=SSIM_TOL, rtol=0)
        a32, b32 = a.astype(np.float32), b.astype(np.float32)  # what the backends hand over
        np.testing.assert_allclose(ssim(a32, b32), valid_ref(b32, a32), atol=1e-5, rtol=0)
