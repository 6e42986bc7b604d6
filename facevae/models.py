"""The convolutional VAE, built from :func:`shared.architecture.vae_plan`.

Loss per image = reconstruction NLL summed over pixels + β·KL, averaged over the batch.

Likelihoods (the decoder outputs logits; its mean image is ``sigmoid(logits)`` in [0, 1]):

* ``bernoulli``: BCE-with-logits summed over pixels;
* ``gaussian`` + ``fixed``: N(x; mean, sigma²) with ``sigma`` from the config;
* ``gaussian`` + ``learned``: a per-image σ learned in closed form (the "σ-VAE" of Rybkin et al.,
  2021): for each image σ² is the maximum-likelihood value, the mean squared error of that image's
  reconstruction (floored at :data:`MIN_SIGMA`²), so the NLL is ``D/2 · (log 2πσ² + 1)``. It needs
  no extra weights, so both backends keep the exact same parameter list (weight parity).

Training-only shaping (the logged ``rate`` is always the true KL, ``elbo`` the true negative ELBO):

* KL warm-up: β ramps linearly to ``beta`` at epoch ``kl_warmup_epochs`` (``ModelConfig.beta_at``);
* free bits: each latent dimension's batch-mean KL is floored at ``free_bits`` nats.

In eval mode (validation) the loss is the target objective ``distortion + beta·rate`` every epoch,
so the best-on-validation checkpoint compares like with like.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facevae.layers import build_layers, count_parameters
from shared.architecture import vae_plan
from shared.config import ModelConfig

__all__ = ["ConvVAE", "MIN_SIGMA", "kl_per_dim", "log_normal_std"]

MIN_SIGMA = 1e-3
_LOG_2PI = math.log(2.0 * math.pi)


def kl_per_dim(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) per latent dimension, ``(B, d)``."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)


def log_normal_std(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)


class ConvVAE(nn.Module):
    """Convolutional VAE of a ``vae``-family :class:`ModelConfig`.

    Args:
        cfg: the model config (``family='vae'``).

    Attributes:
        encoder, encoder_dense, mean_head, logvar_head, decoder: plan-built modules.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.family != "vae":
            raise ValueError(f"ConvVAE needs family 'vae'. Received: family={cfg.family!r}")
        self.cfg = cfg
        plan = vae_plan(cfg)
        self.encoder = build_layers(plan.encoder)
        self.encoder_dense = build_layers(plan.encoder_dense)
        self.mean_head = nn.Linear(plan.feature_dim, plan.latent_dim)
        self.logvar_head = nn.Linear(plan.feature_dim, plan.latent_dim)
        self.decoder = build_layers(plan.decoder)
        self.latent_dim = cfg.latent_dim
        self.beta_now = cfg.beta_at(0)

    @property
    def n_parameters(self) -> int:
        return count_parameters(self)

    def on_epoch_start(self, epoch: int) -> None:
        """KL warm-up: the training β of ``epoch`` (:meth:`shared.config.ModelConfig.beta_at`)."""
        self.beta_now = self.cfg.beta_at(epoch)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 1, H, W)`` in [0, 1] -> posterior ``(mean, logvar)``, each ``(B, d)``."""
        h = self.encoder_dense(self.encoder(x))  # (B, feature_dim)
        return self.mean_head(h), self.logvar_head(h)

    def decode_logits(self, z: Tensor) -> Tensor:
        """``(B, d)`` -> decoder logits ``(B, 1, H, W)``."""
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        """Decoder mean image ``(B, 1, H, W)`` in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def recon_nll(self, logits: Tensor, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """−log p(x | z) per image, summed over pixels: ``(B,)`` (``logits`` may have extra leading dims).

        ``weight`` (broadcastable to ``logits``, e.g. a 0/1 known-pixel mask) restricts the sum.
        """
        logits, x = logits.float(), x.float()
        w = None if weight is None else weight.float().expand_as(logits).flatten(-3)  # (..., D)
        if self.cfg.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3)
            return (nll if w is None else nll * w).sum(-1)
        sq = (torch.sigmoid(logits) - x).pow(2).flatten(-3)  # (..., D)
        d = sq.shape[-1] if w is None else w.sum(-1)
        sq = sq if w is None else sq * w
        if self.cfg.sigma_mode == "fixed":
            s = self.cfg.sigma
            return 0.5 * sq.sum(-1) / s ** 2 + d * (math.log(s) + 0.5 * _LOG_2PI)
        var = (sq.sum(-1) / (d if w is None else d.clamp_min(1.0))).clamp_min(MIN_SIGMA ** 2)  # per-image ML σ²
        return 0.5 * d * (torch.log(var) + _LOG_2PI + 1.0)

    def loss_terms(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Scalar batch means: ``loss`` (optimised), ``distortion``, ``rate``, ``elbo`` (−ELBO), ``beta``."""
        x = batch["images"]  # (B, 1, H, W)
        mean, logvar = self.encode(x)
        mean, logvar = mean.float(), logvar.float()
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # reparameterisation
        distortion = self.recon_nll(self.decode_logits(z), x).mean()
        kl = kl_per_dim(mean, logvar)  # (B, d)
        rate = kl.sum(-1).mean()
        if self.training:
            beta = self.beta_now
            kl_opt = kl.mean(0).clamp_min(self.cfg.free_bits).sum() if self.cfg.free_bits > 0 else rate
        else:
            beta, kl_opt = float(self.cfg.beta), rate
        loss = distortion + beta * kl_opt
        return {"loss": loss, "distortion": distortion.detach(), "rate": rate.detach(),
                "elbo": (distortion + rate).detach(), "beta": distortion.new_full((), beta)}
