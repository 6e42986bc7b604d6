"""What the ``facevae`` CLI prints: examples for ``--help``, ``--version``, result and evaluation summaries.

Every example pastes and runs as written (in order: later ones use the runs earlier ones write);
timings are rough, on 2 CPU cores, and given where a command takes more than 30 s.
"""
from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

__all__ = ["EXAMPLES", "examples", "version_text", "evaluate_summary", "result_lines", "one_line",
           "os_error_text"]

# command -> example lines; "data" is the group, "data inspect" / "data convert" its commands
EXAMPLES: dict[str, tuple[str, ...]] = {
    "facevae": (
        "facevae demo --quick --out demo_quick          # the whole job on tiny settings; ~1 min on 2 CPU cores",
        "facevae train --data synthetic:1000 --image-size 32 --epochs 3 --out runs/vae",
        "facevae evaluate runs/vae",
        "facevae train --help                           # every flag of a command, with its default",
    ),
    "data": (
        "facevae data inspect synthetic:200",
        "facevae data convert synthetic:200 faces.csv.gz",
    ),
    "data inspect": (
        "facevae data inspect synthetic:200",
        "facevae data convert synthetic:200 faces.csv.gz && facevae data inspect faces.csv.gz --image-size 32",
    ),
    "data convert": (
        "facevae data convert synthetic:200 faces.csv.gz",
        "facevae data convert faces.csv.gz faces32.parquet --image-size 32",
    ),
    "train": (
        "facevae train --data synthetic:1000 --image-size 32 --epochs 3 --out runs/vae",
        "facevae train --out runs/vae --resume --epochs 5          # 2 more epochs on the same run",
        "facevae train --config runs/vae/config.json --latent-dim 8 --epochs 3 --out runs/vae8",
        "facevae train --model cnn --task all --data synthetic:1000 --image-size 32 --epochs 2 --out runs/cnn",
        "python -m facevae_tf train --model cvae --data synthetic:1000 --image-size 32 --epochs 3 --out runs/cvae"
        "   # ~40 s on 2 CPU cores",
    ),
    "sweep": (
        "facevae sweep --data synthetic:1000 --image-size 32 --epochs 2 --latent-dims 4,16 --betas 0.1,1 "
        "--out runs/sweep   # ~1 min on 2 CPU cores",
        "facevae sweep --config runs/vae/config.json --epochs 2 --latent-dims 2,8 --betas 1 --format pdf "
        "--out runs/sweep2   # ~40 s on 2 CPU cores",
        "facevae sweep --data synthetic:1000 --latent-dims 4,16,64 --betas 0.1,1 --jobs 4 --out runs/sweep3"
        "   # 4 processes",
        "facevae sweep --data synthetic:1000 --latent-dims 4,16,64 --betas 0.1,1 --shard $SLURM_ARRAY_TASK_ID/6 "
        "--out runs/sweep4   # one task of an array job",
        "facevae sweep --report --out runs/sweep4   # the table and figures, once every shard has finished",
    ),
    "evaluate": (
        "facevae evaluate runs/vae",
        "facevae evaluate runs/vae --data synthetic:300 --iwae-k 16      # other faces: eval_synthetic_300.json",
        "facevae evaluate runs/vae --json > eval_vae.json",
    ),
    "interpolate": (
        "facevae interpolate runs/vae",
        "facevae interpolate runs/vae --grid 5 --slerp --corners encode --format pdf --dpi 300",
    ),
    "denoise": (
        "facevae denoise runs/vae",
        "facevae denoise runs/vae --sigmas 0.1,0.3 --n 64 --format svg",
    ),
    "inpaint": (
        "facevae inpaint runs/vae",
        "facevae inpaint runs/vae --mask random --method optimize --steps 100 --n 32",
    ),
    "generate": (
        "facevae generate runs/cvae --gender 1 --ethnicity 2 --age 30 --n 8",
        "facevae generate runs/cvae --grid --edit 4 --format pdf",
    ),
    "convert": (
        "facevae convert runs/vae runs/vae_tf            # to the other backend",
        "facevae convert runs/vae_tf --to torch runs/vae_back",
    ),
    "explore": (
        "facevae explore runs/vae                       # prints the URL to open; Ctrl-C stops it",
        "facevae explore runs/cvae --port 8765          # a fixed port, to keep the page's address",
    ),
    "demo": (
        "facevae demo --quick --out demo_quick           # ~1 min on 2 CPU cores",
        "facevae demo --out demo_out                     # ~2 min on 2 CPU cores",
    ),
}


def examples(command: str, width: int = 100) -> str:
    """The ``Examples:`` epilog of ``command`` (a key of :data:`EXAMPLES`); a long line's comment goes above it."""
    lines = ["Examples:"]
    for line in EXAMPLES[command]:
        code, _, comment = line.partition("  #")
        if comment and len(line) > width:
            lines += [f"  # {comment.strip()}", f"  {code.rstrip()}"]
        else:
            lines.append(f"  {line}")
    return "\n".join(lines)


def version_text() -> str:
    """``facevae <version>`` and, per backend, its frameworks' versions (read from metadata, not imported)."""
    import importlib.metadata

    from shared.registry import installed_versions

    try:
        own = importlib.metadata.version("facevae")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        from shared import __version__ as own
        own += " (not installed: pip install -e .)"
    lines = [f"facevae {own} (Python {platform.python_version()})"]
    for backend, packages in installed_versions().items():
        missing = [dist for dist, version in packages.items() if version is None]
        found = ", ".join(f"{dist} {version}" for dist, version in packages.items() if version is not None)
        state = found if not missing else (f"not available, missing {', '.join(missing)}: "
                                           f"pip install 'facevae[{backend}]'")
        lines.append(f"backend {backend + ':':6} {state}")
    return "\n".join(lines)


# headline metrics first, in this order; every other scalar follows (a summary has at most _MAX_ROWS rows)
_HEADLINE = ("n_faces", "neg_elbo", "neg_iwae", "rate", "distortion", "psnr", "mean_face_psnr", "ssim",
             "frechet_distance", "accuracy", "balanced_accuracy", "macro_f1", "mae", "rmse")
_SKIP = {"by_group", "per_class", "confusion_matrix", "confusion_matrix_normalized", "class_names", "figures",
         "warnings", "written_to", "run_dir", "data", "n"}
_MAX_ROWS = 18


def _value(v: Any) -> Optional[str]:
    if isinstance(v, bool) or v is None:
        return None if v is None else str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, str):
        return v if len(v) <= 40 else v[:37] + "..."
    return None  # lists and nested tables stay in the JSON


def _scalars(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, text)`` of every scalar, one level of nesting flattened as ``task.metric``."""
    rows: list[tuple[str, str]] = []
    for key, value in result.items():
        if key in _SKIP:
            continue
        if isinstance(value, Mapping):
            rows += [(f"{key}.{k}", t) for k, v in value.items() if k not in _SKIP and (t := _value(v)) is not None]
        elif (text := _value(value)) is not None:
            rows.append((key, text))
    rank = {name: i for i, name in enumerate(_HEADLINE)}
    groups = {name.partition(".")[0]: i for i, (name, _) in reversed(list(enumerate(rows)))}

    def order(row: tuple[str, str]) -> tuple[int, int, int]:
        group, dot, metric = row[0].rpartition(".")
        if dot:  # one task's (or one table's) metrics together, headline metrics first
            return 1, groups[group], rank.get(metric, len(rank))
        return (0, rank[metric], 0) if metric in rank else (2, 0, 0)  # then the run's facts, in file order

    return sorted(rows, key=order)


def evaluate_summary(result: Mapping[str, Any], path: Path | str) -> str:
    """A short table of ``evaluate``'s result (headline metrics, warnings) and where the full JSON is."""
    rows = _scalars(result)
    width = max((len(name) for name, _ in rows[:_MAX_ROWS]), default=0)
    lines = [f"evaluated {result.get('run_dir', '')} on {result.get('data', '?')}"]
    lines += [f"  {name:<{width}}  {text}" for name, text in rows[:_MAX_ROWS]]
    if len(rows) > _MAX_ROWS:
        lines.append(f"  ... {len(rows) - _MAX_ROWS} more values in the JSON")
    lines += [f"warning: {w}" for w in result.get("warnings", [])[:3]]
    lines.append(f"wrote: {path}   (per-group metrics and everything else; --json prints it)")
    return "\n".join(lines)


def _table_text(table: Any) -> str:
    try:
        return table.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    except TypeError:  # not a pandas DataFrame
        return str(table)


def result_lines(result: Any, *, table: bool = True) -> Iterable[str]:
    """The lines a studio command prints for a :class:`~shared.results.Result`: its table, then ``wrote: PATH``.

    A plain path (a function that returns where it wrote) prints as one ``wrote:`` line.
    """
    if isinstance(result, (str, Path)):
        yield f"wrote: {result}"
        return
    tbl = getattr(result, "table", None)
    if table and tbl is not None and len(tbl):
        yield _table_text(tbl)
    paths = [str(p) for p in getattr(result, "paths", ())]
    for extra in getattr(result, "extra", {}).values():  # e.g. the traversal figure of interpolate
        paths += [str(p) for p in getattr(extra, "paths", ())]
    yield from (f"wrote: {p}" for p in dict.fromkeys(paths))


def os_error_text(exc: OSError) -> str:
    """An :class:`OSError` as ``PATH: reason`` (``SRC -> DEST: reason`` for a rename), or the reason alone."""
    what = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{' -> '.join(paths)}: {what}" if paths else what


def one_line(text: str) -> str:
    """The message on one printable line: control characters and stray bytes from data are escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text.replace("\n", " "))
