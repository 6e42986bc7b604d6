"""The one epoch loop of both backends.

Everything a training run *decides* lives here, written once: the learning-rate schedule, the KL
warm-up, batch order (and its tail rule), the reparameterisation noise and the denoising input noise
(:func:`input_noise`), the NaN policy, early stopping, which checkpoint is ``best``, the order of
checkpoint and metrics writes, resume, and the learning guard. A backend supplies an :class:`Engine`
that only *executes*: one training step, one validation step, save and restore. What the loop shows
and records besides checkpoints and ``metrics.jsonl`` (epoch lines, progress bar,
``figures/training_curves.png``, TensorBoard events) is :mod:`shared.event_log`; :func:`console`
turns the printing on or off.

Why the noise and batch order are drawn here, in numpy: both backends then see the very same
batches and the very same ε for every step, so a converted run trains the same way on either
side (the parity suite compares them epoch by epoch), and nothing but counters needs saving for
an exact resume — step ``b`` of epoch ``e`` always draws from ``default_rng([seed, e, b])``.

Write order per epoch: ``best`` (when improved), then ``last``, then the ``metrics.jsonl`` line.
The metrics line is written only once a checkpoint covers it; ``last`` also carries that line, so
a crash between the two is repaired on resume instead of leaving a gap.

Several processes (``torchrun``, :mod:`shared.distributed`) run this loop in step: every rank plans
the same batches and noise, its engine computes its shard and returns global batch means, so every
rank takes the same decisions. Only the writer (rank 0) saves checkpoints, writes ``metrics.jsonl``,
events and the figure, and prints; the others print nothing and touch no file.

Resume reads lr, schedule, epochs, early stopping, batch size and input noise from the run's current
``config.json`` (so an edited learning rate or a longer run applies from the next epoch, on both
backends alike); the architecture comes from the same file and the engine refuses weights that do
not fit it.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np

from shared.config import RunConfig
from shared.distributed import is_writer
from shared.errors import ConfigError, NonFiniteLossError, RunError
from shared.event_log import (TENSORBOARD_DIR, EventFileWriter, console, epoch_line, is_verbose, progress_bar,
                              report_epoch, scalar_tags, write_training_curves)
from shared.runs import FIGURES, append_metrics, checkpoints_dir, read_metrics, truncate_metrics

__all__ = ["Engine", "fit", "console", "batch_plan", "n_batches", "learning_guard", "train_noise", "val_noise",
           "input_noise", "VAL_BATCH", "NO_TRAINING_STATE", "CURVES_FIGURE"]

log = logging.getLogger(__name__)

VAL_BATCH = 256          # validation batch floor (no gradients: larger batches are cheaper)
_REFRESH_S = 0.5         # progress-bar refresh period; the only host-device syncs inside an epoch
_COLLAPSE_NATS = 0.1     # a total rate below this means the decoder ignores z
_NO_BETTER_DB = 0.1      # a reconstruction PSNR within this of the mean face's learned nothing
CURVES_FIGURE = "training_curves.png"   # in figures/, redrawn from metrics.jsonl at the end of every fit
NO_TRAINING_STATE = ("{path}: holds weights but no training state (a converted run, or one written by an "
                     "older facevae): it can be evaluated but not resumed")


class Engine(Protocol):
    """What a backend supplies to :func:`fit` (``facevae.engine`` and ``facevae_tf.engine``).

    Attributes:
        n_train, n_val: faces in the two splits.
        noise_dim: size of the per-image reparameterisation noise ε (0: the model draws none).
    """

    n_train: int
    n_val: int
    noise_dim: int

    def set_lr(self, lr: float) -> None: ...

    def train_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray], *,
                   noise: Optional[np.ndarray] = None) -> Mapping[str, Any]:
        """One optimiser step on training faces ``idx``; returns scalar terms (``loss`` included).

        ``noise`` ``(len(idx), H, W)`` (:func:`input_noise`, passed only when ``input_noise > 0``): the
        encoder sees ``clip(x + noise, 0, 1)``, the likelihood scores the clean ``x``.
        """

    def val_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray]) -> Mapping[str, Any]:
        """Scalar terms of validation faces ``idx`` in inference mode (no update)."""

    def scalars(self, terms: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
        """Turn step results into Python floats (one device sync for the whole list)."""

    def extra_val_metrics(self) -> dict[str, float]:
        """Extra per-epoch validation metrics (e.g. accuracy); logged as ``val_<name>``."""

    def save(self, which: str, loop_state: dict[str, Any]) -> None:
        """Write checkpoint ``which`` (``last``/``best``) holding the weights, optimizer and ``loop_state``."""

    def restore(self, which: str) -> dict[str, Any]:
        """Load checkpoint ``which`` into the engine and return its ``loop_state`` (RunError if unfit)."""

    def has_checkpoint(self, which: str) -> bool: ...

    def reconstruct_val(self) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(val faces, their reconstructions, the mean training face)`` in [0, 1], or None (not a VAE)."""


def n_batches(n: int, batch_size: int) -> int:
    """Batches per epoch: full batches plus the tail, unless the tail is one face (BatchNorm needs two)."""
    return n // batch_size + (1 if n % batch_size > 1 else 0)


def batch_plan(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Sorted index arrays of every batch of ``epoch`` (a permutation seeded by ``(seed, epoch)``)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [np.sort(perm[b * batch_size:(b + 1) * batch_size]) for b in range(n_batches(n, batch_size))]


def train_noise(seed: int, epoch: int, step_in_epoch: int, n: int, dim: int) -> np.ndarray:
    """ε of one training step, ``(n, dim)`` float32: a pure function of its position, so resume is exact."""
    return np.random.default_rng([seed, epoch, step_in_epoch, 1]).standard_normal((n, dim), np.float32)


def input_noise(seed: int, epoch: int, step_in_epoch: int, n: int, shape: Sequence[int],
                max_sigma: float) -> np.ndarray:
    """Encoder-input noise of one training step (``TrainConfig.input_noise``), ``(n, *shape)`` float32.

    Already scaled: image ``i`` gets ``s_i·ε`` with ``s_i ~ U(0, max_sigma)`` and ``ε ~ N(0, 1)`` per pixel.
    A pure function of its position, from a stream of its own (``[seed, epoch, step, 3]``; ε is ``1``,
    validation ``2``), so resume is exact and both backends add the very same noise.
    """
    rng = np.random.default_rng([seed, epoch, step_in_epoch, 3])
    sigma = rng.random(n, np.float32) * np.float32(max_sigma)  # (n,) drawn first, then the pixels
    eps = rng.standard_normal((n, *shape), np.float32)
    return eps * sigma.reshape((n,) + (1,) * len(shape))


def val_noise(seed: int, n: int, dim: int) -> np.ndarray:
    """ε of the whole validation split, ``(n, dim)``: the same every epoch, so epochs compare like with like."""
    return np.random.default_rng([seed, 2]).standard_normal((n, dim), np.float32)


class _Sums:
    """Batch-size-weighted means of scalar terms."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, terms: Mapping[str, float], n: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        self.count += n

    def means(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": v / max(self.count, 1) for k, v in self.sums.items()}


def _new_state(config: RunConfig) -> dict[str, Any]:
    return {"epoch": 0, "step": 0, "best": math.inf, "patience": 0, "stopped": False, "best_metrics": {},
            "last_record": None, "train": config.train.to_dict()}


def _resume_state(engine: Engine, config: RunConfig, run_dir: Path, writer: bool = True) -> dict[str, Any]:
    if not engine.has_checkpoint("last"):
        raise RunError(f"{run_dir}: nothing to resume (no 'last' checkpoint in checkpoints/); the run stopped "
                       f"before its first epoch ended: start it again without --resume")
    state = engine.restore("last")
    saved = state.get("train") or {}
    for key in ("lr", "schedule", "epochs", "early_stopping", "batch_size", "weight_decay", "grad_clip",
                "input_noise"):
        if key in saved and saved[key] != getattr(config.train, key):
            log.info("resume: %s changed from %r to %r; it applies from epoch %d", key, saved[key],
                     getattr(config.train, key), int(state["epoch"]) + 1)
    # an early-stopped run trains on when the user asks for more epochs or a different patience (extending
    # a finished run); with the config unchanged it stays stopped
    if state.get("stopped") and (config.train.epochs > int(saved.get("epochs", config.train.epochs))
                                 or config.train.early_stopping != saved.get("early_stopping")):
        log.info("resume: the run had stopped early at epoch %d; training on (patience reset)", state["epoch"])
        state["stopped"], state["patience"] = False, 0
    state["train"] = config.train.to_dict()
    if state["epoch"] >= config.train.epochs:
        log.info("resume: %s already trained %d epochs (config asks for %d); nothing to do", run_dir,
                 state["epoch"], config.train.epochs)
    if writer:
        # 'last' carries its epoch's metrics line: put it back if a crash came between the two writes
        truncate_metrics(run_dir, int(state["epoch"]))
        records = read_metrics(run_dir)
        last = state.get("last_record")
        if last is not None and (not records or records[-1].get("epoch") != last["epoch"]):
            append_metrics(run_dir, last)
    log.info("resuming %s at epoch %d (best val_loss %.4f)", run_dir, state["epoch"], state["best"])
    return state


def _raise_if_bad(values: list[dict[str, float]], first_step: int, epoch: int, bar: Any) -> None:
    for i, terms in enumerate(values):
        if not math.isfinite(terms["loss"]):
            bar.close()
            raise NonFiniteLossError(f"training loss became {terms['loss']} at global step {first_step + i} "
                                     f"(epoch {epoch}); stopped, checkpoints keep the last good epoch")


def _train_epoch(engine: Engine, config: RunConfig, epoch: int, state: dict[str, Any], sums: _Sums) -> int:
    """One pass over the training faces; returns the number of faces seen."""
    cfg, mcfg = config.train, config.model
    batches = batch_plan(engine.n_train, cfg.batch_size_for(engine.n_train), cfg.seed, epoch)
    beta = mcfg.beta_at(epoch)
    bar = progress_bar(len(batches), f"epoch {epoch + 1}/{cfg.epochs}")
    pending: list[tuple[Mapping[str, Any], int]] = []
    first_pending, last_refresh, seen = state["step"], time.monotonic(), 0
    shape = (config.model.image_size, config.model.image_size)

    def drain() -> None:  # the only sync with the device
        nonlocal pending, first_pending
        values = engine.scalars([terms for terms, _ in pending])
        _raise_if_bad(values, first_pending, epoch, bar)
        for v, (_, n) in zip(values, pending):
            sums.add(v, n)
        if values:
            bar.set_postfix(loss=f"{values[-1]['loss']:.4g}", refresh=False)
        first_pending += len(pending)
        pending = []

    for b, idx in enumerate(batches):
        eps = train_noise(cfg.seed, epoch, b, len(idx), engine.noise_dim) if engine.noise_dim else None
        if cfg.input_noise > 0:  # engines that take no noise keep working while it is off
            noise = input_noise(cfg.seed, epoch, b, len(idx), shape, cfg.input_noise)
            pending.append((engine.train_step(idx, beta, eps, noise=noise), len(idx)))
        else:
            pending.append((engine.train_step(idx, beta, eps), len(idx)))
        seen += len(idx)
        bar.update(1)
        if time.monotonic() - last_refresh > _REFRESH_S:
            last_refresh = time.monotonic()
            drain()
    drain()
    bar.close()
    state["step"] += len(batches)
    return seen


def _validate(engine: Engine, config: RunConfig) -> dict[str, float]:
    """Validation terms under the target objective (β, no warm-up, no free bits)."""
    bs = max(config.train.batch_size, VAL_BATCH)
    eps_all = val_noise(config.train.seed, engine.n_val, engine.noise_dim) if engine.noise_dim else None
    chunks = [np.arange(s, min(s + bs, engine.n_val)) for s in range(0, engine.n_val, bs)]
    results = [engine.val_step(idx, float(config.model.beta), None if eps_all is None else eps_all[idx])
               for idx in chunks]
    sums = _Sums()
    for values, idx in zip(engine.scalars(results), chunks):
        sums.add(values, len(idx))
    metrics = sums.means("val_")
    metrics.update({f"val_{k}": float(v) for k, v in engine.extra_val_metrics().items()})
    return metrics


def fit(engine: Engine, config: RunConfig, run_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train through ``engine`` for ``config.train.epochs``, writing checkpoints and ``metrics.jsonl``.

    Args:
        engine: the backend's engine, built on the model and both splits.
        config: the run config (``train`` recipe; ``model.beta``/``kl_warmup_epochs`` for the KL weight).
        run_dir: the run folder.
        resume: continue from ``checkpoints/last`` (see the module docstring for what may change).

    Returns:
        The best epoch's record (best on ``val_loss``) plus ``warnings``: the learning guard's findings.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the checkpoints keep the last good epoch).
        RunError: ``resume`` without a ``last`` checkpoint, or one that does not fit the model.
        ConfigError: a split is empty.
    """
    if engine.n_train == 0 or engine.n_val == 0:
        raise ConfigError(f"training needs faces in both splits; got train={engine.n_train}, val={engine.n_val} "
                          f"(use more faces or a larger val_fraction)")
    writer = is_writer()
    with console(is_verbose() and writer):  # ranks other than 0 print no bar and no epoch line
        return _fit(engine, config, Path(run_dir), resume, writer)


def _fit(engine: Engine, config: RunConfig, run_dir: Path, resume: bool, writer: bool) -> dict[str, Any]:
    cfg = config.train
    if writer:
        checkpoints_dir(run_dir)
    bs = cfg.batch_size_for(engine.n_train)
    if bs != cfg.batch_size:
        log.info("batch size %d (asked %d; min_steps_per_epoch %d on %d training faces)", bs, cfg.batch_size,
                 cfg.min_steps_per_epoch, engine.n_train)
    if resume:
        state = _resume_state(engine, config, run_dir, writer)
    else:
        state = _new_state(config)
        if writer:
            truncate_metrics(run_dir, 0)
    to_train = not state["stopped"] and int(state["epoch"]) < cfg.epochs
    # a resume with nothing left to train adds no empty event file
    events = EventFileWriter(run_dir / TENSORBOARD_DIR) if cfg.tensorboard and to_train and writer else None
    try:
        for epoch in range(int(state["epoch"]), cfg.epochs):
            if state["stopped"]:
                log.info("the run stopped early at epoch %d; nothing to do", state["epoch"])
                break
            _one_epoch(engine, config, epoch, state, run_dir, events, writer)
    finally:
        if events is not None:
            events.close()
    best = dict(state["best_metrics"])
    if not writer:  # the writer may still be appending the last metrics line: read nothing of the folder
        best["warnings"] = []
        return best
    write_training_curves(read_metrics(run_dir), run_dir / FIGURES / CURVES_FIGURE,
                          title=f"{run_dir.name} ({config.model.family}, {config.backend})")
    best["warnings"] = _guard_after_training(engine, run_dir)
    return best


def _one_epoch(engine: Engine, config: RunConfig, epoch: int, state: dict[str, Any], run_dir: Path,
               events: Optional[EventFileWriter], writer: bool = True) -> None:
    """Train and validate ``epoch``, write its checkpoints and metrics line (``writer`` only), then report it."""
    cfg = config.train
    t0 = time.perf_counter()
    lr = cfg.lr * cfg.lr_factor(epoch)
    engine.set_lr(lr)
    sums = _Sums()
    seen = _train_epoch(engine, config, epoch, state, sums)
    train_s = time.perf_counter() - t0
    record: dict[str, Any] = {"epoch": epoch, "lr": lr, **sums.means("train_"), **_validate(engine, config)}
    val_loss = record.get("val_loss", math.nan)
    if not math.isfinite(val_loss):
        raise NonFiniteLossError(f"validation loss is {val_loss} after epoch {epoch} (global step "
                                 f"{state['step']}); checkpoints keep the last good epoch")
    record.update(seconds=time.perf_counter() - t0, images_per_s=seen / max(train_s, 1e-9), step=state["step"])
    improved = val_loss < state["best"]
    if improved:
        state.update(best=val_loss, best_metrics=record, patience=0)
    else:
        state["patience"] += 1
    state.update(epoch=epoch + 1, last_record=record,
                 stopped=cfg.early_stopping > 0 and state["patience"] >= cfg.early_stopping)
    if writer:
        if improved:
            engine.save("best", state)
        engine.save("last", state)
        append_metrics(run_dir, record)  # only now does a checkpoint cover this line
    beta = config.model.beta_at(epoch) if "train_beta" in record else None
    if events is not None:
        events.add_scalars(epoch + 1, scalar_tags(record, beta))  # step = the 1-based epoch the console shows
    report_epoch(epoch_line(record, epochs=cfg.epochs, beta=beta, improved=improved,
                            stopped_after=state["patience"] if state["stopped"] else 0))
    if state["stopped"]:
        log.info("early stopping after epoch %d: no better val_loss for %d epochs", epoch + 1, state["patience"])


def _guard_after_training(engine: Engine, run_dir: Path) -> list[str]:
    recon = engine.reconstruct_val()
    psnr = base = None
    if recon is not None:
        from shared.image_metrics import psnr as psnr_fn
        faces, out, mean_face = recon
        psnr = float(np.mean(psnr_fn(faces, out)))
        base = float(np.mean(psnr_fn(faces, np.broadcast_to(mean_face, faces.shape))))
    records = read_metrics(run_dir)
    rate = records[-1].get("val_rate") if records else None
    warnings = learning_guard(records, rate=rate, psnr=psnr, mean_face_psnr=base)
    for w in warnings:
        log.warning("%s: %s", run_dir, w)
    return warnings


def learning_guard(records: Sequence[Mapping[str, Any]], *, rate: Optional[float] = None,
                   psnr: Optional[float] = None, mean_face_psnr: Optional[float] = None) -> list[str]:
    """What says a run did not learn: one sentence per finding (empty when it looks healthy).

    Args:
        records: the run's ``metrics.jsonl`` records.
        rate: the model's mean KL in nats on held-out faces (VAEs), or None.
        psnr, mean_face_psnr: reconstruction PSNR on held-out faces and that of the mean training face.
    """
    found = []
    losses = [r.get("val_loss") for r in records if r.get("val_loss") is not None]
    if len(losses) > 1 and int(np.argmin(losses)) == 0:
        found.append(f"validation loss never improved on epoch 1 ({losses[0]:.4g}) in {len(losses)} epochs: "
                     f"the model did not learn (try a lower learning rate or more data)")
    if rate is not None and math.isfinite(rate) and rate < _COLLAPSE_NATS:
        found.append(f"posterior collapse: the rate is {rate:.3g} nats, so the decoder ignores z "
                     f"(try a smaller beta, KL warm-up or free bits)")
    if psnr is not None and mean_face_psnr is not None and psnr <= mean_face_psnr + _NO_BETTER_DB:
        found.append(f"reconstructions are no better than the mean face (PSNR {psnr:.2f} dB vs "
                     f"{mean_face_psnr:.2f} dB)")
    return found
