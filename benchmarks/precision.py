"""Mixed-precision benchmark: float32 vs bfloat16 training (``TrainConfig.precision``) on both backends.

Trains the default VAE (48x48, latent 32, the ``default`` preset's layers and recipe) a few epochs
in each precision on each backend, from the same seed, then evaluates each run on its test split
in float32. Reports the training loop's images/s (median of the epochs after the first, which pays
for tracing and warm-up) and the test reconstruction PSNR; the question is whether bf16 is faster
on this machine and whether its PSNR stays within 0.2 dB of float32.

    .venv/bin/python benchmarks/precision.py [--data synthetic:4000 | ../shared/data/age_gender_part1.csv.gz]
        [--epochs 3] [--backends torch,tf] [--precisions 32,bf16] [--device cpu]

Leave OMP_NUM_THREADS unset (the frameworks then use every core). Runs, ``results.json`` and
``table.md`` go to ``benchmarks/results/precision/<data>/`` (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared import api  # noqa: E402
from shared.config import DataConfig, ModelConfig, RunConfig, default_train_config  # noqa: E402
from shared.runs import read_metrics  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "precision"
PSNR_BUDGET_DB = 0.2  # the target: bf16 within 0.2 dB of float32


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = set(re.findall(r"\b(avx512_bf16|amx_bf16|avx512_fp16|amx_tile)\b", text))
    return ",".join(sorted(flags)) or "none of avx512_bf16/amx_bf16"


def _versions(backends: list[str]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    if "torch" in backends:
        import torch
        out["torch"] = torch.__version__
    if "tf" in backends:
        import tensorflow as tf
        out["tensorflow"] = tf.__version__
    return out


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def run_one(backend: str, precision: str, args: argparse.Namespace, root: Path) -> dict:
    """Train and evaluate one (backend, precision) run; returns its row."""
    model = ModelConfig(family="vae", preset="default", image_size=48, latent_dim=32)
    train = default_train_config("vae", "default", epochs=args.epochs, early_stopping=0, seed=args.seed,
                                 device=args.device, precision=precision)
    config = RunConfig(backend=backend, model=model, train=train, data=DataConfig(spec=args.data, image_size=48))
    out = root / f"{backend}_{precision}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    api.train(config, out, verbose=False)
    wall = time.perf_counter() - t0
    metrics = read_metrics(out)
    rates = [r["images_per_s"] for r in metrics]
    steady = rates[1:] or rates
    evaluation = api.evaluate(out, iwae_k=1, seed=args.seed)
    return {"backend": backend, "precision": precision, "epochs": len(metrics),
            "images_per_s": statistics.median(steady), "images_per_s_epochs": rates, "train_wall_s": wall,
            "val_loss": metrics[-1]["val_loss"], "test_psnr": evaluation["psnr"],
            "mean_face_psnr": evaluation.get("mean_face_psnr"), "test_neg_elbo": evaluation["neg_elbo"]}


def table(rows: list[dict]) -> str:
    """Markdown table: one row per run, with bf16's speed-up and PSNR change against float32."""
    base = {r["backend"]: r for r in rows if r["precision"] == "32"}
    lines = ["| backend | precision | images/s | speed-up | val loss | test PSNR (dB) | ΔPSNR (dB) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = base.get(r["backend"])
        speed = f"{r['images_per_s'] / ref['images_per_s']:.2f}x" if ref else "-"
        delta = f"{r['test_psnr'] - ref['test_psnr']:+.2f}" if ref else "-"
        lines.append(f"| {r['backend']} | {r['precision']} | {r['images_per_s']:.0f} | {speed} | "
                     f"{r['val_loss']:.1f} | {r['test_psnr']:.2f} | {delta} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic:4000", help="faces SPEC (default: synthetic:4000)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backends", default="torch,tf")
    p.add_argument("--precisions", default="32,bf16")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    backends, precisions = args.backends.split(","), args.precisions.split(",")
    root = RESULTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(args.data).name)
    root.mkdir(parents=True, exist_ok=True)

    info = {"data": args.data, "epochs": args.epochs, "device": args.device, "cpu_flags": _cpu_flags(),
            "cores": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
            "load_before": _load(), **_versions(backends)}
    rows = []
    for backend in backends:
        for precision in precisions:
            row = run_one(backend, precision, args, root)
            print(f"{backend} {precision}: {row['images_per_s']:.0f} images/s, test PSNR {row['test_psnr']:.2f} dB",
                  flush=True)
            rows.append(row)
    info["load_after"] = _load()
    text = table(rows)
    base = {r["backend"]: r for r in rows if r["precision"] == "32"}
    verdicts = []
    for r in rows:
        ref = base.get(r["backend"])
        if r["precision"] == "32" or ref is None:
            continue
        faster = r["images_per_s"] > ref["images_per_s"]
        close = abs(r["test_psnr"] - ref["test_psnr"]) <= PSNR_BUDGET_DB
        verdicts.append(f"{r['backend']} {r['precision']}: {'faster' if faster else 'slower'} than float32, "
                        f"PSNR {'within' if close else 'NOT within'} {PSNR_BUDGET_DB} dB of float32")
    header = ", ".join(f"{k}={v}" for k, v in info.items())
    report = f"{header}\n\n{text}\n\n" + "\n".join(verdicts) + "\n"
    print("\n" + report)
    (root / "table.md").write_text(report, encoding="utf-8")
    (root / "results.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
