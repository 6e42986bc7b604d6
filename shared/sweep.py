"""Latent-size × β sweeps: train the grid, evaluate each run, compare them in one table and two figures.

In a notebook::

    from shared.api import build_config
    from shared.sweep import sweep
    base = build_config(backend="torch", model="vae", data="synthetic:4000", epochs=10)
    sweep(base, "runs/sweep", latent_dims=(4, 16, 64), betas=(0.1, 1.0))

Layout of ``out``: one run folder per grid point (``d16_b0.1`` = latent_dim 16, β 0.1), then
``sweep.json`` + ``sweep.md`` (the rate–distortion table), ``figures/rate_distortion.png`` and
``figures/reconstructions.png`` (a row of held-out originals, then one row per model). The call
returns a :class:`shared.results.Result` (``.table``: one row per grid point; ``.figure``: the
rate–distortion plot); ``save=False`` skips the table and figure files (the runs are still trained
into ``out``), ``fmt``/``dpi`` choose the figures' format (png, pdf, svg) and resolution.

Resuming: a grid point whose folder already holds a finished evaluation (``eval.json`` on the test
split) is skipped; one with a ``config.json`` but no evaluation is resumed from its last checkpoint
(``train(resume=True)``) and then evaluated; one stopped before its first checkpoint is started
again. So an interrupted sweep continues where it stopped when the same command is run again.
A folder holding a run with a *different* config is refused.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from shared import api
from shared.config import RunConfig
from shared.errors import ConfigError, RunError
from shared.results import DEFAULT_DPI, OutputWriter, Result, markdown_table
from shared.runs import CONFIG, EVAL, FIGURES, LOCK, SPLIT, has_any_checkpoint, load_run_config, lock_run
from shared.studio import labels_for

__all__ = ["sweep", "run_name", "ensure_run", "METRIC_KEYS", "SWEEP_IWAE_K", "RECONSTRUCTION_FACES"]

log = logging.getLogger(__name__)

SWEEP_IWAE_K = 16           # importance samples per face for the IWAE column (kept small: cost ∝ k)
RECONSTRUCTION_FACES = 8    # held-out faces in the "all models' reconstructions" figure
# Column of the table -> keys of the backend's evaluation result that may hold it (first found wins).
METRIC_KEYS = {"rate": ("rate",), "distortion": ("distortion",), "neg_elbo": ("neg_elbo", "elbo"),
               "iwae": ("neg_iwae", "iwae"), "psnr": ("psnr",), "ssim": ("ssim",)}


def run_name(latent_dim: int, beta: float) -> str:
    """Folder name of a grid point, e.g. ``d16_b0.1``."""
    return f"d{latent_dim}_b{beta:g}"


def _is_evaluated(run_dir: Path) -> Optional[dict[str, Any]]:
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


def ensure_run(config: RunConfig, run_dir: str | Path, *, iwae_k: int = SWEEP_IWAE_K,
               classifier: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` and evaluate it on its test split, skipping finished work.

    Args:
        config: the run's config.
        run_dir: its folder; may hold a finished run (reused), an interrupted one (resumed) or nothing.
        iwae_k: importance samples of the IWAE bound.
        classifier: optional CNN run folder for Fréchet distance.
        seed: evaluation seed.

    Returns:
        The evaluation result (``eval.json``).

    Raises:
        RunError: ``run_dir`` holds a run with a different config.
    """
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).is_file():
        saved = load_run_config(run_dir)
        if saved != config:
            raise RunError(f"{run_dir}: holds a run with a different config; remove it or choose another --out "
                           f"(saved model={saved.model.to_dict()}, wanted model={config.model.to_dict()})")
        done = _is_evaluated(run_dir)
        if done is not None:
            log.info("%s: already trained and evaluated, skipped", run_dir)
            return done
        if has_any_checkpoint(run_dir):
            log.info("%s: incomplete run, resuming", run_dir)
            api.train(None, run_dir, resume=True)
            return api.evaluate(run_dir, iwae_k=iwae_k, classifier=classifier, seed=seed)
        # stopped before its first checkpoint: api.train deletes its partial files and starts it again
        log.info("%s: interrupted before its first checkpoint, starting again", run_dir)
    api.train(config, run_dir)
    return api.evaluate(run_dir, iwae_k=iwae_k, classifier=classifier, seed=seed)


def _row(name: str, run_dir: Path, config: RunConfig, result: dict[str, Any]) -> dict[str, Any]:
    row = {"name": name, "run_dir": str(run_dir), "latent_dim": config.model.latent_dim, "beta": config.model.beta}
    for column, keys in METRIC_KEYS.items():
        value = next((result[k] for k in keys if isinstance(result.get(k), (int, float))), None)
        row[column] = None if value is None else float(value)
    return row


def _same_test_split(run_dirs: Sequence[Path], config: RunConfig) -> np.ndarray:
    """The shared test indices of ``run_dirs``; :class:`RunError` if any run's test split differs."""
    from shared.data.splits import Split

    faces = api.load_run_data(config)
    first = None
    for run_dir in run_dirs:
        test = np.asarray(Split.load(run_dir / SPLIT, faces).test)
        if first is None:
            first = test
        elif not np.array_equal(np.sort(first), np.sort(test)):
            raise RunError(f"{run_dir}: its test split differs from {run_dirs[0]}'s; sweep runs must share "
                           f"the data spec and split seed so they are compared on the same held-out faces")
    return first


def _reconstructions(run_dirs: Sequence[Path], names: Sequence[str], config: RunConfig,
                     test: np.ndarray) -> tuple[Any, np.ndarray]:
    """The figure and images ``(1 + runs, k, H, W)``: held-out originals, then each model's reconstruction."""
    from shared.plotting import comparison_rows

    faces = api.load_run_data(config).subset(test[:RECONSTRUCTION_FACES])
    rows = {"originals": faces.floats()}
    for run_dir, name in zip(run_dirs, names):
        model = api.load_model(run_dir)
        rows[name] = np.asarray(model.reconstruct(faces.floats(), labels_for(model, faces)), np.float32)
    fig = comparison_rows(rows, title="held-out faces and every model's reconstruction")
    return fig, np.stack(list(rows.values())).astype(np.float32)


_RUN_NAME = re.compile(r"d\d+_b(?:[0-9.e+-]+|inf|nan)")  # run_name's pattern
_SWEEP_FILES = {"sweep.json", "sweep.md", FIGURES, LOCK}


def _sweep_entry(p: Path) -> bool:
    """A file or folder a sweep writes (grid-point runs, table, figures, lock, an interrupted write)."""
    return (p.name in _SWEEP_FILES or (p.is_dir() and _RUN_NAME.fullmatch(p.name) is not None)
            or (p.name.startswith(".sweep.") and p.name.endswith(".tmp")))


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
          iwae_k: int = SWEEP_IWAE_K, save: bool = True, fmt: str = "png", dpi: int = DEFAULT_DPI) -> Result:
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

    Returns:
        A :class:`Result`: ``table`` one row per grid point (``name``, ``run_dir``, ``latent_dim``,
        ``beta``, ``rate``, ``distortion``, ``neg_elbo``, ``iwae``, ``psnr``, ``ssim`` — the ``runs``
        of ``sweep.json``), ``figure`` the rate–distortion plot (``None`` when no run reports rate
        and distortion), ``images`` ``(1 + runs, k, H, W)`` the reconstructions figure's rows,
        ``extra["reconstructions"]`` that figure as a Result; ``info["out"]`` is the sweep folder.

    Raises:
        ConfigError: empty grid, ``base`` is not a generative family, bad ``fmt``/``dpi``.
        RunError: ``out`` is not a sweep folder or is in use by another sweep, or a folder in it
            holds a different run.
    """
    if not latent_dims or not betas:
        raise ConfigError(f"`latent_dims` and `betas` must be non-empty. Received: latent_dims={list(latent_dims)}, "
                          f"betas={list(betas)}")
    if base.model.family == "cnn":
        raise ConfigError("`model` must be a generative family ('vae', 'cvae', 'iaf') for a sweep. Received: model='cnn'")
    for d in latent_dims:  # every grid point is validated before the first one trains
        for b in betas:
            dataclasses.replace(base.model, latent_dim=d, beta=b)
    writer = OutputWriter(Path(out), save, fmt, dpi)
    out = Path(out)
    _check_sweep_folder(out)
    with lock_run(out):  # one sweep at a time writes sweep.json / sweep.md / figures
        return _sweep_locked(base, out, latent_dims, betas, iwae_k, writer)


def _sweep_locked(base: RunConfig, out: Path, latent_dims: Sequence[int], betas: Sequence[float],
                  iwae_k: int, writer: OutputWriter) -> Result:
    grid = [(int(d), float(b)) for d in dict.fromkeys(latent_dims) for b in dict.fromkeys(betas)]
    rows, run_dirs, names = [], [], []
    for d, b in tqdm(grid, desc="sweep", disable=None):
        config = dataclasses.replace(base, model=dataclasses.replace(base.model, latent_dim=d, beta=b))
        name = run_name(d, b)
        run_dir = out / name
        result = ensure_run(config, run_dir, iwae_k=iwae_k)
        rows.append(_row(name, run_dir, config, result))
        run_dirs.append(run_dir)
        names.append(f"d={d} β={b:g}")
    test = _same_test_split(run_dirs, base)

    info = {"out": str(out), "backend": base.backend, "family": base.model.family, "data": base.data.spec,
            "split_seed": base.data.split_seed, "n_test": int(len(test)), "iwae_k": iwae_k}
    writer.json("sweep.json", {**info, "runs": rows})
    columns = ["latent dim", "β", "rate (nats)", "distortion (nats)", "−ELBO", f"IWAE-{iwae_k} (−log p)",
               "PSNR (dB)", "SSIM"]
    table = markdown_table(columns, [[r["latent_dim"], r["beta"], r["rate"], r["distortion"], r["neg_elbo"],
                                      r["iwae"], r["psnr"], r["ssim"]] for r in rows])
    writer.text("sweep.md", f"# Sweep — {base.backend}/{base.model.family} on {base.data.spec}\n\n"
                            f"Test split ({len(test)} faces), per-image means.\n\n{table}")
    from shared.plotting import rate_distortion_figure
    points = [dict(rate=r["rate"], distortion=r["distortion"], label=n, group=f"β={r['beta']:g}")
              for r, n in zip(rows, names) if r["rate"] is not None and r["distortion"] is not None]
    fig = None
    if points:
        fig = rate_distortion_figure(points, title=f"rate–distortion: {base.backend}/{base.model.family} on "
                                                   f"{base.data.spec} ({len(test)} test faces, mean per face)")
        writer.figure(fig, f"{FIGURES}/rate_distortion")
    else:
        log.warning("no run reports rate and distortion: no rate–distortion figure")
    rec_fig, rec_images = _reconstructions(run_dirs, names, base, test)
    first = len(writer.paths)
    writer.figure(rec_fig, f"{FIGURES}/reconstructions")
    recon = Result("reconstructions", rec_fig, rec_images, None, {"rows": ["originals", *names]},
                   writer.paths[first:])
    log.info("sweep of %d runs in %s%s", len(rows), out, "" if writer.save else " (table and figures not saved)")
    return Result("sweep", fig, rec_images, pd.DataFrame(rows), info, writer.paths, {"reconstructions": recon})
