"""The sections of ``benchmarks/real_faces.py``: reconstruction, denoising, inpainting.

Each section takes a :class:`Bench` (the split's faces, one PCA fit, the ``--vae`` runs) and returns
``(markdown, rows, figure)``: a table to print, its rows as dicts (for ``results.json``) and a
matplotlib figure of a few test faces × methods. Parameters of the classical baselines are tuned
on VALIDATION faces only (:func:`shared.baselines.tune_denoiser`), then applied to the test faces.
Denoising also blends PCA with the VAE (``VAE ⊕ PCA``) and, as its classical bar, with the tuned
Gaussian and TV filters (``PCA ⊕ gaussian``, ``PCA ⊕ TV``), each blend's (d, α) tuned on the same
validation faces (:mod:`shared.denoise_blend`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from shared.baselines import (PCA, biharmonic_inpaint, gaussian_filter, mean_fill, mean_filter, median_filter,
                              nl_means, tune_denoiser, tv_denoise)
from shared.denoise_blend import BlendBasis, apply_blend, blend_denoise, fit_blend, noisy_faces
from shared.corruptions import apply_mask
from shared.image_metrics import psnr, ssim
from shared.inpainting import composite, fill, inpaint_metrics, make_mask, optimized_faces, residual_correction
from shared.plotting import comparison_rows
from shared.results import markdown_table

__all__ = ["Bench", "VaeRun", "Grids", "FULL_GRIDS", "QUICK_GRIDS", "SECTIONS", "reconstruction", "denoising",
           "inpainting"]

log = logging.getLogger(__name__)

SHOWN = 6  # test faces in each figure
CLASSICAL_BLENDS = ("gaussian", "TV")  # blended with PCA (shared.denoise_blend) as baselines of the VAE ⊕ PCA row


@dataclass
class VaeRun:
    """One ``--vae`` run: its name, numpy-protocol model, backend name, latent size and test-split rate."""

    name: str
    model: Any
    backend: str
    latent_dim: int
    rate: float
    labels_test: Optional[np.ndarray] = None  # label vectors of the test faces (conditional models)
    beta: Optional[float] = None
    likelihood: str = ""
    epochs: int = 0  # epochs trained and their seconds (metrics.jsonl), for the budget column
    train_s: float = 0.0
    neg_elbo: Optional[float] = None  # on the run's whole test split (eval.json)
    config: Any = None  # the run's RunConfig


@dataclass(frozen=True)
class Grids:
    """Candidate parameters tried on the validation faces."""

    pca_dims: tuple[int, ...] = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
    gaussian: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
    tv: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.17, 0.22, 0.3, 0.4, 0.55, 0.75, 1.0)
    nlm_factors: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7)  # h = factor × σ
    inpaint_pca_dims: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 384, 512)


FULL_GRIDS = Grids()
QUICK_GRIDS = Grids(pca_dims=(16, 32, 64), gaussian=(0.75, 1.25, 2.0), tv=(0.04, 0.08, 0.15),
                    nlm_factors=(0.5, 0.8, 1.2), inpaint_pca_dims=(16, 64))


@dataclass
class Bench:
    """What every section works on.

    Attributes:
        train, val, test: float32 faces ``(N, H, W)`` in [0, 1] of the seeded split (val/test may
            be the first ``n`` faces of their split).
        pca: PCA fitted on ``train`` with enough components for every d used.
        vaes: the ``--vae`` runs.
        sigmas: noise levels of the denoising section.
        grids: tuning grids.
        seed: seeds the noise and random masks (test: ``seed + i``, validation: ``seed + 1000 + i``).
        iterations, steps: VAE inpainting rounds (iterate) and optimisation steps (optimize).
        refine_steps: MAP steps on z after the encoder (:func:`shared.inference.refine`) for the
            "refined" VAE rows of reconstruction and denoising (0: no such rows).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    pca: PCA
    vaes: list[VaeRun] = field(default_factory=list)
    sigmas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
    grids: Grids = FULL_GRIDS
    seed: int = 0
    iterations: int = 50
    steps: int = 200
    refine_steps: int = 50
    classifier: Any = None  # a loaded cnn run (``features``) for the sampling section
    n_samples: int = 1000
    figures: Any = None  # folder of the per-run sampling figures


def _refined(bench: Bench, run: VaeRun, images: np.ndarray) -> np.ndarray:
    """``run``'s reconstruction of ``images`` after ``bench.refine_steps`` MAP steps on z (shared.inference)."""
    from shared.inference import refine

    return np.asarray(refine(run.model, images, steps=bench.refine_steps, seed=bench.seed, labels=run.labels_test),
                      np.float32)


def _scores(out: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    return float(np.mean(psnr(out, clean))), float(np.mean(ssim(out, clean)))


def _dims(bench: Bench, dims: Sequence[int]) -> list[int]:
    return [d for d in dims if d <= bench.pca.n_components]


def _warn_edge(what: str, pname: str, best: Any, grid: Sequence[Any]) -> None:
    # a best value on the edge of its grid means the baseline may be stronger than measured
    if len(grid) > 1 and best in (grid[0], grid[-1]):
        log.warning("%s: the best %s=%s is at the edge of its grid %s: widen the grid", what, pname, best, list(grid))


# --------------------------------------------------------------------------- reconstruction

def reconstruction(bench: Bench, dims: Sequence[int] = (8, 16, 32, 128)) -> tuple[str, list[dict], Any]:
    """Mean face, PCA at each ``d`` and each VAE (with PCA at the VAE's latent size beside it)."""
    test = bench.test
    mean_face = np.broadcast_to(bench.train.mean(axis=0), test.shape).astype(np.float32)
    rows: list[dict] = [dict(zip(("method", "d", "psnr", "ssim"), ("mean face", 0, *_scores(mean_face, test))))]
    shown = {"original": test[:SHOWN], "mean face": mean_face[:SHOWN]}
    for d in _dims(bench, dims):
        rec = bench.pca.truncated(d).project(test)
        rows.append({"method": f"PCA-{d}", "d": d, **dict(zip(("psnr", "ssim"), _scores(rec, test)))})
        shown[f"PCA-{d}"] = rec[:SHOWN]
    for run in bench.vaes:
        rec = np.asarray(run.model.reconstruct(test, run.labels_test), np.float32)
        p, s = _scores(rec, test)
        row = {"method": f"VAE {run.name}", "d": run.latent_dim, "psnr": p, "ssim": s, "rate": run.rate,
               "beta": run.beta, "likelihood": run.likelihood, "epochs": run.epochs, "train_s": run.train_s}
        if run.latent_dim <= bench.pca.n_components:
            row["pca_psnr"], row["pca_ssim"] = _scores(bench.pca.truncated(run.latent_dim).project(test), test)
        rows.append(row)
        shown[f"VAE {run.name}"] = rec[:SHOWN]
        if bench.refine_steps:
            ref = _refined(bench, run, test)
            rows.append({**row, "method": f"VAE {run.name} + refine {bench.refine_steps}",
                         **dict(zip(("psnr", "ssim"), _scores(ref, test)))})
            shown[f"{run.name} refined"] = ref[:SHOWN]
    md = markdown_table(["method", "d", "β", "likelihood", "epochs (s)", "PSNR (dB)", "SSIM", "rate (nats)",
                         "PCA-d PSNR", "PCA-d SSIM", "Δ vs PCA-d (dB)"],
                        [[r["method"], r["d"] or "–", r.get("beta"), r.get("likelihood"),
                          f"{r['epochs']} ({r['train_s']:.0f})" if r.get("epochs") else None, r["psnr"], r["ssim"],
                          r.get("rate"), r.get("pca_psnr"), r.get("pca_ssim"),
                          None if r.get("pca_psnr") is None else round(r["psnr"] - r["pca_psnr"], 2)]
                         for r in rows])
    fig = comparison_rows(shown, title=f"reconstruction of test faces ({len(test)} scored)")
    return md, rows, fig


# --------------------------------------------------------------------------- denoising

def _tuned_methods(bench: Bench, sigma: float) -> dict[str, tuple[str, list, Callable]]:
    """``{method: (parameter name, grid, fn(noisy, param))}`` of the tuned denoisers at ``sigma``."""
    pcas = {d: bench.pca.truncated(d) for d in _dims(bench, bench.grids.pca_dims)}
    return {
        "gaussian": ("sigma", list(bench.grids.gaussian), gaussian_filter),
        "PCA": ("d", list(pcas), lambda x, d: pcas[d].project(x)),
        "TV": ("weight", list(bench.grids.tv), tv_denoise),
        "NLM": ("h", [round(f * sigma, 4) for f in bench.grids.nlm_factors], nl_means),
    }


def denoising(bench: Bench) -> tuple[str, list[dict], Any]:
    """Every denoiser at every σ: PSNR/SSIM on the test faces, parameters tuned on validation."""
    rows: list[dict] = []
    shown_sigma = bench.sigmas[min(len(bench.sigmas) - 1, len(bench.sigmas) // 2)]
    shown: dict[str, np.ndarray] = {"clean": bench.test[:SHOWN]}
    for i, sigma in enumerate(bench.sigmas):
        noisy_val = noisy_faces(bench.val, sigma, bench.seed + 1000 + i)
        noisy = noisy_faces(bench.test, sigma, bench.seed + i)
        outs: dict[str, tuple[Any, np.ndarray]] = {"noisy": (None, noisy), "mean 3×3": (None, mean_filter(noisy, 3)),
                                                   "median 3×3": (None, median_filter(noisy, 3))}
        blends: dict[str, tuple[Any, np.ndarray]] = {}
        for method, (pname, grid, fn) in _tuned_methods(bench, sigma).items():
            tuned = tune_denoiser(fn, noisy_val, bench.val, grid)
            log.info("σ=%g %s: %s=%s on validation (%.2f dB)", sigma, method, pname, tuned.param, tuned.psnr)
            _warn_edge(f"σ={sigma:g} {method}", pname, tuned.param, grid)
            outs[method] = (f"{pname}={tuned.param:g}", np.asarray(fn(noisy, tuned.param), np.float32))
            if method in CLASSICAL_BLENDS:  # the classical analogue of the VAE ⊕ PCA blend: a fair bar for it
                fit = fit_blend(fn(noisy_val, tuned.param), noisy_val, bench.val, bench.pca)
                blends[f"PCA ⊕ {method}"] = (f"{pname}={tuned.param:g}, {fit.describe()}",
                                             apply_blend(fit, outs[method][1], noisy, bench.pca))
        outs.update(blends)
        for run in bench.vaes:
            outs[f"VAE {run.name}"] = (None, np.asarray(run.model.reconstruct(noisy, run.labels_test), np.float32))
            if run.labels_test is None:  # the blend tunes on validation faces, whose labels a cvae would need
                basis = BlendBasis(bench.pca, bench.val, n_train=len(bench.train))
                out, fit = blend_denoise(run.model, noisy, basis, sigma, seed=bench.seed + 1000 + i,
                                         vae_out=outs[f"VAE {run.name}"][1])
                outs[f"VAE {run.name} ⊕ PCA"] = (fit.describe(), out)
            if bench.refine_steps:
                outs[f"VAE {run.name} + refine {bench.refine_steps}"] = (None, _refined(bench, run, noisy))
        for method, (param, out) in outs.items():
            p, s = _scores(out, bench.test)
            rows.append({"sigma": sigma, "method": method, "param": param, "psnr": p, "ssim": s})
            if sigma == shown_sigma:
                shown[method] = out[:SHOWN]
    md = markdown_table(["σ", "method", "tuned on validation", "PSNR (dB)", "SSIM"],
                        [[r["sigma"], r["method"], r["param"], r["psnr"], r["ssim"]] for r in rows])
    fig = comparison_rows(shown, title=f"denoising at σ={shown_sigma:g} (test faces)")
    return md, rows, fig


# --------------------------------------------------------------------------- inpainting

def _masked(clean: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    holes = make_mask(kind, len(clean), clean.shape[-1], seed=seed)
    return np.asarray(apply_mask(clean, holes, fill=0.0), np.float32), holes


def _vae_fills(bench: Bench, run: VaeRun, masked: np.ndarray, holes: np.ndarray,
               start: np.ndarray) -> dict[str, np.ndarray]:
    """decode / iterate / optimize / hybrid of one run, as ``shared.studio.inpaint`` calls them."""
    out = {method: fill(run.model, masked, holes, method, labels=run.labels_test, iterations=bench.iterations,
                        start=start) for method in ("decode", "iterate")}
    got = optimized_faces(run.model, masked, holes, labels=run.labels_test, steps=bench.steps, seed=bench.seed)
    out["optimize"] = composite(masked, got, holes)
    out["hybrid"] = residual_correction(masked, holes, got)  # the same optimisation, corrected by its own error
    return out


def inpainting(bench: Bench, masks: Sequence[str] = ("box", "random")) -> tuple[str, list[dict], Any]:
    """Mean fill, PCA iterative projection (d tuned on validation), biharmonic and each VAE's
    decode / iterate / optimize / hybrid, scored by PSNR over the missing pixels and SSIM over the face."""
    rows: list[dict] = []
    shown: dict[str, np.ndarray] = {"original": bench.test[:SHOWN]}
    for kind in masks:
        masked, holes = _masked(bench.test, kind, bench.seed)
        masked_val, holes_val = _masked(bench.val, kind, bench.seed + 1000)
        dims = _dims(bench, bench.grids.inpaint_pca_dims)
        val_psnr = {d: inpaint_metrics(bench.pca.truncated(d).inpaint(masked_val, holes_val), bench.val,
                                       holes_val)["psnr"] for d in dims}
        best_d = max(dims, key=lambda d: val_psnr[d])
        log.info("%s mask: PCA d=%d on validation (%.2f dB)", kind, best_d, val_psnr[best_d])
        _warn_edge(f"{kind} mask PCA", "d", best_d, dims)
        baseline = composite(masked, np.asarray(mean_fill(masked, holes), np.float32), holes)
        fills: dict[str, tuple[Any, np.ndarray]] = {
            "mean fill": (None, baseline),
            "PCA iterative projection": (f"d={best_d}", bench.pca.truncated(best_d).inpaint(masked, holes)),
            "biharmonic": (None, np.asarray(biharmonic_inpaint(masked, holes), np.float32)),
        }
        for run in bench.vaes:
            for method, filled in _vae_fills(bench, run, masked, holes, baseline).items():
                fills[f"VAE {run.name} {method}"] = (None, filled)
        shown[f"{kind}: masked"] = masked[:SHOWN]
        for method, (param, filled) in fills.items():
            score = inpaint_metrics(filled, bench.test, holes)
            rows.append({"mask": kind, "method": method, "param": param, "missing": float(holes.mean()),
                         "psnr": score["psnr"], "ssim": score["ssim"]})
            if method != "mean fill":
                shown[f"{kind}: {method.replace('iterative projection', 'iter.')}"] = filled[:SHOWN]
    md = markdown_table(["mask", "method", "tuned on validation", "masked-region PSNR (dB)", "SSIM (full image)"],
                        [[r["mask"], r["method"], r["param"], r["psnr"], r["ssim"]] for r in rows])
    fig = comparison_rows(shown, title="inpainting of test faces (known pixels kept)")
    return md, rows, fig


def _sampling(bench: Bench) -> tuple[str, list[dict], Any]:
    from benchmarks.real_faces_sampling import sampling

    return sampling(bench)


def _agreement(bench: Bench) -> tuple[str, list[dict], Any]:
    from benchmarks.real_faces_sampling import agreement

    return agreement(bench)


SECTIONS: dict[str, Callable[[Bench], tuple[str, list[dict], Any]]] = {
    "reconstruction": reconstruction, "denoising": denoising, "inpainting": inpainting, "sampling": _sampling,
    "agreement": _agreement}
