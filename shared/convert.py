"""``facevae convert``: a trained ``vae`` run moved to the other backend (its weights as numpy arrays).

Re-exported by :mod:`shared.api` (``shared.api.convert``); the backends' ``weights_io`` modules are
imported only when a run is converted, so importing this module needs no framework.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import shutil
import uuid
from pathlib import Path

from shared.errors import ConfigError, RunError
from shared.runs import CONFIG, FACES, METRICS, SPLIT, load_run_config

__all__ = ["convert"]

log = logging.getLogger(__name__)


def convert(run_dir: str | Path, *, to: str, out: str | Path) -> Path:
    """Move a trained ``vae`` run to the other backend: a complete run folder ``out`` for backend ``to``.

    The weights travel as numpy arrays (:mod:`shared.weight_layout`): the source backend's
    ``weights_io`` exports them, they are converted layer by layer (conv/deconv kernels, dense
    matrices, flatten order, BatchNorm statistics) and the target backend writes its own ``best``
    checkpoint. ``out`` receives ``config.json`` (``backend`` changed), ``split.json`` and
    ``metrics.jsonl`` (copied) and ``checkpoints/best``; it is assembled in a temporary folder and
    renamed into place. The converted run loads and evaluates; it cannot be resumed (no optimizer).

    Args:
        run_dir: a trained run folder (torch or tf, family ``vae``).
        to: the target backend, ``torch`` or ``tf``.
        out: the new run folder (must not exist yet).

    Returns:
        ``out``.

    Raises:
        ConfigError: ``to`` is unknown, equals the run's backend, or the family exists only on one backend.
        RunError: ``run_dir`` is not a run or ``out`` already exists.
    """
    from shared.architecture import vae_plan
    from shared.config import BACKENDS
    from shared.weight_layout import WEIGHTS_IO_MODULES, convert_weights

    run_dir, out = Path(run_dir), Path(out)
    config = load_run_config(run_dir)
    if to not in BACKENDS:
        raise ConfigError(f"`to` must be one of {set(BACKENDS)}. Received: to={to!r}")
    if to == config.backend:
        raise ConfigError(f"{run_dir} is already a {to!r} run; `to` must name the other backend. Received: to={to!r}")
    if config.model.family != "vae":
        raise ConfigError(f"only `family` 'vae' exists on both backends and can be converted. "
                          f"Received: family={config.model.family!r}")
    if out.exists():
        raise RunError(f"{out}: already exists; choose a new folder for the converted run")
    src_io = importlib.import_module(WEIGHTS_IO_MODULES[config.backend])
    dst_io = importlib.import_module(WEIGHTS_IO_MODULES[to])
    _, weights = src_io.load_run_weights(run_dir)
    weights = convert_weights(weights, vae_plan(config.model), src=config.backend, dst=to)
    new_config = dataclasses.replace(config, backend=to)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        new_config.save(tmp / CONFIG)
        for name in (SPLIT, METRICS, FACES):  # faces.npz: a run trained on faces in memory
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)
        dst_io.save_run_weights(new_config, weights, tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s (%s) to %s (%s)", run_dir, config.backend, out, to)
    return out
