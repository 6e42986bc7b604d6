"""The numpy protocol every trained generative model satisfies, on either backend.

Everything backend-neutral (interpolation matrices, denoising, iterative inpainting, figures)
is written once against this protocol. Images cross it as float32 arrays in [0, 1] of shape
``(N, H, W)`` (uint8 inputs are accepted and scaled); ``labels`` are the ``(N, 7)`` vectors of
:func:`shared.faces.label_vectors`, required by conditional models and ignored by the others.
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import numpy as np

from shared.config import RunConfig

__all__ = ["GenerativeModel", "as_unit_float"]


@runtime_checkable
class GenerativeModel(Protocol):
    config: RunConfig
    latent_dim: int
    conditional: bool

    def encode(self, images: np.ndarray, labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior base ``(mean, logvar)``, each ``(N, latent_dim)`` float32."""

    def decode(self, z: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Decoder mean images ``(N, H, W)`` float32 in [0, 1]."""

    def sample(self, n: int, seed: int, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """``n`` faces decoded from z ~ N(0, I) drawn with ``seed``: ``(n, H, W)`` in [0, 1]."""

    def reconstruct(self, images: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Decode the posterior mean of ``images``: ``(N, H, W)`` in [0, 1]."""


def as_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] images -> float32 [0, 1]; shape is kept."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)
