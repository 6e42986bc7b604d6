"""The VAE ⊕ PCA denoiser: ``α·VAE(y) + (1 − α)·PCA_d(y)``, ``d`` and ``α`` tuned on validation faces.

Why a blend: on real faces the two denoisers fail differently. The VAE's output is a plausible face
whose details are a little off (its clean reconstruction is itself ~24 dB); PCA projection keeps the
true details inside its span together with the noise that falls there. Their errors are weakly
correlated, so their average beats both: on the real test faces at σ = 0.3 the denoising VAE alone
is 0.5 dB above PCA, the blend 1.4 dB (and 1.15 dB above PCA blended the same way with the best
classical filter; README, "Real faces"). ``α = 1`` is the VAE alone and
``α = 0`` PCA alone, both in the grid, so on the validation faces the blend is never worse than
either; the test faces only ever see the (d, α) chosen there.

Everything here is numpy on top of ``model.reconstruct``, so both backends blend alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from shared.baselines import PCA
from shared.corruptions import as_image_batch, gaussian_noise
from shared.errors import ConfigError

__all__ = ["ALPHAS", "DIMS", "Blend", "BlendBasis", "fit_blend", "tune_blend", "apply_blend", "blend_denoise",
           "noisy_faces"]

ALPHAS = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))
DIMS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)  # the benchmark's PCA denoising grid


@dataclass(frozen=True)
class Blend:
    """A tuned blend: PCA components ``d``, VAE weight ``alpha`` and the validation PSNR (dB) it scored."""

    d: int
    alpha: float
    val_psnr: float

    def describe(self) -> str:
        return f"d={self.d}, α={self.alpha:g}"


@dataclass
class BlendBasis:
    """What a blend is tuned with: a PCA fitted on the training faces and clean validation faces.

    Attributes:
        pca: fitted :class:`~shared.baselines.PCA` (its ``n_components`` caps the ``d`` tried).
        val: ``(N, H, W)`` clean validation faces in [0, 1] (never the faces scored).
        val_labels: their label vectors, for conditional models.
    """

    pca: PCA
    val: np.ndarray
    val_labels: Optional[np.ndarray] = None
    n_train: int = 0  # faces the PCA was fitted on (reported)

    @classmethod
    def from_faces(cls, train: np.ndarray, val: np.ndarray, val_labels: Optional[np.ndarray] = None,
                   max_d: int = max(DIMS)) -> "BlendBasis":
        """Fit the PCA on ``train`` (up to ``max_d`` components, fewer when there are fewer faces or pixels).

        Raises:
            ConfigError: no training or no validation faces.
        """
        train, _ = as_image_batch(train, "train")
        val, _ = as_image_batch(val, "val")
        if len(train) < 2 or not len(val):
            raise ConfigError(f"the VAE ⊕ PCA blend needs training faces (≥ 2) and validation faces to tune on. "
                              f"Received: {len(train)} training and {len(val)} validation faces")
        k = min(max_d, len(train), train.shape[1] * train.shape[2])
        return cls(PCA().fit(train, k), val.astype(np.float32), val_labels, len(train))


def noisy_faces(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``clean`` plus seeded Gaussian noise of std ``sigma``, clipped to [0, 1] (float32), as every denoising table."""
    return np.clip(np.asarray(gaussian_noise(clean, float(sigma), seed), np.float32), 0.0, 1.0)


def fit_blend(vae_val: np.ndarray, noisy_val: np.ndarray, clean_val: np.ndarray, pca: PCA, *,
              dims: Sequence[int] = DIMS, alphas: Sequence[float] = ALPHAS) -> Blend:
    """The (d, α) whose blend of ``vae_val`` with ``pca`` at ``d`` components scores best on the validation faces.

    Args:
        vae_val: the VAE's denoising of ``noisy_val``; noisy_val, clean_val: the validation faces.
        pca: fitted PCA; ``dims`` above its ``n_components`` are skipped.
        dims, alphas: the grids (ties keep the first: the smaller d, then the smaller α).

    Raises:
        ConfigError: mismatched shapes, or no ``d`` of ``dims`` within the PCA.
    """
    vae_val, _ = as_image_batch(vae_val, "vae_val")
    noisy_val, _ = as_image_batch(noisy_val, "noisy_val")
    clean_val, _ = as_image_batch(clean_val, "clean_val")
    if not vae_val.shape == noisy_val.shape == clean_val.shape:
        raise ConfigError(f"`vae_val`, `noisy_val` and `clean_val` must have the same shape. Received: "
                          f"{vae_val.shape}, {noisy_val.shape} and {clean_val.shape}")
    usable = [int(d) for d in dims if 1 <= int(d) <= pca.n_components]
    if not usable:
        raise ConfigError(f"no PCA size of {list(dims)} fits the {pca.n_components} fitted components")
    n = len(clean_val)
    v = vae_val.reshape(n, -1).astype(np.float64)
    c = clean_val.reshape(n, -1).astype(np.float64)
    a = np.asarray(list(alphas), np.float64)[:, None]
    best: Optional[Blend] = None
    for d in usable:
        # the blend's error is (p − c) + α(v − p), so each face's MSE is a quadratic in α: every α of the
        # grid is scored from three dot products per face instead of one blended image per α
        p = pca.truncated(d).project(noisy_val).reshape(n, -1).astype(np.float64)
        dv, dp = v - p, p - c
        mse = (a * a * np.einsum("ij,ij->i", dv, dv) + 2 * a * np.einsum("ij,ij->i", dv, dp)
               + np.einsum("ij,ij->i", dp, dp)) / v.shape[1]
        with np.errstate(divide="ignore"):  # a perfect face scores +inf dB, as shared.image_metrics.psnr
            scores = np.mean(-10.0 * np.log10(np.maximum(mse, 0.0)), axis=1)
        k = int(np.argmax(scores))  # the first of equal scores: the smaller α
        if best is None or scores[k] > best.val_psnr:
            best = Blend(d, float(a[k, 0]), float(scores[k]))
    return best


def tune_blend(model: Any, basis: BlendBasis, sigma: float, *, seed: int, dims: Sequence[int] = DIMS,
               alphas: Sequence[float] = ALPHAS) -> Blend:
    """The (d, α) for noise of std ``sigma``: the validation faces get their own noise (``seed``; give
    it a seed the scored faces do not use), the VAE denoises them, and :func:`fit_blend` picks.

    Args:
        model: a generative model of the numpy protocol (``reconstruct``).
    """
    noisy_val = noisy_faces(basis.val, sigma, seed)
    vae_val = np.asarray(model.reconstruct(noisy_val, basis.val_labels), np.float32)
    return fit_blend(vae_val, noisy_val, basis.val, basis.pca, dims=dims, alphas=alphas)


def blend_denoise(model: Any, noisy: np.ndarray, basis: BlendBasis, sigma: float, *, seed: int,
                  labels: Optional[np.ndarray] = None,
                  vae_out: Optional[np.ndarray] = None, dims: Sequence[int] = DIMS,
                  alphas: Sequence[float] = ALPHAS) -> tuple[np.ndarray, Blend]:
    """Denoise ``noisy`` (noise std ``sigma``) with the VAE ⊕ PCA blend tuned at that σ on ``basis.val``
    (:func:`tune_blend` with ``seed``), then applied to ``noisy``.

    Args:
        model: a generative model of the numpy protocol (``reconstruct``).
        noisy: ``(N, H, W)`` noisy faces in [0, 1]; labels: theirs (conditional models).
        vae_out: ``model.reconstruct(noisy, labels)`` when already computed.
        dims, alphas: the tuning grids (:func:`fit_blend`).

    Returns:
        ``(denoised faces (N, H, W) float32 in [0, 1], the Blend)``.
    """
    blend = tune_blend(model, basis, sigma, seed=seed, dims=dims, alphas=alphas)
    if vae_out is None:
        vae_out = model.reconstruct(noisy, labels)
    return apply_blend(blend, vae_out, noisy, basis.pca), blend


def apply_blend(blend: Blend, first: np.ndarray, noisy: np.ndarray, pca: PCA) -> np.ndarray:
    """``α·first + (1 − α)·PCA_d(noisy)``, clipped to [0, 1] (float32): ``first`` is the VAE's output, or any
    other denoiser's (the benchmark blends PCA with the classical filters too, as a baseline)."""
    projected = pca.truncated(blend.d).project(noisy)
    out = np.float32(blend.alpha) * np.asarray(first, np.float32) + np.float32(1.0 - blend.alpha) * projected
    return np.clip(out, 0.0, 1.0).astype(np.float32)
