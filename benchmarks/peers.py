"""Our trainer against pythae's, side by side: images/s on the same architecture, data, batch and steps.

Both sides train the default ``vae`` (``default`` preset, 48×48, latent 32) from the same initial
weights on the same synthetic faces for the same number of optimiser steps. Ours is
:func:`shared.training.fit` over a :class:`facevae.engine.TorchEngine` with the ``vae``/``default``
recipe (Adam, lr 2e-3, cosine schedule, float32, channels_last on CPU); pythae's is its
``BaseTrainer`` with our networks wrapped as its encoder and decoder (:mod:`benchmarks.peers_pythae`),
run in its own virtualenv with the same torch build. Every run is a fresh subprocess with the same
thread count; variants are interleaved (the order reverses every repetition) so load drifts hit all
alike, and each variant's ratio to pythae is the median of the per-repetition ratios.

Variants of our side are ``+``-joined tokens applied to the default engine (``default``: none):

* ``nchw``: contiguous (NCHW) weights and data instead of channels_last;
* ``bf16``: ``TrainConfig.precision='bf16'`` (bfloat16 autocast);
* ``fused`` / ``foreach`` / ``loop``: Adam with ``fused=True`` / ``foreach=True`` / neither (torch's CPU
  default, a loop over the tensors; ``loop`` keeps that baseline whatever the engine picks);
* ``compile``: ``TrainConfig.compile`` (``torch.compile`` of the loss; compiled in the warm-up epoch);
* ``bN``: batch size N instead of ``--batch`` (same faces per epoch);
* ``bare``: :func:`benchmarks.train_speed.bare_loop`, forward/backward/step only (a reference);
* ``pythae``: pythae's trainer (the baseline of the ratios).

    .venv/bin/python benchmarks/peers.py --setup          # create/reuse .venv-pythae (beside .venv)
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/peers.py --reps 3 --steps 32 --batch 32 \
        --variants default,pythae,bf16,fused,bf16+fused

On a loaded machine, set the thread count and wait policy explicitly and report the load: with more
runnable threads than cores, OpenMP's default spin-waiting made 2-thread runs 5-15x slower than
1-thread runs here (on both sides), while ``OMP_WAIT_POLICY=PASSIVE`` kept them near 1-thread speed.
``images/CPU-s`` (process CPU time) is the steadier figure under load; both are reported.

Images/s are those of the training passes alone (each side's epoch loop: batches, steps, its own
metric bookkeeping), the median of the epochs after ``--warmup``; end to end (validation,
checkpoints, pythae's deep copies and final save) is reported apart. Prints a markdown table and
writes ``benchmarks/results/peers/peers.json`` (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

__all__ = ["parse_variant", "run_rate", "summarize", "markdown", "setup_venv", "main", "VENV", "RESULTS",
           "BASELINE", "PYTHAE_VERSION"]

RESULTS = REPO / "benchmarks" / "results" / "peers"
VENV = REPO / ".venv-pythae"  # beside .venv: ignored, and out of the way of tools that scan the tree
BASELINE = "pythae"
PYTHAE_VERSION = "0.1.2"
_FLAGS = ("nchw", "bf16", "fused", "foreach", "loop", "compile", "bare", "pythae")
_ADAM = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False, "fused": False}}


def parse_variant(spec: str) -> dict[str, Any]:
    """``'bf16+fused+b64'`` -> ``{'name': ..., 'flags': {'bf16', 'fused'}, 'batch': 64}`` (batch None: ``--batch``).

    Raises:
        ValueError: an unknown token, an empty spec, ``bare``/``pythae`` combined with other tokens, or
            two Adam kinds.
    """
    name = spec.strip()
    tokens = [t for t in name.split("+") if t] if name != "default" else []
    if not name:
        raise ValueError("empty variant; write 'default' for our trainer as it is")
    flags: set[str] = set()
    batch: Optional[int] = None
    for tok in tokens:
        if tok[0] == "b" and tok[1:].isdigit() and int(tok[1:]) > 0:
            batch = int(tok[1:])
        elif tok in _FLAGS:
            flags.add(tok)
        else:
            raise ValueError(f"unknown variant token {tok!r} in {name!r}; tokens: {', '.join(_FLAGS)}, bN "
                             f"(batch N), or 'default'")
    if flags & {"bare", "pythae"} and len(tokens) > 1 + (batch is not None):
        raise ValueError(f"'bare' and 'pythae' take no other token than bN. Received: {name!r}")
    if len(flags & set(_ADAM)) > 1:
        raise ValueError(f"at most one of {', '.join(_ADAM)} (the Adam kind). Received: {name!r}")
    return {"name": name, "flags": flags, "batch": batch}


def run_rate(run: dict[str, Any], warmup: int, key: str = "images_per_s") -> Optional[float]:
    """One run's rate ``key`` (``images_per_s`` or ``images_per_cpu_s``): the median of its epochs after
    the first ``warmup`` (None: the run failed or has no such epoch)."""
    timed = [r for r in (run.get(key) or [])[warmup:] if r is not None]
    return statistics.median(timed) if run.get("ok") and timed else None


def summarize(runs: Sequence[dict[str, Any]], warmup: int, key: str = "images_per_s", baseline: str = BASELINE,
              reference: str = "default") -> list[dict[str, Any]]:
    """One row per variant (first-seen order) with the median rate and paired ratios.

    Args:
        runs: run records holding ``variant``, ``rep``, ``ok`` and ``key`` (a list, one value per epoch).
        warmup: epochs of each run left out.
        key: the rate compared: ``images_per_s`` (wall clock) or ``images_per_cpu_s`` (process CPU time).
        baseline, reference: variants the ratios divide by (pythae; our default).

    Returns:
        Dicts with ``variant``, ``rate`` (median over repetitions), ``min``, ``max``, ``reps``
        (timed runs), ``failed``, ``vs_baseline`` and ``vs_reference``: the median over repetitions of
        the variant's rate divided by that repetition's baseline/reference rate (None where unpaired).
    """
    by: dict[str, dict[int, float]] = {}
    failed: dict[str, list[str]] = {}
    for run in runs:
        rate = run_rate(run, warmup, key)
        by.setdefault(run["variant"], {})
        if rate is None:
            failed.setdefault(run["variant"], []).append(str(run.get("error", f"no timed {key}")))
        else:
            by[run["variant"]][run["rep"]] = rate

    def paired(rates: dict[int, float], other: str) -> Optional[float]:
        base = by.get(other, {})
        ratios = [r / base[rep] for rep, r in rates.items() if rep in base]
        return statistics.median(ratios) if ratios else None

    rows = []
    for variant, rates in by.items():
        values = list(rates.values())
        rows.append({"variant": variant, "rate": statistics.median(values) if values else None,
                     "min": min(values, default=None), "max": max(values, default=None), "reps": len(values),
                     "failed": failed.get(variant, []), "vs_baseline": paired(rates, baseline),
                     "vs_reference": paired(rates, reference)})
    return rows


def _num(value: Optional[float], fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(wall: Sequence[dict[str, Any]], cpu: Sequence[dict[str, Any]] = (), header: str = "",
             baseline: str = BASELINE, reference: str = "default") -> str:
    """A markdown table of :func:`summarize` rows (wall clock, and process CPU time when given) under ``header``."""
    by_cpu = {r["variant"]: r for r in cpu}
    lines = [header, ""] if header else []
    lines += [f"| variant | images/s (median) | min–max | runs | × {baseline} | × {reference} | images/CPU-s "
              f"| × {baseline} (CPU) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in wall:
        c = by_cpu.get(r["variant"], {})
        spread = "–" if r["min"] is None else f"{r['min']:,.0f}–{r['max']:,.0f}"
        runs = f"{r['reps']}" + (f" (+{len(r['failed'])} failed: {r['failed'][0][:80]})" if r["failed"] else "")
        lines.append(f"| {r['variant']} | {_num(r['rate'], ',.0f')} | {spread} | {runs} | "
                     f"{_num(r['vs_baseline'], '.2f')} | {_num(r['vs_reference'], '.2f')} | "
                     f"{_num(c.get('rate'), ',.0f')} | {_num(c.get('vs_baseline'), '.2f')} |")
    return "\n".join(lines)


# -- the peers virtualenv --------------------------------------------------------------------------
def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup_venv(venv: Path = VENV, pip_args: Sequence[str] = ()) -> Path:
    """Create (or reuse) ``venv`` with our torch version pinned, ``pythae`` and numpy; returns its python.

    torch is pinned to the exact version of this interpreter's torch (a ``+cpu`` build here), so
    pip pulls no CUDA build and both sides run the same kernels.

    Raises:
        RuntimeError: venv creation or pip failed (pip's last lines included).
    """
    from importlib.metadata import version
    torch_pin = f"torch=={version('torch')}"
    py = _venv_python(venv)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(py), "-c", "import torch, pythae; print(torch.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode == 0 and probe.stdout.strip() == version("torch"):
        return py
    cmd = [str(py), "-m", "pip", "install", "-q", torch_pin, f"pythae=={PYTHAE_VERSION}", "numpy", *pip_args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return py


# -- workers -------------------------------------------------------------------------------------
def _ours(spec: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """Our side in this process: the default engine with ``spec``'s changes, through the shared loop."""
    import numpy as np
    import torch

    from benchmarks.train_speed import bare_loop
    from facevae.backend import build_vae
    from facevae.engine import TorchEngine
    from shared import training
    from shared.config import DataConfig, ModelConfig, RunConfig, default_train_config
    from shared.runs import read_metrics

    if a.threads:
        torch.set_num_threads(a.threads)
    flags = spec["flags"]
    faces = np.load(a.faces)
    val, train = faces[:a.n_val], faces[a.n_val:]
    size = faces.shape[-1]
    # batch_size given explicitly: the recipe's min_steps_per_epoch would otherwise shrink it on few faces
    train_cfg = default_train_config("vae", "default", epochs=a.epochs, batch_size=spec["batch"] or a.batch,
                                     device="cpu", seed=0, precision="bf16" if "bf16" in flags else "32",
                                     compile="compile" in flags)
    config = RunConfig(model=ModelConfig(family="vae", preset="default", image_size=size, latent_dim=a.latent_dim),
                       data=DataConfig(image_size=size), train=train_cfg)
    if "bare" in flags:
        rates = bare_loop(config, train)
        return {"ok": True, "images_per_s": rates, "threads": torch.get_num_threads()}
    model = build_vae(config.model, train_cfg.seed)
    epochs: list[tuple[int, float, float]] = []
    inner = training._train_epoch  # the pass metrics.jsonl times; wrapped to add its process CPU time

    def timed_epoch(*args: Any, **kwargs: Any) -> int:
        wall, cpu = time.perf_counter(), time.process_time()
        seen = inner(*args, **kwargs)
        epochs.append((seen, time.perf_counter() - wall, time.process_time() - cpu))
        return seen

    training._train_epoch = timed_epoch
    with tempfile.TemporaryDirectory() as run_dir:
        engine = TorchEngine(model, {"images": train}, {"images": val}, config, Path(run_dir))
        if "nchw" in flags:
            engine.model.to(memory_format=torch.contiguous_format)
            for data in (engine.train_t, engine.val_t):
                data["images"] = data["images"].contiguous()
        for kind in flags & set(_ADAM):  # at most one (parse_variant); the recipe's optimizer is Adam
            params = [p for p in engine.model.parameters() if p.requires_grad]
            engine.optimizer = torch.optim.Adam(params, lr=train_cfg.lr, eps=1e-8,
                                                weight_decay=train_cfg.weight_decay, **_ADAM[kind])
        t0 = time.perf_counter()
        training.fit(engine, config, Path(run_dir))
        wall = time.perf_counter() - t0
        records = read_metrics(Path(run_dir))
    return {"ok": True, "images_per_s": [n / w for n, w, _ in epochs],
            "images_per_cpu_s": [n / c if c > 0 else None for n, _, c in epochs],
            "train_loss": [r["train_loss"] for r in records], "end_to_end_images_per_s": len(train) * a.epochs / wall,
            "threads": torch.get_num_threads(), "versions": {"torch": torch.__version__}}


def _worker(a: argparse.Namespace) -> int:
    try:
        out = _ours(parse_variant(a.worker), a)
    except Exception as exc:  # a variant that cannot run here (e.g. no compiler) is reported, not fatal
        out = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
    Path(a.result).write_text(json.dumps(out, indent=2))
    return 0


def _run_one(variant: str, rep: int, a: argparse.Namespace, faces: Path, tmp: Path, python: Path) -> dict[str, Any]:
    spec = parse_variant(variant)
    result = tmp / f"{rep}-{variant}.json"
    batch = spec["batch"] or a.batch
    common = ["--faces", str(faces), "--result", str(result), "--epochs", str(a.epochs), "--n-val", str(a.n_val),
              "--threads", str(a.threads)]
    if "pythae" in spec["flags"]:
        cmd = [str(python), str(REPO / "benchmarks" / "peers_pythae.py"), *common, "--batch", str(batch),
               "--lr", str(a.lr)]
    else:
        cmd = [sys.executable, __file__, "--worker", variant, *common, "--batch", str(a.batch)]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads)) if a.threads else dict(os.environ)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
        tail = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1][:300]
        error = f"exited {proc.returncode}: {tail}"
    except subprocess.TimeoutExpired:
        error = f"ran past --timeout {a.timeout:g} s"
    run = json.loads(result.read_text()) if result.exists() else {"ok": False, "error": error}
    run.update(variant=variant, rep=rep, wall_s=time.perf_counter() - t0, load_before=load_before,
               load_after=os.getloadavg()[0])
    return run


def _header(a: argparse.Namespace, runs: Sequence[dict[str, Any]], load: Sequence[float]) -> str:
    from benchmarks.frameworks import machine
    m = machine()
    vers = {k: v for r in runs for k, v in r.get("versions", {}).items()}
    return (f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, "
            + ", ".join(f"{k} {v}" for k, v in sorted(vers.items()))
            + f". OMP/intra-op threads {a.threads or 'default'}, OMP_WAIT_POLICY "
              f"{os.environ.get('OMP_WAIT_POLICY') or 'unset'}. Load average (1 min) {load[0]:.1f} at start, "
              f"{load[1]:.1f} at end. vae default 48×48, latent 32; batch {a.batch}, {a.steps} steps × "
              f"{a.epochs} epochs per run ({a.warmup} warm-up), {a.reps} interleaved repetitions.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", action="store_true",
                   help=f"create (or check) the peers venv at {VENV.relative_to(REPO)}, then exit")
    p.add_argument("--pip-args", default="", help="extra pip install arguments for --setup (e.g. an index URL)")
    p.add_argument("--variants", default="default,pythae", help="comma list (see the module docstring)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--steps", type=int, default=32, help="optimiser steps per epoch (faces = steps x batch)")
    p.add_argument("--batch", type=int, default=32, help="batch size (32: the vae default recipe)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="epochs of each run left out of its rate")
    p.add_argument("--n-val", type=int, default=64, help="validation faces")
    p.add_argument("--lr", type=float, default=2e-3, help="pythae's learning rate (ours follows the recipe)")
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
    p.add_argument("--timeout", type=float, default=600, help="seconds per run")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--faces", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return _worker(a)
    for name in ("reps", "steps", "batch", "epochs"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer. Received: {getattr(a, name)}")
    if a.warmup >= a.epochs:
        p.error(f"--warmup must be below --epochs ({a.epochs}) so an epoch is timed. Received: {a.warmup}")
    try:
        variants = [parse_variant(v)["name"] for v in a.variants.split(",") if v.strip()]
    except ValueError as exc:
        p.error(str(exc))
    if a.setup:
        print(f"peers venv ready: {setup_venv(VENV, a.pip_args.split())}", file=sys.stderr)
        return 0
    python = _venv_python(VENV)
    if BASELINE in variants and not python.exists():
        p.error(f"no peers venv at {VENV}: run with --setup first")
    from benchmarks.train_speed import _faces
    from shared.io import atomic_write_json, atomic_write_text

    runs: list[dict[str, Any]] = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        faces = tmp / "faces.npy"
        import numpy as np
        np.save(faces, _faces(a.n_val + a.steps * a.batch, 48))
        for rep in range(a.reps):
            for variant in variants if rep % 2 == 0 else variants[::-1]:
                run = _run_one(variant, rep, a, faces, tmp, python)
                rate = run_rate(run, a.warmup)
                print(f"rep {rep} {variant}: {_num(rate, ',.0f')} images/s (load {run['load_before']:.1f}→"
                      f"{run['load_after']:.1f}){'' if run.get('ok') else ' FAILED ' + run.get('error', '')}",
                      file=sys.stderr, flush=True)
                runs.append(run)
    rows, cpu_rows = summarize(runs, a.warmup), summarize(runs, a.warmup, "images_per_cpu_s")
    header = _header(a, runs, (load0, os.getloadavg()[0]))
    table = markdown(rows, cpu_rows, header)
    out = Path(a.out)
    report = {"settings": {k: getattr(a, k) for k in ("variants", "reps", "steps", "batch", "epochs", "warmup",
                                                      "n_val", "lr", "threads")},
              "header": header, "rows": rows, "cpu_rows": cpu_rows, "runs": runs,
              "command": " ".join(["benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)])}
    atomic_write_json(out / "peers.json", report)
    atomic_write_text(out / "peers.md", table + "\n")
    print(table)
    print(f"\nresults written to {out / 'peers.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
