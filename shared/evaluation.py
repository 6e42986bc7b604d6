"""Numpy metrics for classifiers and age regressors, overall and per group, and the Fréchet distance.

Orientation, stated once because the original work got it wrong:

* the confusion matrix has **rows = true class**, columns = predicted class;
* its normalised form divides each row by the number of faces of that true class (rows sum to 1),
  so the diagonal is the per-class **recall**;
* **precision** of class k = correct k predictions / all k predictions (column k);
  **recall** of class k = correct k predictions / all true k faces (row k).

Every function takes plain arrays and returns JSON-friendly dicts (NaN where a quantity is undefined,
e.g. the precision of a class that is never predicted; ``shared.runs.to_jsonable`` writes it as null).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from shared.faces import AGE_BANDS, ETHNICITY_NAMES, GENDER_NAMES, Faces, age_band, label_vectors

__all__ = ["AGE_BAND_NAMES", "confusion_matrix", "normalize_rows", "classification_metrics",
           "regression_metrics", "metrics_by_group", "frechet_distance", "summarize_generative", "FID_MAX_FACES"]

log = logging.getLogger(__name__)

FID_MAX_FACES = 10_000  # faces (and as many prior samples) used for the Fréchet distance

AGE_BAND_NAMES = tuple(f"{lo}-{hi}" if hi < 200 else f"{lo}+" for lo, hi in AGE_BANDS)


def _labels_1d(name: str, values: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D. Received shape {arr.shape}")
    arr = arr.astype(np.int64)
    if n_classes is not None and arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"`{name}` must hold class indices in [0, {n_classes - 1}]. "
                         f"Received values in [{arr.min()}, {arr.max()}]")
    return arr


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)`` int64; ``cm[i, j]`` = faces of true class i predicted as j.

    Raises:
        ValueError: shapes differ or a label is outside ``[0, n_classes)``.
    """
    t = _labels_1d("y_true", y_true, n_classes)
    p = _labels_1d("y_pred", y_pred, n_classes)
    if t.shape != p.shape:
        raise ValueError(f"`y_true` and `y_pred` must have the same length. Received {t.shape} and {p.shape}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (per true class); rows with no faces become NaN."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, cm / np.where(totals > 0, totals, 1.0), np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    Balanced accuracy and macro-F1 average over the classes present in ``y_true`` (a class absent
    from the faces has no recall), so they stay defined on small groups.

    Args:
        y_true, y_pred: class indices, 1-D, same length.
        class_names: one name per class; sets the number of classes.

    Returns:
        ``{"n", "accuracy", "balanced_accuracy", "macro_f1", "per_class": {name: {precision, recall,
        f1, support}}, "class_names", "confusion_matrix" (counts, rows = true),
        "confusion_matrix_normalized" (rows = true, each row sums to 1)}``.
    """
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)        # true faces per class (row sums)
    predicted = cm.sum(axis=0)      # predictions per class (column sums)
    recall = _ratio(tp, support)
    precision = _ratio(tp, predicted)
    with np.errstate(invalid="ignore"):
        f1 = _ratio(2 * tp, support + predicted)
    present = support > 0
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(class_names)}
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "balanced_accuracy": float(np.mean(recall[present])) if present.any() else float("nan"),
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": normalize_rows(cm).tolist(),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """``{"n", "mae", "rmse", "bias"}`` (bias = mean of prediction − truth), in the units of the inputs."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"`y_true` and `y_pred` must have the same length. Received {t.shape} and {p.shape}")
    if not t.size:
        return {"n": 0, "mae": float("nan"), "rmse": float("nan"), "bias": float("nan")}
    err = p - t
    return {"n": int(t.size), "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "bias": float(err.mean())}


def metrics_by_group(labels: pd.DataFrame, compute: Callable[[np.ndarray], dict]) -> dict:
    """``compute(index)`` for every ethnicity, gender and age band of ``labels``.

    Args:
        labels: the faces' label table (``age``, ``gender``, ``ethnicity``), one row per prediction.
        compute: maps an integer index array (rows of ``labels``) to a metrics dict.

    Returns:
        ``{"ethnicity": {name: metrics}, "gender": {...}, "age_band": {"0-9": ..., "60+": ...}}``;
        groups without faces are left out.
    """
    groupings = {
        "ethnicity": (labels["ethnicity"].to_numpy(dtype=np.int64), ETHNICITY_NAMES),
        "gender": (labels["gender"].to_numpy(dtype=np.int64), GENDER_NAMES),
        "age_band": (age_band(labels["age"].to_numpy()), AGE_BAND_NAMES),
    }
    out: dict[str, dict] = {}
    for key, (codes, names) in groupings.items():
        out[key] = {}
        for code, name in enumerate(names):
            idx = np.flatnonzero(codes == code)
            if idx.size:
                out[key][name] = compute(idx)
    return out


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, F)`` and ``(M, F)``.

    ``‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½)``; the small imaginary part ``sqrtm`` may return from
    round-off is dropped (a large one raises), and a singular product is retried with a tiny ridge.

    Raises:
        ValueError: fewer than two rows, different feature sizes, or a numerically complex root.
    """
    from scipy import linalg

    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"feature sets must be (N>=2, F) with the same F. Received {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        ridge = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(covmean).max()))
        if np.abs(covmean.imag).max() > 1e-3 * scale:
            raise ValueError(f"matrix square root has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def summarize_generative(model: Any, faces: Faces, per_image: Mapping[str, np.ndarray], *, iwae_k: int, seed: int,
                         n_parameters: int, classifier: Optional[Any] = None) -> dict[str, Any]:
    """The evaluation record of a generative model, the same on both backends.

    Args:
        model: a :class:`shared.protocol.GenerativeModel` (its ``sample`` feeds the Fréchet distance).
        faces: the held-out faces ``per_image`` was computed on.
        per_image: per-image arrays (``neg_elbo``, ``rate``, ``distortion``, ``neg_iwae``, ``psnr``, ``ssim``).
        iwae_k, seed: how the sampled quantities were drawn (recorded).
        n_parameters: the model's parameter count (recorded).
        classifier: optional CNN with ``features(images01)``: adds the Fréchet distance between up to
            :data:`FID_MAX_FACES` real faces and as many prior samples drawn with ``seed``.

    Returns:
        Overall means, ``by_group`` means (ethnicity, gender, age band) and the run's facts.
    """
    def summary(idx: np.ndarray) -> dict[str, float]:
        return {k: float(v[idx].mean()) for k, v in per_image.items()} | {"n": int(len(idx))}

    cfg = model.config.model
    result: dict[str, Any] = {
        "family": cfg.family, "backend": model.config.backend, "iwae_k": int(iwae_k), "seed": int(seed),
        "likelihood": cfg.likelihood, "latent_dim": int(model.latent_dim), "n_parameters": int(n_parameters),
        **({"flow_steps": cfg.flow_steps} if cfg.family == "iaf" else {}),
        **summary(np.arange(len(faces))),
        "by_group": metrics_by_group(faces.labels, summary),
    }
    if classifier is not None and hasattr(classifier, "features"):
        n = min(len(faces), FID_MAX_FACES)
        labels = label_vectors(faces.labels)[:n] if model.conditional else None
        real = classifier.features(faces.floats()[:n])
        fake = classifier.features(model.sample(n, seed, labels))
        result["frechet_distance"] = float(frechet_distance(real, fake))
        result["frechet_n"] = int(n)
    log.info("neg_elbo %.2f  neg_iwae %s  rate %.2f  psnr %.2f dB  ssim %.3f", result["neg_elbo"],
             f"{result['neg_iwae']:.2f}" if "neg_iwae" in result else "-", result["rate"], result["psnr"],
             result["ssim"])
    return result
