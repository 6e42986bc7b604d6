"""The torch engine under :func:`shared.training.fit`: one step, validation, save and restore.

The engine knows only ``model.loss_terms(batch, beta) -> dict[str, Tensor]``: ``"loss"`` (a scalar
batch mean) is minimised, every other scalar term is logged under its own name. A model may also
offer ``extra_val_metrics(val: dict[str, Tensor]) -> dict[str, float]`` (called once per epoch in
eval mode under ``no_grad`` with the whole validation split) and ``latent_dim`` (then the loop's
numpy noise arrives as ``batch["eps"]``).

Data live in one tensor per key on the device; batches are index slices chosen by the shared loop
(no DataLoader, no Python work per sample). Optimisers follow ``TrainConfig.optimizer``
(:mod:`facevae.optimizers`). The denoising input noise of ``TrainConfig.input_noise`` arrives from the
loop as numpy and enters the batch as ``batch["noise"]`` ``(B, 1, H, W)``, after augmentation and
sharded like ``eps``; the model adds it to the encoder's input only.

Several processes (``torchrun``, :mod:`facevae.distributed`): every step and validation batch
arrives whole; the engine computes this rank's shard of it, sums the weighted gradients and terms
over the ranks, and returns the global batch means, so the shared loop runs unchanged on every rank
(only rank 0 writes: :mod:`shared.training`).

Precision (``TrainConfig.precision``): ``bf16``/``16`` run the forward passes of the engine (training
and validation steps, the learning guard's validation reconstructions) under ``torch.autocast``;
the model hands the loss functions float32 tensors, so every reduction of the ELBO is float32, and
the weights (hence the checkpoints) stay float32. ``16`` adds a ``torch.amp.GradScaler`` and exists
on CUDA only (CPU float16 autocast is some 75x slower than float32). Evaluation and inference after
training (:mod:`facevae.backend`, :mod:`facevae.adapter`) run in float32 whatever the precision.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from facevae import distributed
from facevae.checkpoint import (checkpoint_path, encode_checkpoint, has_checkpoint, load_checkpoint,
                                write_checkpoint)
from facevae.optimizers import make_optimizer  # re-exported: its former home
from shared import distributed as distributed_env
from shared import training
from shared.config import RunConfig
from shared.errors import ConfigError, NonFiniteLossError, RunError

__all__ = ["fit", "TorchEngine", "load_weights", "load_training_state", "select_device", "to_tensors",
           "make_optimizer", "autocast_dtype", "NonFiniteLossError", "Augment"]

log = logging.getLogger(__name__)

Augment = Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]]


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


_AUTOCAST = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``TrainConfig.precision`` on ``device`` (None: plain float32).

    Raises:
        ConfigError: an unknown precision, ``16`` on a CPU, or ``bf16`` on a GPU without bfloat16.
    """
    if precision not in _AUTOCAST:
        raise ConfigError(f"`precision` must be one of {set(_AUTOCAST)}. Received: precision={precision!r}")
    dtype = _AUTOCAST[precision]
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError(f"`precision` '16' needs a CUDA GPU (float16 on a CPU is far slower than float32); "
                          f"use 'bf16' on CPUs. Received: precision='16', device={device.type!r}")
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("`precision` 'bf16' is not supported by this GPU; use '16'. Received: precision='bf16'")
    if dtype is torch.bfloat16 and device.type == "cpu" and not torch.backends.mkldnn.is_available():
        log.warning("precision bf16 on a CPU without oneDNN: bfloat16 is emulated and slow")
    return dtype


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _rank_device(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA process trains on GPU ``LOCAL_RANK`` of its node."""
    if device.type != "cuda":
        return device
    local, count = distributed_env.local_rank(), torch.cuda.device_count()
    if local >= count:
        raise ConfigError(f"LOCAL_RANK={local} but this node has {count} GPU(s): start at most {count} processes "
                          f"per node (torchrun --nproc_per_node={count}). Received: LOCAL_RANK={local}")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def _check_terms(terms: Any) -> dict[str, Tensor]:
    if not isinstance(terms, dict) or "loss" not in terms:
        raise TypeError("model.loss_terms(batch, beta) must return a dict of scalar tensors holding 'loss'")
    return terms


class TorchEngine:
    """:class:`shared.training.Engine` for an ``nn.Module`` with ``loss_terms``.

    Args:
        model: the module (moved to the configured device).
        train, val: dicts of numpy arrays sharing the first dimension; ``images`` uint8 (N, H, W).
        config: the run config (``train`` is read).
        run_dir: the run folder (checkpoints go to ``run_dir/checkpoints``).
        augment: optional ``augment(batch, generator) -> batch`` applied to training batches.
    """

    def __init__(self, model: nn.Module, train: dict[str, np.ndarray], val: dict[str, np.ndarray],
                 config: RunConfig, run_dir: Path, augment: Optional[Augment] = None):
        cfg = config.train
        self.device = device = select_device(cfg.device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.distributed = distributed.init()
        if self.distributed:
            self.device = device = _rank_device(device)
            # every preset has BatchNorm: pool its statistics over the ranks (see facevae.distributed)
            model = distributed.convert_batchnorm(model)
        self.model = model.to(device)
        if device.type == "cpu":
            model.to(memory_format=torch.channels_last)
        if self.distributed:
            distributed.broadcast_module(model)  # equal weights on every rank, whatever each one built
        self._bn_sync = True
        self.train_t, self.val_t = to_tensors(train, device), to_tensors(val, device)
        self.n_train, self.n_val = len(self.train_t["images"]), len(self.val_t["images"])
        self.noise_dim = int(getattr(model, "latent_dim", 0))
        self.run_dir, self.augment = Path(run_dir), augment
        self.optimizer = make_optimizer(model, cfg)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self.grad_clip = cfg.grad_clip
        self.amp_dtype = autocast_dtype(cfg.precision, device)
        # float16 gradients underflow without loss scaling; disabled, the scaler is a pass-through
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype is torch.float16)
        # augmentation and dropout draw from torch generators; their states travel in 'last'
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        torch.manual_seed(cfg.seed)
        self.seed = cfg.seed
        if self.distributed and distributed_env.rank() > 0:  # dropout masks must differ between shards
            torch.manual_seed(distributed.rank_seed(cfg.seed, distributed_env.rank(), 0))
        self.loss_fn = torch.compile(model.loss_terms) if cfg.compile else model.loss_terms
        self._updates = 0  # optimiser steps taken: keys the serialised checkpoint reused by save()
        self._encoded: Optional[tuple[tuple, memoryview]] = None
        model.train()

    def _batch(self, data: dict[str, Tensor], idx: np.ndarray, eps: Optional[np.ndarray]) -> dict[str, Tensor]:
        index = torch.from_numpy(idx).to(self.device)
        batch = {k: v[index] for k, v in data.items()}
        if eps is not None:
            batch["eps"] = torch.from_numpy(eps).to(self.device)
        return batch

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _shard(self, n: int) -> Optional[distributed.Shard]:
        """This rank's part of a global batch of ``n`` faces (None: one process computes all)."""
        if not self.distributed:
            return None
        part = distributed.shard_of(n)
        if part.sync_bn != self._bn_sync:
            distributed.set_batchnorm_sync(self.model, part.sync_bn)
            self._bn_sync = part.sync_bn
        return part

    def train_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray], *,
                   noise: Optional[np.ndarray] = None) -> dict[str, Tensor]:
        part = self._shard(len(idx))
        if part is not None and self.augment is None:  # only this rank's rows (and their noise) are needed
            idx, eps = idx[part.rows], None if eps is None else eps[part.rows]
        batch = self._batch(self.train_t, idx, eps)
        if self.augment is not None:
            # augment the whole global batch on every rank, with the same generator, then take the
            # shard: each face gets the transform it would get in one process
            batch = self.augment(batch, self.generator)
            if part is not None:
                rows = torch.from_numpy(part.rows).to(self.device)
                batch = {k: v[rows] for k, v in batch.items()}
        if noise is not None:  # after augmentation: the noise is added to the faces the model sees
            noise = noise if part is None else noise[part.rows]
            batch["noise"] = torch.from_numpy(noise).to(self.device).unsqueeze(1)  # (B, 1, H, W)
        with _autocast(self.device, self.amp_dtype):
            terms = _check_terms(self.loss_fn(batch, beta=beta))
        self.optimizer.zero_grad(set_to_none=True)
        # weighted by the shard's share, the gradients summed over ranks are those of the global batch mean
        self.scaler.scale(terms["loss"] if part is None else terms["loss"] * part.weight).backward()
        if part is not None:
            terms = distributed.reduce_step(self._params, terms, part.weight)
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._updates += 1
        return {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def val_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray]) -> dict[str, Tensor]:
        part = self._shard(len(idx))
        if part is not None:
            idx, eps = idx[part.rows], None if eps is None else eps[part.rows]
        self.model.eval()
        try:
            with _autocast(self.device, self.amp_dtype):
                terms = dict(_check_terms(self.loss_fn(self._batch(self.val_t, idx, eps), beta=beta)))
        finally:
            self.model.train()
        # pooled, every rank sees the same validation loss and takes the same early-stopping decision
        return terms if part is None else distributed.reduce_terms(terms, part.weight)

    def scalars(self, terms: Sequence[Mapping[str, Tensor]]) -> list[dict[str, float]]:
        if not terms:
            return []
        keys = list(terms[0])
        table = torch.stack([torch.stack([t[k].float() for k in keys]) for t in terms]).tolist()  # one sync
        return [dict(zip(keys, row)) for row in table]

    @torch.no_grad()
    def extra_val_metrics(self) -> dict[str, float]:
        if not hasattr(self.model, "extra_val_metrics"):
            return {}
        self.model.eval()
        try:
            return dict(self.model.extra_val_metrics(self.val_t))
        finally:
            self.model.train()

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state(), "augment": self.generator.get_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save(self, which: str, loop_state: dict[str, Any]) -> None:
        # the loop writes 'best' then 'last' of the same state after an improving epoch: serialise once
        # (for the 82 M-parameter seed VAE that is a second of work and a 1 GB buffer saved per epoch)
        key = (self._updates, loop_state.get("epoch"), loop_state.get("step"))
        if self._encoded is None or self._encoded[0] != key:
            state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "rng": self._rng_state(), "loop": loop_state}
            if self.scaler.is_enabled():
                state["scaler"] = self.scaler.state_dict()
            self._encoded = (key, encode_checkpoint(state))
        write_checkpoint(checkpoint_path(self.run_dir, which), self._encoded[1])
        if which == "last":  # nothing is written after 'last' before the next step: free the buffer
            self._encoded = None

    def _load_scaler(self, state: dict[str, Any]) -> None:
        if "scaler" in state and self.scaler.is_enabled():  # a run resumed in another precision starts afresh
            self.scaler.load_state_dict(state["scaler"])

    def restore(self, which: str) -> dict[str, Any]:
        state = load_training_state(checkpoint_path(self.run_dir, which), self.model, self.optimizer, self.device,
                                    more=self._load_scaler)
        loop = state["loop"]
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "augment" in rng:
            self.generator.set_state(rng["augment"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])
        if self.distributed and distributed_env.rank() > 0:  # 'last' holds rank 0's generator only
            torch.manual_seed(distributed.rank_seed(self.seed, distributed_env.rank(), int(loop.get("epoch", 0))))
        return loop

    def has_checkpoint(self, which: str) -> bool:
        return has_checkpoint(self.run_dir, which)

    @torch.no_grad()
    def reconstruct_val(self) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if not (hasattr(self.model, "encode") and hasattr(self.model, "decode")):
            return None
        self.model.eval()
        try:
            outs = []
            for start in range(0, self.n_val, training.VAL_BATCH):
                x = self.val_t["images"][start:start + training.VAL_BATCH]
                with _autocast(self.device, self.amp_dtype):  # the run's precision, as on tf
                    outs.append(self.model.decode(self.model.encode(x)[0]).float().cpu().numpy()[:, 0])
        finally:
            self.model.train()
        faces = self.val_t["images"].float().cpu().numpy()[:, 0]
        mean_face = self.train_t["images"].float().mean(0).cpu().numpy()[0]
        return faces, np.concatenate(outs), mean_face


def fit(model: nn.Module, train: dict[str, np.ndarray], val: dict[str, np.ndarray], config: RunConfig,
        run_dir: Path, *, resume: bool = False, augment: Optional[Augment] = None) -> dict[str, Any]:
    """Train ``model`` with the shared loop (:func:`shared.training.fit`) through a :class:`TorchEngine`.

    Returns:
        The best epoch's metrics record plus the learning guard's ``warnings``.
    """
    return training.fit(TorchEngine(model, train, val, config, run_dir, augment), config, run_dir, resume=resume)


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: Any, *,
                        more: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Load a training checkpoint's weights and optimizer state into ``model`` and ``optimizer``.

    Args:
        path: the checkpoint file.
        model, optimizer: what it is loaded into.
        device: where its tensors are mapped.
        more: loads further entries of the state (e.g. the AMP scaler's), under the same "does not
            fit" check.

    Returns:
        The checkpoint's state, its ``loop`` (the shared loop's bookkeeping) as a dict.

    Raises:
        RunError: a missing, damaged or unsafe checkpoint, one without training state (a converted
            run's), or one that does not fit ``model``/``optimizer``.
    """
    state = load_checkpoint(path, map_location=device)
    if "loop" not in state or "optimizer" not in state:
        raise RunError(training.NO_TRAINING_STATE.format(path=path))
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        state["loop"] = dict(state["loop"])
        if more is not None:
            more(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: checkpoint does not fit the model of config.json: {first}") from None
    return state


def load_weights(model: nn.Module, run_dir: Path, which: str = "best") -> nn.Module:
    """Load the weights of ``run_dir/checkpoints/{which}.pt`` into ``model`` (safe: ``weights_only``).

    Returns:
        ``model`` in eval mode.

    Raises:
        RunError: missing, damaged or unsafe checkpoint, or weights that do not fit ``model``.
    """
    state = load_checkpoint(checkpoint_path(run_dir, which), map_location="cpu")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise RunError(f"{run_dir}: checkpoint '{which}' does not fit the model: {str(exc).splitlines()[0]}") from None
    return model.eval()
