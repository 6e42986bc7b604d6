"""Public Python functions behind ``facevae train`` and ``facevae evaluate``.

Each CLI command is a thin layer over a function of the same name; in a notebook::

    from shared.api import build_config, train, evaluate
    cfg = build_config(backend="torch", model="vae", data="synthetic:4000", latent_dim=16, epochs=5)
    run = train(cfg, "runs/vae16")
    metrics = evaluate(run)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shared.config import DataConfig, ModelConfig, RunConfig, default_train_config
from shared.errors import ConfigError, FaceVAEError, RunError
from shared.registry import get_backend, resolve_backend_name
from shared.runs import (CHECKPOINTS, CONFIG, EVAL, LOCK, METRICS, SPLIT, atomic_write_json, has_any_checkpoint,
                          load_run_config, lock_run, remove_leftovers)

__all__ = ["build_config", "train", "evaluate", "load_model", "load_run_data", "convert"]

log = logging.getLogger(__name__)

_MODEL_FIELDS = {"preset", "latent_dim", "beta", "likelihood", "sigma_mode", "sigma", "kl_warmup_epochs",
                 "free_bits", "task", "flow_steps", "flow_hidden", "context_dim", "channels", "hidden_dims"}
_DATA_FIELDS = {"val_fraction", "test_fraction", "split_seed"}


def build_config(*, backend: str | None = None, model: str = "vae", data: str = "synthetic:4000",
                 image_size: int = 48, **overrides: Any) -> RunConfig:
    """A validated :class:`RunConfig` from flat keyword arguments.

    Model fields (``latent_dim``, ``beta``, ``preset``, ``task``, …), data fields (``val_fraction``,
    ``test_fraction``, ``split_seed``) and training fields (``epochs``, ``lr``, ``seed``, …) may be
    mixed; ``None`` values are ignored so CLI flags left unset keep the preset's recipe.

    Raises:
        ConfigError: a value is out of range or a field is unknown.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    model_kw = {k: given.pop(k) for k in list(given) if k in _MODEL_FIELDS}
    data_kw = {k: given.pop(k) for k in list(given) if k in _DATA_FIELDS}
    model_cfg = ModelConfig(family=model, image_size=image_size, **model_kw)
    train_cfg = default_train_config(model, model_cfg.preset, **given)
    data_cfg = DataConfig(spec=data, image_size=image_size, **data_kw)
    return RunConfig(backend=resolve_backend_name(backend), model=model_cfg, train=train_cfg, data=data_cfg)


def load_run_data(config: RunConfig, data: str | None = None):
    """The faces of a run's data spec (or of ``data`` when given) at the run's image size."""
    from shared.data import load
    return load(data or config.data.spec, image_size=config.data.image_size)


def run_faces(run_dir: str | Path, config: RunConfig, data: str | None = None):
    """Every face of a run's data (its split indexes into them), or of ``data`` when given."""
    return load_run_data(config, data)


def _ours_leftover(name: str) -> bool:
    """A temporary file of an interrupted write of one of the run's own files."""
    return name.startswith(tuple(f".{n}." for n in (CONFIG, SPLIT, METRICS, EVAL))) and name.endswith(".tmp")


def _inspect(out: Path) -> tuple[str, str]:
    """What ``out`` holds: ``missing``, ``empty``, ``foreign`` (with why), ``fresh`` (a run without a
    checkpoint: it failed before its first one) or ``trained``."""
    if not out.exists():
        return "missing", ""
    if not out.is_dir():
        return "foreign", "it is a file"
    if all(p.name == LOCK or _ours_leftover(p.name) for p in out.iterdir()):
        return "empty", ""
    if not (out / CONFIG).is_file():
        return "foreign", f"it has files but no {CONFIG}"
    try:
        load_run_config(out)
    except FaceVAEError as exc:
        return "foreign", str(exc)
    # any checkpoint counts: a converted run holds only 'best' and must never be wiped as "failed"
    return ("trained" if has_any_checkpoint(out) else "fresh"), ""


def _refuse_for_new_run(out: Path, state: str, why: str) -> None:
    if state == "trained":
        raise RunError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    if state == "foreign":
        raise RunError(f"{out}: is not a facevae run folder ({why}); nothing in it was changed; "
                       f"choose another --out (a new or empty folder)")


def _clear_failed_run(out: Path) -> None:
    """Delete what a run that stopped before its first checkpoint wrote, so a new start does not mix with it."""
    import shutil

    log.info("%s: the previous attempt stopped before its first checkpoint; starting the run again", out)
    for name in (METRICS, EVAL, SPLIT):
        (out / name).unlink(missing_ok=True)
    if (out / CHECKPOINTS).is_dir():
        shutil.rmtree(out / CHECKPOINTS)


def train(config: RunConfig | None, out: str | Path, *, resume: bool = False,
          initial_weights: Mapping[str, Any] | None = None) -> Path:
    """Train ``config`` into the run folder ``out`` and return its path.

    ``out`` is locked for the whole training (:func:`shared.runs.lock_run`): a second writer is
    refused with the holder's pid, host and start time. A new run needs ``out`` to be missing, an
    empty folder, or a run that stopped before its first checkpoint (its partial files are deleted
    and it starts again from scratch). Any other folder is refused and left exactly as it was.
    ``resume=True`` continues the run in ``out`` from its last checkpoint, with the config and split
    saved there (``config`` may then be ``None``: the saved one is always used).
    ``initial_weights`` (plan-keyed numpy arrays in torch layout, ``vae`` only) replace the seeded
    initialisation of a new run, so both backends can start from the very same weights.

    Raises:
        RunError: ``out`` is locked; holds a run with a checkpoint, or something that is not a run
            (without ``resume``); holds no run or a run without a checkpoint (with ``resume``).
        DataError, ConfigError: invalid data or config.
    """
    from shared.data.splits import Split, make_split

    out = Path(out)
    if resume:
        load_run_config(out)  # refuses a non-run before the lock creates anything in it
        with lock_run(out):
            config = load_run_config(out)
            if not has_any_checkpoint(out):
                raise RunError(f"{out}: has no checkpoint yet (it stopped before its first epoch ended), so there "
                               f"is nothing to resume: start it again with the same command without --resume")
            if not has_any_checkpoint(out, ("last",)):
                raise RunError(f"{out}: has a 'best' checkpoint but no 'last' one (a converted run, or one cut while "
                               f"saving its first epoch): it can be evaluated but not resumed; to train it again "
                               f"from scratch, delete its {CHECKPOINTS}/ folder")
            faces = load_run_data(config)
            split = Split.load(out / SPLIT, faces)
            _train_locked(config, faces, split, out, resume=True)
        return out
    _refuse_for_new_run(out, *_inspect(out))  # before the lock: a folder that is not ours gets no .lock file
    faces = load_run_data(config)
    split = make_split(faces, val_fraction=config.data.val_fraction,
                       test_fraction=config.data.test_fraction, seed=config.data.split_seed)
    with lock_run(out, clean=False):
        state, why = _inspect(out)  # again under the lock: another trainer may have finished here meanwhile
        _refuse_for_new_run(out, state, why)
        remove_leftovers(out)
        if state == "fresh":
            _clear_failed_run(out)
        config.save(out / CONFIG)  # first: a folder with a config and no checkpoint can be started again
        split.save(out / SPLIT)
        _train_locked(config, faces, split, out, resume=False, initial_weights=initial_weights)
    return out


def _train_locked(config: RunConfig, faces, split, out: Path, *, resume: bool,
                  initial_weights: Mapping[str, Any] | None = None) -> None:
    log.info("training %s/%s on %d faces (%s) into %s", config.backend, config.model.family,
             len(faces), split.summary(), out)
    extra = {} if initial_weights is None else {"initial_weights": initial_weights}
    get_backend(config.backend).train(config, faces, split, out, resume=resume, **extra)


def load_model(run_dir: str | Path):
    """The trained model of a run folder (a :class:`~shared.protocol.GenerativeModel` or a classifier)."""
    return get_backend(load_run_config(run_dir).backend).load(Path(run_dir))


def _load_classifier(run_dir: Path, config: RunConfig):
    """The CNN of ``run_dir``, checked to be a classifier at the evaluated run's image size."""
    clf_config = load_run_config(run_dir)
    if clf_config.model.family != "cnn":
        raise RunError(f"{run_dir}: --classifier needs a cnn run; this run is a {clf_config.model.family!r} model")
    if clf_config.data.image_size != config.data.image_size:
        raise RunError(f"{run_dir}: the classifier was trained on {clf_config.data.image_size}px faces, "
                       f"the evaluated run uses {config.data.image_size}px")
    return get_backend(clf_config.backend).load(run_dir)


def evaluate(run_dir: str | Path, *, data: str | None = None, iwae_k: int = 64,
             classifier: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Evaluate a run on its saved test split (or on every face of ``data``); writes ``eval.json``.

    Args:
        run_dir: a run folder written by :func:`train`.
        data: optional data spec; when given, every face of it is evaluated instead of the test split.
        iwae_k: importance samples of the IWAE bound (generative models).
        classifier: a CNN run folder (torch) used for Fréchet distance / label fidelity.
        seed: seeds every sampled quantity.

    Returns:
        The metrics written to ``eval.json``, with ``warnings``: the learning guard's findings
        (:func:`shared.training.learning_guard`; for generative models the reconstruction PSNR is
        compared with that of the mean face of the run's training split).
    """
    from shared.data.splits import Split
    from shared.runs import read_metrics
    from shared.training import learning_guard

    if isinstance(iwae_k, bool) or not isinstance(iwae_k, int) or not 1 <= iwae_k <= 10_000:
        raise ConfigError(f"`iwae_k` must be an integer in [1, 10000]. Received: iwae_k={iwae_k!r}")
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if data is None:
        run_faces = load_run_data(config)
        split = Split.load(run_dir / SPLIT, run_faces)
        faces = run_faces.subset(split.test)
    else:
        faces = load_run_data(config, data)
        try:  # only for the mean-face baseline of the learning guard: the run's own data may be gone
            run_faces = load_run_data(config)
            split = Split.load(run_dir / SPLIT, run_faces)
        except FaceVAEError as exc:
            log.info("no mean-face baseline (the run's training faces cannot be read: %s)", exc)
            run_faces = split = None
    backend = get_backend(config.backend)
    model = backend.load(run_dir)
    clf = _load_classifier(Path(classifier), config) if classifier else None
    result = backend.evaluate(model, faces, iwae_k=iwae_k, classifier=clf, seed=seed, out_dir=run_dir)
    result = {"run_dir": str(run_dir), "data": data or f"{config.data.spec} (test split)",
              "n_faces": len(faces), **result}
    mean_face_psnr = None
    if "psnr" in result and len(faces) and split is not None:
        from shared.image_metrics import psnr

        mean_face = run_faces.subset(split.train).floats().mean(0)
        mean_face_psnr = float(np.mean(psnr(faces.floats(), np.broadcast_to(mean_face, faces.images.shape))))
        result["mean_face_psnr"] = mean_face_psnr
    result["warnings"] = learning_guard(read_metrics(run_dir), rate=result.get("rate"), psnr=result.get("psnr"),
                                        mean_face_psnr=mean_face_psnr)
    for warning in result["warnings"]:
        log.warning("%s: %s", run_dir, warning)
    atomic_write_json(run_dir / EVAL, result)
    return result


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
    import dataclasses
    import importlib
    import shutil
    import uuid

    from shared.config import BACKENDS
    from shared.weight_layout import WEIGHTS_IO_MODULES, convert_weights
    from shared.architecture import vae_plan

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
        for name in (SPLIT, METRICS):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)
        dst_io.save_run_weights(new_config, weights, tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s (%s) to %s (%s)", run_dir, config.backend, out, to)
    return out
