"""The two presets' layers and training recipes, per model family: ``seed`` (the original work) and ``default``.

Kept apart from :mod:`shared.config` so a change of recipe is one small, reviewable file; the
configs read these tables (``ModelConfig`` fills its channels and hidden sizes from
:func:`preset_shape`, :func:`shared.config.default_train_config` starts from ``TRAIN_RECIPES``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["PRESET_SHAPES", "PRESET_LIKELIHOODS", "PRESET_LABEL_LOSS", "TRAIN_RECIPES", "preset_shape",
           "preset_likelihood", "preset_label_loss"]

# (channels, hidden_dims) per (family, preset); the block style follows the preset.
PRESET_SHAPES: dict[tuple[str, str], tuple[tuple[int, ...], tuple[int, ...]]] = {
    ("vae", "seed"): ((32, 128, 512), (2048, 1024, 512)),
    ("vae", "default"): ((32, 64, 128, 256), (256,)),
    ("cnn", "seed"): ((16, 64, 256), (1024, 1024, 512)),
    ("cnn", "default"): ((16, 32, 64, 128), (256,)),
}


def preset_shape(family: str, preset: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Default ``(channels, hidden_dims)`` of a preset; cvae and iaf share the vae shapes."""
    key = ("cnn" if family == "cnn" else "vae", preset)
    return PRESET_SHAPES[key]


# (likelihood, sigma_mode) of a preset's generative models, used when a config leaves them empty.
# ``default``: a gaussian decoder with the per-image maximum-likelihood σ (σ_i² = MSE_i). On the real faces
# (benchmarks/recipe_lab.py, d=32, β=1, 25 epochs) it reconstructs the test split at 23.84 dB against 20.63
# for bernoulli after 10 epochs: a bernoulli likelihood on grey levels in [0, 1] is not the data's
# likelihood, and its fixed, large per-pixel variance makes β=1 cost ~3 dB of blur.
PRESET_LIKELIHOODS: dict[str, tuple[str, str]] = {
    "seed": ("bernoulli", "fixed"),
    "default": ("gaussian", "learned"),
}


def preset_likelihood(preset: str) -> tuple[str, str]:
    """``(likelihood, sigma_mode)`` a config of ``preset`` takes when it leaves them empty."""
    return PRESET_LIKELIHOODS[preset]


# Label consistency of a preset's cvae (ModelConfig.label_loss, facevae_tf.label_consistency), used when a
# config leaves it unset. ``default``: 100 nats per unit of the auxiliary classifier's loss. On the real
# faces (d=32, 15 epochs; README, "Conditional VAE on real faces") the independent CNN judge then finds the
# requested gender / ethnicity in 82 % / 77.5 % of generated faces (age within 11.0 years) against 79 % /
# 45 % / 18.8 without it, for 0.1 dB of reconstruction PSNR (300, tried without the hinge, scored lower on
# every count). ``seed`` keeps the original work's cvae (none).
PRESET_LABEL_LOSS: dict[str, float] = {"seed": 0.0, "default": 100.0}


def preset_label_loss(family: str, preset: str) -> float:
    """``label_loss`` a config of ``(family, preset)`` takes when it leaves it unset (0 outside the cvae)."""
    return PRESET_LABEL_LOSS[preset] if family == "cvae" else 0.0


# Training recipes per (family, preset). ``seed`` reproduces the original work's recipe.
TRAIN_RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("cnn", "seed"): dict(epochs=10, batch_size=50, lr=5e-4, optimizer="adam", schedule="seed", early_stopping=0),
    ("cnn", "default"): dict(epochs=20, batch_size=64, lr=1e-3, weight_decay=0.05, optimizer="adamw",
                             schedule="cosine", early_stopping=0, label_smoothing=0.1, augment=True),
    ("vae", "seed"): dict(epochs=10, batch_size=50, lr=5e-4, optimizer="adam", schedule="seed", early_stopping=0),
    # batch 32 and at least 32 steps an epoch: on 600 real faces batch 128 gave 4 steps an epoch, too
    # few to beat the mean face in 3 epochs, and batch 32 left one run in 80 at the mean face
    # (benchmarks/stability.py); on 2 CPU cores batch 32 trains as many faces a second as 128
    ("vae", "default"): dict(epochs=25, batch_size=32, min_steps_per_epoch=32, lr=2e-3, optimizer="adam",
                             schedule="cosine", early_stopping=8),
}
