"""How a sweep's grid points are run: in this process or in ``jobs`` worker processes, all or one shard.

:func:`shared.sweep.sweep` builds the grid and :func:`run_points` trains and evaluates its points:

- ``jobs=1`` runs them one after another in this process (training prints its usual progress);
- ``jobs=N`` runs them in N ``spawn``-ed worker processes, each limited to ``max(1, cores // N)``
  threads *before* it imports a framework (torch's OpenMP slows down sharply when processes
  oversubscribe the cores). Every grid point is its own run folder with its own lock, so workers
  never write the same file; the parent writes the merged table and figures at the end.

A point that fails does not stop the others: it is logged as one line naming the point and the
error, and :func:`run_points` returns it among the failures (the sweep then raises one
:class:`~shared.errors.RunError` listing them, after every other point has finished).

``shard=(i, n)`` keeps the points whose index in the grid's fixed order (latent sizes in the order
given, then β) satisfies ``index % n == i``: ``n`` processes (a cluster array job) each train one
slice into the same folder, and ``facevae sweep --report`` merges them. Every sweep records its grid
in ``grid.json`` so the report can list the points still missing.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tqdm.auto import tqdm

from shared.config import RunConfig
from shared.errors import ConfigError
from shared.runs import atomic_write_json

__all__ = ["Point", "run_points", "check_jobs", "check_shard", "parse_shard", "shard_points", "worker_threads",
           "read_grid", "record_grid", "error_text", "GRID", "MAX_JOBS", "MAX_SHARDS"]

log = logging.getLogger(__name__)

GRID = "grid.json"   # the grid points of every sweep run into the folder: what --report expects to find
MAX_JOBS = 256       # worker processes; a typo such as 1000 would only exhaust memory
MAX_SHARDS = 10_000  # shards of one sweep (array jobs rarely exceed a few thousand tasks)
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
# Thread-count variables read by the numeric libraries at their first import (torch, TF, MKL, OpenBLAS).
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


@dataclass(frozen=True)
class Point:
    """One grid point: its folder name (``d16_b0.1``), its config and its run folder."""

    name: str
    config: RunConfig
    run_dir: Path


def check_jobs(jobs: Any) -> int:
    """``jobs`` as an int in [1, MAX_JOBS].

    Raises:
        ConfigError: not an integer in range.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise ConfigError(f"`jobs` must be an integer in [1, {MAX_JOBS}]. Received: jobs={jobs!r}")
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (the ``--shard`` flag) as ``(i, n)``.

    Raises:
        ConfigError: not of the form ``i/n`` with 0 ≤ i < n ≤ 10000.
    """
    m = _SHARD.fullmatch(text)
    if m is None:
        raise ConfigError(f"`shard` must be I/N (this process trains the grid points whose index % N == I), "
                          f"e.g. 0/4. Received: shard={text!r}")
    return check_shard((int(m.group(1)), int(m.group(2))))


def check_shard(shard: Any) -> tuple[int, int]:
    """``shard`` (a pair ``(i, n)`` or the text ``"i/n"``) as ``(i, n)`` with 0 ≤ i < n ≤ 10000.

    Raises:
        ConfigError: anything else.
    """
    if isinstance(shard, str):
        return parse_shard(shard)
    ok = (isinstance(shard, (tuple, list)) and len(shard) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in shard))
    if not ok:
        raise ConfigError(f"`shard` must be a pair (i, n) of integers or the text 'i/n'. Received: shard={shard!r}")
    i, n = shard
    if not 1 <= n <= MAX_SHARDS:
        raise ConfigError(f"`shard` must have a shard count n in [1, {MAX_SHARDS}]. Received: shard={i}/{n}")
    if not 0 <= i < n:
        raise ConfigError(f"`shard` must have an index i in [0, n-1] = [0, {n - 1}] (shards count from 0). "
                          f"Received: shard={i}/{n}")
    return i, n


def shard_points(points: Sequence[Point], shard: Optional[tuple[int, int]]) -> list[Point]:
    """The points of ``shard`` (``index % n == i`` in the grid's order); all of them when ``shard`` is None."""
    if shard is None:
        return list(points)
    i, n = shard
    return [p for k, p in enumerate(points) if k % n == i]


def worker_threads(jobs: int) -> int:
    """Threads per worker process: the cores this process may use, shared among ``jobs`` workers."""
    try:
        cores = len(os.sched_getaffinity(0))  # the cores of this container/cgroup, not of the host
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


def record_grid(out: Path, names: Sequence[str]) -> None:
    """Add ``names`` (grid points in order) to ``out/grid.json``, keeping the points recorded before."""
    known = read_grid(out) or []
    merged = known + [n for n in names if n not in known]
    if merged != known:
        atomic_write_json(out / GRID, {"points": merged})


def read_grid(out: Path) -> Optional[list[str]]:
    """The grid points recorded in ``out/grid.json`` (None when there is no readable one)."""
    path = out / GRID
    if not path.is_file():
        return None
    try:
        points = json.loads(path.read_text(encoding="utf-8")).get("points")
    except (OSError, ValueError, AttributeError):
        log.warning("%s: unreadable, the grid is taken from the run folders", path)
        return None
    return [str(p) for p in points] if isinstance(points, list) else None


# --------------------------------------------------------------------------- running the points

def _init_worker(threads: int) -> None:
    """Runs first in every worker: limit the threads before the task imports a framework."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # imported already (e.g. by the parent's __main__ re-run under spawn)
        sys.modules["torch"].set_num_threads(threads)


def evaluate_point(point: Point, iwae_k: int, verbose: Optional[bool]) -> dict[str, Any]:
    """Train and evaluate one grid point (:func:`shared.sweep.ensure_run`); the default task."""
    from shared.sweep import ensure_run
    return ensure_run(point.config, point.run_dir, iwae_k=iwae_k, verbose=verbose)


def _in_worker(task: Callable[..., dict[str, Any]], point: Point, iwae_k: int) -> tuple[bool, Any]:
    """``task`` in a worker process: ``(True, result)`` or ``(False, "Type: message")``.

    The error travels back as text: an exception object may not survive pickling, and one line is
    all the parent reports.
    """
    try:
        return True, task(point, iwae_k, False)  # quiet: N interleaved progress bars are unreadable
    except Exception as exc:  # noqa: BLE001 -- one failing point must not stop the others
        return False, error_text(exc)


def error_text(exc: BaseException) -> str:
    """``"Type: message"`` on one line: how a failed point is reported."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_points(points: Sequence[Point], *, jobs: int = 1, iwae_k: int,
               task: Callable[..., dict[str, Any]] = evaluate_point) -> tuple[dict[str, Any], dict[str, str]]:
    """Train and evaluate ``points``; returns ``(results, failures)`` keyed by point name.

    Args:
        points: the grid points to run.
        jobs: worker processes (1: in this process).
        iwae_k: importance samples of the IWAE column.
        task: ``task(point, iwae_k, verbose) -> eval result``; a module-level function when ``jobs > 1``
            (it is sent to the workers by name).

    Returns:
        ``results`` (the evaluation of every finished point) and ``failures`` (``"Type: message"``
        of every failed point). ``KeyboardInterrupt`` is not caught.
    """
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    total, start = len(points), time.monotonic()

    def finished(name: str, ok: bool, value: Any, bar: Any) -> None:
        bar.update(1)
        if ok:
            results[name] = value
            psnr = value.get("psnr") if isinstance(value, dict) else None
            log.info("sweep: %s finished (%d/%d, %.0f s)%s", name, len(results) + len(failures), total,
                     time.monotonic() - start, "" if not isinstance(psnr, (int, float)) else f", PSNR {psnr:.2f} dB")
        else:
            failures[name] = value
            log.error("sweep: %s failed (%d/%d): %s", name, len(results) + len(failures), total, value)

    with tqdm(total=total, desc="sweep", disable=None) as bar:
        if jobs == 1 or total <= 1:
            for p in points:
                try:
                    ok, value = True, task(p, iwae_k, None)
                except Exception as exc:  # noqa: BLE001 -- one failing point must not stop the others
                    ok, value = False, error_text(exc)
                finished(p.name, ok, value, bar)
            return results, failures
        _run_pool(points, min(jobs, total), iwae_k, task, lambda name, ok, value: finished(name, ok, value, bar))
    return results, failures


def _run_pool(points: Sequence[Point], jobs: int, iwae_k: int, task: Callable[..., dict[str, Any]],
              finished: Callable[[str, bool, Any], None]) -> None:
    threads = worker_threads(jobs)
    log.info("sweep: %d grid points in %d worker processes, %d thread(s) each", len(points), jobs, threads)
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(_in_worker, task, p, iwae_k): p.name for p in points}
        for future in cf.as_completed(futures):
            try:
                ok, value = future.result()
            except cf.process.BrokenProcessPool:
                ok, value = False, "the worker process died (killed, or out of memory?)"
            except Exception as exc:  # noqa: BLE001 -- e.g. a result that could not be sent back
                ok, value = False, error_text(exc)
            finished(futures[future], ok, value)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: do not start the points still queued
        raise
    pool.shutdown(wait=True)
