"""Gender / ethnicity / age CNNs: the original ``seed`` architecture and our ``default`` design.

Both presets share one interface: ``forward(x)`` returns a dict of raw outputs (class **logits**,
never probabilities, and age in years), ``features(x)`` the penultimate-layer features, and
``loss_terms(batch, beta)`` the named loss terms the training loop logs (``loss`` is the one it minimises).

* ``seed``: the original work's layers, built from :func:`shared.architecture.conv_trunk` /
  :func:`shared.architecture.dense_stack` — Conv3×3 → ReLU → MaxPool2 → BN per block, flatten,
  Linear → LeakyReLU → BN1d ×3, then the heads. Trained on logits and [0, 1] inputs.
* ``default``: a compact conv net (Conv3×3 → BN → ReLU, twice in the deeper stages, MaxPool2 per
  stage), flatten, dropout, one narrow hidden Linear → GELU, dropout, then the heads. It has a
  fraction of the seed's parameters and is meant to be trained with augmentation
  (:func:`augment_batch`), AdamW + cosine and label smoothing.

Task ``all`` is one shared trunk with three heads; the losses are summed with :data:`TASK_WEIGHTS`.
Age is regressed as ``age / AGE_SCALE`` (L1 for ``seed``, Huber for ``default``) and reported in years.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facevae.layers import build_layers
from shared.architecture import BN_EPS, BN_MOMENTUM, Layer, conv_trunk, dense_stack
from shared.config import ModelConfig
from shared.faces import AGE_SCALE, ETHNICITY_NAMES, GENDER_NAMES

__all__ = ["FaceCNN", "TASK_OUTPUTS", "TASK_WEIGHTS", "HUBER_DELTA", "DROPOUT", "tasks_of", "augment_batch"]

TASK_OUTPUTS = {"gender": len(GENDER_NAMES), "ethnicity": len(ETHNICITY_NAMES), "age": 1}
# Weights of the summed multi-task loss (task "all"). Each term's gradient w.r.t. its head output is
# O(1) (CE: p - y; L1 and Huber/delta beyond delta: ±1), so equal weights give each task an equal say
# in the shared trunk. (A weight of 10 on age made gender/ethnicity learn visibly slower.)
TASK_WEIGHTS = {"gender": 1.0, "ethnicity": 1.0, "age": 1.0}
HUBER_DELTA = 0.05   # in age/AGE_SCALE units: quadratic below 5 years, linear above
DROPOUT = 0.3        # default preset, before the hidden and head layers


def tasks_of(task: str) -> tuple[str, ...]:
    """The heads of a model trained for ``task`` (``all`` -> all three)."""
    return tuple(TASK_OUTPUTS) if task == "all" else (task,)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)]


def _default_trunk(channels: tuple[int, ...]) -> nn.Sequential:
    """Stages of Conv3×3-BN-ReLU (one in the first two stages, two after) + MaxPool2, then flatten.

    Flatten rather than global average pooling: the faces are aligned crops, so *where* a feature
    is (hair beside the jaw, wrinkles on the forehead) carries label information that pooling drops.
    """
    mods: list[nn.Module] = []
    c_in = 1
    for i, c in enumerate(channels):
        mods += _conv_bn_relu(c_in, c)
        if i >= 2:
            mods += _conv_bn_relu(c, c)
        mods.append(nn.MaxPool2d(2))
        c_in = c
    mods.append(nn.Flatten())
    return nn.Sequential(*mods)


class FaceCNN(nn.Module):
    """Attribute CNN for ``cfg.task`` built from a ``family='cnn'`` :class:`ModelConfig`.

    Args:
        cfg: model config (``preset``, ``task``, ``image_size``, ``channels``, ``hidden_dims``).
        label_smoothing: cross-entropy label smoothing (training recipe; 0 for ``seed``).

    Raises:
        ValueError: ``cfg.family`` is not ``cnn``.
    """

    def __init__(self, cfg: ModelConfig, label_smoothing: float = 0.0):
        super().__init__()
        if cfg.family != "cnn":
            raise ValueError(f"FaceCNN needs family='cnn'. Received: family={cfg.family!r}")
        self.cfg = cfg
        self.task = cfg.task
        self.tasks = tasks_of(cfg.task)
        self.label_smoothing = float(label_smoothing)
        side = cfg.image_size // 2 ** len(cfg.channels)
        flat = cfg.channels[-1] * side * side  # computed from the config, never a literal
        if cfg.preset == "seed":
            self.trunk = build_layers(conv_trunk(cfg.channels, "seed") + [Layer("flatten")])
            self.dense = build_layers(dense_stack(flat, cfg.hidden_dims, "seed"))
        else:
            self.trunk = _default_trunk(cfg.channels)
            dense: list[nn.Module] = []
            width = flat
            for d in cfg.hidden_dims:
                dense += [nn.Dropout(DROPOUT), nn.Linear(width, d), nn.GELU()]
                width = d
            dense.append(nn.Dropout(DROPOUT))
            self.dense = nn.Sequential(*dense)
        self.feature_dim = cfg.hidden_dims[-1]
        self.heads = nn.ModuleDict({t: nn.Linear(self.feature_dim, TASK_OUTPUTS[t]) for t in self.tasks})

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``(N, feature_dim)`` of images ``(N, 1, H, W)`` in [0, 1]."""
        assert x.dim() == 4 and x.shape[1] == 1, f"expected (N, 1, H, W) images, got {tuple(x.shape)}"
        return self.dense(self.trunk(x))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Raw outputs per task: ``gender`` logits (N, 2), ``ethnicity`` logits (N, 5), ``age`` years (N,)."""
        h = self.features(x)
        out = {t: self.heads[t](h) for t in self.tasks}
        if "age" in out:
            out["age"] = out["age"].squeeze(1) * AGE_SCALE
        return out

    def loss_terms(self, batch: dict[str, Tensor], beta: Optional[float] = None) -> dict[str, Tensor]:
        """Per-task losses on logits (cross-entropy) and age/AGE_SCALE (L1 or Huber), their weighted
        sum ``loss``, and detached monitoring terms (``<task>_acc``, ``age_mae`` in years).
        ``beta`` (the training loop's KL weight) does not concern a classifier and is ignored."""
        out = self(batch["images"])
        terms: dict[str, Tensor] = {}
        total = out[self.tasks[0]].new_zeros(())
        for t in self.tasks:
            if t == "age":
                target = batch["age"].float()
                pred, tgt = out["age"] / AGE_SCALE, target / AGE_SCALE
                if self.cfg.preset == "seed":
                    term = F.l1_loss(pred, tgt)
                else:
                    term = F.huber_loss(pred, tgt, delta=HUBER_DELTA) / HUBER_DELTA
                terms["age_mae"] = (out["age"] - target).abs().mean().detach()
            else:
                target = batch[t].long()
                term = F.cross_entropy(out[t], target, label_smoothing=self.label_smoothing)
                terms[f"{t}_acc"] = (out[t].argmax(1) == target).float().mean().detach()
            terms[f"{t}_loss"] = term
            total = total + (TASK_WEIGHTS[t] if len(self.tasks) > 1 else 1.0) * term
        terms["loss"] = total
        return terms


def augment_batch(batch: dict[str, Tensor], generator: torch.Generator, *, max_shift: int = 3,
                  contrast: float = 0.2, brightness: float = 0.08) -> dict[str, Tensor]:
    """Random horizontal flips, shifts of up to ``max_shift`` pixels (edge pixels repeated) and a
    mild contrast/brightness jitter, drawn per face from ``generator``; labels are unchanged.

    Faces are left-right symmetric in their labels, so flips and small shifts add data for free.
    """
    x = batch["images"]                                            # (N, 1, H, W)
    n, _, h, w = x.shape
    gen_dev = generator.device
    dy = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=generator, device=gen_dev).to(x.device)
    dx = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=generator, device=gen_dev).to(x.device)
    flip = (torch.rand((n, 1), generator=generator, device=gen_dev) < 0.5).to(x.device)
    gain = 1.0 + contrast * (2 * torch.rand((n, 1, 1, 1), generator=generator, device=gen_dev) - 1)
    bias = brightness * (2 * torch.rand((n, 1, 1, 1), generator=generator, device=gen_dev) - 1)
    rows = (torch.arange(h, device=x.device)[None, :] - dy).clamp(0, h - 1)   # (N, H)
    cols = (torch.arange(w, device=x.device)[None, :] - dx).clamp(0, w - 1)   # (N, W)
    cols = torch.where(flip, w - 1 - cols, cols)
    idx = torch.arange(n, device=x.device)[:, None, None]
    moved = x[:, 0][idx, rows[:, :, None], cols[:, None, :]]                 # (N, H, W)
    mean = moved.mean(dim=(1, 2), keepdim=True)[:, None]
    out = ((moved[:, None] - mean) * gain.to(x.device) + mean + bias.to(x.device)).clamp(0.0, 1.0)
    return {**batch, "images": out}
