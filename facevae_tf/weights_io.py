"""Plan-keyed numpy weights of a Keras :class:`~facevae_tf.models.FaceVAE` (export, import, run folders).

Keys and layouts are described in :mod:`shared.weight_layout`; arrays stay in Keras's native layout
(conv ``(kh, kw, I, O)``, deconv ``(kh, kw, O, I)``, dense ``(in, out)``, flatten order H·W·C).
Only the layers of the plan are covered (an IAF flow's MADE weights are not part of the plan).
The torch backend has the mirror module ``facevae.weights_io``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from facevae_tf import checkpoint
from facevae_tf.models import FaceVAE, build_model
from shared.config import RunConfig
from shared.errors import ConfigError
from shared.runs import load_run_config
from shared.weight_layout import PlanSlot, convert_weights, plan_slots

__all__ = ["export_plan_weights", "import_plan_weights", "load_run_weights", "save_run_weights", "load_trained"]

# plan role -> Keras variable attribute
_KERAS_NAMES = {"kernel": "kernel", "bias": "bias", "gamma": "gamma", "beta": "beta",
                "moving_mean": "moving_mean", "moving_var": "moving_variance"}


def _layer_at(model: FaceVAE, slot: PlanSlot) -> keras.layers.Layer:
    if slot.section.startswith("head_"):
        return getattr(model, slot.section)
    stacks = {"encoder": model.encoder_layers, "encoder_dense": model.encoder_dense, "decoder": model.decoder_layers}
    return stacks[slot.section][slot.index]


def export_plan_weights(model: FaceVAE) -> dict[str, np.ndarray]:
    """Every plan weight of ``model`` as float32 numpy arrays in Keras layout, keyed by plan position."""
    out: dict[str, np.ndarray] = {}
    for slot in plan_slots(model.plan):
        layer = _layer_at(model, slot)
        for role in slot.roles:
            out[f"{slot.prefix}.{role}"] = np.array(getattr(layer, _KERAS_NAMES[role]).numpy(), dtype=np.float32)
    return out


def import_plan_weights(model: FaceVAE, weights: Mapping[str, np.ndarray]) -> FaceVAE:
    """Assign plan-keyed Keras-layout arrays to ``model`` (in place); returns ``model``.

    Raises:
        ConfigError: missing/unexpected keys or arrays of the wrong shape.
    """
    checked = convert_weights(weights, model.plan, src="tf", dst="tf")  # validates keys and shapes
    for slot in plan_slots(model.plan):
        layer = _layer_at(model, slot)
        for role in slot.roles:
            getattr(layer, _KERAS_NAMES[role]).assign(checked[f"{slot.prefix}.{role}"])
    return model


def load_trained(run_dir: Path, which: str = "best") -> tuple[RunConfig, FaceVAE]:
    """The config and trained Keras model of a TF run folder (``best`` checkpoint, else ``last``).

    Raises:
        RunError: not a run folder or no usable checkpoint; ConfigError: not a tf run.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if config.backend != "tf":
        raise ConfigError(f"{run_dir} was trained with backend {config.backend!r}, not 'tf'")
    model = build_model(config.model)
    if which == "best" and not checkpoint.has_checkpoint(run_dir, "best"):
        which = "last"
    variables = model.variables
    if model.head_prior_shift is not None and not any(
            "head_prior_shift" in name for name in checkpoint.saved_variable_names(run_dir, which)):
        # a cvae trained before the label-dependent prior: its prior was N(0, I), which the
        # zero-initialised shift reproduces exactly, so the run loads and behaves as trained
        variables = [v for v in variables if not v.path.startswith("head_prior_shift/")]
    ckpt = tf.train.Checkpoint(model=checkpoint.named_variables(variables))
    checkpoint.restore(run_dir, which, ckpt, partial=True)
    return config, model


def load_run_weights(run_dir: Path) -> tuple[RunConfig, dict[str, np.ndarray]]:
    """The config and plan weights (Keras layout) of a TF run folder (``best`` checkpoint, else ``last``)."""
    config, model = load_trained(run_dir)
    return config, export_plan_weights(model)


def save_run_weights(config: RunConfig, weights: Mapping[str, np.ndarray], run_dir: Path) -> Path:
    """Write plan weights (Keras layout) as ``run_dir/checkpoints/best``, loadable by ``facevae_tf.backend.load``.

    The checkpoint holds the model only (no optimizer or generator), so the run can be loaded and
    evaluated but not resumed.

    Returns:
        The checkpoint folder.
    """
    model = import_plan_weights(build_model(config.model), weights)
    return checkpoint.save(Path(run_dir), "best", checkpoint.model_checkpoint(model))
