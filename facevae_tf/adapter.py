"""The numpy adapter: a trained Keras VAE seen through :class:`shared.protocol.GenerativeModel`.

Images cross as float32 ``(N, H, W)`` in [0, 1] (uint8 accepted); labels are the ``(N, 7)``
vectors of :func:`shared.faces.label_vectors`, required by ``cvae`` and ignored otherwise.
Work runs in inference mode (BatchNorm moving statistics) in chunks of :data:`CHUNK` images.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from facevae_tf.models import FaceVAE
from shared.config import LABEL_DIM, RunConfig
from shared.errors import FaceVAEError
from shared.faces import Faces, label_vectors
from shared.protocol import as_unit_float

__all__ = ["TFGenerativeModel", "CHUNK", "arrays_of"]

CHUNK = 256


def arrays_of(faces: Faces, label_dim: int) -> dict[str, np.ndarray]:
    """``{"x": (N, H, W, 1) float32 in [0, 1], "y": (N, label_dim) float32}`` of ``faces``."""
    x = faces.floats()[..., None]
    y = label_vectors(faces.labels) if label_dim else np.zeros((len(faces), 0), np.float32)
    return {"x": x, "y": y}


class TFGenerativeModel:
    """numpy protocol around a :class:`facevae_tf.models.FaceVAE`.

    Attributes:
        config: the run config; latent_dim: size of z; conditional: True for ``cvae``.
        keras_model: the wrapped Keras model (for gradient work such as inpainting and IWAE).
    """

    def __init__(self, keras_model: FaceVAE, config: RunConfig):
        self.keras_model = keras_model
        self.config = config
        self.latent_dim = int(keras_model.latent_dim)
        self.conditional = bool(keras_model.conditional)
        self.image_size = int(config.model.image_size)
        self._post = tf.function(lambda x, y: keras_model.posterior(x, y, training=False), reduce_retracing=True)
        self._dec = tf.function(lambda z, y: tf.sigmoid(keras_model.decode_logits(z, y, training=False)),
                                reduce_retracing=True)
        self._rec = tf.function(lambda x, y: tf.sigmoid(keras_model((x, y), training=False)),
                                reduce_retracing=True)

    # -- input checks -------------------------------------------------------------------------
    def labels_or_empty(self, labels: Optional[np.ndarray], n: int) -> np.ndarray:
        """Validated ``(n, 7)`` labels for conditional models, ``(n, 0)`` otherwise.

        Raises:
            FaceVAEError: a conditional model got no labels, or labels of the wrong shape.
        """
        if not self.conditional:
            return np.zeros((n, 0), dtype=np.float32)
        if labels is None:
            raise FaceVAEError(f"this {self.config.model.family} model is conditional: pass labels of shape "
                               f"({n}, {LABEL_DIM}) (see shared.faces.label_vectors)")
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (n, LABEL_DIM):
            raise FaceVAEError(f"labels must have shape ({n}, {LABEL_DIM}) (gender, ethnicity one-hot, age/100). "
                               f"Received: labels.shape={labels.shape}")
        return labels

    def images_nhwc(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` uint8/float -> float32 ``(N, H, W, 1)``; checks the image size.

        Raises:
            FaceVAEError: images are not ``(N, S, S)`` with S the model's image size.
        """
        x = as_unit_float(images)
        s = self.image_size
        if x.ndim != 3 or x.shape[1:] != (s, s):
            raise FaceVAEError(f"images must have shape (N, {s}, {s}). Received: images.shape={x.shape}")
        return x[..., None]

    def _chunks(self, fn, *arrays: np.ndarray) -> list[np.ndarray]:
        n = len(arrays[0])
        outs: list[list[np.ndarray]] = []
        for start in range(0, n, CHUNK):
            res = fn(*(tf.constant(a[start:start + CHUNK]) for a in arrays))
            res = res if isinstance(res, (tuple, list)) else (res,)
            if not outs:
                outs = [[] for _ in res]
            for acc, r in zip(outs, res):
                acc.append(np.asarray(r))
        return [np.concatenate(acc) for acc in outs]

    # -- protocol -----------------------------------------------------------------------------
    def encode(self, images: np.ndarray, labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior base ``(mean, logvar)``, each ``(N, latent_dim)`` float32."""
        x = self.images_nhwc(images)
        y = self.labels_or_empty(labels, len(x))
        if len(x) == 0:
            empty = np.zeros((0, self.latent_dim), np.float32)
            return empty, empty.copy()
        mean, logvar = self._chunks(lambda a, b: (lambda p: (p["mean"], p["logvar"]))(self._post(a, b)), x, y)
        return mean.astype(np.float32), logvar.astype(np.float32)

    def decode(self, z: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Decoder mean images ``(N, H, W)`` float32 in [0, 1].

        Raises:
            FaceVAEError: ``z`` is not ``(N, latent_dim)``, or labels are missing for a conditional model.
        """
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise FaceVAEError(f"z must have shape (N, {self.latent_dim}). Received: z.shape={z.shape}")
        y = self.labels_or_empty(labels, len(z))
        if len(z) == 0:
            return np.zeros((0, self.image_size, self.image_size), np.float32)
        (out,) = self._chunks(self._dec, z, y)
        return out[..., 0].astype(np.float32)

    def sample(self, n: int, seed: int, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """``n`` faces decoded from z ~ N(0, I) drawn with ``seed`` (numpy generator): ``(n, H, W)``."""
        z = np.random.default_rng(seed).standard_normal((int(n), self.latent_dim)).astype(np.float32)
        return self.decode(z, labels)

    def reconstruct(self, images: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Decode the posterior mean of ``images`` (for ``iaf``: the flow at eps = 0): ``(N, H, W)``."""
        x = self.images_nhwc(images)
        y = self.labels_or_empty(labels, len(x))
        if len(x) == 0:
            return np.zeros((0, self.image_size, self.image_size), np.float32)
        (out,) = self._chunks(self._rec, x, y)
        return out[..., 0].astype(np.float32)

    def __repr__(self) -> str:
        return (f"TFGenerativeModel(family={self.config.model.family!r}, latent_dim={self.latent_dim}, "
                f"image_size={self.image_size})")
