"""A trained torch VAE behind the numpy protocol: :class:`shared.protocol.NumpyAdapter` + one batch in torch.

Checks, batching and seeded sampling live in the shared adapter (z is drawn with numpy, so
``sample(n, seed)`` gives the same faces on every device and on the TF backend after conversion).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from shared.config import RunConfig
from shared.protocol import BATCH, NumpyAdapter

__all__ = ["TorchGenerativeModel", "BATCH"]


class TorchGenerativeModel(NumpyAdapter):
    """:class:`shared.protocol.GenerativeModel` around a torch VAE.

    Args:
        module: a model with ``encode(x) -> (mean, logvar)`` and ``decode(z) -> images in [0, 1]``.
        config: the run config it was trained with.

    Attributes:
        module, config, latent_dim, conditional (always False), device.
    """

    def __init__(self, module: nn.Module, config: RunConfig):
        super().__init__(config, int(config.model.latent_dim), conditional=False)
        self.module = module.eval()
        self.device = next(module.parameters()).device

    def images_to_tensor(self, images: np.ndarray) -> Tensor:
        """``(N, H, W)`` uint8 or [0, 1] floats -> ``(N, 1, H, W)`` float32 on the model's device (checked)."""
        return self._tensor(self.check_images(images)).unsqueeze(1)

    def _tensor(self, a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    @staticmethod
    def _numpy(t: Tensor) -> np.ndarray:
        return t.float().cpu().numpy()

    @torch.no_grad()
    def _encode_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self.module.eval().encode(self._tensor(x).unsqueeze(1))
        return self._numpy(mean), self._numpy(logvar)

    @torch.no_grad()
    def _decode_batch(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._numpy(self.module.eval().decode(self._tensor(z)))[:, 0]

    @torch.no_grad()
    def _reconstruct_batch(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        module = self.module.eval()
        return self._numpy(module.decode(module.encode(self._tensor(x).unsqueeze(1))[0]))[:, 0]
