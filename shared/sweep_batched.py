"""``sweep --batched``: every β of one latent size trained as one vectorised ensemble.

The grid points of one latent size share every weight shape, so the backend stacks them into one
model (``facevae.ensemble``: grouped layers over the members) and trains them with one forward/backward
pass per step on the same batch and noise. Each member still writes its own ordinary run folder
(``config.json``, ``split.json``, ``metrics.jsonl``, ``checkpoints/{best,last}``,
``figures/training_curves.png``), then is evaluated like any run, so ``evaluate``, ``load``,
``resume``, ``sweep --report`` and ``convert`` see no difference.

How the epoch loop stays the one of :mod:`shared.training` (:mod:`shared.sweep_lockstep`): every
member runs :func:`shared.training.fit` in its own thread with an engine whose calls go through a
:class:`~shared.sweep_lockstep.Lockstep`. A training or validation step waits until every active
member has asked for it, then runs once for all of them on the thread that serves the lockstep (the
caller's); other calls (save, restore, scalars) run for the one member. Batches and noise depend
only on the seed and the epoch, never on β, so the members ask for the same faces at every step
(checked). A member that stops early, finishes or fails leaves; the others train on.

Resume and skip rules are those of :func:`shared.sweep.ensure_run`: an evaluated point is reused,
an interrupted one resumes from its last checkpoint (members resumed at different epochs train in
separate ensembles), one stopped before its first checkpoint starts again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from shared.config import RunConfig
from shared.errors import ConfigError, RunError
from shared.event_log import console
from shared.runs import (CHECKPOINTS, CONFIG, LOCK, SPLIT, clear_failed_run, has_any_checkpoint, load_run_config,
                         lock_run)
from shared.sweep_jobs import Point, error_text
from shared.sweep_lockstep import Lockstep, MemberEngine, fit_lockstep  # re-exported (their former home)

__all__ = ["run_batched", "check_batched", "check_members", "Lockstep", "MemberEngine", "fit_lockstep",
           "ENSEMBLE_MODULES"]

log = logging.getLogger(__name__)

# backend -> the module with train_ensemble(configs, faces, split, run_dirs, *, resume) (imported on use)
ENSEMBLE_MODULES = {"torch": "facevae.ensemble"}
# training fields a member may have of its own: they steer only its own loop, never the shared step
_PER_MEMBER_TRAIN = ("epochs", "early_stopping")


def check_batched(base: RunConfig, jobs: int, shard: Optional[tuple[int, int]]) -> None:
    """Refuse a batched sweep the backends cannot run (before any data is read).

    ``shard`` combines with ``batched`` (each shard batches its own points); ``jobs`` > 1 does not.

    Raises:
        ConfigError: a backend without an ensemble trainer, ``jobs`` > 1, or precision ``16``.
    """
    if base.backend not in ENSEMBLE_MODULES:
        raise ConfigError(f"--batched needs the torch backend; the {base.backend} backend trains the grid one point "
                          f"at a time (drop --batched, or use --backend torch). Received: backend={base.backend!r}")
    if jobs != 1:
        raise ConfigError(f"`batched` cannot be combined with `jobs` > 1: a batched sweep trains every β of a latent "
                          f"size in one process already; use jobs=1 (or shard=(i, n) to split the grid over "
                          f"processes). Received: jobs={jobs}")
    if base.train.precision == "16":
        raise ConfigError("`precision` '16' cannot be batched (one loss scale would skip every member's step when "
                          "one member overflows); use precision 'bf16' or '32', or drop --batched. "
                          "Received: precision='16'")


def check_members(configs: Sequence[RunConfig]) -> None:
    """The members of one ensemble: the same backend, data, architecture and recipe; β may differ.

    Raises:
        ConfigError: two members differ in anything else (``epochs``/``early_stopping`` may differ).
    """
    first = configs[0]
    for other in configs[1:]:
        same_model = dataclasses.replace(other.model, beta=first.model.beta) == first.model
        per_member = {k: getattr(first.train, k) for k in _PER_MEMBER_TRAIN}
        same_train = dataclasses.replace(other.train, **per_member) == first.train
        if not (same_model and same_train and other.data == first.data and other.backend == first.backend):
            raise ConfigError("the members of a batched ensemble must differ only in `beta` (and epochs or "
                              f"early_stopping). Received: {first.model.to_dict()} and {other.model.to_dict()}")


def _state(point: Point) -> tuple[str, Any]:
    """``("done", eval)``, ``("resume", None)``, ``("restart", None)`` or ``("new", None)`` (ensure_run's rules).

    Raises:
        RunError: the folder holds a run with a different config, a run that cannot be resumed, or no run.
    """
    from shared.sweep import reusable_result

    run_dir = point.run_dir
    if (run_dir / CONFIG).is_file():
        done = reusable_result(run_dir, point.config)
        if done is not None:
            return "done", done
        if not has_any_checkpoint(run_dir):
            return "restart", None
        if not has_any_checkpoint(run_dir, ("last",)):
            raise RunError(f"{run_dir}: has a 'best' checkpoint but no 'last' one: it can be evaluated but not "
                           f"resumed; to train it again from scratch, delete its {CHECKPOINTS}/ folder")
        return "resume", None
    if run_dir.is_dir() and any(p.name != LOCK and not p.name.startswith(".") for p in run_dir.iterdir()):
        raise RunError(f"{run_dir}: is not a facevae run folder (it has files but no {CONFIG}); nothing in it was "
                       f"changed; remove it or choose another --out")
    return "new", None


def _train_group(members: Sequence[tuple[Point, bool]], *, iwae_k: int, verbose: Optional[bool],
                 results: dict[str, Any], failures: dict[str, str]) -> list[Point]:
    """Train ``members`` (point, resume?) of one latent size as one ensemble; returns those to evaluate.

    A resumed point whose faces or split differ from the others' cannot share their batches: it is
    trained and evaluated one by one (:func:`shared.sweep.ensure_run`) into ``results``.
    """
    from shared.data.splits import Split, make_split
    from shared.registry import import_backend_module
    from shared.run_inputs import load_run_data, with_provenance
    from shared.sweep import ensure_run

    first = members[0][0].config
    faces = load_run_data(first)
    fingerprint = with_provenance(first, faces).data.fingerprint
    split = make_split(faces, val_fraction=first.data.val_fraction, test_fraction=first.data.test_fraction,
                       seed=first.data.split_seed)
    batch, alone = [], []
    with contextlib.ExitStack() as locks:
        for point, again in members:
            try:
                locks.enter_context(lock_run(point.run_dir))
                if again:
                    config = load_run_config(point.run_dir)
                    theirs = Split.load(point.run_dir / SPLIT, faces)
                    if (config.data.fingerprint not in ("", fingerprint) or not (
                            np.array_equal(theirs.train, split.train) and np.array_equal(theirs.val, split.val))):
                        log.warning("%s: its faces or split differ from the others'; trained one by one",
                                    point.run_dir)
                        alone.append(point)
                        continue
                else:
                    if (point.run_dir / CONFIG).is_file():
                        clear_failed_run(point.run_dir)
                    config = with_provenance(point.config, faces)
                    config.save(point.run_dir / CONFIG)  # a folder with a config and no checkpoint starts again
                    split.save(point.run_dir / SPLIT)
                batch.append((point, config, again))
            except Exception as exc:  # noqa: BLE001 -- one failing point must not stop the others
                failures[point.name] = error_text(exc)
        if batch:
            log.info("training %s/%s %s as one batch on %d faces (%s)", first.backend, first.model.family,
                     ", ".join(p.name for p, _, _ in batch), len(faces), split.summary())
            try:
                module = import_backend_module(first.backend, ENSEMBLE_MODULES[first.backend])
                with console(verbose):
                    outs = module.train_ensemble([c for _, c, _ in batch], faces, split,
                                                 [p.run_dir for p, _, _ in batch], resume=[r for _, _, r in batch])
            except Exception as exc:  # noqa: BLE001 -- the whole group fails, the other groups go on
                outs = [exc] * len(batch)
            for (point, _, _), out in zip(batch, outs):
                if isinstance(out, BaseException):
                    failures[point.name] = error_text(out)
    for point in alone:  # after the locks are released: ensure_run takes its own
        try:
            results[point.name] = ensure_run(point.config, point.run_dir, iwae_k=iwae_k, verbose=verbose)
        except Exception as exc:  # noqa: BLE001
            failures[point.name] = error_text(exc)
    return [p for p, _, _ in batch if p.name not in failures]


def run_batched(points: Sequence[Point], *, iwae_k: int,
                verbose: Optional[bool] = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Train and evaluate ``points``, every latent size as one ensemble; ``(results, failures)`` by name.

    The counterpart of :func:`shared.sweep_jobs.run_points` (the same return values): a point that
    fails does not stop the others.
    """
    from shared import api

    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    groups: dict[int, list[Point]] = {}
    for p in points:
        groups.setdefault(p.config.model.latent_dim, []).append(p)
    with tqdm(total=len(points), desc="sweep", disable=None) as bar:
        for latent_dim, group in groups.items():
            todo = []
            for p in group:
                try:
                    state, done = _state(p)
                except Exception as exc:  # noqa: BLE001 -- one failing point must not stop the others
                    failures[p.name] = error_text(exc)
                    continue
                if state == "done":
                    log.info("%s: already trained and evaluated, skipped", p.run_dir)
                    results[p.name] = done
                else:
                    todo.append((p, state == "resume"))
            trained = []
            if todo:
                try:
                    trained = _train_group(todo, iwae_k=iwae_k, verbose=verbose, results=results, failures=failures)
                except Exception as exc:  # noqa: BLE001 -- e.g. unreadable data: this latent size fails
                    failures.update({p.name: error_text(exc) for p, _ in todo if p.name not in failures})
            for p in trained:
                try:
                    results[p.name] = api.evaluate(p.run_dir, iwae_k=iwae_k)
                except Exception as exc:  # noqa: BLE001
                    failures[p.name] = error_text(exc)
            for p in group:
                if p.name in failures:
                    log.error("sweep: %s failed: %s", p.name, failures[p.name])
            bar.update(len(group))
    return results, failures
