"""The ``denoise`` studio command: the VAE as a denoiser vs mean and median filters, on noisy test faces.

Part of :mod:`shared.studio` (re-exported there: ``shared.studio.denoise`` is this ``denoise``).
With ``refine_steps`` > 0 a fifth method, ``vae_refined``, decodes z refined by that many Adam
steps on the noisy face (:func:`shared.inference.refine`) instead of the encoder mean. With
``blend_pca`` the method ``vae+pca`` blends the VAE with PCA projection, tuned on the run's validation
faces at each σ (:mod:`shared.denoise_blend`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from shared.denoise_blend import BlendBasis, blend_denoise, noisy_faces
from shared.errors import ConfigError
from shared.inference import MAX_REFINE_STEPS
from shared.protocol import GenerativeModel
from shared.results import DEFAULT_DPI, OutputWriter, Result, markdown_table
from shared.runs import FIGURES, SPLIT

__all__ = ["DENOISERS", "REFINED", "BLENDED", "denoise_table", "denoise", "blend_basis"]

log = logging.getLogger(__name__)

DENOISERS = ("noisy", "mean", "median", "vae")
REFINED = "vae_refined"  # the method added after ``vae`` when ``refine_steps`` > 0
BLENDED = "vae+pca"  # the method added last with a blend basis (``blend_pca``)
_COLUMNS = {"noisy": "noisy", "mean": "mean", "median": "median", "vae": "VAE", REFINED: "VAE refined",
            BLENDED: "VAE ⊕ PCA"}
_BLEND_VAL_FACES = 200  # validation faces a blend is tuned on (as benchmarks/real_faces.py)


def _methods(refine_steps: int, blended: bool = False) -> tuple[str, ...]:
    return DENOISERS + ((REFINED,) if refine_steps else ()) + ((BLENDED,) if blended else ())


def denoise_table(model: GenerativeModel, clean: np.ndarray, sigmas: Sequence[float], *, seed: int = 0,
                  labels: Optional[np.ndarray] = None,
                  refine_steps: int = 0, blend: Optional[BlendBasis] = None,
                  ) -> tuple[list[dict[str, Any]], dict[float, dict]]:
    """PSNR/SSIM against ``clean`` of the noisy input, mean filter, median filter and VAE.

    Args:
        model: protocol model (``reconstruct`` is the VAE denoiser).
        clean: ``(N, H, W)`` float32 in [0, 1].
        sigmas: noise standard deviations on the [0, 1] scale; noisy images are clipped to [0, 1].
        seed: seeds the noise (σ i uses ``seed + i``, as does the jitter of the refinement).
        labels: label vectors for conditional models.
        refine_steps: when > 0, also ``vae_refined``: :func:`shared.inference.refine` of the noisy
            faces with that many steps (a backend call: gradients through the decoder).
        blend: when given, also ``vae+pca`` (:func:`shared.denoise_blend.blend_denoise`), tuned at
            σ i on ``blend.val`` with noise seeded ``seed + 1000 + i``; the row carries ``d`` and
            ``alpha``.

    Returns:
        ``(rows, images)``: one row per (σ, method) with ``sigma``, ``method``, ``psnr``, ``ssim``
        (means over faces), and per σ the images ``{"noisy", "mean", "median", "vae"}`` (and
        ``"vae_refined"``, ``"vae+pca"``).

    Raises:
        ConfigError: ``refine_steps`` not an integer in [0, :data:`shared.inference.MAX_REFINE_STEPS`].
    """
    from shared.corruptions import mean_filter, median_filter
    from shared.image_metrics import psnr, ssim
    from shared.inference import refine

    methods = _methods(refine_steps, blend is not None)
    rows: list[dict[str, Any]] = []
    images: dict[float, dict] = {}
    for i, sigma in enumerate(sigmas):
        noisy = noisy_faces(clean, sigma, seed + i)
        outs = {"noisy": noisy, "mean": np.asarray(mean_filter(noisy), np.float32),
                "median": np.asarray(median_filter(noisy), np.float32),
                "vae": np.asarray(model.reconstruct(noisy, labels), np.float32)}
        if refine_steps:
            outs[REFINED] = refine(model, noisy, steps=refine_steps, seed=seed + i, labels=labels)
        tuned = {}
        if blend is not None:
            outs[BLENDED], fit = blend_denoise(model, noisy, blend, sigma, seed=seed + 1000 + i, labels=labels,
                                               vae_out=outs["vae"])
            tuned = {"d": fit.d, "alpha": fit.alpha, "val_psnr": fit.val_psnr}
        images[float(sigma)] = outs
        for method in methods:
            rows.append({"sigma": float(sigma), "method": method,
                         "psnr": float(np.mean(psnr(outs[method], clean))),
                         "ssim": float(np.mean(ssim(outs[method], clean))), **(tuned if method == BLENDED else {})})
    return rows, images


def denoise(run_dir: str | os.PathLike, *, sigmas: Sequence[float] = (0.1, 0.2, 0.3, 0.5), n: int = 256,
            seed: int = 0, refine_steps: int = 0, blend_pca: bool = False, data: Optional[str] = None,
            save: bool = True, fmt: str = "png", dpi: int = DEFAULT_DPI) -> Result:
    """VAE reconstruction vs mean and median filters (3×3) on noisy test faces.

    Scores are PSNR/SSIM against the clean faces, means over the first ``n`` test faces. With
    ``save``, writes ``denoise.json`` and ``denoise.md`` in the run folder and
    ``figures/denoise.<fmt>`` (rows: σ × example; columns: clean | noisy | mean | median | VAE, and
    VAE refined with ``refine_steps``).

    ``refine_steps`` > 0 adds the method ``vae_refined`` after ``vae``: z refined from the encoder
    mean by that many Adam steps on the noisy face (:func:`shared.inference.refine`, lr 0.05; cost
    ``refine_steps`` decoder forward+backward passes). ``denoise.json`` then records ``refine_steps``.

    ``blend_pca`` adds the method ``vae+pca`` last: ``α·VAE + (1 − α)·PCA_d`` with PCA fitted on the
    run's training faces and (d, α) chosen at each σ on its first 200 validation faces (their own
    noise), never on the faces scored (:mod:`shared.denoise_blend`); its rows carry ``d``, ``alpha``
    and ``val_psnr``, and ``denoise.json`` records ``blend``.

    Returns:
        A :class:`Result`: ``table`` one row per (σ, method) with ``sigma``, ``method``, ``psnr``,
        ``ssim`` (the ``results`` of ``denoise.json``); ``images``
        ``(len(sigmas), 1 + methods, k, H, W)`` — axis 1 is clean, noisy, mean, median, vae (then
        vae_refined, then vae+pca); k = 2 example faces (fewer when ``n`` < 2).

    Raises:
        ConfigError: a σ outside (0, 1] (NaN included) or no σ; ``n`` outside [1, :data:`MAX_FACES`];
            ``seed`` outside [0, :data:`MAX_SEED`]; ``refine_steps`` outside [0, 10000]; ``blend_pca``
            not a bool; bad ``fmt``/``dpi``.
        RunError: not a generative run; ``blend_pca`` with no training or validation faces in the split.
    """
    from shared.plotting import image_grid
    from shared.studio import MAX_FACES, MAX_SEED, check_int, held_out_faces, labels_for, open_run

    try:
        sigmas = tuple(float(s) for s in sigmas)
    except (TypeError, ValueError):
        raise ConfigError(f"`sigmas` must be numbers in (0, 1]. Received: sigmas={sigmas!r}") from None
    if not sigmas or any(not 0.0 < s <= 1.0 for s in sigmas):  # NaN fails every comparison: refused too
        raise ConfigError(f"`sigmas` must be numbers in (0, 1]. Received: sigmas={list(sigmas)}")
    n = check_int("n", n, 1, MAX_FACES)
    check_int("seed", seed, 0, MAX_SEED)
    refine_steps = check_int("refine_steps", refine_steps, 0, MAX_REFINE_STEPS)
    if not isinstance(blend_pca, bool):  # "no" or 0.0 would otherwise read as a choice
        raise ConfigError(f"`blend_pca` must be True or False. Received: blend_pca={blend_pca!r}")
    out = OutputWriter(Path(run_dir), save, fmt, dpi)
    run_dir, config, model = open_run(run_dir)
    faces = held_out_faces(run_dir, config, n, data=data)
    clean = faces.floats()
    basis = blend_basis(run_dir, config, model, data) if blend_pca else None
    rows, images = denoise_table(model, clean, sigmas, seed=seed, labels=labels_for(model, faces),
                                 refine_steps=refine_steps, blend=basis)
    methods = _methods(refine_steps, blend_pca)
    info = {"run_dir": str(run_dir), "n_faces": len(clean), "seed": seed, "sigmas": list(sigmas), "filter_size": 3}
    if refine_steps:  # absent otherwise: denoise.json stays what it was without refinement
        info["refine_steps"] = refine_steps
    if basis is not None:
        info["blend"] = {"pca_train_faces": basis.n_train, "val_faces": len(basis.val)}
    out.json("denoise.json", {**info, "results": rows})
    by = {(r["sigma"], r["method"]): r for r in rows}
    md = markdown_table(["σ"] + [f"{m} PSNR" for m in methods] + [f"{m} SSIM" for m in methods],
                        [[s] + [by[s, m]["psnr"] for m in methods] + [by[s, m]["ssim"] for m in methods]
                         for s in sigmas])
    refined = (f" vae_refined = decoded from z refined by {refine_steps} Adam steps on the noisy face "
               f"(shared.inference.refine)." if refine_steps else "")
    if basis is not None:
        fits = ", ".join(f"σ={r['sigma']:g}: d={r['d']}, α={r['alpha']:g}" for r in rows if r["method"] == BLENDED)
        refined += (f" vae+pca = α·VAE + (1 − α)·PCA-d, PCA fitted on {basis.n_train} training faces, d and α "
                    f"tuned on {len(basis.val)} validation faces ({fits}).")
    out.text("denoise.md", f"# Denoising — {len(clean)} test faces, seed {seed}\n\nPSNR (dB) and SSIM against the "
                           f"clean faces; noisy = input, mean/median = 3×3 filters, vae = reconstruction.{refined}"
                           f"\n\n{md}")

    k = min(2, len(clean))
    shown = np.stack([np.stack([clean[:k]] + [images[s][m][:k] for m in methods]) for s in sigmas])  # (S,1+M,k,H,W)
    grid_rows = [shown[i, :, j] for i in range(len(sigmas)) for j in range(k)]
    titles = [f"σ={s:g} #{j}" for s in sigmas for j in range(k)]
    fig = image_grid(grid_rows, row_titles=titles, col_titles=["clean"] + [_COLUMNS[m] for m in methods],
                     title=f"denoising: {len(clean)} test faces (PSNR/SSIM in the table)")
    out.figure(fig, f"{FIGURES}/denoise")
    log.info("denoise: %s", ", ".join(map(str, out.paths)) if save else "not saved")
    return Result("denoise", fig, shown, pd.DataFrame(rows), info, out.paths)


def blend_basis(run_dir: Path, config: Any, model: GenerativeModel, data: Optional[str] = None) -> BlendBasis:
    """PCA of the run's training faces and its first 200 validation faces (the split the run saved): what
    the VAE ⊕ PCA blend is tuned with (``data``: where the run's faces are now, when they moved).

    Raises:
        RunError: the split has no training or no validation faces.
    """
    from shared import api
    from shared.data.splits import Split
    from shared.errors import RunError
    from shared.studio import labels_for

    faces = api.run_faces(run_dir, config, data)
    split = Split.load(Path(run_dir) / SPLIT, faces)
    if len(split.train) < 2 or not len(split.val):
        raise RunError(f"{run_dir}: the VAE ⊕ PCA blend needs training and validation faces; the run's split has "
                       f"{len(split.train)} and {len(split.val)}")
    val = faces.subset(np.asarray(split.val)[:_BLEND_VAL_FACES])
    return BlendBasis.from_faces(faces.subset(split.train).floats(), val.floats(), labels_for(model, val))
