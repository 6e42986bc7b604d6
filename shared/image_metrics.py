"""Per-image PSNR and SSIM in numpy.

SSIM uses one convention everywhere in facevae (this module, the torch evaluation and the TF
evaluation), that of Wang et al. (2004) and ``tf.image.ssim``: Gaussian window of 11 x 11 taps with
sigma 1.5 (taps at offsets -5..5, ``exp(-d**2 / (2 sigma**2))`` normalised), ``K1 = 0.01``,
``K2 = 0.03``, ``C1 = (K1 L)**2``, ``C2 = (K2 L)**2`` with ``L = data_range``, variances clamped at 0,
and the SSIM map averaged over the **valid** centres only, the (H-10) x (W-10) positions whose window
lies inside the image. torchmetrics' default instead reflect-pads by 5 pixels and averages the whole
map, border included; on 48 x 48 faces that shifts SSIM by up to 0.06, so the torch backend crops
torchmetrics' full SSIM map to the valid centres (``tests/parity/test_metrics_parity.py``).
``data_range`` defaults to 1.0 (torchmetrics' default is the data's max - min).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from shared.errors import ConfigError

__all__ = ["psnr", "ssim", "gaussian_window", "SSIM_KERNEL_SIZE", "SSIM_SIGMA", "SSIM_K1", "SSIM_K2"]

SSIM_KERNEL_SIZE, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise ConfigError(f"`a` and `b` must have the same shape (H, W) or (N, H, W). Received: a.shape={a.shape}, "
                          f"b.shape={b.shape}")
    single = a.ndim == 2
    return (a[None], b[None], True) if single else (a, b, False)


def _check_range(data_range: float) -> float:
    if not np.isfinite(data_range) or data_range <= 0:
        raise ConfigError(f"`data_range` must be a finite number > 0. Received: data_range={data_range!r}")
    return float(data_range)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, mask: np.ndarray | None = None) -> np.ndarray | float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB, per image.

    Args:
        a, b: images ``(H, W)`` or ``(N, H, W)`` of the same shape (any numeric dtype).
        data_range: peak-to-peak range (1.0 for floats in [0, 1], 255 for uint8).
        mask: optional boolean ``(H, W)`` or ``(N, H, W)``; the MSE is taken over the True pixels only
            (e.g. the hidden pixels of an inpainting mask).

    Returns:
        float for a single image, else float64 ``(N,)``; ``inf`` where the images are identical.

    Raises:
        ConfigError: mismatched shapes, bad ``data_range``, a non-boolean or mismatched mask, or a mask
            selecting no pixel of some image.
    """
    a, b, single = _pair(a, b)
    rng = _check_range(data_range)
    sq = (a - b) ** 2
    if mask is None:
        mse = sq.mean(axis=(1, 2))
    else:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise ConfigError(f"`mask` must be boolean. Received: dtype={mask.dtype}")
        try:
            mask = np.broadcast_to(mask, a.shape)
        except ValueError:
            raise ConfigError(f"`mask` of shape {mask.shape} does not match images {a.shape}") from None
        count = mask.sum(axis=(1, 2))
        if (count == 0).any():
            raise ConfigError(f"`mask` selects no pixel of image(s) {np.flatnonzero(count == 0).tolist()[:5]}")
        mse = np.where(mask, sq, 0.0).sum(axis=(1, 2)) / count
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(rng * rng / mse)  # mse == 0 -> +inf
    return float(out[0]) if single else out


def gaussian_window(size: int = SSIM_KERNEL_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian taps ``(size,)`` of the SSIM window (the 2-D window is their outer product)."""
    d = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return g / g.sum()


def _blur(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of each image of ``x`` (N, H, W), reflect ('mirror') borders."""
    return ndimage.correlate1d(ndimage.correlate1d(x, taps, axis=1, mode="mirror"), taps, axis=2, mode="mirror")


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray | float:
    """Structural similarity per image over the valid window centres (module docstring).

    Args:
        a, b: images ``(H, W)`` or ``(N, H, W)`` of the same shape, each side >= 11 (one window).
        data_range: peak-to-peak range ``L`` of the pixel values.

    Returns:
        float for a single image, else float64 ``(N,)``; 1.0 for identical images.

    Raises:
        ConfigError: mismatched or too small shapes, or a bad ``data_range``.
    """
    a, b, single = _pair(a, b)
    rng = _check_range(data_range)
    pad = SSIM_KERNEL_SIZE // 2
    if min(a.shape[1:]) < SSIM_KERNEL_SIZE:
        raise ConfigError(f"SSIM needs images of at least {SSIM_KERNEL_SIZE} x {SSIM_KERNEL_SIZE} pixels. "
                          f"Received: shape={a.shape[1:]}")
    taps = gaussian_window()
    c1, c2 = (SSIM_K1 * rng) ** 2, (SSIM_K2 * rng) ** 2
    mu_a, mu_b = _blur(a, taps), _blur(b, taps)
    var_a = np.maximum(_blur(a * a, taps) - mu_a**2, 0.0)
    var_b = np.maximum(_blur(b * b, taps) - mu_b**2, 0.0)
    cov = _blur(a * b, taps) - mu_a * mu_b
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    out = smap[:, pad:-pad, pad:-pad].mean(axis=(1, 2))
    return float(out[0]) if single else out
