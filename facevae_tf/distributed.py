"""Data-parallel training (``TrainConfig.devices``) with ``tf.distribute``.

``devices = N > 1`` trains under ``tf.distribute.MirroredStrategy`` over N replicas: the GPUs when
TensorFlow sees at least N of them (and ``device`` is not ``cpu``), else N logical CPU devices split
off the host CPU (:func:`configure_cpu_devices`). That split is only possible before TensorFlow's
runtime starts, so in a process that already ran TensorFlow work (a notebook) it fails with a
:class:`~shared.errors.ConfigError` that says what to do.

What one step computes is what one device computes (:func:`train_step_fn`): the shared loop's global
batch is cut into N contiguous slices, BatchNorm normalises with global-batch statistics
(``synchronized=True``), the per-image terms of every replica are gathered so
:meth:`~facevae_tf.models.FaceVAE.batch_terms` sees the whole batch (free bits included), and the
gradient is all-reduced before clipping and L2, exactly as the single-device engine orders them.
Validation, checkpoints and weights are those of a one-device run: the variables are mirrored, and a
checkpoint holds one copy under the usual names.

Several machines: when ``TF_CONFIG`` names a cluster of more than one task, the strategy is
``MultiWorkerMirroredStrategy`` over every worker's replicas (each worker runs the same command; the
global batch is split across all replicas of all workers) and ``devices`` is not used. Only the chief
(:func:`is_chief`) writes the run folder; the others write to a scratch folder that is deleted.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Optional, Sequence

import tensorflow as tf

from shared.config import TrainConfig
from shared.errors import ConfigError

__all__ = ["strategy_for", "configure_cpu_devices", "replica_devices", "train_step_fn", "cluster_spec",
           "is_chief", "replica_slice"]

log = logging.getLogger(__name__)

_STARTED_HINT = ("TensorFlow can only split the CPU into logical devices before its runtime starts, and it has "
                 "already started in this process (other TensorFlow work ran first). Train with devices={n} in a "
                 "fresh Python process or kernel, or call facevae_tf.distributed.configure_cpu_devices({n}) before "
                 "any other TensorFlow work")


def cluster_spec() -> Optional[dict[str, Any]]:
    """``TF_CONFIG`` as a dict when it names a cluster of more than one task, else None.

    Raises:
        ConfigError: ``TF_CONFIG`` is set but is not JSON with a ``cluster`` and a ``task``.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        spec = json.loads(text)
        tasks = sum(len(v) for v in spec["cluster"].values())
        spec["task"] = {"type": str(spec["task"]["type"]), "index": int(spec["task"]["index"])}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"`TF_CONFIG` must be JSON with a 'cluster' of task lists and a 'task' with 'type' and "
                          f"'index'. Received: TF_CONFIG={text[:80]!r}") from None
    return spec if tasks > 1 else None


def is_chief() -> bool:
    """Whether this process writes the run: always, except a non-chief worker of a ``TF_CONFIG`` cluster.

    The chief is the ``chief`` task, or worker 0 when the cluster has no ``chief`` (TensorFlow's rule).
    """
    spec = cluster_spec()
    if spec is None:
        return True
    kind, index = spec["task"]["type"], spec["task"]["index"]
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in spec["cluster"])


def configure_cpu_devices(n: int) -> list[str]:
    """Split the host CPU into ``n`` logical devices (kept if it already has ``n`` or more).

    Call it first thing in a notebook that trains with ``devices = n`` after other TensorFlow work.

    Returns:
        The names of the first ``n`` logical CPU devices (``/device:CPU:i``).

    Raises:
        ConfigError: TensorFlow's runtime already started with fewer logical CPU devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu) or []
    if len(current) < n:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError:
            raise ConfigError(f"`devices` {n} needs {n} logical CPU devices: {_STARTED_HINT.format(n=n)}. "
                              f"Received: devices={n}") from None
    return [f"/device:CPU:{i}" for i in range(n)]


def replica_devices(n: int, device: str = "auto") -> list[str]:
    """The ``n`` devices of a MirroredStrategy: GPUs when there are ``n`` (and ``device`` allows), else CPUs.

    Raises:
        ConfigError: ``device='cuda'`` with fewer than ``n`` GPUs; the CPU cannot be split any more.
    """
    gpus = [] if device == "cpu" else tf.config.list_physical_devices("GPU")
    if len(gpus) >= n:
        return [d.name for d in tf.config.list_logical_devices("GPU")[:n]]
    if device == "cuda":
        raise ConfigError(f"`devices` {n} with device 'cuda' needs {n} GPUs; TensorFlow sees {len(gpus)}. "
                          f"Received: devices={n}, device='cuda' (use 'auto' or 'cpu' for logical CPU devices)")
    if gpus:
        log.warning("devices=%d: TensorFlow sees only %d GPU(s), so the replicas are %d logical CPU devices",
                    n, len(gpus), n)
    return configure_cpu_devices(n)


def strategy_for(cfg: TrainConfig) -> Optional[tf.distribute.Strategy]:
    """The strategy of a run: None for one device, MirroredStrategy for ``devices > 1``, or
    MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster. Call it before other TF work.

    Raises:
        ConfigError: ``compile`` (XLA cannot compile the cross-replica step), ``precision='16'`` on CPU
            replicas, or a device problem (see :func:`replica_devices`).
    """
    cluster = cluster_spec()
    if cluster is None and cfg.devices == 1:
        return None
    what = f"devices={cfg.devices}" if cluster is None else "a TF_CONFIG cluster"
    if cfg.compile:
        raise ConfigError(f"`compile` is not supported with {what} on the tf backend (XLA cannot compile the "
                          f"cross-replica step); train without --compile. Received: compile=True")
    if cluster is not None:
        if cfg.devices != 1:
            log.warning("TF_CONFIG names a cluster: every worker trains on its own GPUs (or its CPU); "
                        "devices=%d is not used", cfg.devices)
        strategy: tf.distribute.Strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        names = replica_devices(cfg.devices, cfg.device)
        on_cpu = "CPU" in names[0].upper()
        if on_cpu and cfg.precision == "16":
            raise ConfigError(f"`precision` '16' needs GPUs; devices={cfg.devices} runs on logical CPU devices "
                              f"here (use 'bf16' or '32'). Received: precision='16'")
        # logical CPU devices share one host: reduce on the first rather than through NCCL
        ops = tf.distribute.ReductionToOneDevice(names[0]) if on_cpu else None
        strategy = tf.distribute.MirroredStrategy(names, cross_device_ops=ops)
    log.info("tf.distribute: %s with %d replicas", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def replica_slice(t: tf.Tensor, replica: Any, n: int) -> tf.Tensor:
    """Rows ``[B·r/n, B·(r+1)/n)`` of ``t``: replica ``r``'s contiguous part of a global batch of ``B``."""
    size = tf.shape(t)[0]
    r = tf.cast(replica, tf.int32)
    return t[size * r // n:size * (r + 1) // n]


def train_step_fn(strategy: tf.distribute.Strategy, model: Any, variables: Sequence[tf.Variable], optimizer: Any,
                  loss_of: Callable[[tf.Tensor], tf.Tensor], prepare: Callable[[list], list]) -> Callable:
    """The distributed training step ``(x, y, eps, beta[, x_in]) -> terms`` over the global batch (wrap in
    tf.function); ``x_in``, the encoder's input (denoising), is sliced across the replicas like ``x``.

    Args:
        strategy: the strategy the model and optimiser were built under.
        model: a :class:`~facevae_tf.models.FaceVAE` built with ``synchronized_bn=True``.
        variables: the trainable variables.
        optimizer: the (possibly loss-scaled) Keras optimiser.
        loss_of: the batch loss -> the loss to differentiate (loss scaling).
        prepare: the global gradient -> the gradient to apply (unscale, clip, L2, rescale), as on one device.

    Returns:
        The step; its terms are the global batch's (the same on every replica; the first one's is returned).
    """
    n = strategy.num_replicas_in_sync

    def replica_step(x, y, eps, beta, x_in=None):
        ctx = tf.distribute.get_replica_context()
        x, y, eps = (replica_slice(t, ctx.replica_id_in_sync_group, n) for t in (x, y, eps))
        if x_in is not None:
            x_in = replica_slice(x_in, ctx.replica_id_in_sync_group, n)
        with tf.GradientTape() as tape:
            distortion, rate, _ = model.image_terms(x, y, eps, training=True, x_in=x_in)
            label = model.label_image_terms(x, y, eps)  # a cvae's label consistency, per image
            # every replica sees the whole batch's terms: the batch means and free bits are the global ones
            terms = model.batch_terms(ctx.all_gather(distortion, axis=0), ctx.all_gather(rate, axis=0), beta,
                                      training=True)
            terms = model.with_label_terms(terms, {k: ctx.all_gather(v, axis=0) for k, v in label.items()})
            # all_gather's gradient sums over replicas, so each holds 1/n of the (identical) global loss
            loss = loss_of(terms["loss"]) / n
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tape.gradient(loss, variables))
        # Keras sums the replicas' gradients again inside apply_gradients: hand it 1/n of the global one
        optimizer.apply_gradients(zip([g / n for g in prepare(grads)], variables))
        return terms

    def step(x, y, eps, beta, x_in=None):
        args = (x, y, eps, beta) if x_in is None else (x, y, eps, beta, x_in)
        out = strategy.run(replica_step, args=args)
        return {k: strategy.experimental_local_results(v)[0] for k, v in out.items()}

    return step
