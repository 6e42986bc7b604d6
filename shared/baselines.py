"""Classical baselines for faces as float arrays in [0, 1], shape ``(N, H, W)`` (or one ``(H, W)`` face).

The generative claims of facevae are measured against these (``benchmarks/real_faces.py``):

* :class:`PCA` — the linear model (eigenfaces): reconstruction, denoising by projection and
  inpainting by iterative projection.
* denoisers: :func:`gaussian_filter`, :func:`tv_denoise` (total variation, Chambolle),
  :func:`nl_means` (non-local means), plus the 3 x 3 :func:`~shared.corruptions.mean_filter` and
  :func:`~shared.corruptions.median_filter` of :mod:`shared.corruptions` (re-exported here).
* inpainting: :func:`biharmonic_inpaint`, plus :func:`~shared.corruptions.mean_fill`.
* :func:`tune_denoiser` — picks a denoiser's parameter on validation faces, so a baseline is as
  strong as it can be at each noise level before it meets the test faces.

Masks follow :mod:`shared.corruptions`: boolean, ``True`` = missing pixel. TV, non-local means and
biharmonic inpainting come from scikit-image, imported only when called (the extra
``facevae[baselines]``). Nothing here imports torch or tensorflow.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np
from scipy import ndimage

from shared.corruptions import _check_mask, as_image_batch, mean_fill, mean_filter, median_filter
from shared.errors import ConfigError
from shared.image_metrics import psnr

__all__ = ["PCA", "gaussian_filter", "tv_denoise", "nl_means", "biharmonic_inpaint", "mean_filter", "median_filter",
           "mean_fill", "DENOISERS", "TuneResult", "tune_denoiser", "SKIMAGE_HINT"]

log = logging.getLogger(__name__)

SKIMAGE_HINT = "pip install 'facevae[baselines]'"


def _restoration(what: str) -> Any:
    """``skimage.restoration``, or a one-line :class:`ConfigError` naming the extra to install."""
    try:
        return importlib.import_module("skimage.restoration")
    except ImportError:
        raise ConfigError(f"`{what}` needs scikit-image, which is not installed: {SKIMAGE_HINT}") from None


def _restore(batch: np.ndarray, single: bool) -> np.ndarray:
    return batch[0] if single else batch


def _number(name: str, value: Any, lo: float, hi: float = float("inf"), *, open_lo: bool = False) -> float:
    """``value`` as a float in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``), else :class:`ConfigError`."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and (value > lo if open_lo else value >= lo) and value <= hi
    if not ok:
        bounds = f"({lo}, {hi}]" if open_lo else f"[{lo}, {hi}]"
        raise ConfigError(f"`{name}` must be a number in {bounds}. Received: {name}={value!r}")
    return float(value)


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ConfigError(f"`{name}` must be an integer in [{lo}, {hi}]. Received: {name}={value!r}")
    return int(value)


# --------------------------------------------------------------------------- PCA

class PCA:
    """Principal components of flattened faces (eigenfaces), fitted by SVD of the centred data.

    Attributes (after :meth:`fit`):
        mean_: ``(H, W)`` mean training face.
        components_: ``(k, H*W)`` orthonormal rows, largest variance first; each row's entry of
            largest magnitude is positive, so a fit is deterministic (SVD signs are arbitrary).
        singular_values_: ``(k,)``.
        explained_variance_ratio_: ``(k,)`` share of the training variance along each component.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.singular_values_: np.ndarray | None = None
        self.explained_variance_ratio_: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        return 0 if self.components_ is None else len(self.components_)

    def fit(self, images: np.ndarray, n_components: int) -> "PCA":
        """Fit the first ``n_components`` principal components of ``images``.

        Args:
            images: ``(N, H, W)`` floats (the training faces).
            n_components: integer in ``[1, min(N, H*W)]``.

        Returns:
            ``self``.

        Raises:
            ConfigError: bad images or ``n_components`` out of range.
        """
        batch, _ = as_image_batch(images)
        n, h, w = batch.shape
        k = _int("n_components", n_components, 1, min(n, h * w))
        x = batch.reshape(n, h * w).astype(np.float64)
        mean = x.mean(axis=0)
        x -= mean
        if n > 2 * h * w:
            # many faces: the (D, D) Gram matrix is far cheaper than the SVD of (N, D); its eigenvectors
            # are the right singular vectors (precision only suffers for variances ~1e-16 of the top one)
            evals, evecs = np.linalg.eigh(x.T @ x)
            order = np.argsort(evals)[::-1]
            sing = np.sqrt(np.clip(evals[order], 0.0, None))
            vt = evecs[:, order].T
        else:
            _, sing, vt = np.linalg.svd(x, full_matrices=False)
        vt = vt[:k]
        signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
        vt *= np.where(signs == 0, 1.0, signs)[:, None]
        total = float(np.sum(sing ** 2))
        self.mean_ = mean.reshape(h, w)
        self.components_ = vt
        self.singular_values_ = sing[:k]
        self.explained_variance_ratio_ = sing[:k] ** 2 / total if total > 0 else np.zeros(k)
        return self

    def truncated(self, n_components: int) -> "PCA":
        """A PCA holding only the first ``n_components`` of this fit (no refit; the mean is shared).

        Raises:
            ConfigError: not fitted, or ``n_components`` outside ``[1, self.n_components]``.
        """
        self._check_fitted()
        k = _int("n_components", n_components, 1, self.n_components)
        out = PCA()
        out.mean_, out.components_ = self.mean_, self.components_[:k]
        out.singular_values_ = self.singular_values_[:k]
        out.explained_variance_ratio_ = self.explained_variance_ratio_[:k]
        return out

    def _check_fitted(self) -> None:
        if self.components_ is None:
            raise ConfigError("this PCA is not fitted yet: call fit(images, n_components) first")

    def _flat(self, images: np.ndarray, name: str = "images") -> tuple[np.ndarray, bool]:
        self._check_fitted()
        batch, single = as_image_batch(images, name)
        if batch.shape[1:] != self.mean_.shape:
            raise ConfigError(f"`{name}` must be {self.mean_.shape} faces like the fitted ones. "
                              f"Received: shape={batch.shape[1:]}")
        return batch.reshape(len(batch), -1).astype(np.float64), single

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Coordinates ``(N, k)`` of the centred faces along the components (``(k,)`` for one face)."""
        x, single = self._flat(images)
        codes = (x - self.mean_.reshape(1, -1)) @ self.components_.T
        return codes[0] if single else codes

    def decode(self, codes: np.ndarray, *, clip: bool = True) -> np.ndarray:
        """Faces ``(N, H, W)`` float32 from coordinates ``(N, k)``; clipped to [0, 1] unless ``clip=False``.

        Raises:
            ConfigError: not fitted, or ``codes`` not ``(k,)`` / ``(N, k)``.
        """
        self._check_fitted()
        codes = np.asarray(codes, dtype=np.float64)
        single = codes.ndim == 1
        codes = codes[None] if single else codes
        if codes.ndim != 2 or codes.shape[1] != self.n_components:
            raise ConfigError(f"`codes` must have shape (N, {self.n_components}). Received: shape={codes.shape}")
        x = codes @ self.components_ + self.mean_.reshape(1, -1)
        out = x.reshape(len(codes), *self.mean_.shape)
        out = (np.clip(out, 0.0, 1.0) if clip else out).astype(np.float32)
        return out[0] if single else out

    def project(self, images: np.ndarray, *, clip: bool = True) -> np.ndarray:
        """The reconstruction ``decode(encode(images))``: the nearest point of mean + span(components).

        An image already in that affine subspace comes back unchanged (up to float32 rounding).
        """
        _, single = as_image_batch(images)
        out = self.decode(np.atleast_2d(self.encode(images)), clip=clip)
        return out[0] if single else out

    def denoise(self, noisy: np.ndarray) -> np.ndarray:
        """Denoising by projection (:meth:`project`, clipped to [0, 1]); choose ``k`` per noise level."""
        return self.project(noisy)

    def inpaint(self, masked: np.ndarray, mask: np.ndarray, *, iterations: int = 200, tol: float = 1e-7) -> np.ndarray:
        """Fill missing pixels by iterative projection: start from the mean face, project onto the PCA
        subspace, put the known pixels back, repeat until the fill changes by less than ``tol``.

        Alternating projections between two affine sets converge to a point of their intersection
        when there is one, so a masked face of the subspace is recovered when its known pixels pin
        down its coordinates. The hidden pixels of ``masked`` are never read.

        Args:
            masked: ``(N, H, W)`` floats; values at missing pixels are ignored.
            mask: boolean ``(H, W)`` or ``(N, H, W)``, True = missing.
            iterations: most rounds (>= 1).
            tol: stop when no missing pixel moved by more than this in a round.

        Returns:
            ``(N, H, W)`` float32 in [0, 1]; known pixels equal ``masked``.

        Raises:
            ConfigError: not fitted, bad images, mask or ``iterations``.
        """
        iterations = _int("iterations", iterations, 1, 1_000_000)
        x, single = self._flat(masked, "masked")
        batch = x.reshape(len(x), *self.mean_.shape)
        holes = _check_mask(batch, mask).reshape(len(x), -1)
        known = np.where(holes, 0.0, x)
        mean, comps = self.mean_.reshape(1, -1), self.components_
        cur = np.where(holes, mean, known)
        for i in range(iterations):
            proj = ((cur - mean) @ comps.T) @ comps + mean
            nxt = np.where(holes, proj, known)
            step = float(np.max(np.abs(nxt - cur))) if nxt.size else 0.0
            cur = nxt
            if step < tol:
                log.debug("PCA inpainting converged after %d rounds", i + 1)
                break
        out = np.where(holes, np.clip(cur, 0.0, 1.0), known).reshape(batch.shape).astype(np.float32)
        return out[0] if single else out


# --------------------------------------------------------------------------- denoisers

def gaussian_filter(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` pixels per image (never across the batch axis);
    borders reflect as in :func:`~shared.corruptions.mean_filter`. ``sigma=0`` returns the input.

    Raises:
        ConfigError: bad images or ``sigma`` not a finite number >= 0.
    """
    batch, single = as_image_batch(images)
    s = _number("sigma", sigma, 0.0, 100.0)
    return _restore(ndimage.gaussian_filter(batch, sigma=(0.0, s, s), mode="reflect"), single)


def tv_denoise(images: np.ndarray, weight: float) -> np.ndarray:
    """Total-variation denoising per image (scikit-image ``denoise_tv_chambolle``); larger
    ``weight`` = smoother.

    Raises:
        ConfigError: bad images, ``weight`` not > 0, or scikit-image missing.
    """
    batch, single = as_image_batch(images)
    w = _number("weight", weight, 0.0, 100.0, open_lo=True)
    restoration = _restoration("tv_denoise")
    # one call per face: on a 3-D array skimage would regularise across the batch axis too
    out = np.stack([restoration.denoise_tv_chambolle(img, weight=w, channel_axis=None) for img in batch])
    return _restore(out.astype(batch.dtype, copy=False), single)


def nl_means(images: np.ndarray, h: float, patch_size: int = 5, patch_distance: int = 6) -> np.ndarray:
    """Non-local means per image (scikit-image ``denoise_nl_means``, fast mode).

    Args:
        images: floats in [0, 1], ``(H, W)`` or ``(N, H, W)``.
        h: cut-off distance of patch similarity (on the [0, 1] scale; about the noise sigma).
        patch_size: side of the compared patches.
        patch_distance: search radius in pixels.

    Raises:
        ConfigError: bad images or parameters, or scikit-image missing.
    """
    batch, single = as_image_batch(images)
    h = _number("h", h, 0.0, 10.0, open_lo=True)
    patch_size = _int("patch_size", patch_size, 1, 31)
    patch_distance = _int("patch_distance", patch_distance, 1, 64)
    restoration = _restoration("nl_means")
    out = np.stack([restoration.denoise_nl_means(img, h=h, patch_size=patch_size, patch_distance=patch_distance,
                                                 fast_mode=True, channel_axis=None) for img in batch])
    return _restore(out.astype(batch.dtype, copy=False), single)


# --------------------------------------------------------------------------- inpainting

def biharmonic_inpaint(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill missing pixels with the smooth (biharmonic) continuation of the known ones, per image
    (scikit-image ``inpaint_biharmonic``). Known pixels are kept exactly; hidden values are never read.

    Args:
        images: floats ``(H, W)`` or ``(N, H, W)``.
        mask: boolean ``(H, W)`` (same for every face) or ``(N, H, W)``, True = missing.

    Raises:
        ConfigError: bad images/mask, or scikit-image missing.
    """
    batch, single = as_image_batch(images)
    holes = _check_mask(batch, mask)
    restoration = _restoration("biharmonic_inpaint")
    hidden_zeroed = np.where(holes, 0.0, batch)  # skimage ignores masked values; zero them to be sure
    # skimage's Cython wants writable C-contiguous arrays: copy each face and mask (never a broadcast view)
    out = np.stack([restoration.inpaint_biharmonic(np.array(img, order="C"), np.array(m, order="C"))
                    if m.any() else img for img, m in zip(hidden_zeroed, holes)])
    return _restore(np.where(holes, out, batch).astype(batch.dtype, copy=False), single)


# --------------------------------------------------------------------------- tuning

Denoiser = Callable[[np.ndarray, Any], np.ndarray]

DENOISERS: dict[str, Denoiser] = {
    "mean": lambda x, size: mean_filter(x, size),
    "median": lambda x, size: median_filter(x, size),
    "gaussian": gaussian_filter,
    "tv": tv_denoise,
    "nlm": nl_means,
}
"""Denoisers by name, each ``fn(noisy, param)``: the filter size, ``sigma``, TV ``weight`` or NLM ``h``."""


@dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune_denoiser`: the best ``param``, its mean ``psnr`` (dB) and every ``scores[param]``."""

    param: Any
    psnr: float
    scores: dict = field(default_factory=dict)


def tune_denoiser(name: Union[str, Denoiser], noisy_val: np.ndarray, clean_val: np.ndarray,
                  grid: Sequence[Any]) -> TuneResult:
    """The parameter of ``grid`` whose denoised validation faces have the highest mean PSNR.

    Tune on VALIDATION faces only, one noise level at a time, then apply the parameter to the
    test faces: the baseline is then as strong as a fair comparison allows.

    Args:
        name: a key of :data:`DENOISERS`, or any ``fn(noisy, param) -> denoised`` (e.g. PCA at ``d``).
        noisy_val, clean_val: ``(N, H, W)`` floats in [0, 1] of the same shape.
        grid: candidate parameters, tried in order (ties keep the first).

    Returns:
        A :class:`TuneResult`.

    Raises:
        ConfigError: unknown ``name``, empty ``grid`` or mismatched faces.
    """
    if callable(name):
        fn = name
    elif name in DENOISERS:
        fn = DENOISERS[name]
    else:
        raise ConfigError(f"`name` must be one of {sorted(DENOISERS)} or a callable. Received: name={name!r}")
    grid = list(grid)
    if not grid:
        raise ConfigError("`grid` must hold at least one parameter. Received: grid=[]")
    noisy, _ = as_image_batch(noisy_val, "noisy_val")
    clean, _ = as_image_batch(clean_val, "clean_val")
    if noisy.shape != clean.shape:
        raise ConfigError(f"`noisy_val` and `clean_val` must have the same shape. Received: {noisy.shape} "
                          f"and {clean.shape}")
    scores = {}
    for param in grid:
        scores[param] = float(np.mean(psnr(np.asarray(fn(noisy, param), np.float64), clean)))
    best = max(grid, key=lambda p: scores[p])  # max keeps the first of equal scores
    log.debug("tuned %s: %r (%.2f dB)", getattr(name, "__name__", name), best, scores[best])
    return TuneResult(best, scores[best], scores)
