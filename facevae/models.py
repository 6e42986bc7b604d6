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

* KL warm-up: the training loop (:mod:`shared.training`) passes the β of each epoch;
* free bits: each latent dimension's batch-mean KL is floored at ``free_bits`` nats.
* denoising input noise (``TrainConfig.input_noise``): the engine adds ``batch["noise"]`` drawn by the
  loop; the encoder reads the noisy faces, the likelihood scores the clean ones.

In eval mode (validation) the loss is the target objective ``distortion + beta·rate`` every epoch,
so the best-on-validation checkpoint compares like with like. The posterior log-variance is soft
clamped (:func:`facevae.losses.bounded_logvar`, see :mod:`shared.architecture`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from facevae.layers import build_layers, count_parameters, linear
from facevae.losses import MIN_SIGMA, bounded_logvar, combine_terms, kl_diag_normal, recon_nll
from shared.architecture import vae_plan
from shared.config import ModelConfig
from shared.errors import ConfigError

__all__ = ["ConvVAE", "MIN_SIGMA"]


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
            raise ConfigError(f"ConvVAE needs `family` 'vae'. Received: family={cfg.family!r}")
        self.cfg = cfg
        plan = vae_plan(cfg)
        self.encoder = build_layers(plan.encoder)
        self.encoder_dense = build_layers(plan.encoder_dense)
        self.mean_head = linear(plan.heads["mean"])
        self.logvar_head = linear(plan.heads["logvar"])
        self.decoder = build_layers(plan.decoder)
        self.latent_dim = cfg.latent_dim

    @property
    def n_parameters(self) -> int:
        return count_parameters(self)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 1, H, W)`` in [0, 1] -> posterior ``(mean, logvar)``, each ``(B, d)`` float32 (logvar bounded)."""
        h = self.encoder_dense(self.encoder(x))  # (B, feature_dim)
        # float32 even under autocast: the clamp, exp(logvar) and the KL lose too much in bfloat16
        return self.mean_head(h).float(), bounded_logvar(self.logvar_head(h).float())

    def decode_logits(self, z: Tensor) -> Tensor:
        """``(B, d)`` -> decoder logits ``(B, 1, H, W)``, float32 (also under autocast)."""
        return self.decoder(z).float()

    def decode(self, z: Tensor) -> Tensor:
        """Decoder mean image ``(B, 1, H, W)`` in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def recon_nll(self, logits: Tensor, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """−log p(x | z) per image under the configured likelihood (:func:`facevae.losses.recon_nll`)."""
        c = self.cfg
        return recon_nll(x, logits, c.likelihood, c.sigma_mode, c.sigma, weight)

    def loss_terms(self, batch: dict[str, Tensor], beta: Optional[float] = None) -> dict[str, Tensor]:
        """Scalar batch means: ``loss`` (optimised), ``distortion``, ``rate``, ``elbo`` (−ELBO), ``beta``.

        Args:
            batch: ``images`` ``(B, 1, H, W)`` in [0, 1]; optional ``eps`` ``(B, d)``, the
                reparameterisation noise (the training loop draws it; drawn here when absent); optional
                ``noise`` ``(B, 1, H, W)``, the denoising input noise (``TrainConfig.input_noise``): the
                encoder then sees ``clamp(images + noise, 0, 1)`` while the likelihood scores ``images``.
            beta: the KL weight; None means the target ``cfg.beta``. Free bits apply in train mode only.
        """
        x = batch["images"]  # (B, 1, H, W)
        noise = batch.get("noise")
        x_in = x if noise is None else (x + noise.to(x.dtype)).clamp(0.0, 1.0)
        mean, logvar = self.encode(x_in)  # float32
        eps = batch.get("eps")
        eps = torch.randn_like(mean) if eps is None else eps.to(mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps  # reparameterisation
        distortion = self.recon_nll(self.decode_logits(z), x)  # (B,)
        beta = float(self.cfg.beta if beta is None else beta)
        return combine_terms(distortion, kl_diag_normal(mean, logvar), beta,
                             self.cfg.free_bits if self.training else 0.0)
