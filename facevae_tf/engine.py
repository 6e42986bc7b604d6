"""The TF engine under :func:`shared.training.fit`: a ``tf.function`` step around a ``GradientTape``.

The engine reads only ``model.loss_terms(x, y, eps, beta, training)["loss"]``; every other term is
logged as ``train_<name>`` / ``val_<name>``. Batches, ε and β come from the shared loop, so a run
sees the same batches and noise as the torch backend would. Optimisers mirror ``facevae.engine``:
``adamw`` decays weights decoupled from the gradient (Keras AdamW), ``adam``/``sgd`` add
``weight_decay·w`` to the gradient (L2, as torch does); ``grad_clip`` clips the global norm of the
loss gradient before that, again as torch does. The denoising input noise of ``TrainConfig.input_noise``
arrives from the loop as numpy; a second traced step takes it as an input and passes
``clip(x + noise, 0, 1)`` to the model as the encoder's input (``x_in``), the likelihood scoring ``x``.

Determinism: :func:`seed_everything` calls ``keras.utils.set_random_seed`` (Python, numpy and TF
global seeds — it changes the caller's global RNG state). Bit-identical results across runs also
need ``tf.config.experimental.enable_op_determinism()``, a process-wide switch this module never
flips on its own: call :func:`enable_determinism` yourself (the tests do).

Precision (``TrainConfig.precision``): the engine gives the model's layers the matching dtype policy
(:func:`facevae_tf.models.set_precision`, never Keras' global policy), so the forward pass of the
training and validation steps (and the learning guard's validation reconstructions) runs in
bfloat16/float16 while the variables, the loss terms and the checkpoints stay float32. ``16`` wraps
the optimiser in ``keras.optimizers.LossScaleOptimizer`` and needs a GPU. Only the inner optimiser's
variables are checkpointed (not the loss scale), so a run can resume in another precision.
:func:`facevae_tf.backend.load` builds a float32 model: evaluation and inference run in float32.

Several devices (``TrainConfig.devices``): given a ``tf.distribute`` strategy the training step runs
on every replica (:func:`facevae_tf.distributed.train_step_fn`) and computes the single-device step;
validation runs on one replica. Checkpoints are unchanged.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from facevae_tf import checkpoint, distributed
from facevae_tf.models import FaceVAE, set_precision
from facevae_tf.optimizers import make_optimizer
from shared import training
from shared.config import RunConfig, TrainConfig
from shared.errors import ConfigError, NonFiniteLossError, RunError

__all__ = ["fit", "TFEngine", "seed_everything", "enable_determinism", "make_optimizer", "lr_at", "device_scope",
           "check_precision", "NonFiniteLossError"]


def seed_everything(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)``: seeds Python, numpy and TF globals (weights init)."""
    keras.utils.set_random_seed(int(seed))


def enable_determinism(seed: int) -> None:
    """Seed everything and switch on TF op determinism for the rest of this process (slower ops)."""
    seed_everything(seed)
    tf.config.experimental.enable_op_determinism()


def device_scope(name: str):
    """``tf.device`` for ``TrainConfig.device``: ``auto`` (TF's placement: a GPU when present), ``cpu``, ``cuda``.

    Raises:
        ConfigError: ``cuda`` requested on a machine where TensorFlow sees no GPU.
    """
    if name == "cpu":
        return tf.device("/CPU:0")
    if name == "cuda":
        if not tf.config.list_physical_devices("GPU"):
            raise ConfigError("`device` 'cuda' was requested but TensorFlow sees no GPU. "
                              "Received: device='cuda' (use 'auto' or 'cpu')")
        return tf.device("/GPU:0")
    return contextlib.nullcontext()


def check_precision(cfg: TrainConfig) -> None:
    """Refuse a ``precision`` this machine cannot run usefully.

    Raises:
        ConfigError: ``16`` where training runs on a CPU (float16 there is far slower than float32).
    """
    on_cpu = cfg.device == "cpu" or not tf.config.list_physical_devices("GPU")
    if cfg.precision == "16" and on_cpu:
        raise ConfigError(f"`precision` '16' needs a GPU (float16 on a CPU is far slower than float32); "
                          f"use 'bf16' on CPUs. Received: precision='16', device={cfg.device!r}")


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch``: ``cfg.lr`` times :meth:`shared.config.TrainConfig.lr_factor`."""
    return cfg.lr * cfg.lr_factor(epoch)


class TFEngine:
    """:class:`shared.training.Engine` for a :class:`~facevae_tf.models.FaceVAE`.

    Args:
        model: a built model.
        train, val: ``{"x": (N, H, W, 1) float32 in [0, 1], "y": (N, label_dim) float32}``.
        config: the run config.
        run_dir: the run folder.
        strategy: the ``tf.distribute`` strategy ``model`` was built under (``devices > 1``), or None;
            see :mod:`facevae_tf.distributed`.
    """

    def __init__(self, model: FaceVAE, train: dict[str, np.ndarray], val: dict[str, np.ndarray],
                 config: RunConfig, run_dir: Path, strategy: Optional[tf.distribute.Strategy] = None):
        cfg = config.train
        self.model, self.train, self.val, self.run_dir = model, train, val, Path(run_dir)
        self.n_train, self.n_val = len(train["x"]), len(val["x"])
        self.noise_dim = int(getattr(model, "noise_dim", model.latent_dim))  # cvae label consistency draws more
        check_precision(cfg)
        set_precision(model, cfg.precision)
        scaled = cfg.precision == "16"  # float16 gradients underflow without loss scaling
        # under a strategy the optimiser's variables are mirrored like the model's
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            inner = make_optimizer(cfg)
            self.optimizer = keras.optimizers.LossScaleOptimizer(inner) if scaled else inner
            self.optimizer.build(model.trainable_variables)
        self.loop_state = tf.Variable("{}", dtype=tf.string, trainable=False)
        # the inner optimiser's variables only: checkpoints are the same in every precision
        self.ckpt = checkpoint.model_checkpoint(model, optimizer=checkpoint.named_variables(inner.variables),
                                                loop=self.loop_state)
        variables = model.trainable_variables
        l2 = cfg.weight_decay if cfg.optimizer in ("adam", "sgd") else 0.0

        def loss_of(loss):
            return self.optimizer.scale_loss(loss) if scaled else loss

        def prepare(grads):  # the loss gradient -> what the optimiser applies
            if scaled:  # clip and decay the true gradient; LossScaleOptimizer unscales (and skips inf) itself
                scale = self.optimizer.dynamic_scale
                grads = [g / scale for g in grads]
            if cfg.grad_clip > 0:
                grads, _ = tf.clip_by_global_norm(grads, cfg.grad_clip)
            if l2 > 0:
                grads = [g + l2 * v for g, v in zip(grads, variables)]
            if scaled:
                grads = [g * scale for g in grads]
            return grads

        def train_step(x, y, eps, beta, x_in=None):
            with tf.GradientTape() as tape:
                terms = model.loss_terms(x, y, eps, beta, training=True, x_in=x_in)
                loss = loss_of(terms["loss"])
            self.optimizer.apply_gradients(zip(prepare(tape.gradient(loss, variables)), variables))
            return terms

        def val_step(x, y, eps, beta):  # on one replica (the variables' first copy) under a strategy
            return model.loss_terms(x, y, eps, beta, training=False)

        if strategy is not None:
            train_step = distributed.train_step_fn(strategy, model, variables, self.optimizer, loss_of, prepare)
        # one trace for every batch size (the last batch is smaller); XLA still compiles per shape
        s, lab, d = config.model.image_size, model.label_dim, self.noise_dim
        spec = [tf.TensorSpec((None, s, s, 1), tf.float32), tf.TensorSpec((None, lab), tf.float32),
                tf.TensorSpec((None, d), tf.float32), tf.TensorSpec((), tf.float32)]
        jit = cfg.compile or None
        self._train_fn = tf.function(train_step, jit_compile=jit, input_signature=spec)

        def noisy_step(x, y, eps, beta, noise):  # traced only when a run trains with input noise
            return train_step(x, y, eps, beta, tf.clip_by_value(x + noise, 0.0, 1.0))

        self._noisy_fn = tf.function(noisy_step, jit_compile=jit, input_signature=spec + spec[:1])
        self._val_fn = tf.function(val_step, jit_compile=jit, input_signature=spec)
        self._recon_fn = tf.function(lambda x, y: tf.sigmoid(model((x, y), training=False)), reduce_retracing=True)

    @staticmethod
    def _inputs(data: dict[str, np.ndarray], idx: np.ndarray, eps: Optional[np.ndarray], beta: float):
        return (tf.constant(data["x"][idx]), tf.constant(data["y"][idx]), tf.constant(eps),
                tf.constant(beta, tf.float32))

    def set_lr(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(lr)

    def train_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray], *,
                   noise: Optional[np.ndarray] = None) -> dict[str, tf.Tensor]:
        if noise is None:
            return self._train_fn(*self._inputs(self.train, idx, eps, beta))
        return self._noisy_fn(*self._inputs(self.train, idx, eps, beta), tf.constant(noise[..., None]))

    def val_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray]) -> dict[str, tf.Tensor]:
        return self._val_fn(*self._inputs(self.val, idx, eps, beta))

    def scalars(self, terms: Sequence[Mapping[str, tf.Tensor]]) -> list[dict[str, float]]:
        return [{k: float(v.numpy()) for k, v in t.items()} for t in terms]

    def extra_val_metrics(self) -> dict[str, float]:
        return {}

    def save(self, which: str, loop_state: dict[str, Any]) -> None:
        self.loop_state.assign(json.dumps(loop_state))
        checkpoint.save(self.run_dir, which, self.ckpt)

    def restore(self, which: str) -> dict[str, Any]:
        folder = checkpoint.checkpoint_dir(self.run_dir, which)
        try:
            names = [name for name, _ in tf.train.list_variables(str(folder / "ckpt"))]
        except (tf.errors.OpError, ValueError):
            names = None  # unreadable: checkpoint.restore says what is wrong
        if names is not None and not any(n.startswith("loop/") for n in names):
            raise RunError(training.NO_TRAINING_STATE.format(path=folder))
        checkpoint.restore(self.run_dir, which, self.ckpt)
        try:
            return dict(json.loads(self.loop_state.numpy().decode()))
        except (ValueError, TypeError) as exc:
            raise RunError(f"{self.run_dir}: checkpoint '{which}' holds no readable training state: {exc}") from None

    def has_checkpoint(self, which: str) -> bool:
        return checkpoint.has_checkpoint(self.run_dir, which)

    def reconstruct_val(self) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        outs = [self._recon_fn(tf.constant(self.val["x"][s:s + training.VAL_BATCH]),
                               tf.constant(self.val["y"][s:s + training.VAL_BATCH])).numpy()[..., 0]
                for s in range(0, self.n_val, training.VAL_BATCH)]
        return self.val["x"][..., 0], np.concatenate(outs), self.train["x"][..., 0].mean(0)


def fit(model: FaceVAE, train: dict[str, np.ndarray], val: dict[str, np.ndarray], config: RunConfig,
        run_dir: Path, *, resume: bool = False, strategy: Optional[tf.distribute.Strategy] = None) -> dict[str, Any]:
    """Train ``model`` with the shared loop (:func:`shared.training.fit`) through a :class:`TFEngine`.

    Args:
        strategy: the ``tf.distribute`` strategy ``model`` was built under (:mod:`facevae_tf.distributed`), or None.

    Returns:
        The best epoch's metrics record plus the learning guard's ``warnings``.
    """
    return training.fit(TFEngine(model, train, val, config, run_dir, strategy), config, run_dir, resume=resume)
