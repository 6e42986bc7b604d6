"""What every ``facevae`` command module shares: output-folder checks, printing, flag helpers.

Used by :mod:`shared.cli` (data, train, sweep, evaluate, the parser and ``main``) and
:mod:`shared.cli_studio` (the figure, convert, explore and demo commands).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from shared.cli_options import HelpFormatter, bounded_int
from shared.cli_text import examples, result_lines
from shared.errors import ConfigError

__all__ = ["out_folder", "print_result", "given", "figure_options", "command", "figure_flags"]


def out_folder(path: str, flag: str = "--out") -> None:
    """Refuse an output folder that is, or sits under, a file before any work (data loading) is done.

    Raises:
        ConfigError: ``path`` or one of its parents exists and is not a folder.
    """
    p = Path(path).expanduser()
    for candidate in (p, *p.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                raise ConfigError(f"{flag} {path}: {candidate} exists and is not a folder; choose a folder path")
            return


def print_result(result: Any, *, table: bool = True) -> None:
    """Print a command's result: where it wrote its files (and its table, with ``table``)."""
    for line in result_lines(result, table=table):
        print(line)


def given(**options: Any) -> dict[str, Any]:
    """Only the options the user gave: functions keep their own defaults for the rest."""
    return {k: v for k, v in options.items() if v is not None}


def figure_options(a: argparse.Namespace) -> dict[str, Any]:
    """The figure flags (``--format``, ``--dpi``, ``--data``) the user gave, as keyword arguments."""
    return given(fmt=a.format, dpi=a.dpi, data=getattr(a, "data", None))


def command(sub: Any, name: str, text: str, *, key: Optional[str] = None, more: str = "") -> argparse.ArgumentParser:
    """A sub-command parser with ``text`` as its help and description and its examples as epilog."""
    return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + "." + more,
                          epilog=examples(key or name), formatter_class=HelpFormatter)


def figure_flags(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    """``--format`` and ``--dpi`` (and ``--data``: where the run's faces are now) on ``p``."""
    p.add_argument("--format", choices=("png", "pdf", "svg"), default=None, help="figure format (default: png)")
    p.add_argument("--dpi", type=bounded_int(10, 1200), default=None, metavar="N",
                   help="figure resolution, 10-1200 (default: 100)")
    if data:
        p.add_argument("--data", metavar="SPEC", default=None,
                       help="where the run's faces are now, when they moved (default: the run's own data spec)")
