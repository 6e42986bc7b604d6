"""Recipe lab for issue 10: train the library's ``ConvVAE`` on the real faces with a plain torch loop.

A prototyping bench, not a library path: it reuses :class:`facevae.models.ConvVAE` (the ``default``
plan, so any recipe found here is reachable by a config change) and the benchmark's split
(:func:`benchmarks.real_faces.load_split`: train 7054 / val 882 / test 882), and adds recipes to
measure before anyone implements them. Two of them are now library options, measured with
``benchmarks/real_faces.py`` instead: ``image`` is the default likelihood (gaussian, learned σ) and
``--noise`` is ``TrainConfig.input_noise``. The others (``batch``, ``ema``, ``--skip``) are not:

* ``--likelihood`` ``bernoulli`` | ``fixed`` (gaussian, σ = ``--sigma``) | ``image`` (gaussian with
  the per-image ML σ² = MSE_i, the library's ``learned``) | ``batch`` (one ML σ² shared by the batch,
  Rybkin et al. 2021's "optimal σ-VAE") | ``ema`` (one σ² for the data set: a running mean of the MSE,
  detached);
* ``--noise S``: a denoising VAE: the encoder sees ``clip(x + N(0, s²))`` with ``s`` drawn per image
  uniformly in [0, S] (``--noise-p`` of the images are noised at all), the likelihood scores the clean x.

Scores (as ``benchmarks/real_faces.py``): mean per-image PSNR / SSIM of ``decode(mean(encode(x)))``
on the 882 test faces, rate = mean KL on them, and denoising PSNR at σ = 0.3 (clipped noise, seed 2,
as the full benchmark's third σ). Results go to ``benchmarks/results/recipe/NAME/result.json``
(git-ignored; never commit them). ::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/recipe_lab.py --name b01 --beta 0.1 --epochs 5
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.real_faces import DATA, load_split  # noqa: E402
from facevae.losses import kl_diag_normal  # noqa: E402
from facevae.models import ConvVAE  # noqa: E402
from shared.config import ModelConfig  # noqa: E402
from shared.corruptions import gaussian_noise  # noqa: E402
from shared.image_metrics import psnr, ssim  # noqa: E402

__all__ = ["SkipVAE", "parse_args", "distortion", "train", "score", "main"]

OUT = REPO / "benchmarks" / "results" / "recipe"
LIKELIHOODS = ("bernoulli", "fixed", "image", "batch", "ema")
log = logging.getLogger("recipe_lab")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--channels", default="", help="e.g. 32,64,128,256 (default: the preset's)")
    p.add_argument("--hidden-dims", default="", help="e.g. 256 (default: the preset's)")
    p.add_argument("--skip", action="store_true", help="linear skips: x -> mean and z -> logits (PCA-like path)")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli")
    p.add_argument("--sigma", type=float, default=0.1, help="σ of --likelihood fixed")
    p.add_argument("--warmup", type=int, default=0, help="KL warm-up epochs (β·min(1, (e+1)/(W+1)))")
    p.add_argument("--free-bits", type=float, default=0.0)
    p.add_argument("--noise", type=float, default=0.0, help="denoising VAE: max input noise σ")
    p.add_argument("--noise-p", type=float, default=1.0, help="share of images noised")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--schedule", choices=("constant", "cosine", "cosine-step"), default="cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--max-train", type=int, default=0, help="use only the first N training faces (0: all)")
    return p.parse_args(argv)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


class SkipVAE(ConvVAE):
    """ConvVAE plus two linear skips around the conv paths: ``mean += A·x`` and ``logits += B·z + c``.

    The skips give the model PCA's linear path from the first step (the conv paths learn the nonlinear
    remainder); they cost 2·D·d multiply-adds, under 1 % of the convolutions.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        pixels = cfg.image_size ** 2
        self.enc_skip = torch.nn.Linear(pixels, cfg.latent_dim, bias=False)
        self.dec_skip = torch.nn.Linear(cfg.latent_dim, pixels)
        torch.nn.init.zeros_(self.enc_skip.weight)  # start as the plain ConvVAE
        torch.nn.init.zeros_(self.dec_skip.weight)
        torch.nn.init.zeros_(self.dec_skip.bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = super().encode(x)
        return mean + self.enc_skip(x.flatten(1)), logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return super().decode_logits(z) + self.dec_skip(z).view(-1, 1, self.cfg.image_size, self.cfg.image_size)


def distortion(x: torch.Tensor, logits: torch.Tensor, kind: str, sigma: float, state: dict) -> torch.Tensor:
    """Per-image −log p(x|z) (up to constants that have no gradient), ``(B,)``.

    ``state['ema_var']`` carries the data-set σ² of ``ema`` between steps.
    """
    if kind == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    sq = (torch.sigmoid(logits) - x).pow(2).flatten(1)  # (B, D)
    d = sq.shape[1]
    if kind == "fixed":
        return 0.5 * sq.sum(1) / sigma ** 2 + d * math.log(sigma)
    if kind == "image":  # the library's learned σ: σ_i² = MSE_i
        return 0.5 * d * torch.log(sq.mean(1).clamp_min(1e-6))
    if kind == "batch":  # one ML σ² for the whole batch; same value for every image of it
        return (0.5 * d * torch.log(sq.mean().clamp_min(1e-6))).expand(sq.shape[0])
    # ema: σ² = running mean of the data-set MSE, treated as a constant (detached)
    mse = float(sq.detach().mean())
    state["ema_var"] = mse if state.get("ema_var") is None else 0.98 * state["ema_var"] + 0.02 * mse
    var = max(state["ema_var"], 1e-6)
    return 0.5 * sq.sum(1) / var + 0.5 * d * math.log(var)


def _noisy_input(x: torch.Tensor, noise: float, p: float, gen: torch.Generator) -> torch.Tensor:
    if noise <= 0:
        return x
    b = x.shape[0]
    s = torch.rand(b, 1, 1, 1, generator=gen) * noise
    s = s * (torch.rand(b, 1, 1, 1, generator=gen) < p).float()
    return (x + s * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)


@torch.no_grad()
def _reconstruct(model: ConvVAE, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, float]:
    """Mean-decoded reconstructions ``(N, H, W)`` and the mean KL (nats) of ``images``."""
    model.eval()
    outs, kls = [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch]).unsqueeze(1)
        mean, logvar = model.encode(x)
        outs.append(model.decode(mean)[:, 0].numpy())
        kls.append(kl_diag_normal(mean, logvar).sum(1).numpy())
    return np.concatenate(outs), float(np.concatenate(kls).mean())


def score(model: ConvVAE, test: np.ndarray, sigmas: tuple[float, ...] = (0.3,)) -> dict[str, float]:
    """Test PSNR/SSIM/rate and denoising PSNR/SSIM per σ (noise seed 2, as the full benchmark's σ=0.3)."""
    rec, rate = _reconstruct(model, test)
    out = {"psnr": float(np.mean(psnr(rec, test))), "ssim": float(np.mean(ssim(rec, test))), "rate": rate}
    for s in sigmas:
        noisy = np.clip(np.asarray(gaussian_noise(test, s, 2), np.float32), 0.0, 1.0)
        den, _ = _reconstruct(model, noisy)
        out[f"den{s:g}_psnr"] = float(np.mean(psnr(den, test)))
        out[f"den{s:g}_ssim"] = float(np.mean(ssim(den, test)))
    return out


def _lr_factor(args: argparse.Namespace, epoch: int, step: int, steps: int) -> float:
    if args.schedule == "cosine":  # per epoch, as TrainConfig.lr_factor
        return 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs))
    if args.schedule == "cosine-step":  # per step, down to 0 at the end
        return 0.5 * (1.0 + math.cos(math.pi * (epoch * steps + step) / (args.epochs * steps)))
    return 1.0


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train(args: argparse.Namespace, train_x: np.ndarray, val_x: np.ndarray) -> tuple[ConvVAE, list[dict]]:
    """Train a ConvVAE under ``args``; returns the last-epoch model and one log row per epoch."""
    torch.manual_seed(args.seed)
    cfg = ModelConfig(family="vae", latent_dim=args.latent_dim, beta=args.beta,
                      channels=_ints(args.channels), hidden_dims=_ints(args.hidden_dims))
    model = SkipVAE(cfg) if args.skip else ConvVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    data = torch.from_numpy(train_x).unsqueeze(1)
    n, bs = len(data), args.batch_size
    steps = n // bs  # drop the last partial batch (BatchNorm)
    state: dict[str, Any] = {"ema_var": None}
    rows = []
    for epoch in range(args.epochs):
        model.train()
        beta = args.beta * min(1.0, (epoch + 1) / (args.warmup + 1)) if args.warmup else args.beta
        perm = torch.randperm(n, generator=gen)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        tot = {"loss": 0.0, "dist_mse": 0.0, "rate": 0.0}
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = args.lr * _lr_factor(args, epoch, step, steps)
            x = data[perm[step * bs:(step + 1) * bs]]
            mean, logvar = model.encode(_noisy_input(x, args.noise, args.noise_p, gen))
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
            logits = model.decode_logits(z)
            dist = distortion(x, logits, args.likelihood, args.sigma, state)
            kl = kl_diag_normal(mean, logvar)  # (B, d)
            per_dim = kl.mean(0)
            used = per_dim.clamp_min(args.free_bits).sum() if args.free_bits else per_dim.sum()
            loss = dist.mean() + beta * used
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot["loss"] += float(loss.detach())
            tot["rate"] += float(per_dim.sum())
            tot["dist_mse"] += float((torch.sigmoid(logits.detach()) - x).pow(2).mean())
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        rec, val_rate = _reconstruct(model, val_x)
        row = {"epoch": epoch + 1, "beta": beta, **{k: v / steps for k, v in tot.items()},
               "val_psnr": float(np.mean(psnr(rec, val_x))), "val_rate": val_rate, "wall_s": wall, "cpu_s": cpu,
               "ema_sigma": math.sqrt(state["ema_var"]) if state["ema_var"] else None}
        rows.append(row)
        log.info("epoch %d: loss %.1f train-mse %.5f rate %.1f | val PSNR %.2f rate %.1f | %.1f s wall, %.1f s cpu",
                 epoch + 1, row["loss"], row["dist_mse"], row["rate"], row["val_psnr"], val_rate, wall, cpu)
    return model, rows


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    faces, split, _ = load_split(args.data)
    train_x = faces.subset(split.train).floats().astype(np.float32)
    if args.max_train:
        train_x = train_x[:args.max_train]
    val_x = faces.subset(split.val[:200]).floats().astype(np.float32)
    test_x = faces.subset(split.test).floats().astype(np.float32)
    t0 = time.perf_counter()
    model, rows = train(args, train_x, val_x)
    train_s = time.perf_counter() - t0
    res = {"args": vars(args), "train_wall_s": train_s, "epoch_wall_s": [r["wall_s"] for r in rows],
           "epoch_cpu_s": [r["cpu_s"] for r in rows], "test": score(model, test_x, (0.1, 0.3)), "epochs": rows}
    out = OUT / args.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(res, indent=1))
    torch.save(model.state_dict(), out / "model.pt")
    t = res["test"]
    print(f"RESULT {args.name}: test PSNR {t['psnr']:.2f} SSIM {t['ssim']:.3f} rate {t['rate']:.1f} | "
          f"denoise σ=0.1 {t['den0.1_psnr']:.2f} σ=0.3 {t['den0.3_psnr']:.2f} | "
          f"{args.epochs} ep, {train_s:.0f} s wall, {sum(res['epoch_cpu_s']):.0f} s cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
