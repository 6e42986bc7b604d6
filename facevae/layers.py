"""Plan -> ``nn.Module``: PyTorch modules for a :mod:`shared.architecture` layer list.

The TF backend walks the same list in the same order, which is what makes the two backends' shapes
equal layer by layer. ``bn`` becomes ``BatchNorm1d`` after ``linear``/``flatten`` and
``BatchNorm2d`` after conv-like layers. Initialisation follows :mod:`shared.architecture`:
PyTorch's default U(±1/√fan_in) kernels and biases, which the Keras builder reproduces.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

from shared.architecture import BN_EPS, BN_MOMENTUM, Layer

__all__ = ["build_layers", "count_parameters", "linear"]


def linear(layer: Layer) -> nn.Linear:
    """``nn.Linear`` of a plan ``linear`` layer (PyTorch's default initialisation, the shared convention)."""
    return nn.Linear(layer.in_dim, layer.out_dim)


def _module(layer: Layer, flat: bool) -> nn.Module:
    kind = layer.kind
    if kind == "conv":
        return nn.Conv2d(layer.in_dim, layer.out_dim, layer.kernel, layer.stride, layer.padding)
    if kind == "deconv":
        return nn.ConvTranspose2d(layer.in_dim, layer.out_dim, layer.kernel, layer.stride, layer.padding)
    if kind == "linear":
        return linear(layer)
    if kind == "bn":
        bn = nn.BatchNorm1d if flat else nn.BatchNorm2d
        return bn(layer.out_dim, eps=BN_EPS, momentum=BN_MOMENTUM)
    if kind == "relu":
        return nn.ReLU()
    if kind == "lrelu":
        return nn.LeakyReLU(layer.slope)
    if kind == "maxpool":
        return nn.MaxPool2d(layer.kernel, layer.stride)
    if kind == "flatten":
        return nn.Flatten()
    if kind == "unflatten":
        return nn.Unflatten(1, tuple(layer.shape))
    raise ValueError(f"unknown layer kind {kind!r}; known: conv, deconv, linear, bn, relu, lrelu, "
                     f"maxpool, flatten, unflatten")


def build_layers(plan: Iterable[Layer]) -> nn.Sequential:
    """One ``nn.Sequential`` with a module per plan entry, in plan order.

    Raises:
        ValueError: a layer kind this builder does not know.
    """
    mods: list[nn.Module] = []
    flat = False  # whether activations are (B, F) features rather than (B, C, H, W) maps
    for layer in plan:
        mods.append(_module(layer, flat))
        if layer.kind in ("linear", "flatten"):
            flat = True
        elif layer.kind in ("conv", "deconv", "unflatten"):
            flat = False
    return nn.Sequential(*mods)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
