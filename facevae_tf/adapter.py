"""A trained Keras VAE behind the numpy protocol: :class:`shared.protocol.NumpyAdapter` + one batch in TF.

Checks, batching and seeded sampling live in the shared adapter (z is drawn with numpy, so
``sample(n, seed)`` gives the same faces as the torch backend after conversion). Work runs in
inference mode (BatchNorm moving statistics).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from facevae_tf.models import FaceVAE
from shared.config import RunConfig
from shared.faces import Faces, label_vectors
from shared.protocol import BATCH, NumpyAdapter

__all__ = ["TFGenerativeModel", "CHUNK", "arrays_of"]

CHUNK = BATCH


def arrays_of(faces: Faces, label_dim: int) -> dict[str, np.ndarray]:
    """``{"x": (N, H, W, 1) float32 in [0, 1], "y": (N, label_dim) float32}`` of ``faces``."""
    x = faces.floats()[..., None]
    y = label_vectors(faces.labels) if label_dim else np.zeros((len(faces), 0), np.float32)
    return {"x": x, "y": y}


class TFGenerativeModel(NumpyAdapter):
    """numpy protocol around a :class:`facevae_tf.models.FaceVAE`.

    Attributes:
        config: the run config; latent_dim: size of z; conditional: True for ``cvae``.
        keras_model: the wrapped Keras model (for gradient work such as inpainting and IWAE).
    """

    def __init__(self, keras_model: FaceVAE, config: RunConfig):
        super().__init__(config, int(keras_model.latent_dim), bool(keras_model.conditional))
        self.keras_model = keras_model
        self._post = tf.function(lambda x, y: keras_model.posterior(x, y, training=False), reduce_retracing=True)
        self._dec = tf.function(lambda z, y: tf.sigmoid(keras_model.decode_logits(z, y, training=False)),
                                reduce_retracing=True)
        self._rec = tf.function(lambda x, y: tf.sigmoid(keras_model((x, y), training=False)),
                                reduce_retracing=True)

    def labels_or_empty(self, labels: Optional[np.ndarray], n: int) -> np.ndarray:
        """Validated ``(n, 7)`` labels for conditional models, ``(n, 0)`` otherwise."""
        return self.check_labels(labels, n)

    def images_nhwc(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` uint8/float -> float32 ``(N, H, W, 1)`` at the model's image size."""
        return self.check_images(images)[..., None]

    def _encode_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        post = self._post(tf.constant(x[..., None]), tf.constant(y))
        return post["mean"].numpy(), post["logvar"].numpy()

    def _decode_batch(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._dec(tf.constant(z), tf.constant(y)).numpy()[..., 0]

    def _reconstruct_batch(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The posterior mode decoded (for ``iaf``: the flow at eps = 0)."""
        return self._rec(tf.constant(x[..., None]), tf.constant(y)).numpy()[..., 0]
