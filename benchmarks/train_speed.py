"""Trainer overhead benchmark: images/s of ``facevae.engine.fit`` vs a bare loop.

Both train the same VAE (same initial weights), on the same in-memory tensors, with the same
optimizer and the same batch order (``torch.randperm`` from a generator seeded alike). The bare loop
does nothing but forward, backward and step; the trainer adds its progress bar, on-device metric
sums, the NaN watch and, once per epoch, validation and two checkpoints.

    .venv/bin/python benchmarks/train_speed.py [--preset default] [--n 4096] [--epochs 3] [--rounds 2]

Prints images/s of both and the overhead (target: trainer overhead <= 10 %). "loop" is the trainer's
training loop alone (its ``images_per_s`` in metrics.jsonl); "end to end" adds validation and
checkpointing (validation set: ``--n-val`` faces).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from facevae.backend import build_vae  # noqa: E402
from facevae.engine import fit, make_optimizer, select_device, to_tensors  # noqa: E402
from shared.config import ModelConfig, RunConfig, TrainConfig, DataConfig  # noqa: E402
from shared.runs import read_metrics  # noqa: E402


def _faces(n: int, size: int) -> np.ndarray:
    try:
        from shared.synthetic import generate_faces
        return generate_faces(n, size, seed=0).images
    except ImportError:
        return np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)


def bare_loop(config: RunConfig, images: np.ndarray) -> list[float]:
    """images/s per epoch of the plainest loop over the trainer's batches."""
    cfg = config.train
    device = select_device(cfg.device)
    model = build_vae(config.model, cfg.seed).to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    data = to_tensors({"images": images}, device)["images"]
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    n, bs = len(data), cfg.batch_size
    n_batches = n // bs + (1 if n % bs > 1 else 0)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" \
        else contextlib.nullcontext
    model.train()
    rates = []
    for _ in range(cfg.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(device)
        for b in range(n_batches):
            batch = {"images": data[perm[b * bs:(b + 1) * bs]]}
            with autocast():
                loss = model.loss_terms(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n_batches * bs / (time.perf_counter() - t0))
    return rates


def trainer_run(config: RunConfig, images: np.ndarray, val: np.ndarray) -> tuple[list[float], float]:
    """(images/s per epoch of the trainer's loop, end-to-end images/s including validation + checkpoints)."""
    model = build_vae(config.model, config.train.seed)
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        fit(model, {"images": images}, {"images": val}, config, Path(run_dir))
        wall = time.perf_counter() - t0
        rates = [r["images_per_s"] for r in read_metrics(Path(run_dir))]
    return rates, len(images) * config.train.epochs / wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("default", "seed"), default="default")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--n", type=int, default=4096, help="training faces")
    p.add_argument("--n-val", type=int, default=256, help="validation faces (end-to-end figure)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternating bare/trainer rounds")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model_cfg = ModelConfig(preset=a.preset, image_size=a.image_size, latent_dim=a.latent_dim)
    config = RunConfig(model=model_cfg, data=DataConfig(image_size=a.image_size),
                       train=TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=1e-3, early_stopping=0,
                                         device=a.device, compile=a.compile, seed=0))
    faces = _faces(a.n + a.n_val, a.image_size)
    train, val = faces[:a.n], faces[a.n:]
    bare, loop, e2e = [], [], []
    for _ in range(a.rounds):
        bare += bare_loop(config, train)[1:]  # first epoch of each run is warm-up
        rates, end_to_end = trainer_run(config, train, val)
        loop += rates[1:]
        e2e.append(end_to_end)
    b, t = statistics.median(bare), statistics.median(loop)
    device = select_device(a.device)
    print(f"device {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"preset {a.preset}, {a.image_size}x{a.image_size}, latent {a.latent_dim}, batch {a.batch_size}, "
          f"{a.n} faces, {a.epochs} epochs x {a.rounds} rounds, torch {torch.__version__}")
    print("| run | images/s (median epoch) | overhead vs bare |")
    print("|---|---:|---:|")
    print(f"| bare loop | {b:,.0f} | - |")
    print(f"| trainer (training loop) | {t:,.0f} | {100 * (b - t) / b:+.1f} % |")
    e = statistics.median(e2e)
    print(f"| trainer (end to end, val {a.n_val} + checkpoints, incl. warm-up epoch) | {e:,.0f} | "
          f"{100 * (b - e) / b:+.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
