"""Loss terms shared by every TF model; definitions match the PyTorch backend term by term.

All per-image quantities are sums over pixels / latent dimensions; batch terms are means over
images. ``loss = distortion + beta * rate_used`` where ``rate_used`` applies free bits, and
``elbo = distortion + rate`` is the negative ELBO per image (no warm-up, no free bits).
"""
from __future__ import annotations

import math

import tensorflow as tf

from shared.architecture import LOGVAR_MAX, LOGVAR_MIN, MIN_SIGMA

__all__ = ["recon_nll", "MIN_SIGMA", "bounded_logvar", "kl_diag_normal", "log_normal_diag", "log_standard_normal",
           "combine_terms", "TERM_NAMES"]

TERM_NAMES = ("loss", "distortion", "rate", "elbo", "beta")
_LOG_2PI = math.log(2.0 * math.pi)


def bounded_logvar(raw: tf.Tensor) -> tf.Tensor:
    """The encoder's raw log-variance softly held inside [LOGVAR_MIN, LOGVAR_MAX] (see shared.architecture)."""
    upper = LOGVAR_MAX - tf.nn.softplus(LOGVAR_MAX - raw)
    return LOGVAR_MIN + tf.nn.softplus(upper - LOGVAR_MIN)


def recon_nll(x: tf.Tensor, logits: tf.Tensor, likelihood: str = "bernoulli", sigma_mode: str = "fixed",
              sigma: float = 0.1, weight: tf.Tensor | None = None) -> tf.Tensor:
    """−log p(x|z) per image, summed over pixels: ``(B, H, W, 1) -> (B,)``, as in the torch backend.

    * ``bernoulli``: sigmoid cross-entropy with logits;
    * ``gaussian`` + ``fixed``: N(x; sigmoid(logits), sigma²);
    * ``gaussian`` + ``learned``: per-image maximum-likelihood σ² (the mean squared error of that
      image, floored at :data:`MIN_SIGMA`²), NLL = D/2·(log 2πσ² + 1) — no extra weights.

    ``weight`` (broadcastable to ``logits``, e.g. a 0/1 known-pixel mask) restricts the sums.
    Computed in float32 whatever the dtype of ``logits`` (mixed precision).
    """
    logits, x = tf.cast(logits, tf.float32), tf.cast(x, tf.float32)
    w = None if weight is None else tf.broadcast_to(tf.cast(weight, logits.dtype), tf.shape(logits))
    axes = [1, 2, 3]
    if likelihood == "bernoulli":
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.broadcast_to(x, tf.shape(logits)), logits=logits)
        return tf.reduce_sum(ce if w is None else ce * w, axis=axes)
    sq = tf.square(tf.sigmoid(logits) - x)
    d = tf.cast(tf.reduce_prod(tf.shape(logits)[1:]), logits.dtype) if w is None else tf.reduce_sum(w, axis=axes)
    sq_sum = tf.reduce_sum(sq if w is None else sq * w, axis=axes)
    if sigma_mode == "fixed":
        return 0.5 * sq_sum / sigma ** 2 + d * (math.log(sigma) + 0.5 * _LOG_2PI)
    var = tf.maximum(sq_sum / tf.maximum(d, 1.0), MIN_SIGMA ** 2)
    return 0.5 * d * (tf.math.log(var) + _LOG_2PI + 1.0)


def kl_diag_normal(mean: tf.Tensor, logvar: tf.Tensor) -> tf.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per dimension: ``(B, D) -> (B, D)``, in float32."""
    mean, logvar = tf.cast(mean, tf.float32), tf.cast(logvar, tf.float32)
    return 0.5 * (tf.exp(logvar) + tf.square(mean) - 1.0 - logvar)


def log_normal_diag(z: tf.Tensor, mean: tf.Tensor, logvar: tf.Tensor) -> tf.Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last axis: ``(B, D) -> (B,)``."""
    return -0.5 * tf.reduce_sum(_LOG_2PI + logvar + tf.square(z - mean) * tf.exp(-logvar), axis=-1)


def log_standard_normal(z: tf.Tensor) -> tf.Tensor:
    """log N(z; 0, I) summed over the last axis: ``(B, D) -> (B,)``."""
    return -0.5 * tf.reduce_sum(_LOG_2PI + tf.square(z), axis=-1)


def combine_terms(distortion: tf.Tensor, rate: tf.Tensor, beta: tf.Tensor, free_bits: float = 0.0,
                  latent_dim: int = 0) -> dict[str, tf.Tensor]:
    """Batch loss terms from per-image distortion ``(B,)`` and rate ``(B, D)`` (analytic) or ``(B,)`` (sampled).

    Free bits: with an analytic ``(B, D)`` rate each dimension's batch-mean KL is raised to at least
    ``free_bits`` nats; with a sampled ``(B,)`` rate the batch-mean total is raised to at least
    ``free_bits * D`` — only in ``loss``; ``rate`` and ``elbo`` always report the plain KL.

    Returns:
        ``loss``, ``distortion``, ``rate``, ``elbo`` and ``beta`` as scalar tensors.
    """
    beta = tf.cast(beta, distortion.dtype)
    distortion_mean = tf.reduce_mean(distortion)
    if rate.shape.rank == 2:
        per_dim = tf.reduce_mean(rate, axis=0)  # (D,)
        rate_mean = tf.reduce_sum(per_dim)
        used = tf.reduce_sum(tf.maximum(per_dim, free_bits)) if free_bits > 0 else rate_mean
    else:
        rate_mean = tf.reduce_mean(rate)
        used = tf.maximum(rate_mean, free_bits * latent_dim) if free_bits > 0 else rate_mean
    return {"loss": distortion_mean + beta * used, "distortion": distortion_mean, "rate": rate_mean,
            "elbo": distortion_mean + rate_mean, "beta": beta}
