"""Latent grids in numpy: lerp, slerp, the 4-corner interpolation matrix of the seed work, traversals."""
from __future__ import annotations

import numpy as np

from shared.errors import ConfigError

__all__ = ["lerp", "slerp", "interpolation_matrix", "traversal"]

_PARALLEL_EPS = 1e-6  # |sin(omega)| below this: a and b (anti)parallel, slerp falls back to lerp


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim == 0 or a.shape != b.shape:
        raise ConfigError(f"`a` and `b` must be vectors (..., D) of the same shape. Received: a.shape={a.shape}, "
                          f"b.shape={b.shape}")
    return a, b


def lerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Linear interpolation ``a + t (b - a)``.

    Args:
        a, b: vectors ``(..., D)`` of the same shape.
        t: scalar or array broadcastable against ``a.shape[:-1]`` (e.g. ``(T,)`` with single vectors
            ``a``, ``b`` gives ``(T, D)``); 0 gives ``a``, 1 gives ``b``.

    Returns:
        float64 array ``broadcast(t, a.shape[:-1]) + (D,)``.

    Raises:
        ConfigError: ``a`` and ``b`` differ in shape or are scalars.
    """
    a, b = _pair(a, b)
    t = np.asarray(t, dtype=np.float64)[..., None]
    return a + t * (b - a)


def slerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Spherical linear interpolation along the great circle from ``a`` to ``b`` (White, 2016).

    ``sin((1-t) w) / sin(w) * a + sin(t w) / sin(w) * b`` with ``w`` the angle between ``a`` and ``b``;
    vectors of equal norm keep that norm along the path. Where ``a`` and ``b`` are (anti)parallel or
    one is zero (``|sin w| < 1e-6``) the result falls back to :func:`lerp`, which is then the limit
    (parallel) or the only well-defined path (antiparallel, zero).

    Args:
        a, b: vectors ``(..., D)`` of the same shape.
        t: scalar or array broadcastable against ``a.shape[:-1]``; 0 gives ``a``, 1 gives ``b``.

    Returns:
        float64 array ``broadcast(t, a.shape[:-1]) + (D,)``.

    Raises:
        ConfigError: ``a`` and ``b`` differ in shape or are scalars.
    """
    a, b = _pair(a, b)
    t = np.asarray(t, dtype=np.float64)[..., None]
    na, nb = np.linalg.norm(a, axis=-1, keepdims=True), np.linalg.norm(b, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.clip(np.sum(a * b, axis=-1, keepdims=True) / (na * nb), -1.0, 1.0)
    cos = np.nan_to_num(cos, nan=1.0)  # a zero vector: treat as parallel -> lerp
    omega = np.arccos(cos)
    sin = np.sin(omega)
    degenerate = np.abs(sin) < _PARALLEL_EPS
    safe_sin = np.where(degenerate, 1.0, sin)
    wa = np.where(degenerate, 1.0 - t, np.sin((1.0 - t) * omega) / safe_sin)
    wb = np.where(degenerate, t, np.sin(t * omega) / safe_sin)
    return wa * a + wb * b


_spherical = slerp  # the argument ``slerp`` of interpolation_matrix shadows the function


def interpolation_matrix(corners: np.ndarray, n: int, slerp: bool = False) -> np.ndarray:
    """The n x n grid between four corner latents, as in the seed work.

    ``matrix[i, j]`` sits at row fraction ``s = i / (n-1)`` and column fraction ``t = j / (n-1)``.
    Linear (default): bilinear ``(1-s)(1-t) tl + (1-s) t tr + s (1-t) bl + s t br``, so each edge is the
    straight line between its two corners and the corners are exact.
    Spherical (``slerp=True``): first the left and right edges are slerped down the rows
    (``left_i = slerp(tl, bl, s)``, ``right_i = slerp(tr, br, s)``), then each row is slerped across the
    columns (``matrix[i, j] = slerp(left_i, right_i, t)``); corners are exact and every edge is the
    great-circle path between its corners.

    Args:
        corners: ``(4, D)`` ordered top-left, top-right, bottom-left, bottom-right.
        n: grid side (>= 2).
        slerp: spherical instead of bilinear interpolation.

    Returns:
        float64 array ``(n, n, D)``; ``[0, 0] = tl``, ``[0, n-1] = tr``, ``[n-1, 0] = bl``, ``[n-1, n-1] = br``.

    Raises:
        ConfigError: ``corners`` not of shape ``(4, D)`` or ``n < 2``.
    """
    corners = np.asarray(corners, dtype=np.float64)
    if corners.ndim != 2 or corners.shape[0] != 4:
        raise ConfigError(f"`corners` must have shape (4, D) ordered tl, tr, bl, br. Received: shape={corners.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ConfigError(f"`n` must be an integer >= 2. Received: n={n!r}")
    tl, tr, bl, br = corners
    f = np.linspace(0.0, 1.0, int(n))
    if slerp:
        left, right = _spherical(tl, bl, f), _spherical(tr, br, f)  # (n, D) each
        return _spherical(left[:, None, :].repeat(n, 1), right[:, None, :].repeat(n, 1), f[None, :])
    s, t = f[:, None, None], f[None, :, None]
    return (1 - s) * (1 - t) * tl + (1 - s) * t * tr + s * (1 - t) * bl + s * t * br


def traversal(z: np.ndarray, dims: list[int] | np.ndarray, values: list[float] | np.ndarray,
              relative: bool = False) -> np.ndarray:
    """Latent traversal around ``z``: one row per latent dimension, one column per value.

    Args:
        z: the base latent ``(D,)``.
        dims: latent dimensions to vary (each in ``[-D, D)``).
        values: values given to that dimension; with ``relative=True`` they are added to ``z[dim]``.
        relative: offset the dimension instead of setting it.

    Returns:
        float64 array ``(len(dims), len(values), D)``; ``out[i, j]`` equals ``z`` except at ``dims[i]``.

    Raises:
        ConfigError: ``z`` is not a vector, ``dims``/``values`` empty, or a dim out of range.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 1:
        raise ConfigError(f"`z` must be a vector (D,). Received: shape={z.shape}")
    dims = np.asarray(dims).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if dims.size == 0 or values.size == 0:
        raise ConfigError(f"`dims` and `values` must be non-empty. Received: dims={dims.tolist()}, "
                          f"values={values.tolist()}")
    d = z.shape[0]
    if not np.issubdtype(dims.dtype, np.integer) or (dims < -d).any() or (dims >= d).any():
        raise ConfigError(f"`dims` must be integers in [0, {d}). Received: dims={dims.tolist()}")
    out = np.broadcast_to(z, (dims.size, values.size, d)).copy()
    rows = np.arange(dims.size)
    base = z[dims][:, None] if relative else 0.0
    out[rows, :, dims] = base + values[None, :]
    return out
