"""The studio commands on a trained run, written once against the numpy protocol (either backend).

In a notebook::

    from shared.studio import interpolate, denoise, inpaint
    res = interpolate("runs/vae16", grid=9, slerp=True)   # a Result: shows its figure in Jupyter
    res.images.shape                                      # (9, 9, H, W)
    denoise("runs/vae16", sigmas=(0.1, 0.3), save=False).table   # PSNR/SSIM, nothing written
    inpaint("runs/vae16", mask="box", method="iterate", fmt="pdf", dpi=300)

Every function returns a :class:`shared.results.Result` (``.figure``, ``.images``, ``.table``,
``.info``, ``.paths``). With ``save=True`` (the default) it also writes its files into the run
folder (figures as ``fmt`` at ``dpi``); with ``save=False`` nothing is written.

Faces always come from the run's saved test split (first ``n`` test faces, in split order), so
results are on held-out data and reproducible; ``data`` points at the run's faces when they moved
(see :func:`shared.api.run_faces`). Conditional models (``model.conditional``) encode
test faces with their own labels; every *decode from the prior or from a mixed latent*
(interpolation corners sampled from N(0, I), traversals) uses the fixed :data:`REFERENCE_LABEL`
(a 30-year-old White male), so only z varies across a figure.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from shared import api
from shared.errors import ConfigError, RunError
from shared.faces import Faces, label_vectors
from shared.protocol import GenerativeModel
from shared.results import DEFAULT_DPI, OutputWriter, Result, markdown_table
from shared.runs import FIGURES, SPLIT, load_run_config
# the denoise command lives in its own module (it imports this one's helpers on call)
from shared.studio_denoise import BLENDED, DENOISERS, denoise, denoise_table

__all__ = ["REFERENCE_LABEL", "TRAVERSAL_VALUES", "MAX_GRID", "MAX_FACES", "MAX_ROUNDS", "MAX_SEED", "check_int",
           "interpolate", "denoise", "inpaint", "open_run", "held_out_faces", "labels_for", "reference_labels",
           "markdown_table", "latent_activity", "DENOISERS", "BLENDED", "denoise_table"]

log = logging.getLogger(__name__)

REFERENCE_LABEL = {"age": 30, "gender": 0, "ethnicity": 0}
TRAVERSAL_VALUES = tuple(float(v) for v in np.linspace(-3.0, 3.0, 9))
_TRAVERSAL_DIMS = 8      # most active latent dimensions shown in the traversal figure
_ACTIVITY_FACES = 512    # test faces used to rank latent dimensions
_FIGURE_EXAMPLES = 8     # faces shown in the denoise / inpaint figures
MAX_GRID = 64            # a 64x64 matrix is already 4096 decodes and a figure too large to look at
MAX_FACES = 100_000      # `n`: more than any test split, small enough to refuse typos before work
MAX_ROUNDS = 100_000     # `iterations` / `steps`
MAX_SEED = 2**32 - 1     # numpy's generators refuse negative seeds with a traceback


# --------------------------------------------------------------------------- helpers

def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an int when it is an integer (not a bool) in ``[lo, hi]``; else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ConfigError(f"`{name}` must be an integer in [{lo}, {hi}]. Received: {name}={value!r}")
    return int(value)


def open_run(run_dir: str | os.PathLike) -> tuple[Path, Any, GenerativeModel]:
    """``(run_dir, config, model)`` of a run folder (a path or any ``os.PathLike``) holding a generative model.

    Raises:
        RunError: not a run folder, or the run is a classifier (no encode/decode).
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    model = api.load_model(run_dir)
    if not isinstance(model, GenerativeModel):
        raise RunError(f"{run_dir}: a {config.model.family!r} run is not a generative model "
                       f"(the studio commands need a vae, cvae or iaf run)")
    return run_dir, config, model


def held_out_faces(run_dir: str | os.PathLike, config: Any, n: Optional[int] = None, *,
                   data: Optional[str] = None) -> Faces:
    """The first ``n`` faces (all when ``None``) of the run's saved test split.

    Args:
        run_dir: the run folder; config: its config.
        n: how many test faces, in split order.
        data: where the run's faces are now, when they moved (see :func:`shared.api.run_faces`).

    Raises:
        RunError: the test split is empty.
        ConfigError: ``n`` is not an integer in [1, :data:`MAX_FACES`].
    """
    from shared.data.splits import Split

    if n is not None:
        n = check_int("n", n, 1, MAX_FACES)
    faces = api.run_faces(run_dir, config, data)
    test = np.asarray(Split.load(Path(run_dir) / SPLIT, faces).test)
    if test.size == 0:
        raise RunError(f"{run_dir}: the run's test split is empty (test_fraction=0?)")
    if n is not None:
        test = test[:n]
    return faces.subset(test)


def labels_for(model: GenerativeModel, faces: Faces) -> Optional[np.ndarray]:
    """The faces' label vectors for a conditional model, else ``None``."""
    return label_vectors(faces.labels) if model.conditional else None


def reference_labels(model: GenerativeModel, n: int) -> Optional[np.ndarray]:
    """``n`` copies of :data:`REFERENCE_LABEL` as label vectors (``None`` for unconditional models)."""
    if not model.conditional:
        return None
    return label_vectors(pd.DataFrame({k: [v] * n for k, v in REFERENCE_LABEL.items()}))


def latent_activity(model: GenerativeModel, faces: Faces) -> np.ndarray:
    """Mean KL(q(z_d|x) || N(0,1)) per latent dimension over ``faces``: ``(latent_dim,)``.

    Collapsed (inactive) dimensions score ~0; the traversal figure shows the most active ones.
    """
    mean, logvar = model.encode(faces.floats(), labels_for(model, faces))
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    return 0.5 * np.mean(mean ** 2 + np.exp(logvar) - 1.0 - logvar, axis=0)


def _decode_grid(model: GenerativeModel, z: np.ndarray) -> np.ndarray:
    """Decode a ``(..., D)`` latent array into ``(..., H, W)`` images with the reference label."""
    flat = z.reshape(-1, z.shape[-1]).astype(np.float32)
    images = np.asarray(model.decode(flat, reference_labels(model, len(flat))), dtype=np.float32)
    return images.reshape(*z.shape[:-1], *images.shape[1:])


# --------------------------------------------------------------------------- interpolate

_CORNER_PLACES = ("top-left", "top-right", "bottom-left", "bottom-right")


def interpolate(run_dir: str | os.PathLike, *, grid: int = 9, slerp: bool = False, corners: str = "sample",
                seed: int = 0, traversal: bool = True, data: Optional[str] = None, save: bool = True,
                fmt: str = "png", dpi: int = DEFAULT_DPI) -> Result:
    """The ``grid``×``grid`` face interpolation matrix and a latent traversal figure.

    The four corners are drawn from the prior N(0, I) with ``seed`` (``corners="sample"``) or are
    the posterior means of four test faces chosen with ``seed`` (``corners="encode"``). Linear:
    edges straight between their corners, interior bilinear. ``slerp``: the left and right edges
    spherically, then each row spherically between them (:func:`shared.grids.interpolation_matrix`).
    The figure frames the corners A (top-left), B, C, D (bottom-right) and names them in its title.
    The traversal decodes z = 0 with each of the most active dimensions (by mean KL on test faces)
    set to :data:`TRAVERSAL_VALUES`.

    With ``save``, writes ``figures/interpolation_{lerp|slerp}_{sample|encode}.<fmt>`` and (unless
    ``traversal`` is False) ``figures/traversal.<fmt>``.

    Returns:
        A :class:`Result`: ``images`` ``(grid, grid, H, W)``; ``table`` one row per corner
        (``corner``, ``position``, ``source``, ``test_index``, ``img_name``, ``z_norm``);
        ``extra["traversal"]`` a Result with ``images`` ``(dims, len(TRAVERSAL_VALUES), H, W)`` and a
        table of the dimensions shown and their mean KL.

    Raises:
        ConfigError: ``grid`` outside [2, :data:`MAX_GRID`], unknown ``corners``, ``seed`` outside
            [0, :data:`MAX_SEED`], bad ``fmt``/``dpi``.
        RunError: not a generative run.
    """
    from shared.grids import interpolation_matrix, traversal as traversal_path
    from shared.plotting import image_grid, interpolation_figure

    if corners not in ("sample", "encode"):
        raise ConfigError(f"`corners` must be one of {{'sample', 'encode'}}. Received: corners={corners!r}")
    grid = check_int("grid", grid, 2, MAX_GRID)
    check_int("seed", seed, 0, MAX_SEED)
    out = OutputWriter(Path(run_dir), save, fmt, dpi)
    run_dir, config, model = open_run(run_dir)
    rng = np.random.default_rng(seed)
    faces = held_out_faces(run_dir, config, _ACTIVITY_FACES, data=data)
    if corners == "sample":
        z4 = rng.standard_normal((4, model.latent_dim)).astype(np.float32)
        chosen_idx = [None] * 4
        names, described = [None] * 4, [f"prior draw {k + 1}" for k in range(4)]
    else:
        if len(faces) < 4:
            raise RunError(f"{run_dir}: corners='encode' needs 4 test faces, the split has {len(faces)}")
        chosen_idx = [int(i) for i in np.sort(rng.choice(len(faces), size=4, replace=False))]
        chosen = faces.subset(np.asarray(chosen_idx))
        z4 = np.asarray(model.encode(chosen.floats(), labels_for(model, chosen))[0], dtype=np.float32)
        names = [str(v) for v in chosen.labels["img_name"]] if "img_name" in chosen.labels else [None] * 4
        described = [f"test face {i}" for i in chosen_idx]

    matrix = interpolation_matrix(z4, grid, slerp=slerp)             # (n, n, D)
    images = _decode_grid(model, matrix)                               # (n, n, H, W)
    kind = "slerp" if slerp else "lerp"
    source = "z ~ N(0, I)" if corners == "sample" else "posterior mean of a test face"
    fig = interpolation_figure(
        images, title=f"{config.model.family} d={model.latent_dim} β={config.model.beta:g}: {kind} between "
                      f"{'4 prior draws' if corners == 'sample' else '4 encoded test faces'} (seed {seed})",
        corners=described)
    table = pd.DataFrame({"corner": ["A", "B", "C", "D"], "position": list(_CORNER_PLACES),
                          "source": [source] * 4, "test_index": chosen_idx, "img_name": names,
                          "z_norm": [float(v) for v in np.linalg.norm(z4, axis=1)]})
    name = f"interpolation_{kind}_{corners}"
    out.figure(fig, f"{FIGURES}/{name}")
    info = {"run_dir": str(run_dir), "grid": grid, "slerp": bool(slerp), "corners": corners, "seed": seed,
            "latent_dim": int(model.latent_dim)}
    result = Result(name, fig, images, table, info, out.paths)
    if traversal:
        activity = latent_activity(model, faces)
        dims = [int(d) for d in np.argsort(-activity, kind="stable")[:min(_TRAVERSAL_DIMS, model.latent_dim)]]
        paths = traversal_path(np.zeros(model.latent_dim, np.float32), dims, TRAVERSAL_VALUES)  # (k, V, D)
        rows = _decode_grid(model, np.asarray(paths))                                   # (k, V, H, W)
        tfig = image_grid(list(rows), row_titles=[f"z{d} (KL {activity[d]:.2f})" for d in dims],
                          col_titles=[f"{v:g}" for v in TRAVERSAL_VALUES],
                          title="latent traversal from z = 0 (most active dimensions)")
        written = out.figure(tfig, f"{FIGURES}/traversal")
        result.extra["traversal"] = Result(
            "traversal", tfig, rows, pd.DataFrame({"dim": dims, "mean_kl": [float(activity[d]) for d in dims]}),
            {"values": list(TRAVERSAL_VALUES), "n_faces": len(faces)}, [written] if written else [])
    log.info("%s%s: %s", name, " and traversal" if traversal else "",
             ", ".join(map(str, out.paths)) if save else "not saved")
    return result


# --------------------------------------------------------------------------- inpaint

def inpaint(run_dir: str | os.PathLike, *, mask: str = "box", method: str = "iterate", n: int = 256, seed: int = 0,
            iterations: int = 50, steps: int = 200, data: Optional[str] = None, save: bool = True,
            fmt: str = "png", dpi: int = DEFAULT_DPI) -> Result:
    """Fill masked regions of test faces and compare with the mean-fill baseline.

    Methods: ``decode`` (one-shot reconstruction of the masked face), ``iterate`` (iterative
    projection, ``iterations`` rounds; see :func:`shared.inpainting.iterative_projection`) and
    ``optimize`` (the backend's latent optimisation with a prior term, ``steps`` steps) and
    ``hybrid`` (``optimize``, then :func:`shared.inpainting.residual_correction`: the biharmonic
    continuation of its error on the known pixels; needs scikit-image). Every result keeps the known pixels. Scores: PSNR over the missing pixels only, SSIM over the full
    filled image, mean over faces.

    With ``save``, writes ``inpaint_{mask}_{method}.json``/``.md`` in the run folder and
    ``figures/inpaint_{mask}_{method}.<fmt>`` (rows: original | masked | mean-fill | method).

    Returns:
        A :class:`Result`: ``table`` one row per method (``mean_fill`` and ``method``) with
        ``method``, ``psnr``, ``ssim``; ``images`` ``(4, k, H, W)`` — original, masked, mean-fill,
        method for the first k (≤ 8) faces.

    Raises:
        ConfigError: unknown ``mask`` or ``method``; ``n``, ``iterations`` or ``steps`` not an integer
            in [1, :data:`MAX_FACES`] / [1, :data:`MAX_ROUNDS`] (checked whatever the method); ``seed``
            outside [0, :data:`MAX_SEED`]; bad ``fmt``/``dpi``.
        RunError: not a generative run.
    """
    from shared.corruptions import apply_mask, mean_fill
    from shared.inpainting import MASKS, METHODS, composite, fill, inpaint_metrics, make_mask
    from shared.plotting import comparison_rows

    if method not in METHODS:
        raise ConfigError(f"`method` must be one of {set(METHODS)}. Received: method={method!r}")
    if mask not in MASKS:
        raise ConfigError(f"`mask` must be one of {set(MASKS)}. Received: mask={mask!r}")
    n = check_int("n", n, 1, MAX_FACES)
    iterations = check_int("iterations", iterations, 1, MAX_ROUNDS)
    steps = check_int("steps", steps, 1, MAX_ROUNDS)
    check_int("seed", seed, 0, MAX_SEED)
    out = OutputWriter(Path(run_dir), save, fmt, dpi)
    run_dir, config, model = open_run(run_dir)
    faces = held_out_faces(run_dir, config, n, data=data)
    clean, labels = faces.floats(), labels_for(model, faces)
    holes = make_mask(mask, len(clean), clean.shape[-1], seed=seed)
    masked = np.asarray(apply_mask(clean, holes, fill=0.0), np.float32)
    baseline = composite(masked, np.asarray(mean_fill(masked, holes), np.float32), holes)
    filled = fill(model, masked, holes, method, labels=labels, iterations=iterations, steps=steps, seed=seed,
                  start=baseline)  # iterate starts from the mean fill

    scores = {"mean_fill": inpaint_metrics(baseline, clean, holes), method: inpaint_metrics(filled, clean, holes)}
    name = f"inpaint_{mask}_{method}"
    settings = ({"iterations": iterations} if method == "iterate" else
                {"steps": steps} if method in ("optimize", "hybrid") else {})
    info = {"run_dir": str(run_dir), "mask": mask, "method": method, "n_faces": len(clean), "seed": seed,
            "missing_fraction": float(holes.mean()), **settings}
    out.json(f"{name}.json", {**info, "results": scores})
    md = markdown_table(["method", "masked-region PSNR (dB)", "SSIM (full image)"],
                        [[m, s["psnr"], s["ssim"]] for m, s in scores.items()])
    out.text(f"{name}.md", f"# Inpainting — {mask} mask, {method}, {len(clean)} test faces, seed {seed}\n\n"
                           f"{100 * holes.mean():.1f}% of pixels missing.\n\n{md}")
    k = min(_FIGURE_EXAMPLES, len(clean))
    shown = {"original": clean[:k], "masked": masked[:k], "mean-fill": baseline[:k], method: filled[:k]}
    fig = comparison_rows(shown, title=f"inpainting: {mask} mask, {method}")
    out.figure(fig, f"{FIGURES}/{name}")
    log.info("%s: %s", name, ", ".join(map(str, out.paths)) if save else "not saved")
    table = pd.DataFrame([{"method": m, "psnr": float(s["psnr"]), "ssim": float(s["ssim"])} for m, s in scores.items()])
    return Result(name, fig, np.stack(list(shown.values())).astype(np.float32), table, info, out.paths)
