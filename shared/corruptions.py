"""Corruptions of float faces in [0, 1] and the classical baselines that undo them.

Noise: additive Gaussian with sigma on the [0, 1] scale, clipped back to [0, 1]. Masks: boolean,
``True`` = missing pixel. The box mask is the seed work's ``image[5:20, 5:40]`` of a 48 x 48 face
(rows 5..19, columns 5..39: start inclusive, end exclusive, like the slice), scaled proportionally for
other sizes. Baselines: mean and median filters per image (never across the batch axis) and
``mean_fill`` for inpainting.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from shared.errors import ConfigError

__all__ = ["as_image_batch", "gaussian_noise", "box_mask", "random_mask", "apply_mask", "mean_filter",
           "median_filter", "mean_fill"]


def as_image_batch(images: np.ndarray, name: str = "images") -> tuple[np.ndarray, bool]:
    """``images`` as a float batch ``(N, H, W)`` and whether it was a single ``(H, W)`` image.

    Raises:
        ConfigError: not 2-D/3-D, or an integer array (convert uint8 with ``/ 255`` first).
    """
    arr = np.asarray(images)
    if arr.ndim not in (2, 3):
        raise ConfigError(f"`{name}` must have shape (H, W) or (N, H, W). Received: shape={arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ConfigError(f"`{name}` must be floats in [0, 1] (divide uint8 faces by 255). Received: dtype={arr.dtype}")
    return (arr[None] if arr.ndim == 2 else arr), arr.ndim == 2


def _restore(batch: np.ndarray, single: bool) -> np.ndarray:
    return batch[0] if single else batch


def gaussian_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """``clip(images + N(0, sigma^2), 0, 1)``, same dtype and shape as ``images``.

    Args:
        images: floats in [0, 1], ``(H, W)`` or ``(N, H, W)``.
        sigma: standard deviation on the [0, 1] scale (>= 0).
        seed: seed of the noise.

    Raises:
        ConfigError: bad images or a negative/non-finite sigma.
    """
    batch, single = as_image_batch(images)
    if not np.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"`sigma` must be a finite number >= 0. Received: sigma={sigma!r}")
    noise = np.random.default_rng(seed).standard_normal(batch.shape).astype(batch.dtype)
    return _restore(np.clip(batch + batch.dtype.type(sigma) * noise, 0.0, 1.0), single)


def box_mask(image_size: int, rows: tuple[int, int] = (5, 20), cols: tuple[int, int] = (5, 40),
             base: int = 48) -> np.ndarray:
    """Rectangular mask ``(image_size, image_size)``, True inside ``[rows[0]:rows[1], cols[0]:cols[1]]``.

    Bounds are given for a ``base`` x ``base`` face (start inclusive, end exclusive) and scaled by
    ``image_size / base``, rounded half up; at 48 the default covers rows 5..19 x columns 5..39.

    Raises:
        ConfigError: size < 1 or bounds not ``0 <= start < end <= base``.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"`image_size` must be a positive integer. Received: image_size={image_size!r}")
    for name, (lo, hi) in (("rows", rows), ("cols", cols)):
        if not 0 <= lo < hi <= base:
            raise ConfigError(f"`{name}` must satisfy 0 <= start < end <= base={base}. Received: {name}={(lo, hi)}")
    scale = image_size / base

    def px(v: int) -> int:
        return int(np.floor(v * scale + 0.5))

    mask = np.zeros((image_size, image_size), dtype=bool)
    mask[px(rows[0]):max(px(rows[1]), px(rows[0]) + 1), px(cols[0]):max(px(cols[1]), px(cols[0]) + 1)] = True
    return mask


def random_mask(shape: tuple[int, ...], fraction: float, seed: int = 0) -> np.ndarray:
    """Mask of ``shape`` (``(H, W)`` or ``(N, H, W)``) with exactly ``round(fraction * H * W)`` missing
    pixels per image, chosen uniformly at random.

    Raises:
        ConfigError: shape not 2-D/3-D or ``fraction`` outside [0, 1].
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ConfigError(f"`shape` must be (H, W) or (N, H, W) with positive sides. Received: shape={shape}")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"`fraction` must be in [0, 1]. Received: fraction={fraction!r}")
    h, w = shape[-2:]
    k = int(round(fraction * h * w))
    keys = np.random.default_rng(seed).random((int(np.prod(shape[:-2], dtype=np.int64)), h * w))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    return (ranks < k).reshape(shape)


def _check_mask(batch: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ConfigError(f"`mask` must be boolean (True = missing). Received: dtype={mask.dtype}")
    try:
        return np.broadcast_to(mask, batch.shape)
    except ValueError:
        raise ConfigError(f"`mask` of shape {mask.shape} does not match images of shape {batch.shape[1:]} "
                          f"(batch {batch.shape[0]})") from None


def apply_mask(images: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Copy of ``images`` with the masked pixels set to ``fill``.

    Args:
        images: floats ``(H, W)`` or ``(N, H, W)``.
        mask: boolean ``(H, W)`` (same for every image) or ``(N, H, W)``; True = missing.
        fill: value written into the missing pixels.

    Raises:
        ConfigError: bad images, non-boolean mask or mismatched shapes.
    """
    batch, single = as_image_batch(images)
    out = np.where(_check_mask(batch, mask), batch.dtype.type(fill), batch)
    return _restore(out, single)


def _filter(images: np.ndarray, size: int, fn) -> np.ndarray:
    batch, single = as_image_batch(images)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"`size` must be a positive integer. Received: size={size!r}")
    return _restore(fn(batch, size=(1, size, size), mode="reflect"), single)


def mean_filter(images: np.ndarray, size: int = 3) -> np.ndarray:
    """Box (mean) filter of ``size x size`` per image; borders reflect (scipy ``mode="reflect"``: d c b a | a b c d).

    Raises:
        ConfigError: bad images or size < 1.
    """
    return _filter(images, size, ndimage.uniform_filter)


def median_filter(images: np.ndarray, size: int = 3) -> np.ndarray:
    """Median filter of ``size x size`` per image; borders reflect as in :func:`mean_filter`.

    Raises:
        ConfigError: bad images or size < 1.
    """
    return _filter(images, size, ndimage.median_filter)


def mean_fill(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inpainting baseline: each missing pixel gets the mean of the known pixels of its own image.

    Raises:
        ConfigError: bad images/mask, or an image with no known pixel.
    """
    batch, single = as_image_batch(images)
    mask = _check_mask(batch, mask)
    known = (~mask).sum(axis=(1, 2))
    if (known == 0).any():
        raise ConfigError(f"`mask` hides every pixel of image(s) {np.flatnonzero(known == 0).tolist()[:5]}; "
                          "mean_fill needs at least one known pixel")
    means = np.where(mask, 0.0, batch).sum(axis=(1, 2)) / known
    out = np.where(mask, means[:, None, None].astype(batch.dtype), batch)
    return _restore(out, single)
