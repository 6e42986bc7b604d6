"""The default-recipe learning check shared by tests/unit/test_stability.py and its real-data twin.

"Learns" means what a user would check after 3 epochs of the default recipe: the validation loss
fell below its epoch-1 value, the training rate never left a sane range (≤ 1e4 nats), the test
faces are reconstructed better than by the mean training face, no learning-guard warning was
raised, and the decoder uses z (prior samples differ from each other).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shared import api
from shared.baselines import PCA
from shared.data.splits import Split
from shared.image_metrics import psnr
from shared.runs import read_metrics

MAX_RATE = 1e4


def train_default(spec: str, out: Path, backend: str, latent_dim: int, seed: int, likelihood: str | None = None,
                  epochs: int = 3, **extra) -> dict:
    """Train the default recipe (its likelihood unless ``likelihood`` is given) for ``epochs`` epochs and
    measure it on the run's own test split; ``pca8_psnr`` is PCA with 8 components fit on the train split."""
    lik = {} if likelihood is None else (
        {"likelihood": "bernoulli"} if likelihood == "bernoulli" else {"likelihood": "gaussian",
                                                                       "sigma_mode": "learned"})
    config = api.build_config(backend=backend, model="vae", data=spec, latent_dim=latent_dim, seed=seed,
                              epochs=epochs, device="cpu", **lik, **extra)
    run = api.train(config, out)
    records = read_metrics(run)
    model = api.load_model(run)
    faces = api.load_run_data(model.config)
    split = Split.load(run / "split.json", faces)
    test = faces.images[split.test].astype(np.float32) / 255
    mean_face = (faces.images[split.train].astype(np.float32) / 255).mean(0)
    samples = model.sample(8, seed=0)
    train = faces.images[split.train].astype(np.float32) / 255
    return {"records": records, "run": run, "epochs": epochs,
            "pca8_psnr": float(np.mean(psnr(test, PCA().fit(train, 8).project(test)))),
            "psnr": float(np.mean(psnr(test, model.reconstruct(test)))),
            "mean_face_psnr": float(np.mean(psnr(test, np.broadcast_to(mean_face, test.shape)))),
            "sample_spread": float(np.abs(samples - samples.mean(0)).max())}


def assert_learned(result: dict) -> None:
    records = result["records"]
    v = [r["val_loss"] for r in records]
    rates = [r["train_rate"] for r in records]
    assert len(records) == result["epochs"] and v[-1] < v[0], f"validation loss did not fall: {v}"
    assert max(rates) <= MAX_RATE, f"training rate left the sane range: {rates}"
    assert result["psnr"] > result["mean_face_psnr"], (result["psnr"], result["mean_face_psnr"])
    assert result["sample_spread"] > 0.05, f"prior samples are all alike: the decoder ignores z ({result})"
