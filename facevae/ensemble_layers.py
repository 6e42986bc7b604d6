"""The forward pass of K stacked ``ConvVAE`` members as grouped layers (``facevae.ensemble``).

``p`` and ``b`` are the members' stacked parameters and buffers (:func:`torch.func.stack_module_state`:
a leading member axis of size K), keyed by the ``ConvVAE`` names (``encoder.0.weight``, ...).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from facevae.losses import bounded_logvar, kl_diag_normal
from facevae.models import ConvVAE
from shared.errors import ConfigError

__all__ = ["Grouped", "batch_norm"]


class Grouped:
    """The forward pass of K stacked ``ConvVAE`` members as grouped layers, one kernel per layer.

    Feature maps are ``(N, K·C, H, W)``: member k owns channels ``k·C .. (k+1)·C``, so a convolution
    with ``groups=K`` and a BatchNorm over the K·C channels are exactly each member's own layer
    (their running statistics are views of the stacked buffers, updated in place). Features are
    ``(K, N, F)`` and linear layers one batched matrix product. The input faces are shared: the first
    convolution is an ordinary one with K·C output channels. (``vmap`` over ``functional_call``
    computes the same, but its convolution and BatchNorm rules copy and permute every activation:
    twice as slow on a CPU.)
    """

    def __init__(self, model: ConvVAE):
        self.model = model  # layer types and hyper-parameters; its own weights are not used here

    def run(self, seq: nn.Sequential, prefix: str, h: Tensor, p: Mapping[str, Tensor], b: Mapping[str, Tensor],
            k: int, training: bool) -> Tensor:
        shared = prefix.endswith("encoder")  # the faces, (N, 1, H, W), the same for every member
        for name, mod in seq.named_children():
            h = self.layer(mod, f"{prefix}.{name}", h, p, b, k, training, shared)
            shared = False
        return h

    @staticmethod
    def layer(mod: nn.Module, name: str, h: Tensor, p: Mapping[str, Tensor], b: Mapping[str, Tensor], k: int,
              training: bool, shared: bool = False) -> Tensor:
        if isinstance(mod, nn.Linear):  # (K, N, in) -> (K, N, out)
            return torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), h, p[f"{name}.weight"].transpose(1, 2))
        if shared and not isinstance(mod, nn.Conv2d):
            h = h.repeat(1, k, 1, 1)
        if isinstance(mod, nn.Conv2d):
            w = p[f"{name}.weight"]
            return F.conv2d(h, w.reshape(-1, *w.shape[2:]), p[f"{name}.bias"].reshape(-1), mod.stride, mod.padding,
                             mod.dilation, 1 if shared else k)
        if isinstance(mod, nn.ConvTranspose2d):
            w = p[f"{name}.weight"]
            return F.conv_transpose2d(h, w.reshape(-1, *w.shape[2:]), p[f"{name}.bias"].reshape(-1), mod.stride,
                                      mod.padding, mod.output_padding, k, mod.dilation)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return batch_norm(mod, name, h, p, b, k, training)
        if isinstance(mod, nn.Flatten):  # (N, K·C, H, W) -> (K, N, C·H·W), each member's own flatten order
            return h.reshape(h.shape[0], k, -1).transpose(0, 1)
        if isinstance(mod, nn.Unflatten):  # (K, N, C·H·W) -> (N, K·C, H, W)
            c, hh, ww = mod.unflattened_size
            return h.transpose(0, 1).reshape(h.shape[1], k * c, hh, ww)
        if isinstance(mod, (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d)):  # per element or per channel
            return mod(h)
        raise ConfigError(f"a batched sweep cannot stack the layer {type(mod).__name__} ({name}); "
                          f"train these runs one by one (without --batched)")

    def terms(self, p: Mapping[str, Tensor], b: Mapping[str, Tensor], x: Tensor, eps: Tensor, betas: Tensor,
              k: int, training: bool, x_in: Optional[Tensor] = None) -> Tensor:
        """The ``(K, 5)`` terms ``(loss, distortion, rate, elbo, beta)`` of ``ConvVAE.loss_terms``, per member.

        ``x_in`` (a denoising VAE's noisy faces) is what the encoders read instead of ``x``; the
        likelihood always scores ``x``.
        """
        vae = self.model
        h = self.run(vae.encoder, "encoder", x if x_in is None else x_in, p, b, k, training)
        h = self.run(vae.encoder_dense, "encoder_dense", h, p, b, k, training)
        mean = self.layer(vae.mean_head, "mean_head", h, p, b, k, training).float()  # (K, N, d)
        logvar = bounded_logvar(self.layer(vae.logvar_head, "logvar_head", h, p, b, k, training).float())
        z = mean + torch.exp(0.5 * logvar) * eps.to(mean.dtype)
        logits = self.run(vae.decoder, "decoder", z, p, b, k, training).float()  # (N, K, H, W)
        logits = logits.reshape(logits.shape[0], k, 1, *logits.shape[2:]).transpose(0, 1)  # (K, N, 1, H, W)
        distortion = vae.recon_nll(logits, x).mean(1)  # (K,)
        per_dim = kl_diag_normal(mean, logvar).mean(1)  # (K, d), as facevae.losses.combine_terms
        rate = per_dim.sum(-1)
        free_bits = vae.cfg.free_bits if training else 0.0
        used = per_dim.clamp_min(free_bits).sum(-1) if free_bits > 0 else rate
        return torch.stack([distortion + betas * used, distortion, rate, distortion + rate, betas], dim=1)


def batch_norm(mod: nn.Module, name: str, h: Tensor, p: Mapping[str, Tensor], b: Mapping[str, Tensor], k: int,
               training: bool) -> Tensor:
    """``nn.BatchNorm1d/2d`` of every member at once; running statistics are updated in place as the module does."""
    factor = 0.0
    if training and mod.track_running_stats:
        b[f"{name}.num_batches_tracked"].add_(1)
        factor = (1.0 / float(b[f"{name}.num_batches_tracked"][0]) if mod.momentum is None else mod.momentum)
    mean, var = b[f"{name}.running_mean"].view(-1), b[f"{name}.running_var"].view(-1)  # views: updated in place
    weight, bias = p[f"{name}.weight"].reshape(-1), p[f"{name}.bias"].reshape(-1)
    if h.dim() == 3:  # (K, N, F) features -> (N, K·F) channels
        n = h.shape[1]
        out = F.batch_norm(h.transpose(0, 1).reshape(n, -1), mean, var, weight, bias, training, factor, mod.eps)
        return out.reshape(n, k, -1).transpose(0, 1)
    return F.batch_norm(h, mean, var, weight, bias, training, factor, mod.eps)
