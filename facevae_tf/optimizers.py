"""The Keras optimiser of ``TrainConfig.optimizer`` (the mirror of :mod:`facevae.optimizers`).

``adamw`` decays weights decoupled from the gradient; for ``adam``/``sgd`` the engine adds
``weight_decay·w`` to the gradient (L2), as torch does. Epsilon is torch's 1e-8.
"""
from __future__ import annotations

import keras

from shared.config import TrainConfig

__all__ = ["make_optimizer"]


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam or SGD (momentum 0.9), whose L2 decay the engine adds to the gradient, or AdamW (decoupled)."""
    # an explicit name keeps slot-variable paths (checkpoint keys) independent of Keras' auto-numbering
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=cfg.lr, epsilon=1e-8, name="optimizer")
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=cfg.lr, weight_decay=cfg.weight_decay, epsilon=1e-8,
                                      name="optimizer")
    return keras.optimizers.SGD(learning_rate=cfg.lr, momentum=0.9, name="optimizer")
