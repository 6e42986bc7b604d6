"""The sweep's table and figures: ``sweep.json``, ``sweep.md``, the rate–distortion and reconstruction figures.

Written by :func:`shared.sweep.sweep` after training the grid and by :func:`shared.sweep.report`
from the finished runs of a folder; both pass the evaluated runs to :func:`write_outputs`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from shared import api
from shared.config import RunConfig
from shared.errors import RunError
from shared.results import OutputWriter, Result, markdown_table
from shared.runs import FIGURES, SPLIT
from shared.studio import labels_for

__all__ = ["write_outputs", "table_row", "METRIC_KEYS", "RECONSTRUCTION_FACES"]

log = logging.getLogger(__name__)

RECONSTRUCTION_FACES = 8    # held-out faces in the "all models' reconstructions" figure
# Column of the table -> keys of the backend's evaluation result that may hold it (first found wins).
METRIC_KEYS = {"rate": ("rate",), "distortion": ("distortion",), "neg_elbo": ("neg_elbo", "elbo"),
               "iwae": ("neg_iwae", "iwae"), "psnr": ("psnr",), "ssim": ("ssim",)}


def table_row(name: str, run_dir: Path, config: RunConfig, result: dict[str, Any]) -> dict[str, Any]:
    """One row of the sweep table: the grid point and its metrics (``None`` where the evaluation has none)."""
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


def write_outputs(base: RunConfig, out: Path, entries: Sequence[tuple[str, Path, RunConfig, dict[str, Any]]],
                  iwae_k: int, writer: OutputWriter, *, missing: Sequence[str] = (),
                  unevaluated: Sequence[str] = ()) -> Result:
    """``sweep.json``, ``sweep.md`` and the figures of the evaluated runs ``entries`` (name, folder, config, eval).

    Args:
        base: the config the runs share (but latent_dim and beta).
        out: the sweep folder.
        entries: ``(name, run folder, config, evaluation)`` per run, in table order.
        iwae_k: the IWAE column's importance samples (its header).
        writer: where and how the files are written.
        missing, unevaluated: grid points left out of the table (named in ``sweep.json`` and ``sweep.md``).

    Returns:
        The :class:`~shared.results.Result` of :func:`shared.sweep.sweep`.

    Raises:
        RunError: the runs' test splits differ.
    """
    rows = [table_row(name, run_dir, config, result) for name, run_dir, config, result in entries]
    run_dirs = [run_dir for _, run_dir, _, _ in entries]
    names = [f"d={c.model.latent_dim} β={c.model.beta:g}" for _, _, c, _ in entries]
    test = _same_test_split(run_dirs, base)

    info = {"out": str(out), "backend": base.backend, "family": base.model.family, "data": base.data.spec,
            "split_seed": base.data.split_seed, "n_test": int(len(test)), "iwae_k": iwae_k}
    # a report of an unfinished sweep says what is not in the table (a complete one has no such keys)
    gaps = {k: list(v) for k, v in (("missing", missing), ("unevaluated", unevaluated)) if v}
    info.update(gaps)
    writer.json("sweep.json", {**info, "runs": rows})
    columns = ["latent dim", "β", "rate (nats)", "distortion (nats)", "−ELBO", f"IWAE-{iwae_k} (−log p)",
               "PSNR (dB)", "SSIM"]
    table = markdown_table(columns, [[r["latent_dim"], r["beta"], r["rate"], r["distortion"], r["neg_elbo"],
                                      r["iwae"], r["psnr"], r["ssim"]] for r in rows])
    note = "".join(f"\nNot in the table, {'not started' if k == 'missing' else 'not finished or not evaluated'}: "
                   f"{', '.join(v)}.\n" for k, v in gaps.items())
    writer.text("sweep.md", f"# Sweep — {base.backend}/{base.model.family} on {base.data.spec}\n\n"
                            f"Test split ({len(test)} faces), per-image means.\n\n{table}{note}")
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
