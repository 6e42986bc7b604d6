"""Public Python functions behind ``facevae train``, ``facevae evaluate`` and ``facevae convert``.

``convert`` lives in :mod:`shared.convert` and is re-exported here.

Each CLI command is a thin layer over a function of the same name. Users in a notebook usually
call the per-backend packages (``import facevae`` / ``import facevae_tf``, :mod:`shared.package_api`),
which bind these functions to their backend; they can also be called directly::

    from shared.api import build_config, train, evaluate
    cfg = build_config(backend="torch", model="vae", data="synthetic:4000", latent_dim=16, epochs=5)
    run = train(cfg, "runs/vae16")            # a shared.runs.Run (path-like)
    metrics = evaluate(run)                   # eval.json
    train(None, run, resume=True, updates={"epochs": 10})   # five more epochs
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shared import distributed
from shared.config import DataConfig, ModelConfig, RunConfig, TrainConfig, default_train_config
from shared.convert import convert
from shared.data import RUN_SPEC_PREFIX
from shared.errors import ConfigError, FaceVAEError, RunError
from shared.faces import Faces, write_faces
from shared.registry import get_backend, resolve_backend_name
from shared.run_inputs import faces_from, is_path_spec, load_run_data, run_faces, updated_config, with_provenance
from shared.runs import (CHECKPOINTS, CONFIG, EVAL, FACES, LOCK, METRICS, SPLIT, Run, atomic_write_json,
                         clear_failed_run, has_any_checkpoint, load_run_config, lock_run, read_metrics,
                         remove_leftovers)

__all__ = ["build_config", "option_names", "train", "evaluate", "load_model", "load_run_data", "run_faces",
           "updated_config", "convert", "eval_file_name", "Run"]

log = logging.getLogger(__name__)

_MODEL_FIELDS = {"preset", "latent_dim", "beta", "likelihood", "sigma_mode", "sigma", "kl_warmup_epochs",
                 "free_bits", "task", "flow_steps", "flow_hidden", "context_dim", "label_loss", "channels",
                 "hidden_dims"}
_DATA_FIELDS = {"val_fraction", "test_fraction", "split_seed"}


def option_names() -> list[str]:
    """Every flat option :func:`build_config` takes besides ``backend``, ``model`` and ``data``."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return sorted(_MODEL_FIELDS | _DATA_FIELDS | train_fields | {"image_size"})


def build_config(*, backend: str | None = None, model: str = "vae", data: str | os.PathLike = "synthetic:4000",
                 image_size: int = 48, **overrides: Any) -> RunConfig:
    """A validated :class:`RunConfig` from flat keyword arguments.

    Model fields (``latent_dim``, ``beta``, ``preset``, ``task``, …), data fields (``val_fraction``,
    ``test_fraction``, ``split_seed``) and training fields (``epochs``, ``lr``, ``seed``, …) may be
    mixed (:func:`option_names`); ``None`` values are ignored so CLI flags left unset keep the
    preset's recipe. ``data`` is a SPEC (a config is JSON); faces held in memory are passed to
    :func:`train` instead (``train(config, out, data=faces)``).

    Raises:
        ConfigError: a value is out of range or a field is unknown.
    """
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if not isinstance(data, str):
        raise ConfigError(f"`data` of build_config must be a SPEC string (a config is saved as JSON); pass faces "
                          f"held in memory to train(config, out, data=faces) or facevae.train(out, data=faces). "
                          f"Received: data of type {type(data).__name__}")
    given = {k: v for k, v in overrides.items() if v is not None}
    model_kw = {k: given.pop(k) for k in list(given) if k in _MODEL_FIELDS}
    data_kw = {k: given.pop(k) for k in list(given) if k in _DATA_FIELDS}
    model_cfg = ModelConfig(family=model, image_size=image_size, **model_kw)
    train_cfg = default_train_config(model, model_cfg.preset, **given)
    data_cfg = DataConfig(spec=data, image_size=image_size, **data_kw)
    return RunConfig(backend=resolve_backend_name(backend), model=model_cfg, train=train_cfg, data=data_cfg)


def _ours_leftover(name: str) -> bool:
    """A temporary file of an interrupted write of one of the run's own files."""
    return name.startswith(tuple(f".{n}." for n in (CONFIG, SPLIT, METRICS, EVAL, FACES))) and name.endswith(".tmp")


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


def train(config: RunConfig | None, out: str | Path, *, resume: bool = False,
          updates: Mapping[str, Any] | None = None, verbose: bool | None = None, data: Any = None,
          initial_weights: Mapping[str, Any] | None = None) -> Run:
    """Train ``config`` into the run folder ``out``; returns the :class:`~shared.runs.Run`.

    ``out`` is locked for the whole training (:func:`shared.runs.lock_run`): a second writer is
    refused with the holder's pid, host and start time. A new run needs ``out`` to be missing, an
    empty folder, or a run that stopped before its first checkpoint (its partial files are deleted
    and it starts again from scratch). Any other folder is refused and left exactly as it was.
    ``config.json`` records the data's absolute path and content fingerprint (see
    :class:`~shared.config.DataConfig`).

    ``resume=True`` continues the run in ``out`` from its last checkpoint, with the config and split
    saved there (``config`` may then be ``None``: the saved one is always used). ``updates`` changes
    training fields first (``{"epochs": 40}`` extends a finished run by the missing epochs; ``lr``,
    ``early_stopping``, ``schedule``, ``batch_size``, ...): they are written into ``config.json``
    and logged. ``seed``, ``optimizer`` and every model or data field cannot change.

    Args:
        config: the run config (``None`` with ``resume``).
        out: the run folder.
        resume: continue the run in ``out``.
        updates: training fields to change on resume (values ``None`` are ignored).
        verbose: print epoch lines and a progress bar (``True``/``None``) or nothing (``False``).
        data: a new run: faces to train on instead of ``config.data.spec`` (a SPEC/path, a
            :class:`~shared.faces.Faces` or ``(images, labels)``); faces held in memory are stored
            in the run folder as ``faces.npz`` and the spec becomes ``run:faces.npz``. On resume:
            where the run's faces are now, when they moved (checked by fingerprint; a new path is
            recorded in ``config.json``).
        initial_weights: plan-keyed numpy arrays in torch layout (``vae`` only) that replace the
            seeded initialisation of a new run, so both backends can start from the very same weights.

    Under ``torchrun`` (``WORLD_SIZE`` > 1, torch backend) every process calls this with the same
    arguments and they train the one run together: rank 0 does all of the above; the others wait
    until it has prepared the folder (or raise its error), read ``config.json`` and ``split.json``
    from it, train their shards, write nothing and return once rank 0 has finished the folder. The
    folder must be one every process sees (one machine, or a shared filesystem).

    Raises:
        RunError: ``out`` is locked; holds a run with a checkpoint, or something that is not a run
            (without ``resume``); holds no run or a run without a checkpoint (with ``resume``); the
            run's data moved (with ``resume``); another process failed (under ``torchrun``).
        DataError, ConfigError: invalid data, config or updates.
    """
    out = Path(out)
    if not distributed.is_distributed():
        _train_writer(config, out, resume=resume, updates=updates, verbose=verbose, data=data,
                      initial_weights=initial_weights)
        return Run(out)
    ranks = distributed.Ranks(config.backend if config is not None else load_run_config(out).backend)
    if not distributed.is_writer():
        return _train_follower(ranks, out, resume=resume, verbose=verbose, data=data,
                               initial_weights=initial_weights)
    try:
        _train_writer(config, out, resume=resume, updates=updates, verbose=verbose, data=data,
                      initial_weights=initial_weights, ranks=ranks)
    except BaseException as exc:
        ranks.fail(exc)  # the others raise it too instead of waiting for a folder that will not come
        raise
    ranks.barrier()  # the others return once the folder is complete
    return Run(out)


def _train_follower(ranks: distributed.Ranks, out: Path, *, resume: bool, verbose: bool | None, data: Any,
                    initial_weights: Mapping[str, Any] | None) -> Run:
    """A rank other than 0: train on the folder rank 0 prepared, writing nothing."""
    from shared.data.splits import Split

    ranks.wait(out, CONFIG, SPLIT)
    config = load_run_config(out)  # rank 0's, with its updates and provenance
    faces = run_faces(out, config, data)
    split = Split.load(out / SPLIT, faces)
    _train_locked(config, faces, split, out, resume=resume, verbose=False, initial_weights=initial_weights)
    ranks.barrier()
    return Run(out)


def _train_writer(config: RunConfig | None, out: Path, *, resume: bool, updates: Mapping[str, Any] | None,
                  verbose: bool | None, data: Any, initial_weights: Mapping[str, Any] | None,
                  ranks: distributed.Ranks | None = None) -> None:
    """:func:`train` in the process that writes the run folder (the only one, or rank 0)."""
    from shared.data.splits import Split, make_split

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
            new_config = updated_config(out, config, updates or {}, data=data)
            faces = run_faces(out, config, data)
            split = Split.load(out / SPLIT, faces)
            if not config.data.fingerprint:  # a run from before provenance was recorded: record it now
                new_config = with_provenance(new_config, faces)
            if new_config.to_dict() != config.to_dict():
                new_config.save(out / CONFIG)
            if ranks is not None:
                ranks.ready()
            _train_locked(new_config, faces, split, out, resume=True, verbose=verbose)
        return
    if config is None:
        raise ConfigError("`config` is needed for a new run (it may be None only with resume=True)")
    if updates:
        raise ConfigError(f"`updates` apply to resume only; put the values in the config of a new run. "
                          f"Received: updates={dict(updates)!r}")
    _refuse_for_new_run(out, *_inspect(out))  # before the lock: a folder that is not ours gets no .lock file
    in_memory = data is not None and not isinstance(data, (str, os.PathLike))
    if data is None:
        faces = load_run_data(config)
    elif in_memory:
        faces = faces_from(data, config.data.image_size)
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, spec=RUN_SPEC_PREFIX + FACES))
    else:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, spec=os.fspath(data)))
        faces = load_run_data(config)
    config = with_provenance(config, faces)
    split = make_split(faces, val_fraction=config.data.val_fraction,
                       test_fraction=config.data.test_fraction, seed=config.data.split_seed)
    with lock_run(out, clean=False):
        state, why = _inspect(out)  # again under the lock: another trainer may have finished here meanwhile
        _refuse_for_new_run(out, state, why)
        remove_leftovers(out)
        if state == "fresh":
            clear_failed_run(out)
        if in_memory:
            write_faces(out / FACES, faces)  # before the config that points at it
        config.save(out / CONFIG)  # a folder with a config and no checkpoint can be started again
        split.save(out / SPLIT)
        if ranks is not None:
            ranks.ready()
        _train_locked(config, faces, split, out, resume=False, verbose=verbose, initial_weights=initial_weights)


def _train_locked(config: RunConfig, faces: Faces, split: Any, out: Path, *, resume: bool,
                  verbose: bool | None = None, initial_weights: Mapping[str, Any] | None = None) -> None:
    from shared.training import console

    log.info("training %s/%s on %d faces (%s) into %s", config.backend, config.model.family,
             len(faces), split.summary(), out)
    extra = {} if initial_weights is None else {"initial_weights": initial_weights}
    with console(verbose):
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


def eval_file_name(data: Any) -> str:
    """``eval_<stem>.json``: where :func:`evaluate` writes its metrics on the faces of ``data``.

    The stem is the file or folder name without its data suffix (``faces.csv.gz`` -> ``faces``),
    ``synthetic_N`` for a synthetic spec and ``memory`` for faces held in memory; characters other
    than letters, digits, ``_``, ``-`` and ``.`` become ``_``.
    """
    if isinstance(data, (str, os.PathLike)):
        name = Path(os.fspath(data)).expanduser().name or os.fspath(data)
        stem = re.sub(r"\.(csv\.gz|csv|parquet)$", "", name, flags=re.IGNORECASE)
    else:
        stem = "memory"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "data"
    return f"eval_{stem}.json"


def _with_refined(result: dict[str, Any], model: Any, faces: Faces, steps: int, seed: int) -> dict[str, Any]:
    """``result`` with ``refine_steps``, ``psnr_refined`` and ``ssim_refined`` right after its ``ssim``."""
    from shared.faces import label_vectors
    from shared.image_metrics import psnr, ssim
    from shared.inference import refine

    x = faces.floats()
    labels = label_vectors(faces.labels) if getattr(model, "conditional", False) else None
    rec = refine(model, x, steps=steps, seed=seed, labels=labels)
    refined = {"refine_steps": steps, "psnr_refined": float(np.mean(psnr(rec, x))),
               "ssim_refined": float(np.mean(ssim(rec, x)))}
    out: dict[str, Any] = {}
    for key, value in result.items():
        out[key] = value
        if key == "ssim":
            out.update(refined)
    return {**out, **refined}  # (after everything when there was no ssim)


def evaluate(run_dir: str | Path, *, data: Any = None, run_data: Any = None, iwae_k: int = 64,
             classifier: str | Path | None = None, seed: int = 0, refine_steps: int = 0) -> dict[str, Any]:
    """Evaluate a run on its saved test split (``eval.json``), or on every face of ``data``.

    Args:
        run_dir: a run folder written by :func:`train`.
        data: other faces to evaluate, all of them (a SPEC/path, a :class:`~shared.faces.Faces` or
            ``(images, labels)``); the metrics go to their own file, :func:`eval_file_name`
            (``eval_<stem>.json``), never over the run's ``eval.json``, and no figure is drawn
            (a CNN run's figures stay those of its test split).
        run_data: where the run's own faces are now, when they moved (checked by fingerprint, see
            :func:`run_faces`): the test split is then read from there. With ``data`` it serves
            only the mean-face baseline.
        iwae_k: importance samples of the IWAE bound (generative models).
        classifier: a CNN run folder (torch) used for Fréchet distance / label fidelity.
        seed: seeds every sampled quantity.
        refine_steps: generative runs: also ``psnr_refined`` / ``ssim_refined``, the reconstructions
            after this many MAP steps on z (:func:`shared.inference.refine`; 0: none). Costs that many
            decoder passes per face.

    Returns:
        The metrics written, with ``warnings`` (the learning guard's findings,
        :func:`shared.training.learning_guard`; for generative models the reconstruction PSNR is
        compared with that of the mean face of the run's training split) and ``written_to`` (the file).

    Raises:
        RunError: not a run, or (without ``data``) the run's faces moved or differ (pass ``run_data``).
        ConfigError: ``iwae_k`` or ``refine_steps`` out of range; ``refine_steps`` for a CNN run.
    """
    from shared.data.splits import Split
    from shared.inference import MAX_REFINE_STEPS
    from shared.training import learning_guard

    if isinstance(iwae_k, bool) or not isinstance(iwae_k, int) or not 1 <= iwae_k <= 10_000:
        raise ConfigError(f"`iwae_k` must be an integer in [1, 10000]. Received: iwae_k={iwae_k!r}")
    if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or not 0 <= refine_steps <= MAX_REFINE_STEPS:
        raise ConfigError(f"`refine_steps` must be an integer in [0, {MAX_REFINE_STEPS}]. "
                          f"Received: refine_steps={refine_steps!r}")
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if refine_steps and config.model.family == "cnn":
        raise ConfigError("`refine_steps` refines the latent of a generative run (vae, cvae, iaf); "
                          f"{run_dir} is a cnn run")
    if data is None:
        all_faces = run_faces(run_dir, config, run_data, flag="--run-data")
        split = Split.load(run_dir / SPLIT, all_faces)
        faces, target = all_faces.subset(split.test), run_dir / EVAL
        described = f"{config.data.spec} (test split)"
    else:
        faces, target = faces_from(data, config.data.image_size), run_dir / eval_file_name(data)
        described = "faces given in memory"
        if isinstance(data, (str, os.PathLike)):
            spec = os.fspath(data)
            described = str(Path(spec).expanduser().absolute()) if is_path_spec(spec) else spec
        try:  # only for the mean-face baseline of the learning guard: the run's own data may be gone
            all_faces = run_faces(run_dir, config, run_data, flag="--run-data")
            split = Split.load(run_dir / SPLIT, all_faces)
        except FaceVAEError as exc:
            log.info("no mean-face baseline (the run's training faces cannot be read: %s)", exc)
            all_faces = split = None
    backend = get_backend(config.backend)
    model = backend.load(run_dir)
    clf = _load_classifier(Path(classifier), config) if classifier else None
    # figures (CNN runs) are drawn for the test split only: other data must not replace them
    out_dir = run_dir if data is None else None
    result = backend.evaluate(model, faces, iwae_k=iwae_k, classifier=clf, seed=seed, out_dir=out_dir)
    result = {"run_dir": str(run_dir), "data": described, "n_faces": len(faces), **result}
    if refine_steps and len(faces):
        result = _with_refined(result, model, faces, refine_steps, seed)
    mean_face_psnr = None
    if "psnr" in result and len(faces) and split is not None:
        from shared.image_metrics import psnr

        mean_face = all_faces.subset(split.train).floats().mean(0)
        mean_face_psnr = float(np.mean(psnr(faces.floats(), np.broadcast_to(mean_face, faces.images.shape))))
        result["mean_face_psnr"] = mean_face_psnr
    result["warnings"] = learning_guard(read_metrics(run_dir), rate=result.get("rate"), psnr=result.get("psnr"),
                                        mean_face_psnr=mean_face_psnr)
    for warning in result["warnings"]:
        log.warning("%s: %s", run_dir, warning)
    atomic_write_json(target, result)
    log.info("%s: metrics written to %s", run_dir, target)
    return {**result, "written_to": str(target)}
