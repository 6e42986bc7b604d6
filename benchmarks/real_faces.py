"""Every generative claim on REAL faces, against strong classical baselines (issue 10).

Loads ``../shared/data/age_gender_part1.csv.gz``, makes the SAME seeded split a default run makes
(the default :class:`~shared.config.DataConfig`: val/test fractions 0.1, split seed 0, 48 × 48) and
prints one markdown table per section; scores are on the TEST faces, every tuned parameter is
chosen on the VALIDATION faces (never the test faces):

* reconstruction — mean face of the training split; PCA at d ∈ {8, 16, 32, 128}; each ``--vae``
  run (PSNR/SSIM of ``reconstruct``, rate from ``eval.json`` / :func:`shared.api.evaluate`) with
  PCA at the run's latent size beside it.
* denoising at σ ∈ {0.1, 0.2, 0.3, 0.5} (noise clipped to [0, 1] as ``shared.studio``): noisy
  input, mean 3×3, median 3×3, gaussian (σ tuned), PCA projection (d tuned), TV (weight tuned),
  non-local means (h tuned); each ``--vae`` run.
* inpainting, box (rows 5–20, cols 5–40) and random (50 %) masks: masked-region PSNR of mean
  fill, PCA iterative projection (d tuned), biharmonic; each ``--vae`` run's decode / iterate /
  optimize / hybrid (as ``facevae inpaint``).

Tables go to ``benchmarks/results/real_faces/tables.md`` and ``results.json``, a figure per section
(a few test faces × methods) to ``benchmarks/results/real_faces/figures/`` — git-ignored: figures of
real faces must never be committed. ::

    .venv/bin/python benchmarks/real_faces.py                                # baselines, all sections
    .venv/bin/python benchmarks/real_faces.py --quick                        # a smoke run (~1 min)
    .venv/bin/python benchmarks/real_faces.py --sections denoising --n-test 256
    .venv/bin/python benchmarks/real_faces.py --vae runs/vae16 --vae runs/vae32   # trained VAE rows
    .venv/bin/python benchmarks/real_faces.py --train-vae 16 --train-vae 32 --epochs 40   # train, then score

``--vae RUN_DIR`` takes any generative run (torch or tf, vae/cvae/iaf) trained on this CSV with
the default split (checked: a run on another split is refused, its test faces could be our
training faces). ``--train-vae D`` trains a default ``vae`` of latent size D into
``benchmarks/results/real_faces/runs/vaeD`` (skipped when that run exists) and adds it as ``--vae``;
``--train-vae D:BETA`` sets β too (folder ``vaeD_bBETA``): the rate–distortion sweep is
``--train-vae 8:0.01 --train-vae 8:0.1 --train-vae 8:1 ... --train-vae 128:1``.

* sampling (with ``--classifier RUN_DIR``, a cnn run on this split): Fréchet distance of
  ``--n-samples`` prior samples to the test faces in the CNN's features, beside the training faces
  (the floor) and PCA samples; an 8 × 8 sample grid and a 9 × 9 encoded interpolation matrix per run.
* agreement (asked for by name): the ``--vae`` runs that share a config but not the backend, PSNR
  and −ELBO side by side.

VAE rows of reconstruction and denoising come twice: from the encoder's mean and after
``--refine-steps`` MAP steps on z (:func:`shared.inference.refine`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "age_gender_part1.csv.gz"
RESULTS = REPO / "benchmarks" / "results" / "real_faces"

log = logging.getLogger("real_faces")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from benchmarks.real_faces_sections import SECTIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATA), help="faces (a SPEC); default: the real CSV")
    p.add_argument("--image-size", type=int, default=None, help="default: DataConfig's (48)")
    p.add_argument("--sections", default=None,
                   help=f"comma list of {', '.join(SECTIONS)} (default: all but agreement; sampling only with --classifier)")
    p.add_argument("--n-test", type=int, default=None, help="score the first N test faces (default: all)")
    p.add_argument("--n-val", type=int, default=200, help="validation faces used for tuning")
    p.add_argument("--quick", action="store_true", help="64 test / 32 validation faces, small grids")
    p.add_argument("--sigmas", default="0.1,0.2,0.3,0.5")
    p.add_argument("--vae", action="append", default=[], metavar="RUN_DIR", help="a trained generative run")
    p.add_argument("--train-vae", action="append", type=_latent_beta, default=[], metavar="D[:BETA]",
                   help="train a default vae of latent size D (unless present) and score it")
    p.add_argument("--backend", default="torch", help="backend of --train-vae runs")
    p.add_argument("--epochs", type=int, default=None, help="epochs of --train-vae runs (default: the preset's)")
    p.add_argument("--iwae-k", type=int, default=64, help="for shared.api.evaluate when a run has no eval.json")
    p.add_argument("--iterations", type=int, default=50, help="VAE inpainting: iterate rounds")
    p.add_argument("--steps", type=int, default=200, help="VAE inpainting: optimize steps")
    p.add_argument("--classifier", default=None, metavar="RUN_DIR",
                   help="a cnn run on this split: its features score the sampling section (Fréchet distance)")
    p.add_argument("--n-samples", type=int, default=1000, help="prior samples per source in the sampling section")
    p.add_argument("--refine-steps", type=int, default=50,
                   help="MAP steps on z after the encoder for the 'refine' VAE rows (0: none)")
    p.add_argument("--input-noise", type=float, default=None,
                   help="--train-vae runs: TrainConfig.input_noise (a denoising VAE; folder suffix _nS)")
    p.add_argument("--seed", type=int, default=0, help="seeds noise and random masks")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.sections is None:
        args.sections = ",".join(s for s in SECTIONS if (s != "sampling" or args.classifier) and s != "agreement")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if "sampling" in args.sections and not args.classifier:
        p.error("--sections sampling needs --classifier RUN_DIR (a cnn run on the same split)")
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown --sections {unknown}; choose from {list(SECTIONS)}")
    args.sigmas = tuple(float(s) for s in args.sigmas.split(","))
    if args.quick:
        args.n_test, args.n_val = min(args.n_test or 64, 64), min(args.n_val, 32)
    return args


def _latent_beta(text: str) -> tuple[int, float | None]:
    """``"32"`` -> (32, None) (the preset's β); ``"32:0.1"`` -> (32, 0.1)."""
    d, _, beta = text.partition(":")
    try:
        return int(d), (float(beta) if beta else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected D or D:BETA (e.g. 32 or 32:0.1), got {text!r}") from None


def load_split(data: str, image_size: int | None = None):
    """``(faces, split, data_config)``: the faces of ``data`` and the split a default run on them makes
    (as :func:`shared.api.train`: ``load(spec, image_size)`` then ``make_split`` with the DataConfig's
    fractions and seed)."""
    from shared.config import DataConfig
    from shared.data import load
    from shared.data.splits import make_split

    cfg = DataConfig(spec=str(data)) if image_size is None else DataConfig(spec=str(data), image_size=image_size)
    faces = load(cfg.spec, image_size=cfg.image_size)
    split = make_split(faces, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.split_seed)
    return faces, split, cfg


def train_vae(latent_beta: tuple[int, float | None], args: argparse.Namespace, cfg) -> Path:
    """A default ``vae`` of latent size and β ``latent_beta`` trained on the benchmark's data and split
    (kept when present); run folder ``vaeD`` (the preset's β) or ``vaeD_bBETA``."""
    from shared import api
    from shared.runs import has_any_checkpoint

    latent_dim, beta = latent_beta
    name = f"vae{latent_dim}" + ("" if beta is None else f"_b{beta:g}") + (
        f"_n{args.input_noise:g}" if args.input_noise else "")
    run_dir = args.out / "runs" / (name if args.backend == "torch" else f"{name}_{args.backend}")
    if run_dir.exists() and has_any_checkpoint(run_dir):
        log.info("%s exists: not retrained", run_dir)
        return run_dir
    config = api.build_config(backend=args.backend, model="vae", data=cfg.spec, image_size=cfg.image_size,
                              latent_dim=latent_dim, beta=beta, epochs=args.epochs, input_noise=args.input_noise)
    api.train(config, run_dir)
    return run_dir


def open_vae(run_dir: Path, split, faces, cfg, args: argparse.Namespace, n_test: int):
    """A :class:`VaeRun` for ``run_dir``, after checking it was trained on this benchmark's split.

    Raises:
        RunError: another split or image size, or not a generative run.
    """
    import numpy as np

    from benchmarks.real_faces_sections import VaeRun
    from shared import api
    from shared.data.splits import Split
    from shared.errors import RunError
    from shared.runs import EVAL, SPLIT, read_metrics
    from shared.studio import labels_for, open_run

    run_dir, config, model = open_run(run_dir)
    if config.data.image_size != cfg.image_size:
        raise RunError(f"{run_dir}: trained on {config.data.image_size}px faces, the benchmark uses {cfg.image_size}px")
    theirs = Split.load(run_dir / SPLIT, faces)  # refuses a run on other faces (fingerprint)
    if not (np.array_equal(theirs.test, split.test) and np.array_equal(theirs.train, split.train)):
        raise RunError(f"{run_dir}: its split differs from the default split of {cfg.spec} (split_seed/fractions); "
                       f"its training faces could be our test faces")
    eval_file = run_dir / EVAL
    saved = json.loads(eval_file.read_text()) if eval_file.is_file() else {}
    if not (saved.get("n_faces") == len(split.test) and "rate" in saved):
        # evaluate on the run's whole test split (writes eval.json, as `facevae evaluate` would)
        saved = api.evaluate(run_dir, iwae_k=args.iwae_k, seed=args.seed)
    test_faces = faces.subset(split.test[:n_test])
    records = read_metrics(run_dir)
    return VaeRun(name=run_dir.name, model=model, backend=config.backend, latent_dim=config.model.latent_dim,
                  rate=float(saved["rate"]), labels_test=labels_for(model, test_faces), beta=config.model.beta,
                  neg_elbo=float(saved["neg_elbo"]), config=config,
                  likelihood=config.model.likelihood + ("-learned" if config.model.likelihood == "gaussian"
                                                         and config.model.sigma_mode == "learned" else ""),
                  epochs=len(records), train_s=sum(float(r.get("seconds", 0.0)) for r in records))


def _classifier(run_dir: Path, split, faces):
    """The cnn of ``run_dir``, refused unless it was trained on this benchmark's split (its test faces are ours)."""
    import numpy as np

    from shared import api
    from shared.data.splits import Split
    from shared.errors import RunError
    from shared.runs import SPLIT

    theirs = Split.load(run_dir / SPLIT, faces)
    if not np.array_equal(theirs.test, split.test):
        raise RunError(f"{run_dir}: the classifier's split differs from the benchmark's; it may have seen test faces")
    model = api.load_model(run_dir)
    if not hasattr(model, "features"):
        raise RunError(f"{run_dir}: not a cnn run (no features)")
    return model


def main(argv: list[str] | None = None) -> int:
    import matplotlib.pyplot as plt

    from benchmarks.real_faces_sections import FULL_GRIDS, QUICK_GRIDS, SECTIONS, Bench
    from shared.baselines import PCA
    from shared.results import save_figure

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    t0 = time.perf_counter()
    faces, split, cfg = load_split(args.data, args.image_size)
    n_test = len(split.test) if args.n_test is None else min(args.n_test, len(split.test))
    log.info("%s: %s; scoring %d test faces, tuning on %d validation faces", cfg.spec, split.summary(), n_test,
             min(args.n_val, len(split.val)))
    run_dirs = [Path(v) for v in args.vae] + [train_vae(d, args, cfg) for d in args.train_vae]
    vaes = [open_vae(r, split, faces, cfg, args, n_test) for r in run_dirs]
    train = faces.subset(split.train).floats()
    bench_grids = QUICK_GRIDS if args.quick else FULL_GRIDS
    d_max = max([*bench_grids.pca_dims, *bench_grids.inpaint_pca_dims, 128] + [v.latent_dim for v in vaes])
    t = time.perf_counter()
    pca = PCA().fit(train, min(d_max, len(train), train.shape[1] * train.shape[2]))
    log.info("PCA: %d components of %d training faces in %.1f s", pca.n_components, len(train), time.perf_counter() - t)
    bench = Bench(train=train, val=faces.subset(split.val[:args.n_val]).floats(),
                  test=faces.subset(split.test[:n_test]).floats(), pca=pca, vaes=vaes, sigmas=args.sigmas,
                  grids=bench_grids, seed=args.seed, iterations=args.iterations,
                  steps=args.steps, refine_steps=args.refine_steps,
                  classifier=None if args.classifier is None else _classifier(Path(args.classifier), split, faces),
                  n_samples=args.n_samples, figures=args.out / "figures")

    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    header = (f"# Real faces vs classical baselines\n\n{cfg.spec}: {split.summary()}.\n"
              f"{len(bench.test)} test faces scored; parameters tuned on {len(bench.val)} validation faces; "
              f"seed {args.seed}.\n")
    print(header)
    report, results = [header], {"data": cfg.spec, "n_test": len(bench.test), "n_val": len(bench.val),
                                 "seed": args.seed, "vae": [str(r) for r in run_dirs], "sections": {}}
    for name in args.sections:
        t = time.perf_counter()
        md, rows, fig = SECTIONS[name](bench)
        path = save_figure(fig, args.out / "figures" / f"{name}.png")
        seconds = time.perf_counter() - t
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        block = f"## {name.capitalize()}\n\n{md}\n({seconds:.0f} s; figure: {shown})\n"
        print(block, flush=True)
        report.append(block)
        results["sections"][name] = {"rows": rows, "seconds": seconds}
        plt.close(fig)
    (args.out / "tables.md").write_text("\n".join(report))
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=_jsonable))
    log.info("done in %.0f s: %s", time.perf_counter() - t0, args.out / "tables.md")
    return 0


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
