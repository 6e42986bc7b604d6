"""What a run is trained and evaluated on: its faces (found, checked, recorded) and its resume updates.

A run records where its faces came from (:class:`~shared.config.DataConfig` ``path`` and
``fingerprint``, written by :func:`with_provenance` at train time), so :func:`run_faces` finds them
again after the working directory changed and refuses faces that are not the run's own: the split
indexes into them, so other faces would silently mean other train/test faces. A run trained on
faces held in memory keeps them in its folder (``faces.npz``, spec ``run:faces.npz``).
:func:`updated_config` checks the training changes a resume may make (``shared.api.train(...,
resume=True, updates=...)``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from shared.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from shared.errors import ConfigError, RunError
from shared.faces import Faces
from shared.runs import read_metrics

__all__ = ["load_run_data", "run_faces", "faces_from", "is_path_spec", "with_provenance", "updated_config",
           "done_epochs"]

log = logging.getLogger(__name__)


def load_run_data(config: RunConfig, data: str | None = None):
    """The faces of a data spec (``data``, else the config's) at the run's image size.

    Prefer :func:`run_faces`, which also finds a run's faces after they moved and checks them.

    Raises:
        RunError: the spec names faces stored inside a run folder (use :func:`run_faces`).
    """
    from shared.data import RUN_SPEC_PREFIX, load

    spec = str(data or config.data.spec)
    if spec.startswith(RUN_SPEC_PREFIX):
        raise RunError(f"data {spec!r} is stored inside the run folder; read it with "
                       f"shared.api.run_faces(run_dir, config)")
    return load(spec, image_size=config.data.image_size)


def is_path_spec(spec: str) -> bool:
    from shared.data import RUN_SPEC_PREFIX
    return not (spec in ("synthetic", "orl") or spec.startswith(("synthetic:", RUN_SPEC_PREFIX)))


def faces_from(data: Any, image_size: int) -> Faces:
    """``data`` (a SPEC or path, a Faces, or ``(images, labels)``) as faces of side ``image_size``."""
    from shared.data import load
    from shared.faces import as_faces

    if isinstance(data, (str, os.PathLike)):
        return load(os.fspath(data), image_size=image_size)
    return as_faces(data, image_size=image_size)


def _check_same(faces: Faces, config: RunConfig, run_dir: Path, where: str, flag: str) -> None:
    from shared.data import content_fingerprint

    want = config.data.fingerprint
    if want and content_fingerprint(faces) != want:  # runs saved before fingerprints: Split.load still checks
        raise RunError(f"{run_dir}: {where} are not the faces this run was trained on (their content "
                       f"fingerprint differs), so its split would index other faces; pass {flag} PATH "
                       f"pointing at the faces the run was trained on")


def run_faces(run_dir: str | Path, config: RunConfig, data: Any = None, *, flag: str = "--data") -> Faces:
    """Every face of a run's data (its split indexes into them), found and checked.

    Where they are looked for: ``data`` when given (a SPEC/path, a :class:`Faces` or ``(images,
    labels)``); else the faces stored in the run folder (spec ``run:faces.npz``); else the spec as
    it was typed, then the absolute path recorded at train time (``config.data.path``), so a
    relative spec still works from another directory. Faces found are checked against the run's
    content fingerprint (``config.data.fingerprint``; runs saved before it existed are checked by
    their split's fingerprint instead).

    Args:
        run_dir: the run folder.
        config: its config.
        data: where the run's faces are now, when they moved.
        flag: how the message names the way to pass ``data`` (``--data`` for the CLI).

    Raises:
        RunError: the data moved or was deleted (names the recorded path and ``flag``), or the faces
            found are not the run's (fingerprint differs).
        DataError: the faces cannot be read.
    """
    from shared.data import RUN_SPEC_PREFIX, content_fingerprint, load
    from shared.faces import read_faces

    run_dir, dcfg = Path(run_dir), config.data
    if data is not None:
        faces = faces_from(data, dcfg.image_size)
        where = f"the faces of {os.fspath(data)}" if isinstance(data, (str, os.PathLike)) else "the faces given"
        _check_same(faces, config, run_dir, where, flag)
        return faces
    spec = dcfg.spec
    if spec.startswith(RUN_SPEC_PREFIX):
        stored = run_dir / spec[len(RUN_SPEC_PREFIX):]
        if not stored.is_file():
            raise RunError(f"{run_dir}: the faces this run was trained on ({stored.name}, stored in the run "
                           f"folder) are missing; pass {flag} PATH pointing at the same faces")
        faces = read_faces(stored)
        _check_same(faces, config, run_dir, f"the faces in {stored}", flag)
        return faces
    if not is_path_spec(spec):  # synthetic and orl are made again, the same every time
        faces = load(spec, image_size=dcfg.image_size)
        _check_same(faces, config, run_dir, f"the faces of {spec}", flag)
        return faces
    candidates = [Path(spec).expanduser()]
    if dcfg.path and Path(dcfg.path) != candidates[0].absolute():
        candidates.append(Path(dcfg.path))
    differing = None
    for place in (c for c in candidates if c.exists()):
        faces = load(str(place), image_size=dcfg.image_size)
        if dcfg.fingerprint and content_fingerprint(faces) != dcfg.fingerprint:
            differing = differing or place
            continue
        if place != candidates[0]:
            log.info("%s: data %s is not at %s; using the recorded path %s", run_dir, spec,
                     candidates[0].absolute(), place)
        return faces
    if differing is not None:
        raise RunError(f"{run_dir}: the faces at {differing} are not the faces this run was trained on (their "
                       f"content fingerprint differs: the file changed since training?); pass {flag} PATH "
                       f"pointing at the run's faces")
    recorded = dcfg.path or "no absolute path: a run from before paths were recorded"
    raise RunError(f"{run_dir}: data {spec} moved or was deleted (recorded at {recorded}); pass {flag} NEW_PATH "
                   f"pointing at the same faces")


def with_provenance(config: RunConfig, faces: Faces) -> RunConfig:
    """``config`` with the data's absolute path and content fingerprint recorded."""
    from shared.data import content_fingerprint

    spec = config.data.spec
    path = str(Path(spec).expanduser().resolve()) if is_path_spec(spec) else ""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, path=path,
                                                                fingerprint=content_fingerprint(faces)))


_FIXED_ON_RESUME = {"seed": "seeds the run's weights, batches and noise",
                    "optimizer": "the checkpoint holds this optimizer's state"}


def _same(value: Any, saved: Any) -> bool:
    """A value given on resume equals the saved one (lists and tuples alike: ``channels``)."""
    if isinstance(value, (list, tuple)) and isinstance(saved, (list, tuple)):
        return list(value) == list(saved)
    return value == saved


def done_epochs(out: str | Path) -> int:
    """Epochs a run has finished, from its ``metrics.jsonl``."""
    return max((int(r.get("epoch", -1)) for r in read_metrics(out)), default=-1) + 1


def updated_config(out: str | Path, config: RunConfig, updates: Mapping[str, Any], *, data: Any = None) -> RunConfig:
    """``config`` of the run ``out`` with the training ``updates`` of a resume applied and checked.

    A ``data`` path or SPEC string also replaces ``data.spec`` and the recorded ``data.path``
    (:func:`run_faces` checks that it holds the run's faces before the config is written).

    Raises:
        ConfigError: an unknown field, a field that cannot change on resume (seed, optimizer, model
            and data fields: the checkpoint was made with them; given with the saved value they are
            accepted), an invalid value, or ``epochs`` below the epochs the run has already trained.
    """
    out = Path(out)
    given = {k: v for k, v in dict(updates).items() if v is not None}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    fixed = {f.name for f in dataclasses.fields(ModelConfig)} | {f.name for f in dataclasses.fields(DataConfig)}
    fixed |= set(_FIXED_ON_RESUME) | {"backend", "model", "data"}
    saved = {**config.data.to_dict(), **config.model.to_dict(), **config.train.to_dict(),
             "backend": config.backend, "model": config.model.family}
    refused = sorted(k for k in given if k in fixed and not _same(given[k], saved.get(k)))
    if refused:
        why = "; ".join(f"{k}: {_FIXED_ON_RESUME.get(k, 'a model or data field the checkpoint was made with')}"
                        for k in refused)
        raise ConfigError(f"{out}: cannot change {refused} when a run resumes ({why}); train a new run for that. "
                          f"Changeable on resume: {sorted(train_fields - fixed)}")
    unknown = sorted(set(given) - train_fields)
    if unknown:
        raise ConfigError(f"{out}: unknown training field(s) {unknown} for resume; changeable: "
                          f"{sorted(train_fields - fixed)}")
    given = {k: v for k, v in given.items() if k not in fixed}  # fixed ones equal to the saved values
    new_batch = given.get("batch_size", config.train.batch_size) != config.train.batch_size
    if new_batch and "min_steps_per_epoch" not in given:
        given["min_steps_per_epoch"] = 0  # a batch size the user chose is used as given (as build_config does)
    train_cfg = TrainConfig.from_dict({**config.train.to_dict(), **given})
    done = done_epochs(out)
    if train_cfg.epochs < done:
        raise ConfigError(f"`epochs` must be at least {done}, the epochs {out} has already trained (epochs counts "
                          f"from the start of the run). Received: epochs={train_cfg.epochs}")
    for key in sorted(given):
        if given[key] != getattr(config.train, key):
            log.info("%s: %s changes from %r to %r on resume", out, key, getattr(config.train, key), given[key])
    data_cfg = config.data
    if isinstance(data, (str, os.PathLike)) and is_path_spec(os.fspath(data)) and is_path_spec(data_cfg.spec):
        spec = os.fspath(data)
        data_cfg = dataclasses.replace(data_cfg, spec=spec, path=str(Path(spec).expanduser().resolve()))
        if data_cfg.path != config.data.path:
            log.info("%s: its data is now at %s (was %s)", out, data_cfg.path, config.data.path or config.data.spec)
    return dataclasses.replace(config, train=train_cfg, data=data_cfg)
