"""Plan -> Keras layers: one builder for every :class:`shared.architecture.Layer` kind.

Layers are named ``{prefix}_{index:02d}_{kind}`` in plan order (e.g. ``encoder_00_conv``,
``decoder_03_deconv``), so a weight converter can walk the torch and Keras models side by side.
Images are NHWC; ``flatten`` therefore orders features (H, W, C) and ``unflatten`` reshapes a
plan shape ``(C, H, W)`` to ``(H, W, C)``.
"""
from __future__ import annotations

from typing import Sequence

import keras

from shared.architecture import BN_EPS, BN_MOMENTUM, Layer

__all__ = ["build_layer", "build_stack", "apply_stack"]


def build_layer(spec: Layer, name: str) -> keras.layers.Layer:
    """One Keras layer for the plan record ``spec``.

    Raises:
        ValueError: ``spec.kind`` is not a known plan kind.
    """
    kind = spec.kind
    if kind in ("conv", "deconv"):
        # Symmetric padding p equals Keras 'same' for the plan's kernels (3/1/1, 4/2/1) and 'valid' for p=0.
        padding = "same" if spec.padding > 0 else "valid"
        cls = keras.layers.Conv2D if kind == "conv" else keras.layers.Conv2DTranspose
        return cls(spec.out_dim, spec.kernel, strides=spec.stride, padding=padding, name=name)
    if kind == "maxpool":
        return keras.layers.MaxPooling2D(pool_size=spec.kernel, strides=spec.stride, name=name)
    if kind == "bn":
        return keras.layers.BatchNormalization(epsilon=BN_EPS, momentum=1.0 - BN_MOMENTUM, name=name)
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    if kind == "lrelu":
        return keras.layers.LeakyReLU(negative_slope=spec.slope, name=name)
    if kind == "linear":
        return keras.layers.Dense(spec.out_dim, name=name)
    if kind == "flatten":
        return keras.layers.Flatten(name=name)
    if kind == "unflatten":
        c, h, w = spec.shape
        return keras.layers.Reshape((h, w, c), name=name)
    raise ValueError(f"unknown plan layer kind {kind!r}")


def build_stack(plan: Sequence[Layer], prefix: str) -> list[keras.layers.Layer]:
    """Keras layers for ``plan`` in order, named ``{prefix}_{i:02d}_{kind}``."""
    return [build_layer(spec, f"{prefix}_{i:02d}_{spec.kind}") for i, spec in enumerate(plan)]


def apply_stack(layers: Sequence[keras.layers.Layer], x, training: bool):
    """Run ``x`` through ``layers``; ``training`` reaches the BatchNorm layers."""
    for layer in layers:
        x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
    return x
