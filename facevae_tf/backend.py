"""The TF backend surface used by :mod:`shared.api`: ``train``, ``load``, ``evaluate``, ``inpaint_optimize``.

Models: ``vae``, ``cvae`` (labels from :func:`shared.faces.label_vectors`) and ``iaf``. A run folder
holds ``config.json`` and ``checkpoints/{last,best}`` (``tf.train.Checkpoint``); :func:`load` needs
nothing else. See :mod:`facevae_tf.engine` for seeding and determinism.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from facevae_tf import distributed
from facevae_tf.evaluation import evaluate
from facevae_tf.adapter import CHUNK, TFGenerativeModel, arrays_of
from facevae_tf.models import build_model
from facevae_tf.weights_io import import_plan_weights, load_trained
from facevae_tf.engine import device_scope, fit, seed_everything
from shared.config import RunConfig
from shared.errors import ConfigError
from shared.faces import Faces

__all__ = ["train", "load", "evaluate", "inpaint_optimize", "arrays_of"]

log = logging.getLogger(__name__)


def train(config: RunConfig, faces: Faces, split: Any, run_dir: Path, *, resume: bool = False,
          initial_weights: Optional[Mapping[str, np.ndarray]] = None) -> dict:
    """Train the model of ``config`` on ``split.train`` (validating on ``split.val``) into ``run_dir``.

    Seeds Python/numpy/TF globals with ``config.train.seed`` (see :func:`facevae_tf.engine.seed_everything`)
    and places the work on ``config.train.device`` (:func:`facevae_tf.engine.device_scope`), or on
    ``config.train.devices`` replicas under ``tf.distribute`` (:mod:`facevae_tf.distributed`; with
    ``TF_CONFIG`` on a cluster, only the chief writes ``run_dir``).

    Args:
        initial_weights: optional plan-keyed starting weights in torch layout (as
            ``facevae.weights_io.export_plan_weights`` gives them; ``vae`` family only), e.g. to start
            both backends from the very same weights. Ignored on ``resume`` (the checkpoint wins).

    Returns:
        The best epoch's metrics record plus the learning guard's ``warnings``.

    Raises:
        ConfigError: the config is not a tf generative model, ``cuda`` without a GPU, or ``devices`` this
            process cannot provide (see :func:`facevae_tf.distributed.strategy_for`);
        NonFiniteLossError: NaN/inf loss;
        RunError: ``resume`` without a checkpoint.
    """
    if config.backend != "tf":
        raise ConfigError(f"`backend` must be 'tf' for facevae_tf. Received: backend={config.backend!r}")
    if config.model.image_size != faces.images.shape[1]:
        raise ConfigError(f"`image_size` {config.model.image_size} does not match the faces "
                          f"({faces.images.shape[1]}×{faces.images.shape[2]})")
    if resume and distributed.cluster_spec() is not None:  # refused on every worker: none waits for the others
        raise ConfigError("`resume` is not supported on a TF_CONFIG cluster (the workers other than the chief keep "
                          "no checkpoint); resume the run on one machine, with --devices N")
    # before anything else touches TensorFlow: logical CPU devices exist only if made before the runtime starts
    strategy = distributed.strategy_for(config.train)
    seed_everything(config.train.seed)
    place = device_scope(config.train.device) if strategy is None else contextlib.nullcontext()
    with place:
        # under a strategy the variables are mirrored; their names, values and checkpoints are a one-device run's
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = build_model(config.model, synchronized_bn=strategy is not None)
            if initial_weights is not None:
                _start_from(model, config, initial_weights)
        label_dim = model.label_dim
        train_arrays = arrays_of(faces.subset(split.train), label_dim)
        val_arrays = arrays_of(faces.subset(split.val), label_dim)
        log.info("tf %s: %d parameters, %d train / %d val faces", config.model.family, model.count_params(),
                 len(train_arrays["x"]), len(val_arrays["x"]))
        if distributed.is_chief():
            return fit(model, train_arrays, val_arrays, config, Path(run_dir), resume=resume, strategy=strategy)
        # a non-chief worker of a TF_CONFIG cluster trains in step with the chief but writes to scratch
        with tempfile.TemporaryDirectory(prefix="facevae-worker-") as scratch:
            return fit(model, train_arrays, val_arrays, config, Path(scratch), resume=resume, strategy=strategy)


def _start_from(model, config: RunConfig, weights: Mapping[str, np.ndarray]) -> None:
    from shared.architecture import vae_plan
    from shared.weight_layout import convert_weights

    if config.model.family != "vae":
        raise ConfigError("`initial_weights` exist only for the vae family (the layer plan's weights)")
    import_plan_weights(model, convert_weights(weights, vae_plan(config.model), src="torch", dst="tf"))


def load(run_dir: Path, which: str = "best") -> TFGenerativeModel:
    """The trained model of ``run_dir`` (``best`` checkpoint, else ``last``) behind the numpy protocol.

    Raises:
        RunError: not a run folder or no checkpoint; ConfigError: not a tf generative run.
    """
    config, model = load_trained(run_dir, which)
    return TFGenerativeModel(model, config)


def inpaint_optimize(model: TFGenerativeModel, images: np.ndarray, mask: np.ndarray, *, steps: int = 200,
                     lr: float = 0.05, prior_weight: float = 1.0, seed: int = 0,
                     labels: Optional[np.ndarray] = None) -> np.ndarray:
    """Latent-optimisation inpainting: fit z to the known pixels with a prior term ½‖z‖².

    z starts at the encoder mean of the masked faces (missing pixels set to 0, plus N(0, 0.01²)
    jitter drawn with ``seed``) and minimises ``NLL(known pixels | z) + prior_weight · ½‖z‖²``
    with Adam; the weights stay frozen. Mirrors ``facevae.backend.inpaint_optimize``.

    Args:
        model: a loaded VAE (:func:`load`).
        images: ``(N, H, W)`` faces in [0, 1] (values under the mask are ignored).
        mask: ``(N, H, W)`` or ``(H, W)`` bool, True where a pixel is missing.
        steps, lr, prior_weight: optimisation settings.
        seed: seeds the jitter.
        labels: ``(N, 7)`` labels, required by conditional models.

    Returns:
        Decoded images ``(N, H, W)`` float32 in [0, 1] (the caller composites the known pixels).

    Raises:
        FaceVAEError: bad shapes or ``steps``, or missing labels for a conditional model.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"`steps` must be an integer >= 0. Received: steps={steps!r}")
    x = model.images_nhwc(images)
    known_np = (~np.broadcast_to(np.asarray(mask, dtype=bool), x.shape[:3]))[..., None].astype(np.float32)
    y_np = model.labels_or_empty(labels, len(x))
    if len(x) == 0:
        return x[..., 0]
    net = model.keras_model
    rng = np.random.default_rng(int(seed))
    outs = []
    for i in range(0, len(x), CHUNK):
        xt, known, y = (tf.constant(a[i:i + CHUNK]) for a in (x, known_np, y_np))
        # the latent ``reconstruct`` decodes (for iaf the flowed base mean, not the base mean itself)
        z0 = net.posterior_mode(net.posterior(xt * known, y, training=False))
        z = tf.Variable(z0 + 0.01 * rng.standard_normal(z0.shape).astype(np.float32))
        # torch's Adam eps (1e-8); Keras' default 1e-7 is added before bias correction and moved
        # small-gradient latents up to 8e-4 per pixel away from torch's in 20 steps
        opt = keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8)
        opt.build([z])

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                nll = net.nll(xt, net.decode_logits(z, y, training=False), known)
                loss = tf.reduce_sum(nll) + prior_weight * 0.5 * tf.reduce_sum(tf.square(z))
            opt.apply_gradients([(tape.gradient(loss, z), z)])

        for _ in range(int(steps)):
            step()
        outs.append(tf.sigmoid(net.decode_logits(z, y, training=False)).numpy()[..., 0])
    return np.concatenate(outs).astype(np.float32)
