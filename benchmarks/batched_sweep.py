"""``sweep --batched`` vs one by one: the training of every β of one latent size, timed and compared.

Both train the same members (same faces, split, seeds, hence the same initial weights, batches and
ε) through the real code: one by one with ``facevae.backend.train`` (one ``shared.training.fit``
per β), batched with ``facevae.ensemble.train_ensemble`` (one ensemble of grouped layers). Repetitions are
interleaved (one-by-one first in even repetitions, batched first in odd ones) so drifting machine
load hits both alike. Evaluation is left out: it is the same per run either way.

    .venv/bin/python benchmarks/batched_sweep.py [--n 2000] [--latent-dim 16] [--betas 0.01,0.1,0.5,1]
        [--epochs 3] [--reps 2] [--threads 1] [--image-size 48] [--device cpu] [--channels 8,16 --hidden 32]

Prints a markdown table (wall s, images/s over all members, speed-up, max |Δ| of the losses between
the two modes) and writes it with the raw numbers under ``benchmarks/results/batched/`` (git-ignored).
The thread count is set explicitly (``OMP_NUM_THREADS`` before torch is imported, and
``torch.set_num_threads``): the speed-up depends on it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "batched"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="synthetic faces (default 2000)")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--betas", default="0.01,0.1,0.5,1")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, set explicitly (default 1)")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--preset", default=None, help="model preset (default: the vae default)")
    p.add_argument("--channels", default=None, help="conv channels, e.g. 8,16 (default: the preset's)")
    p.add_argument("--hidden", default=None, help="hidden dense sizes, e.g. 32 (default: the preset's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    return p.parse_args()


def main() -> None:
    a = _args()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(a.threads)  # before torch is imported: its pool is sized once
    sys.path.insert(0, str(REPO))
    import torch

    from facevae import backend, ensemble
    from shared import api
    from shared.data.splits import make_split
    from shared.training import console

    torch.set_num_threads(a.threads)
    betas = [float(b) for b in a.betas.split(",")]
    shape = {"channels": tuple(int(c) for c in a.channels.split(",")) if a.channels else None,
             "hidden_dims": tuple(int(c) for c in a.hidden.split(",")) if a.hidden else None}
    configs = [api.build_config(backend="torch", model="vae", data=f"synthetic:{a.n}", image_size=a.image_size,
                                latent_dim=a.latent_dim, beta=b, epochs=a.epochs, device=a.device,
                                early_stopping=0, preset=a.preset, **shape) for b in betas]
    base = configs[0]
    faces = api.load_run_data(base)
    split = make_split(faces, val_fraction=base.data.val_fraction, test_fraction=base.data.test_fraction,
                       seed=base.data.split_seed)
    images = len(split.train) * a.epochs * len(betas)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)

    def one_by_one(folder: Path) -> float:
        t0 = time.perf_counter()
        for c, b in zip(configs, betas):
            backend.train(c, faces, split, folder / f"b{b:g}")
        return time.perf_counter() - t0

    def batched(folder: Path) -> float:
        t0 = time.perf_counter()
        outs = ensemble.train_ensemble(configs, faces, split, [folder / f"b{b:g}" for b in betas],
                                       resume=[False] * len(betas))
        wall = time.perf_counter() - t0
        failed = [o for o in outs if isinstance(o, BaseException)]
        if failed:
            raise failed[0]
        return wall

    walls: dict[str, list[float]] = {"one by one": [], "batched": []}
    with console(False):
        for rep in range(a.reps):
            order = [("one by one", one_by_one), ("batched", batched)]
            for mode, run in (order if rep % 2 == 0 else order[::-1]):
                folder = OUT / f"rep{rep}" / mode.replace(" ", "_")
                walls[mode].append(run(folder))
                print(f"rep {rep} {mode}: {walls[mode][-1]:.1f} s", flush=True)

    def losses(mode: str, b: float, key: str) -> list[float]:
        lines = (OUT / "rep0" / mode.replace(" ", "_") / f"b{b:g}" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)[key] for line in lines]

    delta = {key: max(abs(x - y) for b in betas
                       for x, y in zip(losses("one by one", b, key), losses("batched", b, key)))
             for key in ("train_loss", "val_loss")}
    scale = max(abs(v) for b in betas for v in losses("one by one", b, "val_loss"))
    one = statistics.median(walls["one by one"])
    rows = [f"| {mode} | {statistics.median(w):.1f} ({', '.join(f'{x:.1f}' for x in w)}) | "
            f"{images / statistics.median(w):.0f} | {one / statistics.median(w):.2f}x |" for mode, w in walls.items()]
    table = "\n".join([
        f"{len(betas)} members (β {a.betas}), latent {a.latent_dim}, channels {base.model.channels}, hidden "
        f"{base.model.hidden_dims}, {a.n} synthetic faces at {a.image_size}px "
        f"({len(split.train)} training), {a.epochs} epochs, {a.threads} thread(s), device {a.device}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}",
        "",
        "| mode | wall s, median (each rep) | images/s (all members) | speed-up |",
        "|---|---|---|---|",
        *rows,
        "",
        f"max |Δ| batched vs one by one over every epoch and member: train_loss {delta['train_loss']:.3g}, "
        f"val_loss {delta['val_loss']:.3g} (losses up to {scale:.4g} nats)",
    ])
    print(table)
    (OUT / "table.md").write_text(table + "\n", encoding="utf-8")
    (OUT / "raw.json").write_text(json.dumps({"args": vars(a), "walls": walls, "delta": delta}, indent=1),
                                  encoding="utf-8")
    print(f"wrote {OUT / 'table.md'}")


if __name__ == "__main__":
    main()
