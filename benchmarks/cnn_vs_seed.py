"""Side by side: the original ``seed`` CNNs against our ``default`` design, on one seeded split.

Trains ``seed`` (one model per task, the original recipe: 10 epochs, batch 50, Adam 5e-4/(1+epoch))
and ``default`` (one model per task; ``--multitask`` trains ONE shared-trunk model with three heads,
task ``all``, instead) on ``../shared/data/age_gender_part1.csv.gz``, then scores every model
on the TEST split (never seen in training or model selection) and prints a markdown table.

Each finished run leaves a row in ``--out``/rows/*.json, so runs can be split over processes
(``--presets seed`` in one, ``--presets default`` in another) and the table re-printed with
``--report``; a row already present is not retrained.

    .venv/bin/python benchmarks/cnn_vs_seed.py                       # everything (~1 h of 2 busy CPU cores)
    .venv/bin/python benchmarks/cnn_vs_seed.py --presets seed --tasks gender
    .venv/bin/python benchmarks/cnn_vs_seed.py --report
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "age_gender_part1.csv.gz"
TASKS = ("gender", "ethnicity", "age")


def _row_path(out: Path, preset: str, task: str) -> Path:
    return out / "rows" / f"{preset}_{task}.json"


def run_one(preset: str, task: str, faces, split, out: Path, args: argparse.Namespace) -> dict:
    """Train one model (unless its row exists), evaluate it on the test split, write its row."""
    import torch

    from facevae import cnn_backend
    from shared.api import build_config
    from shared.runs import atomic_write_json

    row_file = _row_path(out, preset, task)
    if row_file.exists() and not args.reevaluate:
        return json.loads(row_file.read_text())
    torch.set_num_threads(args.threads)
    overrides = {"epochs": args.epochs} if args.epochs else {}
    cfg = build_config(backend="torch", model="cnn", data=str(DATA), task=task, preset=preset,
                       seed=args.seed, split_seed=args.split_seed, device=args.device, **overrides)
    run_dir = out / "runs" / f"{preset}_{task}"
    if args.reevaluate and row_file.exists():  # score the saved best checkpoint again (code changed)
        old = json.loads(row_file.read_text())
        best, seconds = {"epoch": old["best_epoch"]}, old["train_seconds"]
    else:
        if run_dir.exists():
            import shutil
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        cfg.save(run_dir / "config.json")
        split.save(run_dir / "split.json")
        t0 = time.perf_counter()
        best = cnn_backend.train(cfg, faces, split, run_dir)
        seconds = time.perf_counter() - t0
    clf = cnn_backend.load(run_dir)
    test = faces.subset(split.test)
    metrics = cnn_backend.evaluate(clf, test, iwae_k=0, out_dir=run_dir)
    row = {"preset": preset, "task": task, "train_seconds": seconds, "epochs": cfg.train.epochs,
           "best_epoch": best.get("epoch"), "parameters": metrics["parameters"], "n_test": len(test),
           "device": str(clf.device), "threads": args.threads,
           **{t: {k: metrics[t][k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "mae", "rmse")
                  if k in metrics[t]} for t in clf.tasks}}
    atomic_write_json(row_file, row)
    return row


def table(out: Path) -> str:
    """The markdown table of every row in ``out``/rows."""
    rows = [json.loads(p.read_text()) for p in sorted((out / "rows").glob("*.json"))]
    lines = ["| task | preset (trained as) | test accuracy / MAE | balanced accuracy | macro-F1 | "
             "train time | parameters |", "|---|---|---|---|---|---|---|"]
    order = {"seed": 0, "default": 1}
    for task in TASKS:
        for r in sorted(rows, key=lambda r: order.get(r["preset"], 2)):
            if task not in r:
                continue
            m = r[task]
            trained = r["task"] if r["task"] != "all" else "all (3 heads)"
            if task == "age":
                main, bal, f1 = f"MAE {m['mae']:.2f} y (RMSE {m['rmse']:.2f})", "–", "–"
            else:
                main, bal, f1 = (f"{100 * m['accuracy']:.1f} %", f"{100 * m['balanced_accuracy']:.1f} %",
                                 f"{100 * m['macro_f1']:.1f} %")
            lines.append(f"| {task} | {r['preset']} ({trained}) | {main} | {bal} | {f1} | "
                         f"{r['train_seconds'] / 60:.1f} min ({r['epochs']} ep, {r['device']}) | "
                         f"{r['parameters']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cnn_vs_seed")
    p.add_argument("--presets", default="seed,default")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--multitask", action="store_true", help="train one default model for task 'all'")
    p.add_argument("--epochs", type=int, default=None, help="override both recipes' epochs (quick look only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy box)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--report", action="store_true", help="only print the table of finished rows")
    p.add_argument("--reevaluate", action="store_true", help="re-score finished runs from their checkpoints")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if not args.report:
        if not DATA.is_file():
            print(f"skipped: {DATA} not found (the real UTKFace data lives beside the checkout)")
            return 0
        from shared.data import load
        from shared.data.splits import make_split

        faces = load(str(DATA), image_size=48)
        split = make_split(faces, val_fraction=0.1, test_fraction=0.1, seed=args.split_seed)
        logging.info("split: %s", split.summary())
        tasks = [t for t in args.tasks.split(",") if t]
        for preset in [p for p in args.presets.split(",") if p]:
            runs = ["all"] if (preset == "default" and args.multitask) else tasks
            for task in runs:
                row = run_one(preset, task, faces, split, args.out, args)
                logging.info("finished %s/%s in %.1f min", preset, task, row["train_seconds"] / 60)
    print(f"Test split of {DATA.name} (split seed {args.split_seed}); rows in {args.out / 'rows'}\n")
    print(table(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
