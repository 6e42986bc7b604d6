"""pythae's side of ``benchmarks/peers.py``: its ``BaseTrainer`` on our ``ConvVAE`` architecture.

Runs inside the peers virtualenv (torch pinned to the main venv's CPU build, ``pythae==0.1.2``,
numpy), never in the main one: ``benchmarks/peers.py`` starts it as a subprocess. Our architecture
comes from the source tree through ``sys.path`` (only :mod:`facevae.models` and :mod:`shared.config`
are imported, which need torch and numpy alone); pythae never imports torchvision.

The wrapping keeps the arithmetic of :class:`facevae.models.ConvVAE`: pythae's encoder returns our
posterior mean and soft-clamped log-variance, its decoder returns ``sigmoid`` of our decoder's
logits (pythae's ``bce`` loss takes probabilities), and pythae adds the KL as we do with β = 1.
Everything else is pythae as a user gets it: its ``DataLoader`` over a ``BaseDataset`` (shuffled,
per-sample collation), NCHW tensors, ``torch.optim.Adam`` with its defaults, ``loss.item()`` every
step, an evaluation pass, a deep copy of the best model each epoch and the final save.

    benchmarks/results/venv-pythae/bin/python benchmarks/peers_pythae.py --faces F.npy --result R.json \
        --batch 32 --epochs 3 --n-val 64 --lr 2e-3 --threads 2
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

__all__ = ["wrap", "main"]


def wrap(vae):
    """``(encoder, decoder)``: pythae ``BaseEncoder``/``BaseDecoder`` sharing the modules of ``vae``.

    Args:
        vae: a :class:`facevae.models.ConvVAE`.

    Returns:
        The two wrappers; their parameters are ``vae``'s (no copy), so both sides start from the same weights.
    """
    import torch
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    from facevae.losses import bounded_logvar

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.encoder_dense = vae.encoder, vae.encoder_dense
            self.mean_head, self.logvar_head = vae.mean_head, vae.logvar_head

        def forward(self, x):
            h = self.encoder_dense(self.encoder(x))
            return ModelOutput(embedding=self.mean_head(h), log_covariance=bounded_logvar(self.logvar_head(h)))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = vae.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.decoder(z)))

    return Encoder(), Decoder()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", required=True, help=".npy of uint8 faces (N, H, W): first n-val are validation")
    p.add_argument("--result", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--n-val", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    import numpy as np
    import torch
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    from facevae.models import ConvVAE
    from shared.config import ModelConfig

    logging.getLogger("pythae").setLevel(logging.WARNING)  # its handlers print every epoch otherwise
    if a.threads:
        torch.set_num_threads(a.threads)
    faces = np.load(a.faces)
    x = torch.from_numpy(faces).float().div_(255.0).unsqueeze(1)  # (N, 1, H, W) in [0, 1]
    val, train = x[:a.n_val], x[a.n_val:]
    size = faces.shape[-1]
    torch.manual_seed(a.seed)  # the same initial weights as facevae.backend.build_vae(cfg, seed)
    vae = ConvVAE(ModelConfig(family="vae", preset="default", image_size=size, latent_dim=a.latent_dim))
    encoder, decoder = wrap(vae)
    model = VAE(VAEConfig(input_dim=(1, size, size), latent_dim=a.latent_dim, reconstruction_loss="bce"),
                encoder=encoder, decoder=decoder)
    epoch_s: list[tuple[float, float]] = []  # (wall, process CPU) seconds of each training pass
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(output_dir=out, per_device_train_batch_size=a.batch,
                                per_device_eval_batch_size=a.batch, num_epochs=a.epochs, learning_rate=a.lr,
                                seed=a.seed, no_cuda=True)
        trainer = BaseTrainer(model, BaseDataset(train, torch.zeros(len(train))),
                              BaseDataset(val, torch.zeros(len(val))), cfg)
        inner = trainer.train_step

        def timed_step(epoch: int) -> float:  # pythae's own training pass, timed as ours is
            wall, cpu = time.perf_counter(), time.process_time()
            loss = inner(epoch)
            epoch_s.append((time.perf_counter() - wall, time.process_time() - cpu))
            losses.append(float(loss))
            return loss

        trainer.train_step = timed_step
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    n = len(train)
    result = {"ok": True, "images_per_s": [n / w for w, _ in epoch_s],
              "images_per_cpu_s": [n / c if c > 0 else None for _, c in epoch_s], "train_loss": losses,
              "end_to_end_images_per_s": n * a.epochs / wall, "process_s": time.perf_counter() - t_start,
              "threads": torch.get_num_threads(), "versions": {"torch": torch.__version__,
                                                               "pythae": _version("pythae")},
              "torchvision_imported": "torchvision" in sys.modules, "omp_num_threads": os.environ.get(
                  "OMP_NUM_THREADS")}
    Path(a.result).write_text(json.dumps(result, indent=2))
    return 0


def _version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    sys.exit(main())
