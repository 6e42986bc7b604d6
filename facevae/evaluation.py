"""Held-out evaluation of a torch VAE: −ELBO, rate, distortion, IWAE-k, PSNR/SSIM, Fréchet distance.

Every quantity is computed per image first, then averaged overall and per ethnicity, gender and
age band (:func:`shared.evaluation.metrics_by_group`). Sampled quantities use a CPU
``torch.Generator`` seeded with ``seed``, so results repeat on every device.

Bounds, in nats per image: ``−log p(x) ≤ neg_iwae ≤ neg_elbo`` (the IWAE bound tightens as k grows).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from tqdm.auto import tqdm

from facevae.adapter import TorchGenerativeModel
from facevae.losses import kl_diag_normal, log_standard_normal
from facevae.models import ConvVAE
from shared.evaluation import summarize_generative
from shared.errors import ConfigError
from shared.faces import Faces

__all__ = ["evaluate", "per_image_metrics", "iwae_bound"]

log = logging.getLogger(__name__)

_LOG_2PI = math.log(2.0 * math.pi)


def ssim_valid(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM over the valid window centres, the convention of ``tf.image.ssim`` and
    :mod:`shared.image_metrics`: torchmetrics' full SSIM map with its reflect-padded 5-pixel border cropped."""
    pad = 5  # (11-tap Gaussian window - 1) / 2
    _, smap = structural_similarity_index_measure(preds, target, data_range=1.0, reduction="none",
                                                  return_full_image=True)
    return smap[..., pad:-pad, pad:-pad].reshape(len(preds), -1).mean(-1)


def _randn(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> Tensor:
    return torch.randn(shape, generator=gen).to(device)


@torch.no_grad()
def iwae_bound(vae: ConvVAE, x: Tensor, k: int, gen: torch.Generator, *, max_decode: int = 1024) -> Tensor:
    """Negative IWAE-k bound per image, ``(B,)``: −log (1/k) Σ p(x, z_i) / q(z_i | x).

    Samples are decoded in chunks of at most ``max_decode`` images to bound memory.

    Raises:
        ValueError: ``k < 1``.
    """
    if k < 1:
        raise ConfigError(f"`iwae_k` must be >= 1. Received: iwae_k={k}")
    mean, logvar = (t.float() for t in vae.encode(x))  # (B, d)
    b, d = mean.shape
    std = torch.exp(0.5 * logvar)
    chunk = max(1, max_decode // b)
    lse = torch.full((b,), -math.inf, device=x.device)
    for start in range(0, k, chunk):
        kc = min(chunk, k - start)
        eps = _randn((kc, b, d), gen, x.device)
        z = mean + std * eps  # (kc, B, d)
        logits = vae.decode_logits(z.reshape(kc * b, d)).reshape(kc, b, *x.shape[1:])
        log_px = -vae.recon_nll(logits, x)  # (kc, B)
        log_qz = -0.5 * (eps.pow(2) + logvar + _LOG_2PI).sum(-1)
        log_w = log_px + log_standard_normal(z) - log_qz
        lse = torch.logsumexp(torch.stack([lse, torch.logsumexp(log_w, 0)]), 0)
    return -(lse - math.log(k))


@torch.no_grad()
def per_image_metrics(model: TorchGenerativeModel, images: np.ndarray, *, iwae_k: int = 64, seed: int = 0,
                      batch_size: int = 128) -> dict[str, np.ndarray]:
    """Per-image arrays: ``neg_elbo``, ``rate``, ``distortion``, ``neg_iwae``, ``psnr``, ``ssim``.

    Args:
        model: a loaded VAE.
        images: ``(N, H, W)`` uint8 or [0, 1] floats.
        iwae_k: importance samples of the IWAE bound (0 skips it).
        seed: seeds the ELBO and IWAE samples.
        batch_size: images per forward pass.
    """
    vae: ConvVAE = model.module.eval()
    x_all = model.images_to_tensor(images)
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("neg_elbo", "rate", "distortion", "neg_iwae", "psnr", "ssim")}
    for i in tqdm(range(0, len(x_all), batch_size), desc="evaluate", leave=False, disable=None):
        x = x_all[i:i + batch_size]  # (B, 1, H, W)
        mean, logvar = (t.float() for t in vae.encode(x))
        rate = kl_diag_normal(mean, logvar).sum(-1)
        z = mean + torch.exp(0.5 * logvar) * _randn(tuple(mean.shape), gen, x.device)
        distortion = vae.recon_nll(vae.decode_logits(z), x)
        recon = vae.decode(mean).float().clamp(0, 1)
        values = {"neg_elbo": distortion + rate, "rate": rate, "distortion": distortion,
                  "psnr": peak_signal_noise_ratio(recon, x, data_range=1.0, reduction="none", dim=(1, 2, 3)),
                  "ssim": ssim_valid(recon, x)}
        if iwae_k > 0:
            values["neg_iwae"] = iwae_bound(vae, x, iwae_k, gen)
        for k, v in values.items():
            out[k].append(v.float().cpu().numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in out.items() if v}


def evaluate(model: TorchGenerativeModel, faces: Faces, *, iwae_k: int = 64, classifier: Any = None,
             seed: int = 0, out_dir: Any = None, batch_size: int = 128) -> dict[str, Any]:
    """Metrics of a VAE on held-out ``faces``: overall means and per ethnicity / gender / age band.

    Args:
        model: a loaded VAE (:func:`facevae.backend.load`).
        faces: held-out faces.
        iwae_k: importance samples for the IWAE bound (0 skips it).
        classifier: optional loaded CNN; adds the Fréchet distance (:func:`shared.evaluation.summarize_generative`).
        seed: seeds every sampled quantity.
        out_dir: accepted for the backend signature; nothing extra is written here.
        batch_size: images per forward pass.

    Returns:
        A JSON-serialisable dict (nats per image for the likelihood terms, dB for PSNR).
    """
    per = per_image_metrics(model, faces.images, iwae_k=iwae_k, seed=seed, batch_size=batch_size)
    return summarize_generative(model, faces, per, iwae_k=iwae_k, seed=seed, classifier=classifier,
                                n_parameters=sum(p.numel() for p in model.module.parameters()))
