"""The sampling and backend-agreement sections of ``benchmarks/real_faces.py`` (issue 10, items 4 and 6).

Agreement: every pair of ``--vae`` runs whose configs are the same but for the backend, with its test
PSNR (``reconstruct``) and −ELBO (``eval.json``, the run's whole test split) side by side; goal 0.3 dB
and 1 %.

Sampling:

Fréchet distance (FD) between features of ``n`` prior samples and the test faces, in the penultimate
layer of a CNN run (``--classifier RUN_DIR``; the benchmark's default is a ``default`` gender CNN
trained on the same split's training faces). Beside each ``--vae`` run:

* the floor: ``n`` training faces against the test faces (what a perfect sampler would score);
* PCA-d with Gaussian coefficients (each principal coefficient drawn from N(0, its training variance)),
  at d = 32 and at each run's latent size: the linear generative baseline.

Figures (git-ignored, real faces): an 8 × 8 grid of prior samples per run
(``figures/samples_<run>.png``) and a 9 × 9 interpolation matrix between the encodings of four test
faces (``figures/interpolation_<run>.png``), decoded and with the corners marked, and those four
faces beside the matrix's corners (``figures/corners_<run>.png``); the section's
returned figure puts 8 samples of every source side by side.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from shared.evaluation import frechet_distance
from shared.grids import interpolation_matrix
from shared.plotting import comparison_rows, image_grid, interpolation_figure
from shared.results import markdown_table

__all__ = ["sampling", "agreement", "pca_samples", "CORNERS"]

log = logging.getLogger(__name__)

CORNERS = (0, 1, 2, 3)  # test faces at the interpolation matrix's corners (A, B, C, D)


def pca_samples(bench: Any, d: int, n: int, seed: int) -> np.ndarray:
    """``n`` faces from PCA-``d`` with coefficients drawn from N(0, their variance on the training faces)."""
    pca = bench.pca.truncated(d)
    std = pca.encode(bench.train).std(axis=0)
    codes = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32) * std
    return np.asarray(pca.decode(codes), np.float32)


def _figures(bench: Any, run: Any, samples: np.ndarray) -> None:
    """The 8 × 8 sample grid and the encoded 9 × 9 interpolation matrix of one run."""
    import matplotlib.pyplot as plt

    out = bench.figures
    fig = image_grid(samples[:64].reshape(8, 8, *samples.shape[1:]), out / f"samples_{run.name}.png",
                     title=f"{run.name}: 64 prior samples (seed {bench.seed})")
    plt.close(fig)
    faces = bench.test[list(CORNERS)]
    labels = None if run.labels_test is None else run.labels_test[list(CORNERS)]
    z = np.asarray(run.model.encode(faces, labels)[0], np.float32)
    grid = interpolation_matrix(z, 9)  # (9, 9, d)
    flat_labels = None if labels is None else np.repeat(labels[:1], 81, axis=0)
    images = np.asarray(run.model.decode(grid.reshape(81, -1), flat_labels), np.float32).reshape(9, 9, *faces.shape[1:])
    fig = interpolation_figure(images, out / f"interpolation_{run.name}.png",
                               title=f"{run.name}: encoded test faces {list(CORNERS)} at the corners",
                               corners=[f"test face {i}" for i in CORNERS])
    plt.close(fig)
    # the originals beside the matrix corners, to judge whether the corners are recognisably them
    fig = image_grid([faces, images[[0, 0, -1, -1], [0, -1, 0, -1]]], out / f"corners_{run.name}.png",
                     row_titles=["test faces", "matrix corners"], col_titles=list("ABCD"),
                     title=f"{run.name}: corners A-D of the interpolation matrix")
    plt.close(fig)


def sampling(bench: Any) -> tuple[str, list[dict], Any]:
    """FD of prior samples vs the test faces for every run, beside the training-face floor and PCA samples."""
    if bench.classifier is None:
        raise SystemExit("the sampling section needs --classifier RUN_DIR (a cnn run on the same split)")
    n = bench.n_samples
    real = bench.classifier.features(bench.test)
    rows: list[dict] = []
    shown: dict[str, np.ndarray] = {"test faces": bench.test[:8]}

    def add(method: str, images: np.ndarray, **extra: Any) -> None:
        fd = float(frechet_distance(real, bench.classifier.features(images)))
        rows.append({"method": method, "fd": fd, "n": len(images), **extra})
        shown[method] = images[:8]
        log.info("%s: FD %.2f", method, fd)

    add("training faces (floor)", bench.train[:n])
    for d in sorted({32, *(r.latent_dim for r in bench.vaes)}):
        if d <= bench.pca.n_components:
            add(f"PCA-{d}, Gaussian coefficients", pca_samples(bench, d, n, bench.seed), d=d)
    for run in bench.vaes:
        labels = None if run.labels_test is None else run.labels_test[np.arange(n) % len(run.labels_test)]
        samples = np.asarray(run.model.sample(n, bench.seed, labels), np.float32)
        add(f"VAE {run.name}", samples, d=run.latent_dim, beta=run.beta, epochs=run.epochs, train_s=run.train_s)
        _figures(bench, run, samples)
    md = markdown_table(["samples", "d", "β", "epochs (s)", f"Fréchet distance to the {len(bench.test)} test faces"],
                        [[r["method"], r.get("d"), r.get("beta"),
                          f"{r['epochs']} ({r['train_s']:.0f})" if r.get("epochs") else None, r["fd"]]
                         for r in rows])
    fig = comparison_rows(shown, title=f"{n} samples each; 8 shown (FD in the CNN's penultimate features)")
    return md, rows, fig


def _same_but_backend(a: Any, b: Any) -> bool:
    da, db = a.config.to_dict(), b.config.to_dict()
    for d in (da, db):
        d.pop("backend")
        d["train"].pop("device", None)
    return a.backend != b.backend and da == db


def agreement(bench: Any) -> tuple[str, list[dict], Any]:
    """PSNR and −ELBO of the same config trained by torch and by tf (pairs among the ``--vae`` runs)."""
    from shared.image_metrics import psnr

    runs = bench.vaes
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:] if _same_but_backend(a, b)]
    if not pairs:
        raise SystemExit("the agreement section needs two --vae runs of one config on different backends")
    rows: list[dict] = []
    shown: dict[str, np.ndarray] = {"test faces": bench.test[:8]}
    for a, b in pairs:
        recs = {r.backend: np.asarray(r.model.reconstruct(bench.test, r.labels_test), np.float32) for r in (a, b)}
        score = {k: float(np.mean(psnr(v, bench.test))) for k, v in recs.items()}
        elbo = {r.backend: r.neg_elbo for r in (a, b)}
        row = {"runs": f"{a.name} / {b.name}", **{f"psnr_{k}": v for k, v in score.items()},
               **{f"neg_elbo_{k}": v for k, v in elbo.items()},
               "psnr_gap": abs(score[a.backend] - score[b.backend]),
               "elbo_gap_pct": 100 * abs(elbo[a.backend] - elbo[b.backend]) / max(abs(elbo[a.backend]), 1e-9),
               "epochs": f"{a.epochs} / {b.epochs}", "train_s": f"{a.train_s:.0f} / {b.train_s:.0f}"}
        rows.append(row)
        for r in (a, b):
            shown[f"{r.name} ({r.backend})"] = recs[r.backend][:8]
    md = markdown_table(["runs", "PSNR torch", "PSNR tf", "|Δ| dB (goal ≤ 0.3)", "−ELBO torch", "−ELBO tf",
                         "|Δ| % (goal ≤ 1)", "epochs", "train s"],
                        [[r["runs"], r.get("psnr_torch"), r.get("psnr_tf"), r["psnr_gap"], r.get("neg_elbo_torch"),
                          r.get("neg_elbo_tf"), r["elbo_gap_pct"], r["epochs"], r["train_s"]] for r in rows])
    fig = comparison_rows(shown, title="the same config trained by each backend: test reconstructions")
    return md, rows, fig
