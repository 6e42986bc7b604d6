"""Loss terms of the torch VAE; definitions match ``facevae_tf.losses`` term by term.

All per-image quantities are sums over pixels / latent dimensions; batch terms are means over
images. ``loss = distortion + beta * rate_used`` where ``rate_used`` applies free bits, and
``elbo = distortion + rate`` is the negative ELBO per image (no warm-up, no free bits).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from shared.architecture import LOGVAR_MAX, LOGVAR_MIN, MIN_SIGMA

__all__ = ["recon_nll", "MIN_SIGMA", "kl_diag_normal", "log_normal_diag", "log_standard_normal",
           "combine_terms", "bounded_logvar", "TERM_NAMES"]

TERM_NAMES = ("loss", "distortion", "rate", "elbo", "beta")
_LOG_2PI = math.log(2.0 * math.pi)


def bounded_logvar(raw: Tensor) -> Tensor:
    """The encoder's raw log-variance softly held inside [LOGVAR_MIN, LOGVAR_MAX] (see shared.architecture)."""
    upper = LOGVAR_MAX - F.softplus(LOGVAR_MAX - raw)
    return LOGVAR_MIN + F.softplus(upper - LOGVAR_MIN)


def recon_nll(x: Tensor, logits: Tensor, likelihood: str = "bernoulli", sigma_mode: str = "fixed",
              sigma: float = 0.1, weight: Tensor | None = None) -> Tensor:
    """−log p(x|z) per image, summed over pixels: ``(..., 1, H, W) -> (...)``.

    * ``bernoulli``: sigmoid cross-entropy with logits;
    * ``gaussian`` + ``fixed``: N(x; sigmoid(logits), sigma²);
    * ``gaussian`` + ``learned``: per-image maximum-likelihood σ² (the mean squared error of that
      image, floored at :data:`MIN_SIGMA`²), NLL = D/2·(log 2πσ² + 1) — no extra weights.

    ``weight`` (broadcastable to ``logits``, e.g. a 0/1 known-pixel mask) restricts the sums;
    ``logits`` may carry extra leading dimensions (importance samples).
    """
    logits, x = logits.float(), x.float()
    w = None if weight is None else weight.float().expand_as(logits).flatten(-3)  # (..., D)
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3)
        return (nll if w is None else nll * w).sum(-1)
    sq = (torch.sigmoid(logits) - x).pow(2).flatten(-3)  # (..., D)
    d = sq.new_full(sq.shape[:-1], float(sq.shape[-1])) if w is None else w.sum(-1)
    sq_sum = (sq if w is None else sq * w).sum(-1)
    if sigma_mode == "fixed":
        return 0.5 * sq_sum / sigma ** 2 + d * (math.log(sigma) + 0.5 * _LOG_2PI)
    var = (sq_sum / d.clamp_min(1.0)).clamp_min(MIN_SIGMA ** 2)
    return 0.5 * d * (torch.log(var) + _LOG_2PI + 1.0)


def kl_diag_normal(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) per dimension: ``(B, D) -> (B, D)``, in float32."""
    mean, logvar = mean.float(), logvar.float()  # never a bfloat16 KL under autocast
    return 0.5 * (logvar.exp() + mean.pow(2) - 1.0 - logvar)


def log_normal_diag(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (_LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)


def combine_terms(distortion: Tensor, rate: Tensor, beta: float, free_bits: float = 0.0) -> dict[str, Tensor]:
    """Batch loss terms from per-image distortion ``(B,)`` and analytic rate ``(B, D)``.

    Free bits raise each dimension's batch-mean KL to at least ``free_bits`` nats in ``loss`` only;
    ``rate`` and ``elbo`` always report the plain KL.
    """
    distortion_mean = distortion.mean()
    per_dim = rate.mean(0)  # (D,)
    rate_mean = per_dim.sum()
    used = per_dim.clamp_min(free_bits).sum() if free_bits > 0 else rate_mean
    return {"loss": distortion_mean + beta * used, "distortion": distortion_mean.detach(),
            "rate": rate_mean.detach(), "elbo": (distortion_mean + rate_mean).detach(),
            "beta": distortion_mean.new_full((), float(beta))}
