"""K VAEs of one architecture trained as one vectorised ensemble (``facevae sweep --batched``).

The members of one latent size differ only in β, so they share every shape: their weights are
stacked along a leading member axis (:func:`torch.func.stack_module_state`) and one forward pass of
grouped layers (:class:`facevae.ensemble_layers.Grouped`: a convolution with ``groups=K``, a batched
matrix product) runs all K members on the same batch and the same ε. The loss of the step is the sum
of the members' losses, each with its own β (warm-up included): the gradient of a sum of independent
members is each member's own gradient. One optimizer over the stacked tensors equals K optimizers, since Adam, AdamW
and SGD (momentum, weight decay) are element-wise; gradient clipping is computed per member.
BatchNorm running statistics are stacked buffers, updated in place through views.

The epoch loop is not written again: every member runs :func:`shared.training.fit` in its own thread
with a :class:`shared.sweep_lockstep.MemberEngine`, and :class:`shared.sweep_lockstep.Lockstep`
gathers the members' steps into one ensemble step on the calling thread (all torch work happens
there). So metrics, early stopping, checkpoint order, resume and the learning guard are those of a
one-by-one run; a member that stops early leaves, and the stack is compacted to the others at the
next step.

Checkpoints are written in the torch backend's format (a ``ConvVAE`` state dict and its optimizer's
state dict, sliced out of the stack), so ``load``, ``evaluate``, ``resume`` and ``convert`` treat a
member like any run.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from facevae.backend import build_vae
from facevae.checkpoint import checkpoint_path, has_checkpoint, load_checkpoint, save_checkpoint
from facevae.engine import autocast_dtype, load_training_state, select_device, to_tensors
from facevae.ensemble_layers import Grouped
from facevae.losses import TERM_NAMES
from facevae.optimizers import make_optimizer
from shared import training
from shared.config import RunConfig
from shared.errors import ConfigError, RunError
from shared.faces import Faces
from shared.sweep_batched import check_members
from shared.sweep_lockstep import Lockstep, MemberEngine, fit_lockstep

__all__ = ["train_ensemble", "StackedVAE"]

log = logging.getLogger(__name__)


def _per_member(value: Any, param: Tensor) -> bool:
    """An optimizer state entry with one value per weight (moments), not one per tensor (``step``)."""
    return torch.is_tensor(value) and value.shape == param.shape


class StackedVAE:
    """The stacked weights, buffers and optimizer of K ``ConvVAE`` members, and the ensemble steps.

    Args:
        configs: the members' run configs (same architecture and training recipe; β may differ).
        train, val: numpy dicts (``images`` uint8) shared by every member.
    """

    def __init__(self, configs: Sequence[RunConfig], train: dict[str, np.ndarray], val: dict[str, np.ndarray]):
        cfg = configs[0].train
        self.device = device = select_device(cfg.device)
        if device.type == "cuda":  # as facevae.engine.TorchEngine
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.cfg, self.amp_dtype = cfg, autocast_dtype(cfg.precision, device)
        # build_vae seeds each member as a one-by-one run seeds its model: the same initial weights
        models = [build_vae(c.model, c.train.seed) for c in configs]
        params, buffers = stack_module_state(models)
        self.params = {n: nn.Parameter(p.detach().to(device).contiguous()) for n, p in params.items()}
        self.buffers = {n: b.detach().to(device).contiguous() for n, b in buffers.items()}
        self.template = models[0].to(device)  # one member's module and optimizer, to read and write checkpoints
        self.template_opt = make_optimizer(self.template, cfg)
        self.grouped = Grouped(self.template)
        self.optimizer = make_optimizer(nn.ParameterList(self.params.values()), cfg)
        self.members = list(range(len(configs)))  # member ids in stack order
        self.train_t, self.val_t = to_tensors(train, device), to_tensors(val, device)
        self.n_train, self.n_val = len(self.train_t["images"]), len(self.val_t["images"])
        self.noise_dim = int(configs[0].model.latent_dim)
        # what a one-by-one run saves: its engine seeds torch with the run's seed and a VAE draws nothing
        self.rng = {"torch": torch.Generator().manual_seed(cfg.seed).get_state(),
                    "augment": torch.Generator().manual_seed(cfg.seed + 1).get_state()}

    # ------------------------------------------------------------------ the ensemble steps
    def _amp(self) -> Any:
        """The run's precision for forward passes, as in ``TorchEngine`` (float32: no autocast)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _terms(self, data: dict[str, Tensor], idx: np.ndarray, eps: np.ndarray, betas: Sequence[float],
               training: bool, noise: Optional[np.ndarray] = None) -> Tensor:
        x = data["images"][torch.from_numpy(idx).to(self.device)]
        e = torch.from_numpy(eps).to(self.device)
        b = torch.tensor(list(betas), dtype=torch.float32, device=self.device)
        # the denoising input noise, as ConvVAE.loss_terms adds it: the encoder reads clamp(x + noise, 0, 1)
        x_in = None if noise is None else (x + torch.from_numpy(noise).to(self.device).unsqueeze(1)).clamp(0.0, 1.0)
        with self._amp():
            return self.grouped.terms(self.params, self.buffers, x, e, b, len(self.members), training,
                                      x_in=x_in)  # (K, 5)

    def train_step(self, idx: np.ndarray, eps: np.ndarray, betas: Sequence[float], lr: float,
                   noise: Optional[np.ndarray] = None) -> Tensor:
        """One optimizer step of every member on faces ``idx`` (encoder input ``x + noise``, when given);
        returns the ``(K, 5)`` terms."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = self._terms(self.train_t, idx, eps, betas, training=True, noise=noise)
        self.optimizer.zero_grad(set_to_none=True)
        out[:, 0].sum().backward()  # each member's gradient is that of its own loss
        if self.cfg.grad_clip > 0:
            self._clip(self.cfg.grad_clip)
        self.optimizer.step()
        return out.detach()

    @torch.no_grad()
    def _clip(self, max_norm: float) -> None:
        """``nn.utils.clip_grad_norm_`` applied to each member's own gradient."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        k = len(self.members)
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), 2, dim=1) for g in grads], dim=1)
        coef = (max_norm / (torch.linalg.vector_norm(norms, 2, dim=1) + 1e-6)).clamp(max=1.0)  # (K,)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))

    @torch.no_grad()
    def val_step(self, idx: np.ndarray, eps: np.ndarray, betas: Sequence[float]) -> Tensor:
        """The ``(K, 5)`` terms of validation faces ``idx`` in inference mode (no update)."""
        return self._terms(self.val_t, idx, eps, betas, training=False)

    def execute(self, kind: str, payloads: Mapping[int, tuple]) -> dict[int, dict[str, Tensor]]:
        """The lockstep call of every active member (``kind`` ``train`` or ``val``): one ensemble step.

        Raises:
            RunError: the members asked for different faces, noise (reparameterisation or input) or learning rates.
        """
        members = sorted(payloads)
        self.keep(members)
        idx, _, eps, lr, noise = payloads[members[0]]
        for m in members[1:]:
            o_idx, _, o_eps, o_lr, o_noise = payloads[m]
            same_noise = (o_noise is None) == (noise is None) and (noise is None or np.array_equal(o_noise, noise))
            if not (np.array_equal(o_idx, idx) and np.array_equal(o_eps, eps) and o_lr == lr and same_noise):
                raise RunError(f"the batched members are out of step ({kind} step: different faces, noise or "
                               f"learning rate); train these runs one by one (without --batched)")
        betas = [payloads[m][1] for m in members]
        out = self.train_step(idx, eps, betas, lr, noise) if kind == "train" else self.val_step(idx, eps, betas)
        return {m: dict(zip(TERM_NAMES, out[j].unbind())) for j, m in enumerate(members)}

    # ------------------------------------------------------------------ members leaving
    @torch.no_grad()
    def keep(self, members: Sequence[int]) -> None:
        """Drop every member not in ``members`` from the stack (weights, buffers, optimizer state)."""
        if list(members) == self.members:
            return
        rows = torch.tensor([self.members.index(m) for m in members], device=self.device)
        params = {n: nn.Parameter(p.detach().index_select(0, rows)) for n, p in self.params.items()}
        optimizer = make_optimizer(nn.ParameterList(params.values()), self.cfg)
        optimizer.param_groups[0].update({k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"})
        for n, old in self.params.items():
            state = self.optimizer.state.get(old)
            if state:
                optimizer.state[params[n]] = {key: v.index_select(0, rows) if _per_member(v, old) else v
                                              for key, v in state.items()}
        self.buffers = {n: b.index_select(0, rows) for n, b in self.buffers.items()}
        self.params, self.optimizer, self.members = params, optimizer, list(members)

    # ------------------------------------------------------------------ one member's view
    def _row(self, member: int) -> int:
        return self.members.index(member)

    @torch.no_grad()
    def _weights_to_template(self, member: int) -> None:
        j = self._row(member)
        for n, t in self.template.named_parameters():
            t.copy_(self.params[n][j])
        for n, t in self.template.named_buffers():
            t.copy_(self.buffers[n][j])

    @torch.no_grad()
    def _to_template(self, member: int) -> None:
        """Copy ``member``'s weights and optimizer state into the one-member template."""
        self._weights_to_template(member)
        j = self._row(member)
        named = dict(self.template.named_parameters())
        self.template_opt.state.clear()
        for n, t in named.items():
            state = self.optimizer.state.get(self.params[n])
            if state:  # clones: a view would make torch.save write every member's storage
                self.template_opt.state[t] = {k: (v[j] if _per_member(v, self.params[n]) else v).clone()
                                              for k, v in state.items()}
        self.template_opt.param_groups[0].update(
            {k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"})

    @staticmethod
    def has_checkpoint(run_dir: Path, which: str) -> bool:
        return has_checkpoint(run_dir, which)

    @staticmethod
    def scalars(terms: Sequence[Mapping[str, Tensor]]) -> list[dict[str, float]]:
        """Step results as Python floats, one device sync for the whole list (as ``TorchEngine.scalars``)."""
        if not terms:
            return []
        keys = list(terms[0])
        table = torch.stack([torch.stack([t[k].float() for k in keys]) for t in terms]).tolist()
        return [dict(zip(keys, row)) for row in table]

    def extra_val_metrics(self, member: int) -> dict[str, float]:
        return {}  # ConvVAE has none

    def save(self, member: int, run_dir: Path, which: str, loop_state: dict[str, Any]) -> None:
        """Write ``member``'s checkpoint exactly as ``TorchEngine.save`` would."""
        path = checkpoint_path(run_dir, which)
        self._to_template(member)
        rng = dict(self.rng)
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(path, {"model": self.template.state_dict(), "optimizer": self.template_opt.state_dict(),
                               "rng": rng, "loop": loop_state})

    @torch.no_grad()
    def restore(self, member: int, run_dir: Path, which: str) -> dict[str, Any]:
        """Load ``member``'s checkpoint into its row of the stack; returns its loop state.

        Raises:
            RunError: no training state, a checkpoint that does not fit, or an optimizer step count
                that differs from the other members' (they cannot share one optimizer).
        """
        path = checkpoint_path(run_dir, which)
        state = load_training_state(path, self.template, self.template_opt, self.device)
        j = self._row(member)
        for n, t in self.template.named_parameters():
            self.params[n][j].copy_(t)
            self._restore_state(n, t, j, path)
        for n, t in self.template.named_buffers():
            self.buffers[n][j].copy_(t)
        group = self.template_opt.param_groups[0]  # hyper-parameters travel with the optimizer, as in TorchEngine
        self.optimizer.param_groups[0].update({k: v for k, v in group.items() if k not in ("params", "lr")})
        return state["loop"]

    def _restore_state(self, name: str, param: Tensor, row: int, path: Path) -> None:
        saved = self.template_opt.state.get(param) or {}
        stacked = self.params[name]
        state = self.optimizer.state[stacked]
        for key, value in saved.items():
            if _per_member(value, param):
                if key not in state:
                    state[key] = torch.zeros_like(stacked)
                state[key][row].copy_(value)
            elif key not in state:
                state[key] = value.clone() if torch.is_tensor(value) else value
            elif not (torch.equal(state[key].cpu(), value.cpu()) if torch.is_tensor(value) else state[key] == value):
                raise RunError(f"{path}: its optimizer has taken {float(value):g} steps, another member of the "
                               f"batch {float(state[key]):g}; train these runs one by one (without --batched)")

    @torch.no_grad()
    def reconstruct_val(self, member: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(val faces, member's reconstructions, mean training face)``, as ``TorchEngine.reconstruct_val``."""
        self._weights_to_template(member)
        model = self.template.eval()
        outs = []
        try:
            for start in range(0, self.n_val, training.VAL_BATCH):
                x = self.val_t["images"][start:start + training.VAL_BATCH]
                with self._amp():
                    outs.append(model.decode(model.encode(x)[0]).float().cpu().numpy()[:, 0])
        finally:
            model.train()
        faces = self.val_t["images"].float().cpu().numpy()[:, 0]
        mean_face = self.train_t["images"].float().mean(0).cpu().numpy()[0]
        return faces, np.concatenate(outs), mean_face


def _start_epoch(run_dir: Path) -> Optional[int]:
    """The epoch a resumed run continues from (None: its 'last' checkpoint cannot be read; fit says why)."""
    try:
        loop = load_checkpoint(checkpoint_path(run_dir, "last")).get("loop") or {}
        return int(loop.get("epoch", 0))
    except (RunError, TypeError, ValueError):
        return None


def train_ensemble(configs: Sequence[RunConfig], faces: Faces, split: Any, run_dirs: Sequence[Path], *,
                   resume: Sequence[bool]) -> list[Any]:
    """Train the members ``configs`` (one latent size, several β) together on ``faces[split.train]``.

    Members resumed at different epochs cannot share batches: they train in separate ensembles,
    one per starting epoch.

    Args:
        configs: the members' configs (``config.json`` and ``split.json`` are already in their folders).
        faces: every face of the data set.
        split: the split every member shares (``train``/``val`` index arrays).
        run_dirs: the members' run folders.
        resume: per member, continue from ``checkpoints/last.pt``.

    Returns:
        Per member, what :func:`shared.training.fit` returned, or the exception it raised.

    Raises:
        ConfigError: members that are not torch ``vae`` runs of one architecture and training recipe.
    """
    check_members(configs)
    if any(c.model.family != "vae" for c in configs):
        raise ConfigError("a batched sweep trains `family` 'vae' on the torch backend. "
                          f"Received: family={configs[0].model.family!r}")
    if any(c.train.compile for c in configs):
        log.info("compile is not used by a batched sweep (the ensemble runs grouped layers)")
    train = {"images": faces.images[np.asarray(split.train)]}
    val = {"images": faces.images[np.asarray(split.val)]}
    cohorts: dict[Optional[int], list[int]] = {}
    for k, (run_dir, again) in enumerate(zip(run_dirs, resume)):
        cohorts.setdefault(_start_epoch(Path(run_dir)) if again else 0, []).append(k)
    results: list[Any] = [None] * len(configs)
    for epoch, members in cohorts.items():
        if len(cohorts) > 1:
            log.info("batched: %d member(s) continue from epoch %s", len(members), epoch)
        stack = StackedVAE([configs[k] for k in members], train, val)
        lockstep = Lockstep(len(members), stack.execute)
        engines = [MemberEngine(stack, lockstep, i, Path(run_dirs[k]), configs[k].train.lr)
                   for i, k in enumerate(members)]
        label = f"d={configs[members[0]].model.latent_dim} ×{len(members)}"
        outs = fit_lockstep(lockstep, engines, [configs[k] for k in members], [Path(run_dirs[k]) for k in members],
                            [resume[k] for k in members], label=label)
        for k, out in zip(members, outs):
            results[k] = out
        del stack, engines
    return results
