"""Tiny VAE configs and face sets shared by the torch VAE tests."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from shared.config import ModelConfig, RunConfig, TrainConfig, DataConfig
from shared.faces import Faces

__all__ = ["tiny_model_config", "tiny_run_config", "faces", "split_of", "single_thread"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: tiny models run 10-20x faster than with 2 threads on a busy 2-core machine."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model_config(**kw) -> ModelConfig:
    base = dict(family="vae", image_size=32, latent_dim=3, channels=(4, 8), hidden_dims=(16,))
    base.update(kw)
    return ModelConfig(**base)


def tiny_run_config(epochs: int = 2, **model_kw) -> RunConfig:
    model = tiny_model_config(**model_kw)
    train = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, optimizer="adam", schedule="cosine",
                        early_stopping=0, seed=1, device="cpu")
    return RunConfig(model=model, train=train, data=DataConfig(spec="synthetic:300", image_size=model.image_size))


def faces(n: int, image_size: int = 32, seed: int = 0) -> Faces:
    """Synthetic faces (random uint8 arrays when shared.synthetic is unavailable)."""
    try:
        from shared.synthetic import generate_faces
        return generate_faces(n, image_size, seed)
    except ImportError:
        rng = np.random.default_rng(seed)
        labels = pd.DataFrame({"age": rng.integers(1, 90, n), "ethnicity": rng.integers(0, 5, n),
                               "gender": rng.integers(0, 2, n), "img_name": [f"f{i}.jpg" for i in range(n)]})
        return Faces(rng.integers(0, 256, (n, image_size, image_size), dtype=np.uint8), labels)


def split_of(n: int, val: int, test: int) -> SimpleNamespace:
    """A split with the Split attributes the backend reads (train / val / test index arrays)."""
    idx = np.arange(n)
    return SimpleNamespace(train=idx[: n - val - test], val=idx[n - val - test: n - test], test=idx[n - test:])
