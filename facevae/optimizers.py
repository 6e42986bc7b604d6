"""The torch optimiser of ``TrainConfig.optimizer`` (``facevae.engine`` and the batched ensemble share it).

``adamw`` decays weights decoupled from the gradient, ``adam``/``sgd`` add ``weight_decay·w`` to it
(L2) — ``facevae_tf.engine.make_optimizer`` does the same.
"""
from __future__ import annotations

import torch
from torch import nn

from shared.config import TrainConfig

__all__ = ["make_optimizer"]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam / SGD (momentum 0.9) with L2 ``weight_decay``, or AdamW with decoupled decay; eps 1e-8.

    Adam and AdamW use the multi-tensor (``foreach``) update, torch's default on CUDA but not on a
    CPU: there it is bitwise equal to the per-tensor loop, whatever the grouping of the tensors (the
    batched sweep relies on that), and costs 10.6 ms of CPU a step on the default VAE against 13.5 ms
    (1 thread; ``benchmarks/peers.py``). ``fused=True`` would cost 4.3 ms, but its vectorised body and
    scalar tail round differently, so a stacked tensor would not train as its members do.

    Args:
        model: the module whose trainable parameters are optimised.
        cfg: the training config (``optimizer``, ``lr``, ``weight_decay``).

    Returns:
        The optimiser.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=1e-8, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, eps=1e-8, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
