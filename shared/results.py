"""What the studio functions return: a figure, the images and a table, with saving optional.

A notebook cell that ends with a result shows its figure (``_repr_png_``); ``.images`` and
``.table`` are there for the user's own analysis; ``.save()`` writes the figure (PNG, PDF or SVG,
at a chosen dpi) and the table (JSON + markdown) when files are wanted::

    res = facevae.denoise("runs/vae16", sigmas=(0.1, 0.3))
    res                      # the figure, in Jupyter
    res.table                # a pandas DataFrame
    res.save("figs/denoise.pdf")
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from shared.errors import ConfigError
from shared.io import atomic_write_bytes

__all__ = ["FIGURE_FORMATS", "DEFAULT_DPI", "Result", "save_figure", "figure_bytes"]

FIGURE_FORMATS = ("png", "pdf", "svg")
DEFAULT_DPI = 100
MAX_DPI = 1200  # a typo such as 30000 would allocate gigabytes before failing


def _check_format(fmt: str) -> str:
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ConfigError(f"`format` must be one of {set(FIGURE_FORMATS)}. Received: format={fmt!r}")
    return fmt


def _check_dpi(dpi: Any) -> int:
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or not 10 <= int(dpi) <= MAX_DPI:
        raise ConfigError(f"`dpi` must be an integer in [10, {MAX_DPI}]. Received: dpi={dpi!r}")
    return int(dpi)


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = DEFAULT_DPI) -> bytes:
    """``fig`` encoded as ``fmt`` (png, pdf or svg) at ``dpi``."""
    buf = io.BytesIO()
    fig.savefig(buf, format=_check_format(fmt), dpi=_check_dpi(dpi), bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, *, dpi: int = DEFAULT_DPI) -> Path:
    """Write ``fig`` atomically to ``path``; the suffix (.png, .pdf, .svg) chooses the format.

    Raises:
        ConfigError: another suffix, or ``dpi`` outside [10, 1200].
    """
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise ConfigError(f"`path` must end in one of {['.' + f for f in FIGURE_FORMATS]}. "
                          f"Received: path={str(path)!r}")
    return atomic_write_bytes(path, figure_bytes(fig, path.suffix, dpi))


@dataclass
class Result:
    """The outcome of one studio function (interpolate, denoise, inpaint, generate, sweep, ...).

    Attributes:
        name: what was made, e.g. ``"denoise"`` or ``"interpolation_lerp_sample"`` (the file stem).
        figure: the matplotlib ``Figure`` (``None`` only when a function has no figure).
        images: the images shown, numpy float32 in [0, 1] (shape documented by each function).
        table: the numbers, one row per measured case (``None`` when there are none).
        info: settings and scalar facts (seed, n_faces, ...), JSON-serialisable.
        paths: the files written (empty when nothing was saved).
        extra: further named figures/arrays a function returns (e.g. ``{"traversal": Result}``).
    """

    name: str
    figure: Optional[Figure]
    images: Optional[np.ndarray] = None
    table: Optional[pd.DataFrame] = None
    info: dict[str, Any] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path, *, dpi: int = DEFAULT_DPI) -> Path:
        """Write the figure to ``path`` (suffix .png, .pdf or .svg); returns ``path``."""
        if self.figure is None:
            raise ConfigError(f"{self.name}: this result has no figure to save")
        written = save_figure(self.figure, path, dpi=dpi)
        self.paths.append(written)
        return written

    def _repr_png_(self) -> Optional[bytes]:
        return None if self.figure is None else figure_bytes(self.figure, "png", DEFAULT_DPI)

    def __repr__(self) -> str:
        shape = None if self.images is None else tuple(self.images.shape)
        rows = None if self.table is None else len(self.table)
        return (f"Result(name={self.name!r}, images={shape}, table_rows={rows}, "
                f"paths={[str(p) for p in self.paths]})")
