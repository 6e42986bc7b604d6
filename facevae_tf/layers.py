"""Plan -> Keras layers: one builder for every :class:`shared.architecture.Layer` kind.

Layers are named ``{prefix}_{index:02d}_{kind}`` in plan order (e.g. ``encoder_00_conv``,
``decoder_03_deconv``), so a weight converter can walk the torch and Keras models side by side.
Images are NHWC; ``flatten`` therefore orders features (H, W, C) and ``unflatten`` reshapes a
plan shape ``(C, H, W)`` to ``(H, W, C)``. Kernels and biases start U(±1/√fan_in), PyTorch's
default and the initialisation :mod:`shared.architecture` prescribes for both backends.

``synchronized_bn`` builds BatchNorm with ``synchronized=True``: under a ``tf.distribute`` strategy
its batch statistics are those of the global batch (all replicas), so data-parallel training
normalises as one device would. Its variables are the same; only single-device runs leave it off,
since the synchronised moments (E[x²] − E[x]²) round slightly differently from Keras' default.
"""
from __future__ import annotations

from typing import Sequence

import keras

from shared.architecture import BN_EPS, BN_MOMENTUM, Layer

__all__ = ["build_layer", "build_stack", "apply_stack", "dense", "kernel_init", "bias_init", "fan_in"]


def kernel_init() -> keras.initializers.Initializer:
    """U(±1/√fan_in), PyTorch's default kernel initialisation (a transposed conv's fan_in is out·k·k)."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def bias_init(fan: int) -> keras.initializers.Initializer:
    """U(±1/√fan_in), PyTorch's default bias initialisation."""
    bound = 1.0 / float(fan) ** 0.5
    return keras.initializers.RandomUniform(-bound, bound)


def fan_in(spec: Layer) -> int:
    """PyTorch's fan_in of a plan layer: inputs × kernel area (a transposed conv counts its outputs)."""
    if spec.kind == "conv":
        return spec.in_dim * spec.kernel ** 2
    if spec.kind == "deconv":
        return spec.out_dim * spec.kernel ** 2
    return spec.in_dim


def dense(spec: Layer, name: str) -> keras.layers.Dense:
    """A Dense layer for a plan ``linear`` record, initialised as the shared convention says."""
    return keras.layers.Dense(spec.out_dim, kernel_initializer=kernel_init(), bias_initializer=bias_init(fan_in(spec)),
                              name=name)


def build_layer(spec: Layer, name: str, synchronized_bn: bool = False) -> keras.layers.Layer:
    """One Keras layer for the plan record ``spec`` (``synchronized_bn``: see the module docstring).

    Raises:
        ValueError: ``spec.kind`` is not a known plan kind.
    """
    kind = spec.kind
    if kind in ("conv", "deconv"):
        # Symmetric padding p equals Keras 'same' for the plan's kernels (3/1/1, 4/2/1) and 'valid' for p=0.
        padding = "same" if spec.padding > 0 else "valid"
        cls = keras.layers.Conv2D if kind == "conv" else keras.layers.Conv2DTranspose
        return cls(spec.out_dim, spec.kernel, strides=spec.stride, padding=padding, name=name,
                   kernel_initializer=kernel_init(), bias_initializer=bias_init(fan_in(spec)))
    if kind == "maxpool":
        return keras.layers.MaxPooling2D(pool_size=spec.kernel, strides=spec.stride, name=name)
    if kind == "bn":
        return keras.layers.BatchNormalization(epsilon=BN_EPS, momentum=1.0 - BN_MOMENTUM, name=name,
                                               synchronized=synchronized_bn)
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    if kind == "lrelu":
        return keras.layers.LeakyReLU(negative_slope=spec.slope, name=name)
    if kind == "linear":
        return dense(spec, name)
    if kind == "flatten":
        return keras.layers.Flatten(name=name)
    if kind == "unflatten":
        c, h, w = spec.shape
        return keras.layers.Reshape((h, w, c), name=name)
    raise ValueError(f"unknown plan layer kind {kind!r}")


def build_stack(plan: Sequence[Layer], prefix: str, synchronized_bn: bool = False) -> list[keras.layers.Layer]:
    """Keras layers for ``plan`` in order, named ``{prefix}_{i:02d}_{kind}``."""
    return [build_layer(spec, f"{prefix}_{i:02d}_{spec.kind}", synchronized_bn) for i, spec in enumerate(plan)]


def apply_stack(layers: Sequence[keras.layers.Layer], x, training: bool):
    """Run ``x`` through ``layers``; ``training`` reaches the BatchNorm layers."""
    for layer in layers:
        x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
    return x
