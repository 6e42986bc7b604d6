"""PNG figures with matplotlib ``Figure`` objects (no pyplot global state), written atomically.

Images may be uint8 (shown on 0..255) or floats (shown on 0..1), always in gray. Every function returns
the path it wrote and raises :class:`~shared.errors.ConfigError` on inputs of the wrong shape.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from shared.errors import ConfigError
from shared.runs import atomic_write_bytes

__all__ = ["image_grid", "comparison_rows", "interpolation_figure", "training_curves", "confusion_matrix_figure",
           "rate_distortion_figure", "metric_by_group_figure"]

_DPI = 100


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"`path` must end in .png. Received: path={str(path)!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def _rows(rows: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate ``rows`` as (R, C, H, W) or a list of (C, H, W) arrays with one image size."""
    if isinstance(rows, np.ndarray) and rows.ndim != 4:
        raise ConfigError(f"`rows` must be an array (R, C, H, W) or a list of (C, H, W) arrays. "
                          f"Received: shape={rows.shape}")
    out = [np.asarray(r) for r in rows]
    if not out or any(r.ndim != 3 or r.shape[0] == 0 for r in out):
        raise ConfigError(f"`rows` must hold non-empty (C, H, W) arrays. Received shapes: {[r.shape for r in out]}")
    if len({r.shape[1:] for r in out}) != 1:
        raise ConfigError(f"every image must have the same (H, W). Received shapes: {[r.shape for r in out]}")
    return out


def _titles(name: str, titles: Sequence[str] | None, n: int) -> list[str] | None:
    if titles is None:
        return None
    titles = [str(t) for t in titles]
    if len(titles) != n:
        raise ConfigError(f"`{name}` must have {n} entries. Received: {len(titles)} ({titles})")
    return titles


def image_grid(rows: np.ndarray | Sequence[np.ndarray], path: str | Path, row_titles: Sequence[str] | None = None,
               col_titles: Sequence[str] | None = None, title: str | None = None) -> Path:
    """A grid of grayscale images, one figure row per entry of ``rows``.

    Args:
        rows: ``(R, C, H, W)`` or a list of ``(C_r, H, W)`` arrays (rows may differ in length).
        path: output ``.png``.
        row_titles: R labels written left of each row.
        col_titles: C labels (C = the longest row) written above the first row.
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ConfigError: bad shapes or title counts.
    """
    rows = _rows(rows)
    n_rows, n_cols = len(rows), max(r.shape[0] for r in rows)
    row_titles, col_titles = _titles("row_titles", row_titles, n_rows), _titles("col_titles", col_titles, n_cols)
    vmax = 255.0 if all(np.issubdtype(r.dtype, np.integer) for r in rows) else 1.0
    fig = Figure(figsize=(0.9 * n_cols + (1.2 if row_titles else 0.2), 0.9 * n_rows + (0.6 if title else 0.2)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < row.shape[0]:
                ax.imshow(row[j], cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest")
            else:
                ax.set_axis_off()
            if i == 0 and col_titles:
                ax.set_title(col_titles[j], fontsize=8)
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return _save(fig, path)


def comparison_rows(named_rows: Mapping[str, np.ndarray], path: str | Path, title: str | None = None) -> Path:
    """One labelled row per entry (e.g. ``{"original": x, "noisy": y, "vae": z}``), each ``(C, H, W)``.

    Raises:
        ConfigError: no rows or bad shapes.
    """
    if not named_rows:
        raise ConfigError("`named_rows` must hold at least one row")
    return image_grid(list(named_rows.values()), path, row_titles=list(named_rows), title=title)


def interpolation_figure(images: np.ndarray, path: str | Path, title: str | None = None) -> Path:
    """The n x n interpolation matrix of decoded images ``(n, n, H, W)``; corners are the four end points.

    Raises:
        ConfigError: ``images`` is not ``(n, n, H, W)``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] != images.shape[1]:
        raise ConfigError(f"`images` must have shape (n, n, H, W). Received: shape={images.shape}")
    return image_grid(images, path, title=title)


def training_curves(records: Sequence[Mapping[str, Any]], path: str | Path,
                    keys: Sequence[str | Sequence[str]], title: str | None = None) -> Path:
    """Metrics per epoch from ``metrics.jsonl`` records, one panel per entry of ``keys``.

    Args:
        records: dicts with an ``epoch`` key and metric values (missing or None values are skipped).
        path: output ``.png``.
        keys: metric names; an entry that is a list puts those metrics on one panel
            (e.g. ``[["train_loss", "val_loss"], "val_accuracy"]``).
        title: figure title.

    Raises:
        ConfigError: no records, a record without ``epoch``, or a key found in no record.
    """
    if not records:
        raise ConfigError("`records` is empty: nothing to plot")
    if any("epoch" not in r for r in records):
        raise ConfigError("every record needs an `epoch` key (metrics.jsonl)")
    panels = [[k] if isinstance(k, str) else list(k) for k in keys]
    if not panels:
        raise ConfigError("`keys` must name at least one metric")
    for name in (k for panel in panels for k in panel):
        if not any(r.get(name) is not None for r in records):
            raise ConfigError(f"metric {name!r} is in no record. Available: {sorted({k for r in records for k in r})}")
    fig = Figure(figsize=(4.0 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for name in panel:
            pts = [(r["epoch"], r[name]) for r in records if r.get(name) is not None]
            ax.plot(*zip(*pts), marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str], path: str | Path,
                            title: str | None = None) -> Path:
    """Confusion matrix with rows = true class, columns = predicted, normalised per true class.

    Each cell shows the row percentage and the count; rows without samples stay at 0.

    Raises:
        ConfigError: ``cm`` not square K x K with K = ``len(class_names)``, or negative counts.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if cm.shape != (k, k) or (cm < 0).any():
        raise ConfigError(f"`cm` must be a non-negative ({k}, {k}) count matrix for {k} classes. "
                          f"Received: shape={cm.shape}")
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    fig = Figure(figsize=(1.0 + 0.9 * k, 0.8 + 0.8 * k))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}%\n({int(round(cm[i, j]))})", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def rate_distortion_figure(points: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None,
                           xlabel: str = "rate (KL, nats)", ylabel: str = "distortion") -> Path:
    """Scatter of ``rate`` against ``distortion``, each point annotated with its ``label``.

    Raises:
        ConfigError: no points or a point without finite ``rate``/``distortion`` or a ``label``.
    """
    if not points:
        raise ConfigError("`points` is empty: nothing to plot")
    for i, p in enumerate(points):
        ok = all(k in p for k in ("rate", "distortion", "label"))
        if not ok or not all(isinstance(p[k], (int, float)) and math.isfinite(p[k]) for k in ("rate", "distortion")):
            raise ConfigError(f"point {i} needs finite `rate`, `distortion` and a `label`. Received: {dict(p)}")
    fig = Figure(figsize=(5.0, 4.0))
    ax = fig.subplots()
    ax.scatter([p["rate"] for p in points], [p["distortion"] for p in points], color="tab:blue")
    for p in points:
        ax.annotate(str(p["label"]), (p["rate"], p["distortion"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def metric_by_group_figure(groups: Mapping[str, float], path: str | Path, ylabel: str, title: str | None = None,
                           kind: str = "bar") -> Path:
    """One value per group (e.g. accuracy per age band), as annotated bars or a line in group order.

    Raises:
        ConfigError: no groups, a non-finite value, or ``kind`` not in {"bar", "line"}.
    """
    if kind not in ("bar", "line"):
        raise ConfigError(f"`kind` must be one of {{'bar', 'line'}}. Received: kind={kind!r}")
    if not groups:
        raise ConfigError("`groups` is empty: nothing to plot")
    names, values = [str(k) for k in groups], [float(v) for v in groups.values()]
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"every group value must be finite. Received: {dict(groups)}")
    fig = Figure(figsize=(max(4.0, 0.8 * len(names) + 1.0), 3.2))
    ax = fig.subplots()
    x = np.arange(len(names))
    if kind == "bar":
        ax.bar(x, values, color="tab:blue")
    else:
        ax.plot(x, values, marker="o")
    for xi, v in zip(x, values):
        ax.annotate(f"{v:.3g}", (xi, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
