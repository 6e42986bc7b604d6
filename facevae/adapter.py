"""A trained torch VAE behind the numpy protocol of :mod:`shared.protocol`.

numpy in, numpy out: eval mode, no gradients, batched; images cross as float32 ``(N, H, W)`` in [0, 1]
(uint8 accepted). Sampling draws z on the CPU with a seeded generator, so ``sample(n, seed)`` gives
the same faces on every device.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from shared.config import RunConfig
from shared.protocol import as_unit_float

__all__ = ["TorchGenerativeModel", "BATCH"]

BATCH = 512  # faces per forward pass


class TorchGenerativeModel:
    """:class:`shared.protocol.GenerativeModel` around a torch VAE.

    Args:
        module: a model with ``encode(x) -> (mean, logvar)`` and ``decode(z) -> images in [0, 1]``.
        config: the run config it was trained with.

    Attributes:
        module, config, latent_dim, conditional (always False), device.
    """

    conditional = False

    def __init__(self, module: nn.Module, config: RunConfig):
        self.module = module.eval()
        self.config = config
        self.latent_dim = int(config.model.latent_dim)
        self.device = next(module.parameters()).device

    def images_to_tensor(self, images: np.ndarray) -> Tensor:
        """``(N, H, W)`` uint8 or [0, 1] floats -> ``(N, 1, H, W)`` float32 on the model's device."""
        x = as_unit_float(images)
        if x.ndim != 3:
            raise ValueError(f"images must be (N, H, W). Received shape {x.shape}")
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device).unsqueeze(1)

    @torch.no_grad()
    def _batched(self, fn: Callable[[Tensor], tuple[Tensor, ...]], inputs: Tensor) -> tuple[np.ndarray, ...]:
        self.module.eval()
        chunks = [inputs[i:i + BATCH] for i in range(0, len(inputs), BATCH)] or [inputs]
        outs = [fn(c) for c in chunks]
        return tuple(np.concatenate([o[j].float().cpu().numpy() for o in outs]) for j in range(len(outs[0])))

    def encode(self, images: np.ndarray, labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior ``(mean, logvar)``, each ``(N, latent_dim)`` float32."""
        mean, logvar = self._batched(lambda x: self.module.encode(x), self.images_to_tensor(images))
        return mean, logvar

    def decode(self, z: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Decoder mean images ``(N, H, W)`` float32 in [0, 1]."""
        zt = torch.as_tensor(np.asarray(z, dtype=np.float32), device=self.device)
        if zt.ndim != 2 or zt.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (N, {self.latent_dim}). Received shape {tuple(zt.shape)}")
        (images,) = self._batched(lambda v: (self.module.decode(v),), zt)
        return images[:, 0]

    def sample(self, n: int, seed: int, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """``n`` faces decoded from z ~ N(0, I) drawn with ``seed``: ``(n, H, W)`` in [0, 1]."""
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(int(n), self.latent_dim, generator=gen)
        return self.decode(z.numpy())

    def reconstruct(self, images: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Decode the posterior mean: ``(N, H, W)`` in [0, 1]."""
        (out,) = self._batched(lambda x: (self.module.decode(self.module.encode(x)[0]),),
                               self.images_to_tensor(images))
        return out[:, 0]
