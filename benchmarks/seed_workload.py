"""The original work's workload, end to end and timed: its three CNNs and four VAEs on the real CSV.

The original work (two notebooks, over an hour) trained three ``seed`` CNNs (gender, ethnicity, age)
and ``seed`` VAEs (β = 1, Bernoulli decoder); the original work swept the latent size; we time
d ∈ {4,16,64,256}. Every model uses the ``seed`` preset and recipe (10 epochs, batch 50, Adam 5e-4
with the ``seed`` schedule lr/(1+epoch)). Everything goes through the public API a user calls
(``shared.api.build_config`` / ``train`` / ``evaluate`` and ``shared.studio``), so the times are what
a user gets. Phases, in seconds:

- ``load (cold)``: the first load, parse cache empty (``FACEVAE_CACHE`` points at a fresh folder for
  the whole run, so the user's own cache is neither used nor touched); ``load (warm)``: the second
  load (cache hit); ``split``: the stratified split. These are the data column. ``train`` repeats a
  warm load and the split for each model (``shared.api.train`` does them itself).
- per model: ``train`` (``shared.api.train``), ``evaluate`` (``shared.api.evaluate`` on the test
  split: accuracy or MAE for the CNNs, −ELBO and PSNR for the VAEs; IWAE with ``--iwae-k``
  samples, 1 by default: the original work reported no IWAE) and ``figures`` (VAEs: the
  interpolation matrix, denoising and inpainting figures of ``shared.studio`` on ``--figure-n``
  test faces; CNNs: the figures ``evaluate`` writes, timed inside ``evaluate``).

``--scale 0.1`` trains a tenth of each recipe's epochs (at least one). The script runs unchanged on a
GPU (``--device cuda``, with ``--precision`` and ``--compile`` passed to the training config) and
prints the device name in its header. It prints one markdown table (phase × model, plus totals in
wall seconds and in CPU seconds of this process: on a shared machine the CPU seconds are the better
guide) and writes ``benchmarks/results/seed_workload/seed_workload.json`` after every model (an
interrupted run keeps what it measured; ``complete`` says whether it finished). The run folders go
to ``--out``; the selected models' folders are replaced on each run. A ``seed`` VAE at 48 px has
~80 M parameters (two ~1 GB checkpoints per run folder): at ``--scale 0.1`` on one CPU thread a
CNN costs ~45 CPU s and a VAE ~280 (2026-12, Xeon), about 21 CPU minutes for the seven.

    .venv/bin/python benchmarks/seed_workload.py --scale 0.1                 # CPU: a tenth of the epochs
    .venv/bin/python benchmarks/seed_workload.py --device cuda --precision bf16 --compile
    .venv/bin/python benchmarks/seed_workload.py --models cnn:gender,vae:16 --scale 0.1
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cnn_vs_seed import DATA, TASKS  # noqa: E402
from shared.errors import ConfigError, FaceVAEError  # noqa: E402
from shared.io import atomic_write_json  # noqa: E402

__all__ = ["Model", "ALL_MODELS", "VAE_LATENTS", "PHASES", "parse_models", "scaled_epochs", "time_data",
           "run_model", "table", "Clock", "main"]


VAE_LATENTS = (4, 16, 64, 256)
PHASES = ("load (cold)", "load (warm)", "split", "train", "evaluate", "figures")
DATA_PHASES = PHASES[:3]
RESULTS = REPO / "benchmarks" / "results" / "seed_workload"


@dataclass(frozen=True)
class Model:
    """One model of the workload: a ``cnn`` with its task or a ``vae`` with its latent size."""

    kind: str
    task: str = ""
    latent_dim: int = 0

    @property
    def name(self) -> str:
        """``cnn:gender`` / ``vae:16``, as ``--models`` spells it."""
        return f"cnn:{self.task}" if self.kind == "cnn" else f"vae:{self.latent_dim}"

    @property
    def folder(self) -> str:
        """The run folder's name under ``--out``."""
        return f"cnn_{self.task}" if self.kind == "cnn" else f"vae_d{self.latent_dim}"


ALL_MODELS = tuple([Model("cnn", task=t) for t in TASKS] + [Model("vae", latent_dim=d) for d in VAE_LATENTS])


def parse_models(text: str) -> list[Model]:
    """The models named in ``text`` (``cnn:gender,vae:16``; ``all``), in workload order.

    Raises:
        ConfigError: an unknown name or an empty list.
    """
    known = {m.name: m for m in ALL_MODELS}
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if names == ["all"]:
        return list(ALL_MODELS)
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"`models` must be 'all' or a comma-separated list of {list(known)}. "
                          f"Received: models={text!r}")
    return [m for m in ALL_MODELS if m.name in names]


def scaled_epochs(recipe_epochs: int, scale: float) -> int:
    """``scale`` × the recipe's epochs, rounded, at least 1."""
    return max(1, int(round(recipe_epochs * scale)))


@contextlib.contextmanager
def fresh_cache(root: Path | None = None) -> Iterator[Path]:
    """Point ``FACEVAE_CACHE`` at an empty folder for the duration (so the first load is cold)."""
    old = os.environ.get("FACEVAE_CACHE")
    with tempfile.TemporaryDirectory(prefix="facevae-cache-", dir=root) as tmp:
        os.environ["FACEVAE_CACHE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("FACEVAE_CACHE", None)
            else:
                os.environ["FACEVAE_CACHE"] = old


class Clock:
    """Wall and process-CPU seconds (all threads) of consecutive phases.

    On a machine shared with other jobs the CPU seconds are the better guide to the unloaded wall time.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        """Close ``phase``: the time since the previous lap (or the clock's start)."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.seconds[phase], self.cpu_seconds[phase] = wall - self._wall, cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def time_data(spec: str, image_size: int, val_fraction: float = 0.1, test_fraction: float = 0.1,
              split_seed: int = 0) -> dict[str, Any]:
    """Seconds of a cold load, a warm load and the split of ``spec`` (call inside :func:`fresh_cache`).

    Returns:
        ``{"seconds": {phase: s}, "cpu_seconds": {phase: s}, "n_faces", "cache_hit_cold", "cache_hit_warm",
        "split"}``.
    """
    from shared.data import load_with_report
    from shared.data.splits import make_split

    clock = Clock()
    faces, cold = load_with_report(spec, image_size)
    clock.lap("load (cold)")
    _, warm = load_with_report(spec, image_size)
    clock.lap("load (warm)")
    split = make_split(faces, val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed)
    clock.lap("split")
    return {"seconds": clock.seconds, "cpu_seconds": clock.cpu_seconds, "n_faces": len(faces),
            "cache_hit_cold": cold["cache_hit"], "cache_hit_warm": warm["cache_hit"], "split": split.summary()}


def _config(model: Model, args: argparse.Namespace):
    from shared.api import build_config
    from shared.config import default_train_config

    family = model.kind
    epochs = scaled_epochs(default_train_config(family, "seed").epochs, args.scale)
    extra = dict(task=model.task) if family == "cnn" else dict(latent_dim=model.latent_dim, beta=1.0,
                                                               likelihood="bernoulli")
    shape = dict(channels=args.channels, hidden_dims=args.hidden_dims)  # None: the preset's
    return build_config(backend="torch", model=family, data=args.data, image_size=args.image_size, preset="seed",
                        epochs=epochs, **shape, seed=args.seed, split_seed=args.split_seed, device=args.device,
                        precision=args.precision, compile=args.compile, **extra)


def _metrics(model: Model, result: dict[str, Any]) -> dict[str, float]:
    """The headline test metrics of an ``evaluate`` result."""
    if model.kind == "vae":
        return {"neg_elbo": float(result["neg_elbo"]), "psnr": float(result["psnr"])}
    m = result[model.task]
    return {"mae": float(m["mae"])} if model.task == "age" else {"accuracy": float(m["accuracy"])}


def _figures(run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The VAE figures of the original work via ``shared.studio``; returns the files written."""
    from shared import studio

    paths: list[Any] = []
    paths += studio.interpolate(run_dir, grid=args.grid, seed=args.seed).paths
    paths += studio.denoise(run_dir, n=args.figure_n, seed=args.seed).paths
    paths += studio.inpaint(run_dir, n=args.figure_n, seed=args.seed).paths
    return [str(p) for p in paths]


def run_model(model: Model, args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate and draw one model into ``args.out``/``model.folder``; seconds per phase.

    Returns:
        ``{"model", "run_dir", "epochs", "seconds": {phase: s or None}, "cpu_seconds", "metrics",
        "figures"}`` (``figures`` seconds are ``None`` for CNNs: ``evaluate`` draws theirs).
    """
    from shared import api

    run_dir = Path(args.out) / model.folder
    cfg = _config(model, args)
    clock = Clock()
    api.train(cfg, run_dir, verbose=args.verbose)
    clock.lap("train")
    result = api.evaluate(run_dir, iwae_k=args.iwae_k, seed=args.seed)
    clock.lap("evaluate")
    if model.kind == "vae":
        figures = _figures(run_dir, args)
        clock.lap("figures")
    else:
        figures = list(result.get("figures", []))
        clock.seconds["figures"] = clock.cpu_seconds["figures"] = None  # type: ignore[assignment]
    return {"model": model.name, "run_dir": str(run_dir), "epochs": cfg.train.epochs, "seconds": clock.seconds,
            "cpu_seconds": clock.cpu_seconds, "metrics": _metrics(model, result), "figures": figures}


def _cell(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _metric_cell(metrics: dict[str, float]) -> str:
    if "accuracy" in metrics:
        return f"acc {100 * metrics['accuracy']:.1f} %"
    if "mae" in metrics:
        return f"MAE {metrics['mae']:.2f} y"
    return f"−ELBO {metrics['neg_elbo']:.0f}, {metrics['psnr']:.1f} dB"


def table(report: dict[str, Any]) -> str:
    """The markdown table of a report: phases × (data, each model, all), seconds; totals; test metrics."""
    data, rows = report["data"]["seconds"], report["models"]
    header = ["phase (s)", "data"] + [r["model"] for r in rows] + ["all"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for phase in PHASES:
        cells = [data.get(phase)] + [r["seconds"].get(phase) for r in rows]
        shown = [_cell(c) for c in cells]
        if phase == "figures":  # a CNN's figures are drawn by evaluate
            shown[1:] = ["in evaluate" if c is None else s for c, s in zip(cells[1:], shown[1:])]
        lines.append(f"| {phase} | " + " | ".join(shown) + f" | {_cell(sum(c for c in cells if c))} |")
    totals = [sum(data.values())] + [sum(v for v in r["seconds"].values() if v) for r in rows]
    lines.append("| **total** | " + " | ".join(f"**{_cell(t)}**" for t in totals) + f" | **{_cell(sum(totals))}** |")
    cpu = [sum(report["data"]["cpu_seconds"].values())] + [sum(v for v in r["cpu_seconds"].values() if v)
                                                          for r in rows]
    lines.append("| total, CPU s of this process | " + " | ".join(_cell(t) for t in cpu) + f" | {_cell(sum(cpu))} |")
    lines.append("| test metric | – | " + " | ".join(_metric_cell(r["metrics"]) for r in rows) + " | – |")
    return "\n".join(lines)


def _device_line(device: str, threads: int) -> str:
    """The device the runs train on, by name (``torch.cuda.get_device_name`` on a GPU)."""
    import torch

    from facevae.engine import select_device

    dev = select_device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {cpu}, {os.cpu_count()} cores, {threads} torch threads (torch {torch.__version__})"


def _load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _refresh(out: Path, models: list[Model]) -> None:
    """Delete the selected models' run folders in ``out`` (only those: ``out`` may hold other things)."""
    for m in models:
        if (out / m.folder).exists():
            shutil.rmtree(out / m.folder)
    out.mkdir(parents=True, exist_ok=True)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="SPEC (default: the real CSV beside the checkout)")
    p.add_argument("--models", default="all", help="e.g. cnn:gender,vae:16 (default: all seven)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of each recipe's epochs (at least 1 epoch)")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="32", choices=("32", "bf16", "16"))
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--iwae-k", type=int, default=1, help="IWAE samples in evaluate (1: the cheapest)")
    p.add_argument("--figure-n", type=int, default=32, help="test faces of the denoise/inpaint figures")
    p.add_argument("--grid", type=int, default=9, help="side of the interpolation matrix")
    p.add_argument("--channels", type=_ints, default=None, help="override the presets' conv widths (tests only)")
    p.add_argument("--hidden-dims", type=_ints, default=None, help="override the presets' dense widths (tests only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "runs", help="run folders (replaced on each run)")
    p.add_argument("--json", type=Path, default=RESULTS / "seed_workload.json", help="where the report goes")
    p.add_argument("--verbose", action="store_true", help="epoch lines and progress bars while training")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the workload; prints the header and the table, writes the JSON report. Returns the exit code."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.data == str(DATA) and not DATA.is_file():
        print(f"skipped: {DATA} not found (the real UTKFace data lives beside the checkout)")
        return 0
    try:
        if not 0 < args.scale <= 10:
            raise ConfigError(f"`scale` must be a number in (0, 10]. Received: scale={args.scale}")
        models = parse_models(args.models)
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        device_line = _device_line(args.device, torch.get_num_threads())
        from shared.config import default_train_config
        epochs = sorted({scaled_epochs(default_train_config(m.kind, "seed").epochs, args.scale) for m in models})
        print(f"# seed workload: {len(models)} models, scale {args.scale:g} ({'/'.join(map(str, epochs))} "
              f"epochs each), data {args.data}, {args.image_size}px")
        print(f"device {device_line}; precision {args.precision}, compile {args.compile}; "
              f"load average before {_load_average()}\n")
        _refresh(args.out, models)
        start = time.perf_counter()
        report: dict[str, Any] = {
            "device": device_line, "scale": args.scale, "image_size": args.image_size, "precision": args.precision,
            "compile": args.compile, "iwae_k": args.iwae_k, "figure_n": args.figure_n,
            "load_average_before": _load_average(), "complete": False, "models": []}
        with fresh_cache():
            report["data"] = {"spec": args.data, **time_data(args.data, args.image_size, split_seed=args.split_seed)}
            for m in models:
                report["models"].append(run_model(m, args))
                _save(report, args.json, time.perf_counter() - start)  # an interrupted run keeps what it measured
                done = ", ".join(f"{k} {_cell(v)} s" for k, v in report["models"][-1]["seconds"].items()
                                 if v is not None)
                print(f"finished {m.name}: {done}", file=sys.stderr, flush=True)
    except FaceVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["complete"] = True
    _save(report, args.json, time.perf_counter() - start)
    print(report["table"])
    print(f"\n{report['data']['n_faces']} faces ({report['data']['split']}); `train` includes each model's own "
          f"warm load and split. Wall {report['wall_seconds']:.1f} s; load average after "
          f"{report['load_average_after']}. Runs in {args.out}, report in {args.json}")
    return 0


def _save(report: dict[str, Any], path: Path, wall: float) -> None:
    report.update(wall_seconds=wall, load_average_after=_load_average())
    report["table"] = table(report)
    atomic_write_json(path, report)


if __name__ == "__main__":
    raise SystemExit(main())
