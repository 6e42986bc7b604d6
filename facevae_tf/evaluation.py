"""Held-out evaluation of a TF VAE: −ELBO, rate, distortion, IWAE-k, PSNR/SSIM and label fidelity.

Every quantity is computed per image first, then averaged overall and per ethnicity, gender and
age band (:func:`shared.evaluation.metrics_by_group`); names match the torch backend
(``neg_elbo``, ``rate``, ``distortion``, ``neg_iwae``, ``psnr``, ``ssim``). Sampled quantities use
a ``tf.random.Generator`` seeded with ``seed``. For ``iaf`` the IWAE weights use the flow's exact
log q(z|x). Bounds, in nats per image: ``−log p(x) ≤ neg_iwae ≤ neg_elbo`` (in expectation).

Label fidelity (conditional models, with a classifier): faces are generated for every requested
gender × ethnicity × age (one per age band) from one shared set of prior draws; the classifier's
``predict(images01 (N, H, W)) -> dict`` then says which share it assigns to the requested gender /
ethnicity, and the MAE of its age estimate against the requested age.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from facevae_tf.adapter import TFGenerativeModel, arrays_of
from shared.conditional import GRID_AGES
from shared.config import LABEL_DIM
from shared.errors import ConfigError
from shared.evaluation import AGE_BAND_NAMES, summarize_generative
from shared.faces import AGE_BANDS, AGE_SCALE, ETHNICITY_NAMES, GENDER_NAMES, Faces, label_vectors
from shared.protocol import latent_noise

__all__ = ["evaluate", "per_image_metrics", "label_fidelity", "judge_ceiling", "FIDELITY_AGES",
           "FIDELITY_TEMPERATURES"]

log = logging.getLogger(__name__)

FIDELITY_AGES = GRID_AGES  # one age per band of shared.faces.AGE_BANDS
# label fidelity is also reported for the shrunken prior draws ``generate --temperature`` makes
FIDELITY_TEMPERATURES = (0.7, 0.5)
_IWAE_ROWS = 2048  # images × k decoded at once


def per_image_metrics(model: TFGenerativeModel, faces: Faces, *, iwae_k: int = 64, seed: int = 0,
                      batch_size: int = 128) -> dict[str, np.ndarray]:
    """Per-image arrays ``neg_elbo``, ``rate``, ``distortion``, ``neg_iwae`` (if ``iwae_k`` > 0), ``psnr``, ``ssim``.

    Args:
        model: a loaded TF VAE (:func:`facevae_tf.backend.load`).
        faces: faces with labels (labels are used by conditional models).
        iwae_k: importance samples per image (0 skips the IWAE bound).
        seed: seeds the ELBO and IWAE noise.
        batch_size: images per forward pass.
    """
    net = model.keras_model
    arrays = arrays_of(faces, net.label_dim)
    gen = tf.random.Generator.from_seed(int(seed))
    d = net.latent_dim

    @tf.function(reduce_retracing=True)
    def elbo_terms(x, y, eps):
        distortion, rate, _ = net.image_terms(x, y, eps, training=False)
        rate = tf.reduce_sum(rate, axis=-1) if rate.shape.rank == 2 else rate
        recon = tf.clip_by_value(tf.sigmoid(net((x, y), training=False)), 0.0, 1.0)
        return distortion, rate, tf.image.psnr(recon, x, max_val=1.0), tf.image.ssim(recon, x, max_val=1.0)

    @tf.function(reduce_retracing=True)
    def neg_iwae(x, y, eps):
        log_w = net.log_weights(x, y, eps)  # (B, k)
        return -(tf.reduce_logsumexp(log_w, axis=1) - math.log(iwae_k))

    out: dict[str, list[np.ndarray]] = {k: [] for k in ("neg_elbo", "rate", "distortion", "neg_iwae", "psnr", "ssim")}
    n = len(arrays["x"])
    for i in tqdm(range(0, n, batch_size), desc="evaluate", leave=False, disable=None):
        x, y = tf.constant(arrays["x"][i:i + batch_size]), tf.constant(arrays["y"][i:i + batch_size])
        distortion, rate, psnr, ssim = (v.numpy() for v in elbo_terms(x, y, gen.normal((len(x), d))))
        out["distortion"].append(distortion)
        out["rate"].append(rate)
        out["neg_elbo"].append(distortion + rate)
        out["psnr"].append(psnr)
        out["ssim"].append(ssim)
        if iwae_k > 0:
            chunk = max(1, _IWAE_ROWS // iwae_k)
            for j in range(0, len(x), chunk):
                xs, ys = x[j:j + chunk], y[j:j + chunk]
                out["neg_iwae"].append(neg_iwae(xs, ys, gen.normal((len(xs), iwae_k, d))).numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in out.items() if v}


def _predicted(pred: dict[str, Any], task: str) -> Optional[np.ndarray]:
    """Class indices (gender, ethnicity) or years (age) from ``predict`` output (``facevae.cnn_backend``:
    ``<task>`` is (N,) class indices, ``age`` (N,) years; (N, K) scores are reduced by argmax)."""
    if task not in pred:
        return None
    value = np.asarray(pred[task])
    if task == "age":
        return value.reshape(len(value)).astype(np.float64)
    return value.argmax(axis=1) if value.ndim == 2 else value.astype(np.int64)


def label_fidelity(model: TFGenerativeModel, classifier: Any, *, n_per: int = 8, seed: int = 0,
                   temperature: float = 1.0) -> dict[str, Any]:
    """How well a classifier recognises the labels a conditional model was asked to generate.

    Args:
        model: a conditional (``cvae``) model.
        classifier: a loaded CNN with ``predict(images01 (N, H, W)) -> dict`` (class indices or logits
            per task, age in years) trained on the same image size.
        n_per: faces per gender × ethnicity × age combination (the same prior draws for each).
        seed: seeds the prior draws.
        temperature: the draws are z ~ N(0, T²·I), as :func:`shared.conditional.generate` makes them.

    Returns:
        ``gender_fidelity`` / ``ethnicity_fidelity`` (share assigned to the requested class, overall
        and per requested class) and ``age_mae`` (years) for the tasks the classifier predicts.
    """
    combos = [(g, e, a) for g in range(len(GENDER_NAMES)) for e in range(len(ETHNICITY_NAMES)) for a in FIDELITY_AGES]
    z = np.float32(temperature) * latent_noise(n_per, model.latent_dim, seed)
    labels = np.zeros((len(combos) * n_per, LABEL_DIM), np.float32)
    requested = np.repeat(np.array(combos, dtype=np.float64), n_per, axis=0)  # (N, 3): gender, ethnicity, age
    labels[:, 0] = requested[:, 0]
    labels[np.arange(len(labels)), 1 + requested[:, 1].astype(np.int64)] = 1.0
    labels[:, 6] = requested[:, 2] / AGE_SCALE
    images = model.decode(np.tile(z, (len(combos), 1)), labels)
    pred = classifier.predict(images)
    result: dict[str, Any] = {"n_generated": int(len(images)), "n_per_combination": int(n_per),
                              "requested_ages": list(FIDELITY_AGES), "temperature": float(temperature)}
    for col, task, names in ((0, "gender", GENDER_NAMES), (1, "ethnicity", ETHNICITY_NAMES)):
        got = _predicted(pred, task)
        if got is None:
            continue
        want = requested[:, col].astype(np.int64)
        hit = got == want
        result[f"{task}_fidelity"] = float(hit.mean())
        result[f"{task}_fidelity_by_class"] = {name: float(hit[want == c].mean()) for c, name in enumerate(names)}
        result[f"{task}_chance"] = 1.0 / len(names)
    age = _predicted(pred, "age")
    if age is not None:
        result["age_mae"] = float(np.abs(age - requested[:, 2]).mean())
        result["age_mae_by_requested_age"] = {str(a): float(np.abs(age - a)[requested[:, 2] == a].mean())
                                              for a in FIDELITY_AGES}
    return result


def _balanced_scores(classifier: Any, images: np.ndarray, labels: Any) -> dict[str, Any]:
    """The classifier on ``images`` whose true labels are ``labels``, weighted as label fidelity weights its
    requests: accuracy averaged over the gender and ethnicity classes present, age MAE over the age bands."""
    pred = classifier.predict(images)
    scores: dict[str, Any] = {}
    for task, names in (("gender", GENDER_NAMES), ("ethnicity", ETHNICITY_NAMES)):
        got, want = _predicted(pred, task), labels[task].to_numpy()
        if got is not None:
            by_class = {names[c]: float(np.mean(got[want == c] == c)) for c in np.unique(want)}
            scores[f"{task}_fidelity"] = float(np.mean(list(by_class.values())))
            scores[f"{task}_fidelity_by_class"] = by_class
    got, age = _predicted(pred, "age"), labels["age"].to_numpy(np.float64)
    if got is not None:
        # per band too: a decoder's blur shows first as old faces judged younger (README, cvae on real faces)
        bands = {name: b for name, b in zip(AGE_BAND_NAMES, [(age >= lo) & (age <= hi) for lo, hi in AGE_BANDS])
                 if b.any()}
        by_band = {name: float(np.abs(got - age)[b].mean()) for name, b in bands.items()}
        scores["age_mae"] = float(np.mean(list(by_band.values())))
        scores["age_mae_by_band"] = by_band
        scores["age_predicted_by_band"] = {name: float(got[b].mean()) for name, b in bands.items()}
    return scores


def judge_ceiling(model: TFGenerativeModel, classifier: Any, faces: Faces) -> dict[str, Any]:
    """What the fidelity judge scores on real faces and on the model's reconstructions of them.

    Label fidelity asks the classifier to recognise labels in generated faces; it cannot be expected
    to do better on them than on the model's own reconstructions of real faces that have those labels
    (as sharp as the decoder makes faces). Both are scored class-balanced, as fidelity requests each
    class equally: ``{"real": {...}, "reconstructed": {...}}`` with ``gender_fidelity``,
    ``ethnicity_fidelity`` (and their ``_by_class`` accuracies) and ``age_mae`` as in :func:`label_fidelity`,
    with ``age_mae_by_band`` and ``age_predicted_by_band`` (the judge's mean age, in years, per age band
    of the true age).
    """
    x = faces.floats()
    recon = np.asarray(model.reconstruct(x, label_vectors(faces.labels)), np.float32)
    return {"n_faces": int(len(faces)), "real": _balanced_scores(classifier, x, faces.labels),
            "reconstructed": _balanced_scores(classifier, recon, faces.labels)}


def evaluate(model: TFGenerativeModel, faces: Faces, *, iwae_k: int = 64, classifier: Any = None, seed: int = 0,
             out_dir: Any = None, batch_size: int = 128) -> dict[str, Any]:
    """Metrics of a TF VAE on held-out ``faces``: overall means and per ethnicity / gender / age band.

    Args:
        model: a loaded model (:func:`facevae_tf.backend.load`).
        faces: held-out faces.
        iwae_k: importance samples of the IWAE bound (0 skips it).
        classifier: optional loaded torch CNN (used through numpy): ``features`` adds the Fréchet
            distance to prior samples; for conditional models ``predict`` adds label fidelity.
        seed: seeds every sampled quantity.
        out_dir: accepted for the backend signature; nothing extra is written here.
        batch_size: images per forward pass.

    Returns:
        A JSON-serialisable dict (nats per image for the likelihood terms, dB for PSNR).
    """
    per = per_image_metrics(model, faces, iwae_k=iwae_k, seed=seed, batch_size=batch_size)
    cfg = model.config.model
    if classifier is not None:
        clf_size = getattr(getattr(getattr(classifier, "config", None), "model", None), "image_size", None)
        if clf_size is not None and clf_size != cfg.image_size:
            raise ConfigError(f"the classifier was trained on {clf_size}×{clf_size} faces but this model makes "
                              f"{cfg.image_size}×{cfg.image_size} ones; train both with the same --image-size")
    result = summarize_generative(model, faces, per, iwae_k=iwae_k, seed=seed, classifier=classifier,
                                  n_parameters=model.keras_model.count_params())
    if model.conditional and classifier is not None and hasattr(classifier, "predict"):
        result["label_fidelity"] = label_fidelity(model, classifier, seed=seed)
        result["label_fidelity_by_temperature"] = {
            f"{t:g}": label_fidelity(model, classifier, seed=seed, temperature=t) for t in FIDELITY_TEMPERATURES}
        if len(faces):
            result["label_fidelity_ceiling"] = judge_ceiling(model, classifier, faces)
    return result
