"""Figures as matplotlib ``Figure`` objects (no pyplot global state), optionally written to a file.

Every function builds and returns the ``Figure``; when ``path`` is given it is also written there
atomically (the suffix .png, .pdf or .svg chooses the format, ``dpi`` the resolution), through
:func:`shared.results.save_figure`. Images may be uint8 (shown on 0..255) or floats (shown on 0..1),
always in gray. Inputs of the wrong shape raise :class:`~shared.errors.ConfigError` before anything
is written.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from shared.errors import ConfigError
from shared.results import DEFAULT_DPI, check_dpi, save_figure

__all__ = ["image_grid", "comparison_rows", "interpolation_figure", "training_curves", "run_curves",
           "confusion_matrix_figure",
           "rate_distortion_figure", "metric_by_group_figure", "CORNER_NAMES", "CORNER_COLORS"]

CORNER_NAMES = ("A", "B", "C", "D")  # top-left, top-right, bottom-left, bottom-right
CORNER_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange")
_TILE = 0.9            # inches per image tile
_TITLE_FONT = 8.0      # column-title font size (points)
_CHAR_WIDTH = 0.6      # average glyph width as a fraction of the font size (DejaVu Sans)
RD_RATE_LABEL = "rate: KL(q(z|x) ‖ p(z)) (nats/face)"
RD_DISTORTION_LABEL = "distortion: −log p(x|z) (nats/face)"


def _finish(fig: Figure, path: str | Path | None, dpi: int) -> Figure:
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


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


def _fit_titles(titles: Sequence[str], width_in: float) -> tuple[list[str], float, int]:
    """Column titles wrapped at word breaks to ``width_in`` inches; the font shrinks for a long word.

    Returns:
        ``(wrapped titles, font size, most lines)`` — neighbouring titles then never overlap.
    """
    chars = max(4, int(width_in * 72 / (_CHAR_WIDTH * _TITLE_FONT)))
    wrapped = [textwrap.fill(t, chars, break_long_words=False) or t for t in titles]
    longest = max((len(line) for t in wrapped for line in t.splitlines()), default=1)
    size = min(_TITLE_FONT, width_in * 72 / (_CHAR_WIDTH * max(longest, 1)))
    return wrapped, max(size, 5.0), max((t.count("\n") + 1 for t in wrapped), default=1)


def image_grid(rows: np.ndarray | Sequence[np.ndarray], path: str | Path | None = None,
               row_titles: Sequence[str] | None = None, col_titles: Sequence[str] | None = None,
               title: str | None = None, *, dpi: int = DEFAULT_DPI, tile: float = _TILE) -> Figure:
    """A grid of grayscale images, one figure row per entry of ``rows``.

    Args:
        rows: ``(R, C, H, W)`` or a list of ``(C_r, H, W)`` arrays (rows may differ in length).
        path: optional output file (.png, .pdf or .svg).
        row_titles: R labels written left of each row.
        col_titles: C labels (C = the longest row) above the first row; wrapped (and shrunk when a
            word is long) so neighbours never overlap.
        title: figure title.
        dpi: resolution of the written file.
        tile: inches per image.

    Returns:
        The figure (``fig.axes`` row by row, ``C`` per row).

    Raises:
        ConfigError: bad shapes, title counts, ``path`` suffix or ``dpi``.
    """
    rows = _rows(rows)
    dpi = check_dpi(dpi)
    n_rows, n_cols = len(rows), max(r.shape[0] for r in rows)
    row_titles, col_titles = _titles("row_titles", row_titles, n_rows), _titles("col_titles", col_titles, n_cols)
    vmax = 255.0 if all(np.issubdtype(r.dtype, np.integer) for r in rows) else 1.0
    col_size, col_lines = _TITLE_FONT, 0
    if col_titles:
        col_titles, col_size, col_lines = _fit_titles(col_titles, tile * 0.95)
    head = (0.15 + 0.2 * (title.count("\n") + 1) if title else 0.1) + 0.15 * col_lines
    left = 1.3 if row_titles else 0.1
    width, height = tile * n_cols + left + 0.1, tile * n_rows + head + 0.1
    fig = Figure(figsize=(width, height))
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
                ax.set_title(col_titles[j], fontsize=col_size)
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], rotation=0, ha="right", va="center", fontsize=9)
    if title:  # anchored 0.05 in below the top edge: a fraction of a tall figure's height lands on the images
        fig.suptitle(title, fontsize=10, y=1.0 - 0.05 / height, va="top")
    # margins in inches, so the image area is exactly tile*C by tile*R: square tiles, even gaps
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=left / width, right=1.0 - 0.1 / width,
                        top=1.0 - head / height, bottom=0.1 / height)
    return _finish(fig, path, dpi)


def comparison_rows(named_rows: Mapping[str, np.ndarray], path: str | Path | None = None,
                    title: str | None = None, *, dpi: int = DEFAULT_DPI) -> Figure:
    """One labelled row per entry (e.g. ``{"original": x, "noisy": y, "vae": z}``), each ``(C, H, W)``.

    Raises:
        ConfigError: no rows or bad shapes.
    """
    if not named_rows:
        raise ConfigError("`named_rows` must hold at least one row")
    return image_grid(list(named_rows.values()), path, row_titles=list(named_rows), title=title, dpi=dpi)


def interpolation_figure(images: np.ndarray, path: str | Path | None = None, title: str | None = None, *,
                         corners: Sequence[str] | None = None, dpi: int = DEFAULT_DPI) -> Figure:
    """The n x n interpolation matrix of decoded images ``(n, n, H, W)`` with its four corners marked.

    The corner tiles get a coloured frame and a letter: A top-left, B top-right, C bottom-left,
    D bottom-right; ``corners`` (four short descriptions, same order) are listed under the title.

    Raises:
        ConfigError: ``images`` is not ``(n, n, H, W)`` with n >= 2, or ``corners`` has not 4 entries.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] != images.shape[1] or images.shape[0] < 2:
        raise ConfigError(f"`images` must have shape (n, n, H, W) with n >= 2. Received: shape={images.shape}")
    corners = _titles("corners", corners, 4)
    legend = "corners: " + ", ".join(f"{k} = {c}" if corners else k for k, c in
                                     zip(CORNER_NAMES, corners or CORNER_NAMES))
    legend += "" if corners else " (top-left, top-right, bottom-left, bottom-right)"
    full = legend if not title else f"{title}\n{legend}"
    n = images.shape[0]
    fig = image_grid(images, None, title=full, dpi=dpi, tile=max(0.55, min(_TILE, 7.0 / n)))
    for k, (i, j) in enumerate([(0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1)]):
        ax = fig.axes[i * n + j]
        for spine in ax.spines.values():
            spine.set(edgecolor=CORNER_COLORS[k], linewidth=3.0)
        ax.text(0.04, 0.96, CORNER_NAMES[k], transform=ax.transAxes, ha="left", va="top", fontsize=8,
                fontweight="bold", color="white",
                bbox=dict(boxstyle="square,pad=0.15", facecolor=CORNER_COLORS[k], edgecolor="none"))
    return _finish(fig, path, dpi)


def _curve_panels(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Default panels of :func:`training_curves`: ``train_X`` beside ``val_X`` for every term X.

    The loss comes first; terms constant over every epoch (e.g. β without warm-up) are left out
    unless nothing else varies.
    """
    names = list(dict.fromkeys(k for r in records for k, v in r.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)))
    terms = list(dict.fromkeys(k.split("_", 1)[1] for k in names if k.startswith(("train_", "val_"))))
    terms.sort(key=lambda t: t != "loss")
    panels = [[p + t for p in ("train_", "val_") if p + t in names] for t in terms]
    varying = [panel for panel in panels if any(len({r.get(k) for r in records if r.get(k) is not None}) > 1
                                                for k in panel)]
    panels = varying or panels
    # a term equal to the loss in every epoch (the ELBO at beta = 1, a one-task CNN's head loss) repeats its panel
    series = [[tuple(r.get(k) for r in records) for k in panel] for panel in panels]
    return [panel for i, panel in enumerate(panels) if i == 0 or series[i] != series[0]]


def training_curves(records: Sequence[Mapping[str, Any]], path: str | Path | None = None,
                    keys: Sequence[str | Sequence[str]] | None = None, title: str | None = None, *,
                    dpi: int = DEFAULT_DPI) -> Figure:
    """Metrics per epoch from ``metrics.jsonl`` records, one panel per entry of ``keys``.

    Args:
        records: dicts with an ``epoch`` key and metric values (missing or None values are skipped).
        path: optional output file (.png, .pdf or .svg).
        keys: metric names; an entry that is a list puts those metrics on one panel
            (e.g. ``[["train_loss", "val_loss"], "val_accuracy"]``). ``None``: one panel per loss term,
            ``train_X`` and ``val_X`` together.
        title: figure title.
        dpi: resolution of the written file.

    Raises:
        ConfigError: no records, a record without ``epoch``, or a key found in no record.
    """
    if not records:
        raise ConfigError("`records` is empty: nothing to plot")
    if any("epoch" not in r for r in records):
        raise ConfigError("every record needs an `epoch` key (metrics.jsonl)")
    panels = _curve_panels(records) if keys is None else [[k] if isinstance(k, str) else list(k) for k in keys]
    if not panels:
        raise ConfigError("`keys` must name at least one metric (the records hold no train_/val_ metrics)")
    for name in (k for panel in panels for k in panel):
        if not any(r.get(name) is not None for r in records):
            raise ConfigError(f"metric {name!r} is in no record. Available: {sorted({k for r in records for k in r})}")
    dpi = check_dpi(dpi)
    n_cols = min(len(panels), 3)
    n_rows = math.ceil(len(panels) / n_cols)
    fig = Figure(figsize=(4.0 * n_cols, 3.0 * n_rows + (0.3 if title else 0.0)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for name in panel:
            pts = [(r["epoch"], r[name]) for r in records if r.get(name) is not None]
            ax.plot(*zip(*pts), marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel[0].split("_", 1)[-1] if len(panel) > 1 else panel[0])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        epochs = {r["epoch"] for r in records}
        if len(epochs) == 1:  # one epoch: matplotlib would pad the axis to 0.95-1.05 with fractional ticks
            (only,) = epochs
            ax.set_xlim(only - 0.5, only + 0.5)
            ax.set_xticks([only])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path, dpi)


def run_curves(records: Sequence[Mapping[str, Any]], path: str | Path | None = None, title: str | None = None, *,
               dpi: int = DEFAULT_DPI) -> Figure:
    """:func:`training_curves` of ``metrics.jsonl`` records (0-based ``epoch``), drawn with epochs counted
    from 1 as the console lines and TensorBoard steps count them."""
    return training_curves([{**r, "epoch": int(r["epoch"]) + 1} for r in records], path, title=title, dpi=dpi)


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str], path: str | Path | None = None,
                            title: str | None = None, *, dpi: int = DEFAULT_DPI) -> Figure:
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
    dpi = check_dpi(dpi)
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    # at least 4 x 3.5 in: a 2-class matrix at 0.9 in per class left the title wider than the plot
    fig = Figure(figsize=(max(4.0, 1.0 + 0.9 * k), max(3.5, 0.8 + 0.8 * k)))
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
    return _finish(fig, path, dpi)


def rate_distortion_figure(points: Sequence[Mapping[str, Any]], path: str | Path | None = None,
                           title: str | None = "rate–distortion (test split, mean per face)",
                           xlabel: str = RD_RATE_LABEL, ylabel: str = RD_DISTORTION_LABEL, *,
                           dpi: int = DEFAULT_DPI) -> Figure:
    """Scatter of ``rate`` against ``distortion``, each point annotated with its ``label``.

    Points that share an optional ``group`` (e.g. ``"β=1"``) get one colour and are joined in order
    of rate, with a legend. Axis margins keep every label inside the axes.

    Args:
        points: dicts with finite ``rate`` and ``distortion``, a ``label`` and optionally ``group``.
        path: optional output file (.png, .pdf or .svg).
        title, xlabel, ylabel: texts; the default labels give the units (nats per face).
        dpi: resolution of the written file.

    Raises:
        ConfigError: no points or a point without finite ``rate``/``distortion`` or a ``label``.
    """
    if not points:
        raise ConfigError("`points` is empty: nothing to plot")
    for i, p in enumerate(points):
        ok = all(k in p for k in ("rate", "distortion", "label"))
        if not ok or not all(isinstance(p[k], (int, float)) and math.isfinite(p[k]) for k in ("rate", "distortion")):
            raise ConfigError(f"point {i} needs finite `rate`, `distortion` and a `label`. Received: {dict(p)}")
    dpi = check_dpi(dpi)
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.subplots()
    groups = list(dict.fromkeys(p.get("group") for p in points))
    for g in groups:
        pts = sorted((p for p in points if p.get("group") == g), key=lambda p: p["rate"])
        ax.plot([p["rate"] for p in pts], [p["distortion"] for p in pts], marker="o", linestyle="-" if
                g is not None and len(pts) > 1 else "none", label=None if g is None else str(g))
    for k, p in enumerate(points):
        # alternate above/below so labels of near points do not sit on each other
        ax.annotate(str(p["label"]), (p["rate"], p["distortion"]), textcoords="offset points",
                    xytext=(5, 5 if k % 2 == 0 else -11), fontsize=8)
    for set_scale, key in ((ax.set_xscale, "rate"), (ax.set_yscale, "distortion")):
        lo, hi = min(p[key] for p in points), max(p[key] for p in points)
        if lo > 0 and hi / lo > 20:  # a latent-size sweep spans decades: linear would crush the small end
            set_scale("log")
    ax.margins(x=0.25, y=0.12)  # room for the labels inside the axes (no clipping at the edges)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(g is not None for g in groups):
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _finish(fig, path, dpi)


def metric_by_group_figure(groups: Mapping[str, float], path: str | Path | None = None, ylabel: str = "value",
                           title: str | None = None, kind: str = "bar", *,
                           counts: Optional[Mapping[str, int]] = None, dpi: int = DEFAULT_DPI) -> Figure:
    """One value per group (e.g. accuracy per age band), as annotated bars or a line in group order.

    Args:
        groups: group name -> value.
        path: optional output file (.png, .pdf or .svg).
        ylabel, title: texts.
        kind: ``"bar"`` or ``"line"``.
        counts: group name -> number of faces behind the value, shown as ``n=…`` under each group.
        dpi: resolution of the written file.

    Raises:
        ConfigError: no groups, a non-finite value, ``kind`` not in {"bar", "line"}, or ``counts``
            missing a group or holding a negative / non-integer count.
    """
    if kind not in ("bar", "line"):
        raise ConfigError(f"`kind` must be one of {{'bar', 'line'}}. Received: kind={kind!r}")
    if not groups:
        raise ConfigError("`groups` is empty: nothing to plot")
    names, values = [str(k) for k in groups], [float(v) for v in groups.values()]
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"every group value must be finite. Received: {dict(groups)}")
    ticks = names
    if counts is not None:
        counts = {str(k): v for k, v in counts.items()}
        bad = [n for n in names if not isinstance(counts.get(n), (int, np.integer)) or isinstance(counts.get(n), bool)
               or counts[n] < 0]
        if bad:
            raise ConfigError(f"`counts` must give a non-negative integer for every group. Missing or bad: {bad}; "
                              f"received: counts={counts}")
        ticks = [f"{n}\nn={int(counts[n])}" for n in names]
    dpi = check_dpi(dpi)
    fig = Figure(figsize=(max(4.0, 0.9 * len(names) + 1.0), 3.4))
    ax = fig.subplots()
    x = np.arange(len(names))
    if kind == "bar":
        ax.bar(x, values, color="tab:blue")
    else:
        ax.plot(x, values, marker="o")
    for xi, v in zip(x, values):
        ax.annotate(f"{v:.3g}", (xi, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.margins(y=0.12)  # room for the value above the tallest bar
    ax.set_xticks(x, ticks)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _finish(fig, path, dpi)
