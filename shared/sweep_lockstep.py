"""The lockstep of ``sweep --batched``: K members' :func:`shared.training.fit` loops driving one ensemble.

Every member runs the ordinary epoch loop in its own thread with a :class:`MemberEngine`; its
training and validation steps go through a :class:`Lockstep`, which waits until every active member
has asked, then runs one ensemble step for all of them on the thread that serves it (the caller's,
:func:`fit_lockstep`). Other engine calls (save, restore, scalars) run for the one member, on that
same thread, so all framework work happens on one thread. A member that stops early, finishes or
fails leaves; the others train on. Used by :mod:`shared.sweep_batched` and ``facevae.ensemble``.
"""
from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from shared.config import RunConfig
from shared.errors import RunError
from shared.event_log import console, is_verbose

__all__ = ["Lockstep", "MemberEngine", "fit_lockstep"]


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

    def train_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray],
                   noise: Optional[np.ndarray] = None) -> Any:
        return self.lockstep.together(self.member, "train", (idx, beta, eps, self.lr, noise))

    def val_step(self, idx: np.ndarray, beta: float, eps: Optional[np.ndarray]) -> Any:
        return self.lockstep.together(self.member, "val", (idx, beta, eps, None, None))

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
