"""The TF trainer: a ``tf.function`` step around a ``GradientTape``, epochs over in-memory arrays.

The trainer reads only ``model.loss_terms(x, y, eps, beta, training)["loss"]``; every other term
is logged as ``train_<name>`` / ``val_<name>`` (epoch means weighted by batch size) in
``metrics.jsonl`` beside ``epoch``, ``lr``, ``seconds``, ``images_per_s`` and ``step``.

Randomness: batch order is a numpy permutation seeded by ``(seed, epoch)``; the reparameterisation
noise comes from a ``tf.random.Generator`` whose state is checkpointed; validation noise uses a
fresh generator seeded identically every epoch. ``checkpoints/last`` holds model, optimizer,
generator and counters, so ``resume`` continues exactly where the run stopped.

Determinism: :func:`seed_everything` calls ``keras.utils.set_random_seed`` (Python, numpy and TF
global seeds — it changes the caller's global RNG state). Bit-identical results across runs also
need ``tf.config.experimental.enable_op_determinism()``, a process-wide switch this module never
flips on its own: call :func:`enable_determinism` yourself (the tests do).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from facevae_tf import checkpoint
from facevae_tf.models import FaceVAE
from shared.config import RunConfig, TrainConfig
from shared.errors import ConfigError, FaceVAEError, RunError
from shared.runs import append_metrics, checkpoints_dir, truncate_metrics

__all__ = ["fit", "NonFiniteLossError", "seed_everything", "enable_determinism", "make_optimizer", "lr_at",
           "device_scope"]

log = logging.getLogger(__name__)


class NonFiniteLossError(FaceVAEError):
    """The training loss became NaN or infinite; the message names the global step and epoch."""


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


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam, AdamW (decoupled ``weight_decay``) or SGD (momentum 0.9); ``grad_clip`` clips the global norm."""
    # an explicit name keeps slot-variable paths (checkpoint keys) independent of Keras' auto-numbering
    clip = {"global_clipnorm": cfg.grad_clip, "name": "optimizer"} if cfg.grad_clip > 0 else {"name": "optimizer"}
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=cfg.lr, **clip)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=cfg.lr, weight_decay=cfg.weight_decay, **clip)
    return keras.optimizers.SGD(learning_rate=cfg.lr, momentum=0.9, **clip)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch``: ``cfg.lr`` times :meth:`shared.config.TrainConfig.lr_factor`."""
    return cfg.lr * cfg.lr_factor(epoch)


class _Sums:
    """Batch-size-weighted sums of scalar terms."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, terms: dict[str, np.ndarray], n: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        self.count += n

    def means(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": v / max(self.count, 1) for k, v in self.sums.items()}


class _State:
    """Counters and generator saved with every checkpoint."""

    def __init__(self, seed: int) -> None:
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best = tf.Variable(math.inf, dtype=tf.float64, trainable=False)
        self.patience = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.stopped = tf.Variable(False, trainable=False)
        self.best_metrics = tf.Variable("{}", dtype=tf.string, trainable=False)
        self.generator = tf.random.Generator.from_seed(seed)

    def checkpoint(self, model: FaceVAE, optimizer: keras.optimizers.Optimizer) -> tf.train.Checkpoint:
        return checkpoint.model_checkpoint(
            model, optimizer=checkpoint.named_variables(optimizer.variables), generator=self.generator,
            epoch=self.epoch, step=self.step, best=self.best, patience=self.patience, stopped=self.stopped,
            best_metrics=self.best_metrics)


def _n_batches(n: int, bs: int) -> int:
    return n // bs + (1 if n % bs > 1 else 0)  # a 1-image tail would break BatchNorm statistics


def fit(model: FaceVAE, train: dict[str, np.ndarray], val: dict[str, np.ndarray], config: RunConfig,
        run_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train ``model`` with ``config.train``, writing ``metrics.jsonl`` and ``checkpoints/{last,best}``.

    Args:
        model: a built :class:`~facevae_tf.models.FaceVAE`.
        train, val: ``{"x": (N, H, W, 1) float32 in [0, 1], "y": (N, label_dim) float32}``.
        config: the run config (``train`` recipe; ``model.beta``/``kl_warmup_epochs`` for the KL weight).
        run_dir: run folder.
        resume: continue from ``checkpoints/last``; ``metrics.jsonl`` is cut back to its epoch.

    Returns:
        The best epoch's metrics record (best on ``val_loss``, the target objective β·rate + distortion).

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the checkpoints keep the last good epoch).
        RunError: ``resume`` without a ``last`` checkpoint.
        ConfigError: a split is empty.
    """
    cfg, mcfg = config.train, config.model
    run_dir = Path(run_dir)
    checkpoints_dir(run_dir)
    n_train, n_val = len(train["x"]), len(val["x"])
    if n_train == 0 or n_val == 0:
        raise ConfigError(f"training needs faces in both splits; got train={n_train}, val={n_val}")
    optimizer = make_optimizer(cfg)
    optimizer.build(model.trainable_variables)
    state = _State(cfg.seed)
    ckpt = state.checkpoint(model, optimizer)
    if resume:
        if not checkpoint.has_checkpoint(run_dir, "last"):
            raise RunError(f"{run_dir}: nothing to resume (no 'last' checkpoint in checkpoints/)")
        checkpoint.restore(run_dir, "last", ckpt)
        log.info("resuming %s at epoch %d", run_dir, int(state.epoch.numpy()))
    start_epoch = int(state.epoch.numpy())
    truncate_metrics(run_dir, start_epoch)

    variables = model.trainable_variables
    latent_dim = model.latent_dim

    def train_step(x, y, beta):
        eps = state.generator.normal((tf.shape(x)[0], latent_dim))
        with tf.GradientTape() as tape:
            terms = model.loss_terms(x, y, eps, beta, training=True)
        grads = tape.gradient(terms["loss"], variables)
        optimizer.apply_gradients(zip(grads, variables))
        return terms

    def val_step(x, y, eps, beta):
        return model.loss_terms(x, y, eps, beta, training=False)

    # one trace for every batch size (the last batch is smaller); XLA still compiles per shape
    s, lab = mcfg.image_size, model.label_dim
    xs, ys = tf.TensorSpec((None, s, s, 1), tf.float32), tf.TensorSpec((None, lab), tf.float32)
    scalar, zs = tf.TensorSpec((), tf.float32), tf.TensorSpec((None, latent_dim), tf.float32)
    jit = cfg.compile or None
    train_fn = tf.function(train_step, jit_compile=jit, input_signature=[xs, ys, scalar])
    val_fn = tf.function(val_step, jit_compile=jit, input_signature=[xs, ys, zs, scalar])
    bs = min(cfg.batch_size, n_train)
    n_batches = _n_batches(n_train, bs)
    best_metrics: dict[str, Any] = json.loads(state.best_metrics.numpy().decode())
    for epoch in range(start_epoch, cfg.epochs):
        if bool(state.stopped.numpy()):
            break
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)
        optimizer.learning_rate.assign(lr)
        beta = tf.constant(mcfg.beta_at(epoch), tf.float32)
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
        sums = _Sums()
        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr,
                   disable=None, dynamic_ncols=True)
        try:
            for b in range(n_batches):
                idx = np.sort(perm[b * bs:(b + 1) * bs])
                terms = {k: v.numpy() for k, v in train_fn(tf.constant(train["x"][idx]),
                                                          tf.constant(train["y"][idx]), beta).items()}
                step = int(state.step.numpy())
                if not np.isfinite(terms["loss"]):
                    raise NonFiniteLossError(f"training loss became {terms['loss']} at global step {step} "
                                             f"(epoch {epoch}); stopped, checkpoints keep the last good epoch")
                state.step.assign_add(1)
                sums.add(terms, len(idx))
                bar.update(1)
                bar.set_postfix(loss=f"{terms['loss']:.4g}", refresh=False)
        finally:
            bar.close()
        train_s = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, **sums.means("train_")}
        # validation always uses the target objective (β, no free bits): epochs compare like with like
        record.update(_validate(val_fn, val, max(bs, 256), latent_dim, cfg.seed + 2,
                                tf.constant(mcfg.beta, tf.float32)))
        val_loss = record["val_loss"]
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(f"validation loss is {val_loss} after epoch {epoch} (global step "
                                     f"{int(state.step.numpy())}); checkpoints keep the last good epoch")
        record.update(seconds=time.perf_counter() - t0, images_per_s=n_train / train_s,
                      step=int(state.step.numpy()))
        improved = val_loss < float(state.best.numpy())
        if improved:
            best_metrics = record
            state.best.assign(val_loss)
            state.patience.assign(0)
        else:
            state.patience.assign_add(1)
        stopped = cfg.early_stopping > 0 and int(state.patience.numpy()) >= cfg.early_stopping
        state.stopped.assign(stopped)
        state.epoch.assign(epoch + 1)
        state.best_metrics.assign(json.dumps(best_metrics))
        append_metrics(run_dir, record)  # before 'last': a crash in between only re-runs this epoch
        if improved:
            checkpoint.save(run_dir, "best", ckpt)
        checkpoint.save(run_dir, "last", ckpt)
        log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  %.0f img/s%s", epoch + 1, cfg.epochs,
                 record["train_loss"], val_loss, record["images_per_s"], "  (best)" if improved else "")
        if stopped:
            log.info("early stopping after epoch %d: no better val_loss for %d epochs", epoch + 1,
                     int(state.patience.numpy()))
    return dict(best_metrics)


def _validate(val_fn, val: dict[str, np.ndarray], bs: int, latent_dim: int, seed: int,
              beta: tf.Tensor) -> dict[str, float]:
    """Validation terms with noise from a generator seeded the same way every epoch."""
    gen = tf.random.Generator.from_seed(seed)
    sums = _Sums()
    n = len(val["x"])
    for start in range(0, n, bs):
        x, y = val["x"][start:start + bs], val["y"][start:start + bs]
        eps = gen.normal((len(x), latent_dim))
        sums.add({k: v.numpy() for k, v in val_fn(tf.constant(x), tf.constant(y), eps, beta).items()}, len(x))
    return sums.means("val_")
