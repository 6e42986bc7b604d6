"""Tiny TF configs, synthetic faces and run folders shared by the tests/unit/test_tf_*.py modules."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from shared.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from shared.faces import Faces

__all__ = ["tiny_model_config", "tiny_run_config", "tiny_faces", "split_of", "new_run_dir"]


def tiny_model_config(family: str = "vae", **kw) -> ModelConfig:
    # bernoulli unless asked, and a cvae without label consistency: the hand computations of the loss
    # tests are written for them (test_tf_label_consistency.py tests label consistency)
    base = dict(family=family, image_size=32, latent_dim=4, channels=(4, 8), hidden_dims=(16,),
                flow_steps=2, flow_hidden=16, context_dim=8, likelihood="bernoulli", sigma_mode="fixed",
                label_loss=0.0)
    base.update(kw)
    return ModelConfig(**base)


def tiny_run_config(family: str = "vae", *, epochs: int = 2, model: dict | None = None, **train_kw) -> RunConfig:
    train = dict(epochs=epochs, batch_size=32, lr=3e-3, optimizer="adam", schedule="constant",
                 early_stopping=0, seed=1, device="cpu")
    train.update(train_kw)
    mcfg = tiny_model_config(family, **(model or {}))
    return RunConfig(backend="tf", model=mcfg, train=TrainConfig(**train),
                     data=DataConfig(spec="synthetic:200", image_size=32))


def tiny_faces(n: int = 120, seed: int = 0) -> Faces:
    from shared.synthetic import generate_faces
    return generate_faces(n, 32, seed)


def split_of(n: int, val: int, test: int) -> SimpleNamespace:
    """A split with the attributes the backend reads (train / val / test index arrays)."""
    idx = np.arange(n)
    return SimpleNamespace(train=idx[: n - val - test], val=idx[n - val - test: n - test], test=idx[n - test:])


def new_run_dir(root: Path, name: str, config: RunConfig) -> Path:
    run = Path(root) / name
    run.mkdir(parents=True)
    config.save(run / "config.json")
    return run
