"""Plan-keyed numpy weights of a torch :class:`~facevae.models.ConvVAE` (export, import, run folders).

Keys and layouts are described in :mod:`shared.weight_layout`; arrays stay in torch's native layout
(conv ``(O, I, kh, kw)``, deconv ``(I, O, kh, kw)``, linear ``(out, in)``, flatten order C·H·W).
The TF backend has the mirror module ``facevae_tf.weights_io``; :func:`shared.api.convert` moves
weights between the two through numpy only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from facevae.checkpoint import checkpoint_path, save_checkpoint
from facevae.models import ConvVAE
from shared.architecture import vae_plan
from shared.config import RunConfig
from shared.errors import ConfigError
from shared.weight_layout import PlanSlot, convert_weights, plan_slots

__all__ = ["export_plan_weights", "import_plan_weights", "load_run_weights", "save_run_weights"]

# plan role -> torch parameter/buffer name
_TORCH_NAMES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_var": "running_var"}


def _module_at(vae: ConvVAE, slot: PlanSlot) -> nn.Module:
    if slot.section.startswith("head_"):
        return getattr(vae, f"{slot.section[5:]}_head")
    return getattr(vae, slot.section)[slot.index]


def export_plan_weights(vae: ConvVAE) -> dict[str, np.ndarray]:
    """Every plan weight of ``vae`` as float32 numpy arrays in torch layout, keyed by plan position."""
    out: dict[str, np.ndarray] = {}
    for slot in plan_slots(vae_plan(vae.cfg)):
        module = _module_at(vae, slot)
        for role in slot.roles:
            t = getattr(module, _TORCH_NAMES[role])
            out[f"{slot.prefix}.{role}"] = t.detach().float().cpu().numpy().copy()
    return out


@torch.no_grad()
def import_plan_weights(vae: ConvVAE, weights: Mapping[str, np.ndarray]) -> ConvVAE:
    """Copy plan-keyed torch-layout arrays into ``vae`` (in place); returns ``vae``.

    Raises:
        ConfigError: missing/unexpected keys or arrays of the wrong shape.
    """
    plan = vae_plan(vae.cfg)
    checked = convert_weights(weights, plan, src="torch", dst="torch")  # validates keys and shapes
    for slot in plan_slots(plan):
        module = _module_at(vae, slot)
        for role in slot.roles:
            t = getattr(module, _TORCH_NAMES[role])
            t.copy_(torch.from_numpy(checked[f"{slot.prefix}.{role}"]).to(t.device, t.dtype))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_batches_tracked is not None:
            module.num_batches_tracked.zero_()
    return vae


def load_run_weights(run_dir: Path) -> tuple[RunConfig, dict[str, np.ndarray]]:
    """The config and plan weights (torch layout) of a torch VAE run folder (its ``best`` checkpoint).

    Raises:
        ConfigError: the run is not a torch ``vae``; RunError: no usable checkpoint.
    """
    from facevae.engine import load_weights
    from shared.runs import load_run_config

    config = load_run_config(run_dir)
    if config.backend != "torch" or config.model.family != "vae":
        raise ConfigError(f"{run_dir}: only torch `family` 'vae' runs can be read here. "
                          f"Received: backend={config.backend!r}, family={config.model.family!r}")
    return config, export_plan_weights(load_weights(ConvVAE(config.model), Path(run_dir)))


def save_run_weights(config: RunConfig, weights: Mapping[str, np.ndarray], run_dir: Path) -> Path:
    """Write plan weights (torch layout) as ``run_dir/checkpoints/best.pt``, loadable by ``facevae.backend.load``.

    The checkpoint holds the model weights only (no optimizer), so the run can be loaded and
    evaluated but not resumed.

    Returns:
        The checkpoint path.
    """
    vae = import_plan_weights(ConvVAE(config.model), weights)
    state = {"model": vae.state_dict(), "epoch": 0, "converted": True}
    return save_checkpoint(checkpoint_path(Path(run_dir), "best"), state)
