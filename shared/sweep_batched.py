"""``sweep --batched``: every β of one latent size trained as one vectorised ensemble.

The grid points of one latent size share every weight shape, so the backend stacks them into one
model (``facevae.ensemble``: grouped layers over the members) and trains them with one forward/backward
pass per step on the same batch and noise. Each member still writes its own ordinary run folder
(``config.json``, ``split.json``, ``metrics.jsonl``, ``checkpoints/{best,last}``,
``figures/training_curves.png``), then is evaluated like any run, so ``evaluate``, ``load``,
``resume``, ``sweep --report`` and ``convert`` see no difference.

How the epoch loop stays the one of :mod:`shared.training`: every member runs
:func:`shared.training.fit` in its own thread with an engine whose calls go through a
:class:`Lockstep`. A training or validation step waits until every active member has asked for
it, then runs once for all of them on the thread that serves the lockstep (the caller's); other
calls (save, restore, scalars) run for the one member. Batches and noise depend only on the seed and
the epoch, never on β, so the members ask for the same faces at every step (checked). A member that
stops early, finishes or fails leaves; the others train on.

Resume and skip rules are those of :func:`shared.sweep.ensure_run`: an evaluated point is reused,
an interrupted one resumes from its last checkpoint (members resumed at different epochs train in
separate ensembles), one stopped before its first checkpoint starts again.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from shared.config import RunConfig
from shared.errors import ConfigError, RunError
from shared.event_log import console, is_verbose
from shared.runs import (CHECKPOINTS, CONFIG, EVAL, FACES, LOCK, METRICS, SPLIT, has_any_checkpoint,
                         load_run_config, lock_run)
from shared.sweep_jobs import Point, error_text

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


# --------------------------------------------------------------------------- the lockstep

class Lockstep:
    """Gathers the engine calls of K member threads and runs them on the thread that calls :meth:`serve`.

    ``together(member, kind, payload)`` blocks until every active member has made such a call, then
    ``execute(kind, {member: payload})`` runs once and each member gets its own answer.
    ``alone(member, fn)`` runs ``fn()`` for one member. All framework work thus happens on one
    thread (one OpenMP pool, one CUDA stream). An exception is raised in the member(s) it concerns.

    Args:
        members: K; members are numbered 0..K-1.
        execute: ``execute(kind, payloads) -> {member: answer}``.
    """

    def __init__(self, members: int, execute: Callable[[str, Mapping[int, Any]], Mapping[int, Any]]):
        self._cond = threading.Condition()
        self._active = set(range(members))
        self._round: dict[int, tuple[str, Any]] = {}
        self._solo: collections.deque[tuple[int, Callable[[], Any]]] = collections.deque()
        self._answers: dict[int, tuple[bool, Any]] = {}
        self._execute = execute
        self._aborted = False

    def together(self, member: int, kind: str, payload: Any) -> Any:
        """``member``'s share of the next ensemble call of ``kind``; its answer once every member asked."""
        with self._cond:
            self._round[member] = (kind, payload)
            self._cond.notify_all()
            return self._wait(member)

    def alone(self, member: int, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on the serving thread for ``member`` alone; its result."""
        with self._cond:
            self._solo.append((member, fn))
            self._cond.notify_all()
            return self._wait(member)

    def leave(self, member: int) -> None:
        """``member`` makes no more calls (its fit returned or failed): the others stop waiting for it."""
        with self._cond:
            self._active.discard(member)
            self._round.pop(member, None)
            self._cond.notify_all()

    def _wait(self, member: int) -> Any:
        while member not in self._answers:
            if self._aborted:
                raise RunError("the batched training was interrupted")
            self._cond.wait()
        ok, value = self._answers.pop(member)
        if ok:
            return value
        raise value

    def _ready(self) -> bool:
        return bool(self._round) and set(self._round) == self._active

    def serve(self, on_round: Optional[Callable[[str], None]] = None) -> None:
        """Answer the members' calls until every member has left (on the calling thread)."""
        with self._cond:
            try:
                while True:
                    while not self._solo and not self._ready() and self._active:
                        self._cond.wait()
                    if self._solo:
                        member, fn = self._solo.popleft()
                        self._answer([member], lambda: {member: fn()})
                    elif self._ready():
                        calls, self._round = self._round, {}
                        kinds = sorted({kind for kind, _ in calls.values()})
                        if len(kinds) > 1:
                            error = RunError(f"the batched members are out of step (asked for {' and '.join(kinds)} "
                                             f"at once); train these runs one by one (without --batched)")
                            self._answers.update({m: (False, error) for m in calls})
                        else:
                            self._answer(list(calls), lambda: self._execute(kinds[0], {m: p for m, (_, p) in
                                                                                       calls.items()}))
                            if on_round is not None:
                                on_round(kinds[0])
                    else:
                        return
                    self._cond.notify_all()
            except BaseException:  # Ctrl-C: the members raise instead of waiting forever
                self._aborted = True
                self._cond.notify_all()
                raise

    def _answer(self, members: list[int], run: Callable[[], Mapping[int, Any]]) -> None:
        try:
            answers = run()
            self._answers.update({m: (True, answers[m]) for m in members})
        except Exception as exc:  # noqa: BLE001 -- raised in the members it concerns, not in the server
            self._answers.update({m: (False, exc) for m in members})


class MemberEngine:
    """One member's :class:`shared.training.Engine` over a backend's stacked ensemble, via a :class:`Lockstep`.

    Steps wait for every active member and run as one ensemble step (``ensemble.execute``, the
    lockstep's ``execute``); the rest runs for this member alone. Either way the framework work
    happens on the thread that serves the lockstep. ``ensemble`` (e.g. ``facevae.ensemble.StackedVAE``)
    has ``n_train``, ``n_val``, ``noise_dim`` and ``scalars(terms)``, ``extra_val_metrics(member)``,
    ``save(member, run_dir, which, loop_state)``, ``restore(member, run_dir, which)``,
    ``has_checkpoint(run_dir, which)``, ``reconstruct_val(member)``.
    """

    def __init__(self, ensemble: Any, lockstep: Lockstep, member: int, run_dir: Path, lr: float):
        self.ensemble, self.lockstep, self.member, self.run_dir, self.lr = ensemble, lockstep, member, Path(run_dir), lr
        self.n_train, self.n_val, self.noise_dim = ensemble.n_train, ensemble.n_val, ensemble.noise_dim

    def _alone(self, fn: Callable[[], Any]) -> Any:
        return self.lockstep.alone(self.member, fn)

    def set_lr(self, lr: float) -> None:
        self.lr = lr  # travels with every training step: the members' learning rates are checked equal

    def train_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray]) -> Any:
        return self.lockstep.together(self.member, "train", (idx, beta, eps, self.lr))

    def val_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray]) -> Any:
        return self.lockstep.together(self.member, "val", (idx, beta, eps, None))

    def scalars(self, terms: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
        return self._alone(lambda: self.ensemble.scalars(terms))

    def extra_val_metrics(self) -> dict[str, float]:
        return self._alone(lambda: self.ensemble.extra_val_metrics(self.member))

    def save(self, which: str, loop_state: dict[str, Any]) -> None:
        self._alone(lambda: self.ensemble.save(self.member, self.run_dir, which, loop_state))

    def restore(self, which: str) -> dict[str, Any]:
        return self._alone(lambda: self.ensemble.restore(self.member, self.run_dir, which))

    def has_checkpoint(self, which: str) -> bool:
        return self.ensemble.has_checkpoint(self.run_dir, which)

    def reconstruct_val(self) -> Any:
        return self._alone(lambda: self.ensemble.reconstruct_val(self.member))


def fit_lockstep(lockstep: Lockstep, engines: Sequence[Any], configs: Sequence[RunConfig], run_dirs: Sequence[Path],
                 resume: Sequence[bool], *, label: str = "") -> list[Any]:
    """Run :func:`shared.training.fit` of every member in its own thread, served by ``lockstep`` here.

    Returns:
        Per member, what ``fit`` returned or the exception it raised.
    """
    from shared.training import fit

    results: list[Any] = [None] * len(engines)

    def member(k: int) -> None:
        try:
            with console(False):  # K interleaved bars are unreadable: the ensemble shows one
                results[k] = fit(engines[k], configs[k], run_dirs[k], resume=resume[k])
        except BaseException as exc:  # noqa: BLE001 -- reported for this member; the others train on
            results[k] = exc
        finally:
            lockstep.leave(k)

    threads = [threading.Thread(target=member, args=(k,), name=f"batched-{Path(run_dirs[k]).name}", daemon=True)
               for k in range(len(engines))]
    with tqdm(desc=f"batched {label}".strip(), unit="step", disable=not is_verbose(), leave=False) as bar:
        for t in threads:
            t.start()
        lockstep.serve(lambda kind: bar.update(1) if kind == "train" else None)
    for t in threads:
        t.join()
    return results


# --------------------------------------------------------------------------- the sweep's points

def _state(point: Point) -> tuple[str, Any]:
    """``("done", eval)``, ``("resume", None)``, ``("restart", None)`` or ``("new", None)`` (ensure_run's rules).

    Raises:
        RunError: the folder holds a run with a different config, a run that cannot be resumed, or no run.
    """
    from shared.sweep import evaluated_result

    run_dir, config = point.run_dir, point.config
    if (run_dir / CONFIG).is_file():
        saved = load_run_config(run_dir)
        if saved != config:
            raise RunError(f"{run_dir}: holds a run with a different config; remove it or choose another --out "
                           f"(saved model={saved.model.to_dict()}, wanted model={config.model.to_dict()})")
        done = evaluated_result(run_dir)
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


def _start_again(run_dir: Path) -> None:
    """Delete what a run stopped before its first checkpoint wrote (as ``shared.api.train`` does)."""
    log.info("%s: interrupted before its first checkpoint, starting again", run_dir)
    for name in (METRICS, EVAL, SPLIT, FACES):
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / CHECKPOINTS).is_dir():
        shutil.rmtree(run_dir / CHECKPOINTS)


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
                        _start_again(point.run_dir)
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
