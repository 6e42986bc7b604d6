"""Latent-size × β sweeps: train the grid, evaluate each run, compare them in one table and two figures.

In a notebook::

    from shared.api import build_config
    from shared.sweep import sweep
    base = build_config(backend="torch", model="vae", data="synthetic:4000", epochs=10)
    sweep(base, "runs/sweep", latent_dims=(4, 16, 64), betas=(0.1, 1.0))

Layout of ``out``: one run folder per grid point (``d16_b0.1`` = latent_dim 16, β 0.1), then
``sweep.json`` + ``sweep.md`` (the rate–distortion table), ``figures/rate_distortion.png`` and
``figures/reconstructions.png`` (a row of held-out originals, then one row per model), written by
:mod:`shared.sweep_report`. The call returns a :class:`shared.results.Result` (``.table``: one row
per grid point; ``.figure``: the rate–distortion plot); ``save=False`` skips the table and figure
files (the runs are still trained into ``out``), ``fmt``/``dpi`` choose the figures' format (png,
pdf, svg) and resolution.

Resuming: a grid point whose folder already holds a finished evaluation (``eval.json`` on the test
split) is skipped; one with a ``config.json`` but no evaluation is resumed from its last checkpoint
(``train(resume=True)``) and then evaluated; one stopped before its first checkpoint is started
again. So an interrupted sweep continues where it stopped when the same command is run again.
A folder holding a run with a *different* config is refused.

Using the hardware (see :mod:`shared.sweep_jobs`): ``jobs=N`` trains the grid points in N worker
processes (the same numbers as ``jobs=1``); ``shard=(i, n)`` trains only every n-th point starting at
i and writes no table, so n processes (a cluster array job) share the grid; :func:`report` then
reads every finished run of the folder and writes the table and figures a full sweep would.
A point that fails does not stop the others; the sweep raises one error listing the failures at
the end, and the finished points are reused when it is run again. ``batched=True`` (torch) trains
every β of one latent size as one vectorised ensemble (:mod:`shared.sweep_batched`): the same runs.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from shared import api
from shared.config import RunConfig
from shared.errors import ConfigError, RunError
from shared.results import DEFAULT_DPI, OutputWriter, Result
from shared.runs import CONFIG, EVAL, FIGURES, LOCK, has_any_checkpoint, load_run_config, lock_run
from shared.sweep_jobs import GRID, Point, check_jobs, check_shard, read_grid, record_grid, run_points, shard_points
from shared.sweep_report import METRIC_KEYS, RECONSTRUCTION_FACES, table_row, write_outputs

__all__ = ["sweep", "report", "run_name", "ensure_run", "evaluated_result", "reusable_result", "METRIC_KEYS",
           "SWEEP_IWAE_K", "RECONSTRUCTION_FACES"]

log = logging.getLogger(__name__)

SWEEP_IWAE_K = 16           # importance samples per face for the IWAE column (kept small: cost ∝ k)


def run_name(latent_dim: int, beta: float) -> str:
    """Folder name of a grid point, e.g. ``d16_b0.1``."""
    return f"d{latent_dim}_b{beta:g}"


def evaluated_result(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's ``eval.json`` if it is an evaluation on the run's own test split, else ``None``."""
    path = run_dir / EVAL
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("%s: unreadable, the run is evaluated again", path)
        return None
    if not isinstance(result, dict):
        return None
    return result if str(result.get("data", "")).endswith("(test split)") else None


def reusable_result(run_dir: Path, config: RunConfig) -> Optional[dict[str, Any]]:
    """The evaluation of the run in ``run_dir`` (which has a ``config.json``) if it is one of ``config``.

    Returns:
        Its :func:`evaluated_result`: ``None`` while it is not evaluated on its test split yet.

    Raises:
        RunError: ``run_dir`` holds a run with a different config.
    """
    saved = load_run_config(run_dir)
    if saved != config:
        raise RunError(f"{run_dir}: holds a run with a different config; remove it or choose another --out "
                       f"(saved model={saved.model.to_dict()}, wanted model={config.model.to_dict()})")
    return evaluated_result(run_dir)


def ensure_run(config: RunConfig, run_dir: str | Path, *, iwae_k: int = SWEEP_IWAE_K,
               classifier: str | Path | None = None, seed: int = 0,
               verbose: Optional[bool] = None) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` and evaluate it on its test split, skipping finished work.

    Args:
        config: the run's config.
        run_dir: its folder; may hold a finished run (reused), an interrupted one (resumed) or nothing.
        iwae_k: importance samples of the IWAE bound.
        classifier: optional CNN run folder for Fréchet distance.
        seed: evaluation seed.
        verbose: training's epoch lines and progress bar (``None``: training's default).

    Returns:
        The evaluation result (``eval.json``).

    Raises:
        RunError: ``run_dir`` holds a run with a different config.
    """
    run_dir = Path(run_dir)
    quiet = {} if verbose is None else {"verbose": verbose}
    if (run_dir / CONFIG).is_file():
        done = reusable_result(run_dir, config)
        if done is not None:
            log.info("%s: already trained and evaluated, skipped", run_dir)
            return done
        if has_any_checkpoint(run_dir):
            log.info("%s: incomplete run, resuming", run_dir)
            api.train(None, run_dir, resume=True, **quiet)
            return api.evaluate(run_dir, iwae_k=iwae_k, classifier=classifier, seed=seed)
        # stopped before its first checkpoint: api.train deletes its partial files and starts it again
        log.info("%s: interrupted before its first checkpoint, starting again", run_dir)
    api.train(config, run_dir, **quiet)
    return api.evaluate(run_dir, iwae_k=iwae_k, classifier=classifier, seed=seed)


_RUN_NAME = re.compile(r"d\d+_b(?:[0-9.e+-]+|inf|nan)")  # run_name's pattern
_SWEEP_FILES = {"sweep.json", "sweep.md", FIGURES, LOCK, GRID}


def _sweep_entry(p: Path) -> bool:
    """A file or folder a sweep writes (grid-point runs, table, figures, lock, an interrupted write)."""
    return (p.name in _SWEEP_FILES or (p.is_dir() and _RUN_NAME.fullmatch(p.name) is not None)
            or (p.name.startswith((".sweep.", f".{GRID}.")) and p.name.endswith(".tmp")))


def _check_sweep_folder(out: Path) -> None:
    """Refuse an ``out`` that is neither missing, empty nor a sweep folder (nothing in it is changed)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another --out for the sweep")
    if (out / "sweep.json").is_file():
        return
    others = sorted(p.name for p in out.iterdir() if not _sweep_entry(p))
    if others:
        listed = ", ".join(others[:3]) + (" …" if len(others) > 3 else "")
        what = f"a run ({CONFIG})" if CONFIG in others else listed
        raise RunError(f"{out}: is not a sweep folder (it holds {what}); nothing in it was changed; "
                       f"choose another --out (a new or empty folder)")


def sweep(base: RunConfig, out: str | os.PathLike, *, latent_dims: Sequence[int], betas: Sequence[float],
          iwae_k: int = SWEEP_IWAE_K, save: bool = True, fmt: str = "png", dpi: int = DEFAULT_DPI,
          jobs: int = 1, shard: tuple[int, int] | str | None = None, batched: bool = False) -> Result:
    """Train and evaluate the ``latent_dims`` × ``betas`` grid of ``base`` into ``out``.

    Every grid point copies ``base`` with ``model.latent_dim`` and ``model.beta`` replaced, so all
    runs share the data spec and split seed; the test split is checked to be identical.

    Args:
        base: the config every run starts from (backend, family, preset, data, training recipe).
        out: the sweep folder (created); re-running continues an interrupted sweep.
        latent_dims: latent sizes.
        betas: KL weights.
        iwae_k: importance samples of the IWAE column.
        save: write ``sweep.json``, ``sweep.md`` and the figures (the runs are written regardless).
        fmt, dpi: figure format (png, pdf, svg) and resolution.
        jobs: worker processes training grid points at the same time (1: in this process). Each
            gets ``max(1, cores // jobs)`` threads; the metrics equal those of ``jobs=1`` run with
            the same thread count (a different count may change float sums in the last bits).
        shard: ``(i, n)`` or ``"i/n"``: train only the points whose index in the grid (latent sizes
            in the order given, then β) is ``i`` modulo ``n``, and write no table or figure (the
            ``n`` shards may run at once into the same ``out``); :func:`report` merges them.
        batched: train the β values of each latent size together, as one vectorised model (torch
            only; combines with ``shard``, not with ``jobs`` > 1). Each point still gets its own run
            folder with the same files and, up to float rounding, the same numbers as one by one.

    Returns:
        A :class:`Result`: ``table`` one row per grid point (``name``, ``run_dir``, ``latent_dim``,
        ``beta``, ``rate``, ``distortion``, ``neg_elbo``, ``iwae``, ``psnr``, ``ssim`` — the ``runs``
        of ``sweep.json``), ``figure`` the rate–distortion plot (``None`` when no run reports rate
        and distortion), ``images`` ``(1 + runs, k, H, W)`` the reconstructions figure's rows,
        ``extra["reconstructions"]`` that figure as a Result; ``info["out"]`` is the sweep folder.
        With ``shard``: a Result ``"sweep_shard"`` without figure, ``table`` the shard's rows,
        ``info["shard"]`` ``"i/n"``.

    Raises:
        ConfigError: empty grid, ``base`` is not a generative family, bad ``fmt``/``dpi``/``jobs``/``shard``,
            ``batched`` on the tf backend, with ``jobs`` > 1 or with precision '16'.
        RunError: ``out`` is not a sweep folder or is in use by another sweep, or grid points failed
            (one line each, raised after every other point has finished; the finished ones are kept).
    """
    if not latent_dims or not betas:
        raise ConfigError(f"`latent_dims` and `betas` must be non-empty. Received: latent_dims={list(latent_dims)}, "
                          f"betas={list(betas)}")
    if base.model.family == "cnn":
        raise ConfigError("`model` must be a generative family ('vae', 'cvae', 'iaf') for a sweep. Received: model='cnn'")
    for d in latent_dims:  # every grid point is validated before the first one trains
        for b in betas:
            dataclasses.replace(base.model, latent_dim=d, beta=b)
    jobs = check_jobs(jobs)
    shard = None if shard is None else check_shard(shard)
    if not isinstance(batched, bool):
        raise ConfigError(f"`batched` must be True or False. Received: batched={batched!r}")
    if batched:
        from shared.sweep_batched import check_batched
        check_batched(base, jobs, shard)
    writer = OutputWriter(Path(out), save, fmt, dpi)
    out = Path(out)
    points = []
    for d in dict.fromkeys(int(d) for d in latent_dims):
        for b in dict.fromkeys(float(b) for b in betas):
            config = dataclasses.replace(base, model=dataclasses.replace(base.model, latent_dim=d, beta=b))
            points.append(Point(run_name(d, b), config, out / run_name(d, b)))
    _check_sweep_folder(out)
    if shard is not None:  # no sweep lock: the n shards of an array job write into the same folder at once
        out.mkdir(parents=True, exist_ok=True)
        record_grid(out, [p.name for p in points])
        mine = shard_points(points, shard)
        log.info("sweep shard %d/%d: %d of the %d grid points", *shard, len(mine), len(points))
        results = _run_all(out, mine, jobs, iwae_k, batched)
        rows = [table_row(p.name, p.run_dir, p.config, results[p.name]) for p in mine]
        info = {"out": str(out), "shard": f"{shard[0]}/{shard[1]}", "points": [p.name for p in mine],
                "grid_points": len(points)}
        return Result("sweep_shard", None, None, pd.DataFrame(rows), info)
    with lock_run(out):  # one sweep at a time writes sweep.json / sweep.md / figures
        record_grid(out, [p.name for p in points])
        results = _run_all(out, points, jobs, iwae_k, batched)
        entries = [(p.name, p.run_dir, p.config, results[p.name]) for p in points]
        return write_outputs(base, out, entries, iwae_k, writer)


def _run_all(out: Path, points: Sequence[Point], jobs: int, iwae_k: int, batched: bool = False) -> dict[str, Any]:
    """The evaluation of every point; :class:`RunError` listing the failed points, once all have run."""
    if batched:
        from shared.sweep_batched import run_batched
        results, failures = run_batched(points, iwae_k=iwae_k)
    else:
        results, failures = run_points(points, jobs=jobs, iwae_k=iwae_k)
    if failures:
        listed = "; ".join(f"{name}: {error}" for name, error in failures.items())
        raise RunError(f"{len(failures)} of {len(points)} grid points failed ({listed}); the {len(results)} "
                       f"finished ones are kept in {out} and reused: run the same command again to retry the others")
    return results


def report(out: str | os.PathLike, *, save: bool = True, fmt: str = "png", dpi: int = DEFAULT_DPI) -> Result:
    """The table and figures of every finished run in the sweep folder ``out`` (e.g. after its shards).

    Reads each grid-point folder's ``config.json`` and ``eval.json``, checks that the runs differ
    only in ``latent_dim`` and ``beta``, and writes ``sweep.json``, ``sweep.md`` and the figures
    exactly as :func:`sweep` does for the same runs. Rows follow the grid recorded in ``grid.json``
    (then any other runs by latent size and β). Points of the grid with no run, or a run without
    an evaluation on its test split, are left out of the table and listed (a warning,
    ``info["missing"]``, ``info["unevaluated"]`` and a line in ``sweep.md``).

    Args:
        out: the sweep folder.
        save, fmt, dpi: as for :func:`sweep`.

    Returns:
        The :class:`Result` of :func:`sweep`.

    Raises:
        RunError: ``out`` is not a sweep folder, holds no evaluated run, holds runs of different
            sweeps (another data spec, split, model or recipe), or is in use.
    """
    writer = OutputWriter(Path(out), save, fmt, dpi)
    out = Path(out)
    if not out.is_dir():
        raise RunError(f"{out}: no such sweep folder")
    _check_sweep_folder(out)
    with lock_run(out, clean=False):  # shards may still be writing here: leave their unfinished files alone
        folders = {p.name: p for p in out.iterdir() if p.is_dir() and _RUN_NAME.fullmatch(p.name)}
        configs = {name: load_run_config(p) for name, p in folders.items() if (p / CONFIG).is_file()}
        grid = read_grid(out) or []
        others = sorted((n for n in configs if n not in grid),
                        key=lambda n: (configs[n].model.latent_dim, configs[n].model.beta))
        missing = [n for n in grid if n not in configs]
        base = _one_sweep(out, [(n, configs[n]) for n in [*grid, *others] if n in configs])
        entries, unevaluated = [], []
        for name in [*grid, *others]:
            if name not in configs:
                continue
            result = evaluated_result(folders[name])
            if result is None:
                unevaluated.append(name)
            else:
                entries.append((name, folders[name], configs[name], result))
        if not entries:
            raise RunError(f"{out}: holds no evaluated grid point yet (not started: {len(missing)}, unfinished: "
                           f"{len(unevaluated)}); run the sweep or its shards first")
        if missing or unevaluated:
            log.warning("sweep report of %s: %d of %d grid points in the table; not started: %s; not finished "
                        "or not evaluated: %s", out, len(entries), len(entries) + len(missing) + len(unevaluated),
                        ", ".join(missing) or "none", ", ".join(unevaluated) or "none")
        ks = {r.get("iwae_k") for *_, r in entries if isinstance(r.get("iwae_k"), int)}
        iwae_k = ks.pop() if len(ks) == 1 else SWEEP_IWAE_K
        return write_outputs(base, out, entries, iwae_k, writer, missing=missing, unevaluated=unevaluated)


def _one_sweep(out: Path, configs: Sequence[tuple[str, RunConfig]]) -> RunConfig:
    """The first config; :class:`RunError` if a run's name or any field but latent_dim/beta disagrees."""
    if not configs:
        raise RunError(f"{out}: holds no grid-point run (folders such as d16_b0.1 with a {CONFIG}); "
                       f"run the sweep or its shards first")
    first_name, first = configs[0]
    for name, config in configs:
        m = config.model
        if run_name(m.latent_dim, m.beta) != name:
            raise RunError(f"{out / name}: holds a run of latent_dim={m.latent_dim}, beta={m.beta:g}, which "
                           f"belongs in {run_name(m.latent_dim, m.beta)}; rename or remove it")
        same = dataclasses.replace(config, model=dataclasses.replace(m, latent_dim=first.model.latent_dim,
                                                                     beta=first.model.beta))
        if same != first:
            field = _first_difference(first.to_dict(), same.to_dict())
            raise RunError(f"{out}: {first_name} and {name} are runs of different sweeps ({field}); a sweep "
                           f"folder must hold runs that differ only in latent_dim and beta; move one away")
    return first


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """``"model.preset: 'small' vs 'default'"``: the first field where two config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if prefix + key in ("data.path", "data.fingerprint"):  # provenance, not identity
                continue
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {a!r} vs {b!r}"
