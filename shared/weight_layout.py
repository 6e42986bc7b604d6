"""Framework-free weight layouts: move a VAE's weights between PyTorch and TensorFlow in numpy.

Both backends build the VAE from :func:`shared.architecture.vae_plan`; this module names every
weight by its plan position and converts the arrays between the two frameworks' layouts.

Keys are ``{section}.{index:02d}.{role}``: ``section`` is ``encoder``, ``encoder_dense``,
``decoder`` (index = position in that plan list) or ``head_mean`` / ``head_logvar`` /
``head_context`` (index 00); ``role`` is ``kernel`` and ``bias`` (conv, deconv, linear) or
``gamma``, ``beta``, ``moving_mean``, ``moving_var`` (bn). Each backend's ``weights_io`` module
exports and imports such a dict in its *native* array layout:

============  ==========================  ============================
layer         torch                       tf (Keras 3)
============  ==========================  ============================
conv          weight ``(O, I, kh, kw)``   kernel ``(kh, kw, I, O)``
deconv        weight ``(I, O, kh, kw)``   kernel ``(kh, kw, O, I)``
linear        weight ``(out, in)``        kernel ``(in, out)``
bn            weight, bias, running_*     gamma, beta, moving_*
============  ==========================  ============================

Both conv and deconv kernels therefore convert with the same axis permutation ``(2, 3, 1, 0)``
(torch → tf) and its inverse ``(3, 2, 0, 1)``. Transposed convolutions need no spatial flip: both
frameworks define them as the gradient of the correlation with that kernel.

Flatten order: torch flattens ``(C, H, W)``, TF ``(H, W, C)``. The first linear after ``flatten``
has its input columns permuted (trailing label columns of conditional models are left alone); the
projection linear before ``unflatten`` (and any 1-D bn between them) has its outputs permuted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from shared.architecture import Layer, VAEPlan
from shared.errors import ConfigError

__all__ = ["WEIGHTS_IO_MODULES", "LAYOUTS", "PlanSlot", "plan_slots", "expected_keys", "convert_weights",
           "chw_to_hwc_index"]

LAYOUTS = ("torch", "tf")
# The backend modules exporting/importing plan weights (imported lazily by shared.convert.convert).
WEIGHTS_IO_MODULES = {"torch": "facevae.weights_io", "tf": "facevae_tf.weights_io"}

_ROLES = {"conv": ("kernel", "bias"), "deconv": ("kernel", "bias"), "linear": ("kernel", "bias"),
          "bn": ("gamma", "beta", "moving_mean", "moving_var")}
_TO_TF = (2, 3, 1, 0)   # torch conv (O,I,h,w) -> (h,w,I,O); deconv (I,O,h,w) -> (h,w,O,I)
_TO_TORCH = (3, 2, 0, 1)


@dataclass(frozen=True)
class PlanSlot:
    """One weighted layer of a plan.

    Attributes:
        section, index, layer: where it sits in the plan and its record.
        in_shape: ``(C, H, W)`` when a linear's input columns are flattened feature maps.
        out_shape: ``(C, H, W)`` when a linear's (or bn's) features are reshaped to maps by ``unflatten``.
    """

    section: str
    index: int
    layer: Layer
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    @property
    def prefix(self) -> str:
        return f"{self.section}.{self.index:02d}"

    @property
    def roles(self) -> tuple[str, ...]:
        return _ROLES[self.layer.kind]


def _section_slots(section: str, layers: tuple[Layer, ...], flat_shape: tuple[int, ...]) -> list[PlanSlot]:
    slots: list[PlanSlot] = []
    pending_in = flat_shape  # shape of flattened maps feeding the next linear
    for i, layer in enumerate(layers):
        if layer.kind == "flatten":
            pending_in = flat_shape
        if layer.kind not in _ROLES:
            continue
        out_shape: tuple[int, ...] = ()
        if layer.kind in ("linear", "bn"):
            # look ahead: do this layer's features reach an unflatten before the next weighted map layer?
            for nxt in layers[i + 1:]:
                if nxt.kind in ("linear", "conv", "deconv", "flatten"):
                    break
                if nxt.kind == "unflatten":
                    out_shape = tuple(nxt.shape)
                    break
        in_shape = pending_in if layer.kind == "linear" else ()
        if layer.kind in ("linear", "conv", "deconv"):
            pending_in = ()
        slots.append(PlanSlot(section, i, layer, in_shape=in_shape, out_shape=out_shape))
    return slots


def plan_slots(plan: VAEPlan) -> list[PlanSlot]:
    """Every weighted layer of ``plan`` in order: encoder, encoder dense, heads, decoder."""
    slots = _section_slots("encoder", plan.encoder, ())
    slots += _section_slots("encoder_dense", plan.encoder_dense, plan.bottleneck)
    slots += [PlanSlot(f"head_{name}", 0, layer) for name, layer in plan.heads.items()]
    slots += _section_slots("decoder", plan.decoder, ())
    return slots


def expected_keys(plan: VAEPlan) -> list[str]:
    """The keys of a complete weight dict of ``plan``, in plan order."""
    return [f"{s.prefix}.{role}" for s in plan_slots(plan) for role in s.roles]


def chw_to_hwc_index(shape: tuple[int, ...]) -> np.ndarray:
    """Index ``p`` with ``hwc_features = chw_features[p]`` for maps of plan shape ``(C, H, W)``."""
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def _permute_features(a: np.ndarray, axis: int, shape: tuple[int, ...], to_tf: bool) -> np.ndarray:
    """Reorder the first C·H·W entries of ``axis`` between (C,H,W) and (H,W,C); later entries stay."""
    p = chw_to_hwc_index(shape)
    if not to_tf:
        p = np.argsort(p)
    n = len(p)
    idx = np.concatenate([p, np.arange(n, a.shape[axis])])
    return np.take(a, idx, axis=axis)


def _convert_one(slot: PlanSlot, role: str, a: np.ndarray, to_tf: bool) -> np.ndarray:
    kind = slot.layer.kind
    if role == "kernel" and kind in ("conv", "deconv"):
        return np.ascontiguousarray(a.transpose(_TO_TF if to_tf else _TO_TORCH))
    if role == "kernel":  # linear: torch (out, in) <-> tf (in, out); permute flattened maps
        w = a if to_tf else a.T  # (out, in), in the source's feature orders
        if slot.in_shape:
            w = _permute_features(w, 1, slot.in_shape, to_tf)
        if slot.out_shape:
            w = _permute_features(w, 0, slot.out_shape, to_tf)
        return np.ascontiguousarray(w.T if to_tf else w)
    if slot.out_shape:  # bias / bn vectors of features that become maps
        return _permute_features(a, 0, slot.out_shape, to_tf)
    return a.copy()


def _check_shape(key: str, layout: str, slot: PlanSlot, role: str, a: np.ndarray) -> None:
    layer = slot.layer
    if role == "kernel" and layer.kind in ("conv", "deconv"):
        k = layer.kernel
        oi = (layer.out_dim, layer.in_dim) if layer.kind == "conv" else (layer.in_dim, layer.out_dim)
        want = (*oi, k, k) if layout == "torch" else (k, k, oi[1], oi[0])
    elif role == "kernel":
        want = (layer.out_dim, layer.in_dim) if layout == "torch" else (layer.in_dim, layer.out_dim)
    else:
        want = (layer.out_dim,)
    if tuple(a.shape) != want:
        raise ConfigError(f"weight `{key}` must have shape {want} in the {layout} layout. "
                          f"Received: shape={tuple(a.shape)}")


def convert_weights(weights: Mapping[str, np.ndarray], plan: VAEPlan, *, src: str, dst: str
                    ) -> dict[str, np.ndarray]:
    """Convert a plan-keyed weight dict from the ``src`` layout to the ``dst`` layout.

    Args:
        weights: ``{key: array}`` with exactly the keys of :func:`expected_keys` (``src`` layout).
        plan: the plan both models were built from.
        src, dst: ``torch`` or ``tf``.

    Returns:
        A new dict with the same keys, float32 arrays in the ``dst`` layout (a copy when ``src == dst``).

    Raises:
        ConfigError: unknown layout, missing or unexpected keys, or an array of the wrong shape.
    """
    for name, value in (("src", src), ("dst", dst)):
        if value not in LAYOUTS:
            raise ConfigError(f"`{name}` must be one of {set(LAYOUTS)}. Received: {name}={value!r}")
    want = expected_keys(plan)
    missing, extra = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
    if missing or extra:
        raise ConfigError(f"weights do not fit the plan: missing {missing[:6]}, unexpected {extra[:6]}")
    out: dict[str, np.ndarray] = {}
    for slot in plan_slots(plan):
        for role in slot.roles:
            key = f"{slot.prefix}.{role}"
            a = np.asarray(weights[key], dtype=np.float32)
            _check_shape(key, src, slot, role, a)
            out[key] = a.copy() if src == dst else _convert_one(slot, role, a, to_tf=dst == "tf")
    return out
