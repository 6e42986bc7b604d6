"""The one PyTorch trainer shared by every torch model (CNNs, VAE).

The trainer knows only ``model.loss_terms(batch) -> dict[str, Tensor]``: ``"loss"`` (a scalar batch
mean) is minimised, every other scalar term is logged under its own name (``train_<name>`` and
``val_<name>``, epoch means weighted by batch size). Optional hooks:

* ``model.on_epoch_start(epoch: int)`` — called before each training epoch (e.g. KL warm-up);
* ``model.extra_val_metrics(val: dict[str, Tensor]) -> dict[str, float]`` — called once per epoch
  after validation, in eval mode under ``no_grad``, with the whole validation set on the device;
  each value is logged as ``val_<name>``.

Data live in one tensor per key on the device; batches are index slices of a seeded permutation
(no DataLoader, no Python work per sample). Validation runs under a forked RNG seeded identically
every epoch, so its noise (e.g. VAE sampling) is the same each epoch and does not perturb the
training stream — which keeps ``resume`` bit-identical on CPU.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from facevae.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from shared.config import RunConfig, TrainConfig
from shared.errors import ConfigError, FaceVAEError, RunError
from shared.runs import append_metrics, checkpoints_dir, truncate_metrics

__all__ = ["fit", "load_weights", "select_device", "to_tensors", "NonFiniteLossError", "Augment"]

log = logging.getLogger(__name__)

Augment = Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]]
_REFRESH_S = 0.5  # progress-bar refresh period; the only host-device syncs inside an epoch


class NonFiniteLossError(FaceVAEError):
    """The training loss became NaN or infinite; the message names the global step and epoch."""


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda`` (must be available).

    Raises:
        ConfigError: unknown name, or ``cuda`` requested on a machine without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("`device` 'cuda' was requested but CUDA is not available. Received: device='cuda'")
        return torch.device("cuda")
    raise ConfigError(f"`device` must be one of {{'auto', 'cpu', 'cuda'}}. Received: device={name!r}")


def to_tensors(data: dict[str, np.ndarray], device: torch.device) -> dict[str, Tensor]:
    """numpy arrays -> tensors on ``device``; ``images`` uint8 (N,H,W) -> float32 [0,1] (N,1,H,W).

    Raises:
        ConfigError: arrays with different first dimensions, or no ``images`` key.
    """
    if "images" not in data:
        raise ConfigError(f"data dict must hold 'images'; received keys {sorted(data)}")
    n = len(data["images"])
    out: dict[str, Tensor] = {}
    for key, value in data.items():
        value = np.asarray(value)
        if len(value) != n:
            raise ConfigError(f"data['{key}'] has {len(value)} rows but data['images'] has {n}")
        if key == "images":
            t = torch.from_numpy(np.ascontiguousarray(value)).to(device)
            t = (t.float() / 255.0 if value.dtype == np.uint8 else t.float()).unsqueeze(1)
            if device.type == "cpu":
                t = t.contiguous(memory_format=torch.channels_last)
            out[key] = t
        else:
            out[key] = torch.from_numpy(np.ascontiguousarray(value)).to(device)
    return out


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for k, g in gens.items():
        g.set_state(state[k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Sums:
    """Batch-size-weighted sums of loss terms, accumulated on the device (no per-step sync)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, terms: dict[str, Tensor], n: int) -> None:
        for k, v in terms.items():
            v = v.detach().float() * n
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += n

    def means(self, prefix: str) -> dict[str, float]:
        if not self.sums:
            return {}
        keys = list(self.sums)
        values = (torch.stack([self.sums[k] for k in keys]) / max(self.count, 1)).tolist()  # one sync
        return {f"{prefix}{k}": float(v) for k, v in zip(keys, values)}


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_terms(terms: Any) -> dict[str, Tensor]:
    if not isinstance(terms, dict) or "loss" not in terms:
        raise TypeError("model.loss_terms(batch) must return a dict of scalar tensors holding 'loss'")
    return terms


@torch.no_grad()
def _validate(model: nn.Module, loss_fn: Callable, val: dict[str, Tensor], batch_size: int,
              device: torch.device, seed: int) -> dict[str, float]:
    model.eval()
    sums = _Sums()
    n = len(val["images"])
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            batch = {k: v[start:start + batch_size] for k, v in val.items()}
            with _autocast(device):
                terms = _check_terms(loss_fn(batch))
            sums.add(terms, len(batch["images"]))
        metrics = sums.means("val_")
        if hasattr(model, "extra_val_metrics"):
            metrics.update({f"val_{k}": float(v) for k, v in model.extra_val_metrics(val).items()})
    model.train()
    return metrics


def fit(model: nn.Module, train: dict[str, np.ndarray], val: dict[str, np.ndarray], config: RunConfig,
        run_dir: Path, *, resume: bool = False, augment: Optional[Augment] = None) -> dict[str, Any]:
    """Train ``model`` with ``config.train``, writing ``metrics.jsonl`` and ``checkpoints/{last,best}.pt``.

    Args:
        model: an ``nn.Module`` with ``loss_terms(batch) -> dict`` (see the module docstring).
        train, val: dicts of numpy arrays sharing the first dimension; ``images`` uint8 (N, H, W).
        config: the run config; only ``config.train`` is read.
        run_dir: the run folder (created if needed).
        resume: continue from ``checkpoints/last.pt``; ``metrics.jsonl`` is cut back to that epoch.
        augment: optional ``augment(batch, generator) -> batch`` applied to training batches.

    Returns:
        The best epoch's metrics record (best on ``val_loss``).

    Raises:
        NonFiniteLossError: the loss became NaN/inf (checkpoints keep the last good epoch).
        RunError: ``resume`` without a ``last.pt`` checkpoint.
    """
    cfg = config.train
    run_dir = Path(run_dir)
    checkpoints_dir(run_dir)
    device = select_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    train_t, val_t = to_tensors(train, device), to_tensors(val, device)
    n_train = len(train_t["images"])
    if n_train == 0 or len(val_t["images"]) == 0:
        raise ConfigError(f"training needs faces in both splits; got train={n_train}, val={len(val_t['images'])}")

    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: cfg.lr_factor(e))
    gens = {"batch": torch.Generator().manual_seed(cfg.seed),
            "augment": torch.Generator(device=device).manual_seed(cfg.seed + 1)}
    start_epoch, best, best_metrics, patience, stopped = 0, math.inf, {}, 0, False
    if resume:
        path = checkpoint_path(run_dir, "last")
        if not path.is_file():
            raise RunError(f"{run_dir}: nothing to resume (no {path.name} in checkpoints/)")
        state = load_checkpoint(path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state({k: (v.cpu() if isinstance(v, Tensor) else [t.cpu() for t in v])
                        for k, v in state["rng"].items()}, gens)
        start_epoch, best, patience = int(state["epoch"]), float(state["best"]), int(state["patience"])
        best_metrics, stopped = dict(state["best_metrics"]), bool(state["stopped"])
        log.info("resuming %s at epoch %d (best val_loss %.4f)", run_dir, start_epoch, best)
    else:
        torch.manual_seed(cfg.seed)
    truncate_metrics(run_dir, start_epoch)

    loss_fn = torch.compile(model.loss_terms) if cfg.compile else model.loss_terms
    bs = min(cfg.batch_size, n_train)
    n_batches = n_train // bs + (1 if n_train % bs > 1 else 0)  # a 1-sample tail would break BatchNorm
    step = start_epoch * n_batches
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        if hasattr(model, "on_epoch_start"):
            model.on_epoch_start(epoch)
        lr = optimizer.param_groups[0]["lr"]
        perm = torch.randperm(n_train, generator=gens["batch"]).to(device)
        sums = _Sums()
        bad_step = torch.full((), -1, dtype=torch.long, device=device)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr,
                   disable=None, dynamic_ncols=True)
        last_refresh = time.monotonic()
        for b in range(n_batches):
            idx = perm[b * bs:(b + 1) * bs]
            batch = {k: v[idx] for k, v in train_t.items()}
            if augment is not None:
                batch = augment(batch, gens["augment"])
            with _autocast(device):
                terms = _check_terms(loss_fn(batch))
            loss = terms["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            sums.add(terms, len(idx))
            # record the first non-finite step on the device; read it only when we sync anyway
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), step, bad_step)
            step += 1
            bar.update(1)
            if time.monotonic() - last_refresh > _REFRESH_S or b == n_batches - 1:
                last_refresh = time.monotonic()
                _raise_if_bad(int(bad_step), epoch, bar)
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}", refresh=False)
        bar.close()
        _raise_if_bad(int(bad_step), epoch, None)
        train_s = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, **sums.means("train_")}
        record.update(_validate(model, loss_fn, val_t, max(bs, 256), device, cfg.seed + 2))
        scheduler.step()
        val_loss = record.get("val_loss", math.nan)
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(f"validation loss is {val_loss} after epoch {epoch} (global step {step}); "
                                     f"checkpoints keep the last good epoch")
        record.update(seconds=time.perf_counter() - t0, images_per_s=n_batches * bs / train_s, step=step)
        improved = val_loss < best
        if improved:
            best, best_metrics, patience = val_loss, record, 0
        else:
            patience += 1
        stopped = cfg.early_stopping > 0 and patience >= cfg.early_stopping
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best": best, "patience": patience,
                 "best_metrics": best_metrics, "stopped": stopped, "rng": _rng_state(gens)}
        if improved:
            save_checkpoint(checkpoint_path(run_dir, "best"), state)
        save_checkpoint(checkpoint_path(run_dir, "last"), state)
        append_metrics(run_dir, record)
        log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  %.0f img/s%s", epoch + 1, cfg.epochs,
                 record.get("train_loss", math.nan), val_loss, record["images_per_s"],
                 "  (best)" if improved else "")
        if stopped:
            log.info("early stopping after epoch %d: no better val_loss for %d epochs", epoch + 1, patience)
    return dict(best_metrics)


def _raise_if_bad(bad_step: int, epoch: int, bar: Any) -> None:
    if bad_step >= 0:
        if bar is not None:
            bar.close()
        raise NonFiniteLossError(f"training loss became NaN/inf at global step {bad_step} (epoch {epoch}); "
                                 f"stopped, checkpoints keep the last good epoch")


def load_weights(model: nn.Module, run_dir: Path, which: str = "best") -> nn.Module:
    """Load the weights of ``run_dir/checkpoints/{which}.pt`` into ``model`` (safe: ``weights_only``).

    Returns:
        ``model`` in eval mode.

    Raises:
        RunError: missing or unsafe checkpoint, or weights that do not fit ``model``.
    """
    state = load_checkpoint(checkpoint_path(run_dir, which), map_location="cpu")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise RunError(f"{run_dir}: checkpoint '{which}' does not fit the model: {str(exc).splitlines()[0]}") from None
    return model.eval()
