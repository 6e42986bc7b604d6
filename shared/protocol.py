"""The numpy protocol every trained generative model satisfies, on either backend, and its adapter.

Everything backend-neutral (interpolation matrices, denoising, iterative inpainting, figures)
is written once against this protocol. Images cross it as float32 arrays in [0, 1] of shape
``(N, H, W)`` (uint8 inputs are accepted and scaled); ``labels`` are the ``(N, 7)`` vectors of
:func:`shared.faces.label_vectors`, required by conditional models and ignored by the others.

:class:`NumpyAdapter` is that protocol written once: input checks, batching, empty inputs and
seeded sampling. A backend adapter (``facevae.adapter``, ``facevae_tf.adapter``) only runs one
batch through its framework. ``sample(n, seed)`` draws z with numpy, so the same seed gives the
same z on every backend and device, and a converted run samples the same faces.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import numpy as np

from shared.config import LABEL_DIM, RunConfig
from shared.errors import ConfigError

__all__ = ["GenerativeModel", "NumpyAdapter", "as_unit_float", "latent_noise", "BATCH"]

BATCH = 256  # faces per forward pass


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


def latent_noise(n: int, dim: int, seed: int) -> np.ndarray:
    """z ~ N(0, I) of ``sample(n, seed)``: ``(n, dim)`` float32 from ``numpy.random.default_rng(seed)``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"`n` must be a non-negative integer. Received: n={n!r}")
    return np.random.default_rng(int(seed)).standard_normal((int(n), dim)).astype(np.float32)


class NumpyAdapter:
    """:class:`GenerativeModel` written once; a backend subclass implements the three ``_*_batch`` hooks.

    Args:
        config: the run config the model was trained with.
        latent_dim: size of z.
        conditional: whether the model needs labels.

    Raises (every public method):
        ConfigError: images not ``(N, S, S)`` at the model's size, z not ``(N, latent_dim)``, missing
            or misshaped labels for a conditional model.
    """

    def __init__(self, config: RunConfig, latent_dim: int, conditional: bool):
        self.config = config
        self.latent_dim = int(latent_dim)
        self.conditional = bool(conditional)
        self.image_size = int(config.model.image_size)

    # -- what a backend implements ------------------------------------------------------------
    def _encode_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _decode_batch(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reconstruct_batch(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- checks -------------------------------------------------------------------------------
    def check_images(self, images: np.ndarray) -> np.ndarray:
        """``(N, S, S)`` uint8 or [0, 1] floats -> float32 ``(N, S, S)`` at the model's image size."""
        x = as_unit_float(images)
        s = self.image_size
        if x.ndim != 3 or x.shape[1:] != (s, s):
            raise ConfigError(f"images must have shape (N, {s}, {s}). Received: images.shape={x.shape}")
        return x

    def check_labels(self, labels: Optional[np.ndarray], n: int) -> np.ndarray:
        """Validated ``(n, 7)`` float32 labels for conditional models, ``(n, 0)`` otherwise."""
        if not self.conditional:
            return np.zeros((n, 0), dtype=np.float32)
        if labels is None:
            raise ConfigError(f"this {self.config.model.family} model is conditional: pass labels of shape "
                              f"({n}, {LABEL_DIM}) (see shared.faces.label_vectors)")
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (n, LABEL_DIM):
            raise ConfigError(f"labels must have shape ({n}, {LABEL_DIM}) (gender, ethnicity one-hot, age/100). "
                              f"Received: labels.shape={labels.shape}")
        return labels

    def check_latents(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"z must have shape (N, {self.latent_dim}). Received: z.shape={z.shape}")
        return z

    @staticmethod
    def _batched(fn: Callable[..., tuple[np.ndarray, ...]], n_out: int, empty: tuple[int, ...],
                 *arrays: np.ndarray) -> list[np.ndarray]:
        n = len(arrays[0])
        if n == 0:
            return [np.zeros((0, *empty), np.float32) for _ in range(n_out)]
        parts = [fn(*(a[s:s + BATCH] for a in arrays)) for s in range(0, n, BATCH)]
        return [np.concatenate([p[j] for p in parts]).astype(np.float32, copy=False) for j in range(n_out)]

    # -- the protocol -------------------------------------------------------------------------
    def encode(self, images: np.ndarray, labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior base ``(mean, logvar)``, each ``(N, latent_dim)`` float32."""
        x = self.check_images(images)
        mean, logvar = self._batched(self._encode_batch, 2, (self.latent_dim,), x, self.check_labels(labels, len(x)))
        return mean, logvar

    def decode(self, z: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Decoder mean images ``(N, H, W)`` float32 in [0, 1]."""
        z = self.check_latents(z)
        s = self.image_size
        (out,) = self._batched(lambda a, b: (self._decode_batch(a, b),), 1, (s, s), z,
                               self.check_labels(labels, len(z)))
        return out

    def sample(self, n: int, seed: int, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """``n`` faces decoded from z ~ N(0, I) drawn with ``seed`` (:func:`latent_noise`): ``(n, H, W)``."""
        return self.decode(latent_noise(n, self.latent_dim, seed), labels)

    def reconstruct(self, images: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Decode the posterior mode of ``images``: ``(N, H, W)`` in [0, 1]."""
        x = self.check_images(images)
        s = self.image_size
        (out,) = self._batched(lambda a, b: (self._reconstruct_batch(a, b),), 1, (s, s), x,
                               self.check_labels(labels, len(x)))
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(family={self.config.model.family!r}, latent_dim={self.latent_dim}, "
                f"image_size={self.image_size})")
