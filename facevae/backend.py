"""The PyTorch backend surface: ``train``, ``load``, ``evaluate`` (+ ``inpaint_optimize``).

``shared.registry`` imports this module when the ``torch`` backend is asked for. Each function
dispatches on ``config.model.family``: ``vae`` is handled here, ``cnn`` by
:mod:`facevae.cnn_backend` (same signatures, imported only when needed).

Under ``torchrun`` the backend also offers the two collectives :class:`shared.distributed.Ranks`
needs before and after training (``broadcast_object``, ``barrier``, from :mod:`facevae.distributed`);
``train`` itself needs nothing more, as its engine finds the process group by itself.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from facevae.adapter import BATCH, TorchGenerativeModel
from facevae.distributed import barrier, broadcast_object
from facevae.engine import fit, load_weights, select_device
from facevae.models import ConvVAE
from facevae.weights_io import import_plan_weights
from shared.config import ModelConfig, RunConfig
from shared.errors import ConfigError
from shared.faces import Faces
from shared.runs import load_run_config

__all__ = ["train", "load", "evaluate", "inpaint_optimize", "build_vae", "broadcast_object", "barrier"]

log = logging.getLogger(__name__)


def _check_family(config: RunConfig) -> str:
    family = config.model.family
    if family not in ("vae", "cnn"):
        raise ConfigError(f"the torch backend trains `family` 'vae' or 'cnn'. Received: family={family!r}")
    return family


def build_vae(cfg: ModelConfig, seed: int = 0) -> ConvVAE:
    """A freshly initialised :class:`ConvVAE`, weights seeded with ``seed``."""
    torch.manual_seed(seed)
    return ConvVAE(cfg)


def train(config: RunConfig, faces: Faces, split: Any, run_dir: Path, *, resume: bool = False,
          initial_weights: Optional[Mapping[str, np.ndarray]] = None) -> dict:
    """Train the model of ``config`` on ``faces[split.train]``, validating on ``faces[split.val]``.

    Args:
        config: the run config (``config.json`` is already in ``run_dir``).
        faces: every face of the data set.
        split: a :class:`shared.data.splits.Split` (``train``/``val``/``test`` index arrays).
        run_dir: the run folder.
        resume: continue from ``checkpoints/last.pt``.
        initial_weights: optional plan-keyed starting weights in torch layout (as
            ``facevae.weights_io.export_plan_weights`` gives them; ``vae`` family only), e.g. to start
            both backends from the very same weights. Ignored on ``resume`` (the checkpoint wins).

    Returns:
        The best epoch's validation metrics plus the learning guard's ``warnings``.
    """
    if _check_family(config) == "cnn":
        if initial_weights is not None:
            raise ConfigError("`initial_weights` exist only for the vae family (the layer plan's weights)")
        from facevae import cnn_backend
        return cnn_backend.train(config, faces, split, run_dir, resume=resume)
    model = build_vae(config.model, config.train.seed)
    if initial_weights is not None:
        import_plan_weights(model, initial_weights)
    log.info("VAE with %d parameters (preset %s, latent_dim %d)", model.n_parameters, config.model.preset,
             config.model.latent_dim)
    train_data = {"images": faces.images[np.asarray(split.train)]}
    val_data = {"images": faces.images[np.asarray(split.val)]}
    return fit(model, train_data, val_data, config, Path(run_dir), resume=resume)


def _load_device(config: RunConfig) -> torch.device:
    return select_device("cpu" if config.train.device == "cpu" else "auto")


def load(run_dir: Path, which: str = "best") -> Any:
    """The trained model of ``run_dir``: a :class:`TorchGenerativeModel` for a VAE (eval mode).

    Raises:
        RunError: not a run folder, or a missing/unsafe checkpoint.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if _check_family(config) == "cnn":
        from facevae import cnn_backend
        return cnn_backend.load(run_dir)
    module = load_weights(ConvVAE(config.model), run_dir, which)
    return TorchGenerativeModel(module.to(_load_device(config)), config)


def evaluate(model: Any, faces: Faces, *, iwae_k: int = 64, classifier: Any = None, seed: int = 0,
             out_dir: Optional[Path] = None) -> dict:
    """Held-out metrics of a loaded model on ``faces`` (JSON-serialisable).

    For a VAE see :func:`facevae.evaluation.evaluate`; a CNN goes to ``facevae.cnn_backend``.
    """
    if _check_family(model.config) == "cnn":
        from facevae import cnn_backend
        return cnn_backend.evaluate(model, faces, iwae_k=iwae_k, classifier=classifier, seed=seed,
                                    out_dir=out_dir)
    from facevae.evaluation import evaluate as evaluate_vae
    return evaluate_vae(model, faces, iwae_k=iwae_k, classifier=classifier, seed=seed, out_dir=out_dir)


def inpaint_optimize(model: TorchGenerativeModel, images: np.ndarray, mask: np.ndarray, *, steps: int = 200,
                     lr: float = 0.05, prior_weight: float = 1.0, seed: int = 0) -> np.ndarray:
    """Latent-optimisation inpainting: fit z to the known pixels with a prior term ½‖z‖².

    z starts at the encoder mean of the masked faces (plus N(0, 0.01²) jitter drawn with ``seed``)
    and minimises ``NLL(known pixels | z) + prior_weight · ½‖z‖²`` with Adam; weights stay frozen.
    Mirrors ``facevae_tf.backend.inpaint_optimize`` (numpy jitter: the same z0 on both backends).

    Args:
        model: a loaded VAE (:func:`load`).
        images: ``(N, H, W)`` faces in [0, 1] (values under the mask are ignored).
        mask: ``(N, H, W)`` bool, True where a pixel is missing.
        steps, lr, prior_weight: optimisation settings.
        seed: seeds the jitter.

    Returns:
        Decoded images ``(N, H, W)`` float32 in [0, 1] (the caller composites the known pixels).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"`steps` must be an integer >= 0. Received: steps={steps!r}")
    vae: ConvVAE = model.module.eval()
    x_all = model.images_to_tensor(images)
    known_all = torch.from_numpy(~np.asarray(mask, bool)).to(model.device).unsqueeze(1).float()
    rng = np.random.default_rng(int(seed))  # the TF backend draws the same jitter
    outs = []
    flags = [p.requires_grad for p in vae.parameters()]
    vae.requires_grad_(False)
    try:
        for i in range(0, len(x_all), BATCH):
            x, known = x_all[i:i + BATCH] * known_all[i:i + BATCH], known_all[i:i + BATCH]
            with torch.no_grad():
                z0 = vae.encode(x)[0]
            jitter = torch.from_numpy(rng.standard_normal(tuple(z0.shape)).astype(np.float32)).to(z0.device)
            z = (z0 + 0.01 * jitter).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                logits = vae.decode_logits(z)
                nll = vae.recon_nll(logits, x, known)  # (B,) known pixels only
                loss = (nll + prior_weight * 0.5 * z.pow(2).sum(-1)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                outs.append(vae.decode(z)[:, 0].float().cpu().numpy())
    finally:
        for p, f in zip(vae.parameters(), flags):
            p.requires_grad_(f)
    return np.concatenate(outs) if outs else np.zeros_like(np.asarray(images, np.float32))
