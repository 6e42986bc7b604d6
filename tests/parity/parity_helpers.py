"""Paired torch / TF VAEs with identical weights, shared by the tests/parity modules.

The torch model is the reference: it is built with a seed, its BatchNorm statistics and affine
parameters are randomised (so a wrong BN mapping cannot hide behind identity statistics), and its
weights are moved to a freshly built Keras model through :mod:`shared.weight_layout`.
"""
from __future__ import annotations

import numpy as np
import torch

from facevae import weights_io as torch_io
from facevae.adapter import TorchGenerativeModel
from facevae.models import ConvVAE
from facevae_tf import weights_io as tf_io
from facevae_tf.adapter import TFGenerativeModel
from facevae_tf.models import FaceVAE, build_model
from shared.architecture import vae_plan
from shared.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from shared.weight_layout import convert_weights

__all__ = ["SMALL_SHAPES", "small_config", "torch_vae", "tf_from_torch", "torch_from_tf", "protocol_pair",
           "random_images", "TOL", "assert_same_torch_weights"]

TOL = 1e-4  # max abs difference allowed for images, logits, means and log-variances (fp32)

# (preset, image_size) -> (channels, hidden_dims): small, but every layer kind of the preset appears.
SMALL_SHAPES = {
    ("default", 32): ((4, 8), (16,)),
    ("default", 48): ((4, 8, 8, 16), (16,)),
    ("seed", 32): ((4, 8, 8), (16, 8)),
    ("seed", 48): ((4, 8, 8), (16, 8)),
}


def small_config(preset: str = "default", image_size: int = 32, **kw) -> ModelConfig:
    """A small ``vae`` config of ``preset`` (block style of the preset, few channels)."""
    channels, hidden = SMALL_SHAPES[(preset, image_size)]
    base = dict(family="vae", preset=preset, image_size=image_size, latent_dim=6, channels=channels,
                hidden_dims=hidden)
    base.update(kw)
    return ModelConfig(**base)


def run_config(model: ModelConfig, backend: str) -> RunConfig:
    return RunConfig(backend=backend, model=model, train=TrainConfig(device="cpu"),
                     data=DataConfig(spec="synthetic:64", image_size=model.image_size))


@torch.no_grad()
def torch_vae(cfg: ModelConfig, seed: int = 0) -> ConvVAE:
    """A seeded torch VAE in eval mode with randomised BN parameters and running statistics."""
    torch.manual_seed(seed)
    vae = ConvVAE(cfg)
    for m in vae.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.uniform_(0.8, 1.2)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return vae.eval()


def tf_from_torch(vae: ConvVAE) -> FaceVAE:
    """A Keras VAE of the same config holding ``vae``'s weights (converted torch -> tf)."""
    model = build_model(vae.cfg)
    weights = convert_weights(torch_io.export_plan_weights(vae), vae_plan(vae.cfg), src="torch", dst="tf")
    return tf_io.import_plan_weights(model, weights)


def torch_from_tf(model: FaceVAE) -> ConvVAE:
    """A torch VAE of the same config holding ``model``'s weights (converted tf -> torch), eval mode."""
    cfg = model.model_config
    weights = convert_weights(tf_io.export_plan_weights(model), vae_plan(cfg), src="tf", dst="torch")
    return torch_io.import_plan_weights(ConvVAE(cfg), weights).eval()


def protocol_pair(cfg: ModelConfig, seed: int = 0) -> tuple[TorchGenerativeModel, TFGenerativeModel]:
    """The numpy-protocol adapters of a torch VAE and its converted Keras twin."""
    vae = torch_vae(cfg, seed)
    return (TorchGenerativeModel(vae, run_config(cfg, "torch")),
            TFGenerativeModel(tf_from_torch(vae), run_config(cfg, "tf")))


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Synthetic faces ``(n, size, size)`` float32 in [0, 1] (deterministic)."""
    from shared.synthetic import generate_faces
    return generate_faces(n, size, seed).floats()


def assert_same_torch_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every parameter and BN statistic of ``a`` and ``b`` is bit-identical (batch counters aside)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for name in sa:
        if not name.endswith("num_batches_tracked"):
            assert np.array_equal(sa[name].numpy(), sb[name].numpy()), name
