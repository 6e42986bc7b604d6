"""Does the default VAE recipe learn? 3 epochs per backend × latent size × seed × likelihood, one table.

The check of tests/stability_check.py over a whole grid: per run the epoch-1 and epoch-3
validation loss, the largest epoch-mean training rate, test PSNR of reconstructions against the
mean training face, and the spread of 8 prior samples (≈ 0 when the decoder ignores z). Each run
leaves a row in ``--out``/rows/, so a grid can be split over processes and re-printed with
``--report``; a row already present is not retrained. Run folders go to ``--out`` (git-ignored).

    .venv/bin/python benchmarks/stability.py --data first600          # the first 600 real faces
    .venv/bin/python benchmarks/stability.py --data real --latent-dims 2,32,256 --seeds 0,1
    .venv/bin/python benchmarks/stability.py --data synthetic:600 --report
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REAL = REPO.parent / "shared" / "data" / "age_gender_part1.csv.gz"


def _spec(name: str, out: Path) -> str:
    """``real`` (all 8,818 faces), ``first600`` (a temporary CSV of the first 600 rows) or any SPEC."""
    if name == "real":
        return str(REAL)
    if name == "first600":
        path = out / "first600.csv"
        if not path.exists():
            out.mkdir(parents=True, exist_ok=True)
            with gzip.open(REAL, "rt") as src, open(path, "w") as dst:
                for i, line in zip(range(601), src):
                    dst.write(line)
        return str(path)
    return name


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="first600", help="real, first600 or a SPEC (default: first600)")
    p.add_argument("--backends", default="torch,tf")
    p.add_argument("--latent-dims", type=_ints, default=[2, 16, 64, 256])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2, 3, 4])
    p.add_argument("--likelihoods", default="bernoulli,gaussian", help="gaussian = learned-σ Gaussian")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "stability")
    p.add_argument("--report", action="store_true", help="print the table of the rows already in --out")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch's OpenMP collapses on shared cores
    logging.basicConfig(level=logging.WARNING)
    tag = Path(a.data).name.replace(":", "_")
    rows_dir = a.out / "rows" / tag
    if not a.report:
        from tests.stability_check import MAX_RATE, train_default

        spec = _spec(a.data, a.out)
        for backend in a.backends.split(","):
            for lik in a.likelihoods.split(","):
                for d in a.latent_dims:
                    for seed in a.seeds:
                        row_file = rows_dir / f"{backend}_{lik}_d{d}_s{seed}.json"
                        if row_file.exists():
                            continue
                        run = a.out / "runs" / tag / row_file.stem
                        shutil.rmtree(run, ignore_errors=True)
                        r = train_default(spec, run, backend, d, seed, lik)
                        v = [x["val_loss"] for x in r["records"]]
                        rate = max(x["train_rate"] for x in r["records"])
                        row = dict(backend=backend, likelihood=lik, d=d, seed=seed, val1=v[0], val3=v[-1],
                                   max_rate=rate, psnr=r["psnr"], mean_face_psnr=r["mean_face_psnr"],
                                   spread=r["sample_spread"],
                                   learned=bool(v[-1] < v[0] and rate <= MAX_RATE and r["psnr"] > r["mean_face_psnr"]
                                                and r["sample_spread"] > 0.05))
                        rows_dir.mkdir(parents=True, exist_ok=True)
                        row_file.write_text(json.dumps(row))
                        print(json.dumps(row), flush=True)
    rows = [json.loads(f.read_text()) for f in sorted(rows_dir.glob("*.json"))]
    print(f"\n{a.data}: {sum(r['learned'] for r in rows)} of {len(rows)} runs learned\n")
    print("| backend | likelihood | d | seeds | val loss ep 1 → ep 3 (worst seed: smallest fall) | max train rate "
          "| test PSNR, worst seed | mean face | learned |")
    print("|---|---|---:|---|---|---:|---:|---:|---|")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["backend"], r["likelihood"], r["d"]), []).append(r)
    for (backend, lik, d), g in sorted(groups.items()):
        worst = min(g, key=lambda r: r["val1"] - r["val3"])
        print(f"| {backend} | {lik} | {d} | {','.join(str(r['seed']) for r in sorted(g, key=lambda r: r['seed']))} | "
              f"{worst['val1']:.1f} → {worst['val3']:.1f} | {max(r['max_rate'] for r in g):.1f} | "
              f"{min(r['psnr'] for r in g):.2f} | {g[0]['mean_face_psnr']:.2f} | "
              f"{sum(r['learned'] for r in g)}/{len(g)} |")
    print("\nEvery run:\n")
    print("| backend | likelihood | d | seed | val loss ep 1 | val loss ep 3 | max train rate | test PSNR | mean face | learned |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sorted(rows, key=lambda r: (r["backend"], r["likelihood"], r["d"], r["seed"])):
        print(f"| {r['backend']} | {r['likelihood']} | {r['d']} | {r['seed']} | {r['val1']:.1f} | {r['val3']:.1f} | "
              f"{r['max_rate']:.1f} | {r['psnr']:.2f} | {r['mean_face_psnr']:.2f} | {'yes' if r['learned'] else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
