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
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from shared.errors import ConfigError
from shared.io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["FIGURE_FORMATS", "DEFAULT_DPI", "MAX_DPI", "Result", "OutputWriter", "save_figure", "figure_bytes",
           "check_figure_format", "check_dpi", "markdown_table"]

FIGURE_FORMATS = ("png", "pdf", "svg")
DEFAULT_DPI = 100
MAX_DPI = 1200  # a typo such as 30000 would allocate gigabytes before failing


def check_figure_format(fmt: str, name: str = "fmt") -> str:
    """``fmt`` lower-cased without a leading dot when it is png, pdf or svg; else :class:`ConfigError`."""
    value = str(fmt).lower().lstrip(".")
    if value not in FIGURE_FORMATS:
        raise ConfigError(f"`{name}` must be one of {list(FIGURE_FORMATS)}. Received: {name}={fmt!r}")
    return value


def check_dpi(dpi: Any) -> int:
    """``dpi`` as an int when it is an integer (not a bool) in [10, 1200]; else :class:`ConfigError`."""
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or not 10 <= int(dpi) <= MAX_DPI:
        raise ConfigError(f"`dpi` must be an integer in [10, {MAX_DPI}]. Received: dpi={dpi!r}")
    return int(dpi)


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = DEFAULT_DPI) -> bytes:
    """``fig`` encoded as ``fmt`` (png, pdf or svg) at ``dpi``."""
    buf = io.BytesIO()
    fig.savefig(buf, format=check_figure_format(fmt), dpi=check_dpi(dpi), bbox_inches="tight")
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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats with 4 significant digits, ``None``/NaN as ``–``."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
            return "–"
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@dataclass
class OutputWriter:
    """Writes a studio function's files into ``folder`` — or, with ``save=False``, nothing at all.

    Built before any work so a bad ``fmt``/``dpi`` is refused first; every write is atomic and
    recorded in :attr:`paths` (what the :class:`Result` reports).

    Raises:
        ConfigError: ``fmt`` not png/pdf/svg, ``dpi`` outside [10, 1200], or ``save`` not a bool.
    """

    folder: Path
    save: bool = True
    fmt: str = "png"
    dpi: int = DEFAULT_DPI
    paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.save, bool):
            raise ConfigError(f"`save` must be True or False. Received: save={self.save!r}")
        self.folder, self.fmt, self.dpi = Path(self.folder), check_figure_format(self.fmt), check_dpi(self.dpi)

    def _done(self, path: Path) -> Path:
        self.paths.append(path)
        return path

    def figure(self, fig: Optional[Figure], stem: str) -> Optional[Path]:
        """``fig`` as ``folder/stem.<fmt>`` (``stem`` may hold a sub-folder such as ``figures/x``)."""
        if not self.save or fig is None:
            return None
        return self._done(save_figure(fig, self.folder / f"{stem}.{self.fmt}", dpi=self.dpi))

    def json(self, name: str, obj: Any) -> Optional[Path]:
        return self._done(atomic_write_json(self.folder / name, obj)) if self.save else None

    def text(self, name: str, text: str) -> Optional[Path]:
        return self._done(atomic_write_text(self.folder / name, text)) if self.save else None

    def array(self, name: str, array: np.ndarray) -> Optional[Path]:
        """``array`` as a ``.npy`` file (float32 images stay float32)."""
        if not self.save:
            return None
        buf = io.BytesIO()
        np.save(buf, np.asarray(array))
        return self._done(atomic_write_bytes(self.folder / name, buf.getvalue()))
