"""Real-data smoke test: one short VAE epoch on a few hundred UTKFace faces, then evaluation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from facevae import backend  # noqa: E402
from shared.api import build_config  # noqa: E402
from shared.data import load  # noqa: E402
from shared.data.splits import make_split  # noqa: E402
from shared.protocol import GenerativeModel  # noqa: E402
from shared.runs import read_metrics  # noqa: E402
from tests.unit.torch_vae_helpers import single_thread  # noqa: E402, F401

pytestmark = pytest.mark.real_data


def test_one_epoch_on_real_faces(real_data: Path, tmp_path: Path):
    spec = str(real_data / "age_gender_part1.csv.gz")
    faces = load(spec, image_size=48)
    faces = faces.subset(np.arange(min(400, len(faces))))
    split = make_split(faces, val_fraction=0.15, test_fraction=0.15, seed=0)
    config = build_config(backend="torch", model="vae", data=spec, image_size=48, latent_dim=16, epochs=1,
                          batch_size=64, device="cpu")
    config.save(tmp_path / "config.json")
    best = backend.train(config, faces, split, tmp_path)
    assert np.isfinite(best["val_loss"]) and best["val_rate"] >= 0
    assert len(read_metrics(tmp_path)) == 1

    model = backend.load(tmp_path)
    assert isinstance(model, GenerativeModel)
    test = faces.subset(split.test)
    result = backend.evaluate(model, test, iwae_k=4, seed=0)
    assert result["n"] == len(test)
    assert np.isfinite(result["neg_elbo"]) and np.isfinite(result["neg_iwae"])
    assert 0 < result["ssim"] < 1 and result["psnr"] > 5
    rec = model.reconstruct(test.images[:4])
    assert rec.shape == (4, 48, 48) and 0 <= rec.min() and rec.max() <= 1
