"""Real UTKFace faces (../shared/data) through the TF backend: a tiny cvae trains, evaluates and generates.

Outputs go to pytest's tmp_path only: nothing made from the real faces is written into the repository.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("tensorflow")

pytestmark = pytest.mark.real_data


def test_tf_cvae_on_real_faces(real_data, tmp_path):
    from facevae_tf import backend
    from shared.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from shared.data import load
    from shared.faces import label_vectors
    from tests.unit.tf_test_helpers import split_of

    faces = load(str(real_data / "age_gender_part1.csv.gz"), image_size=48)
    assert len(faces) > 8000
    faces = faces.subset(np.random.default_rng(0).permutation(len(faces))[:600])
    config = RunConfig(backend="tf",
                       model=ModelConfig(family="cvae", image_size=48, latent_dim=8, channels=(8, 16),
                                         hidden_dims=(32,)),
                       train=TrainConfig(epochs=2, batch_size=64, lr=3e-3, early_stopping=0, seed=0),
                       data=DataConfig(spec=str(real_data / "age_gender_part1.csv.gz"), image_size=48))
    run = tmp_path / "cvae"
    run.mkdir()
    config.save(run / "config.json")
    split = split_of(len(faces), 100, 100)
    records_best = backend.train(config, faces, split, run)
    assert math.isfinite(records_best["val_loss"])
    model = backend.load(run)
    test = faces.subset(split.test)
    result = backend.evaluate(model, test, iwae_k=4)
    # a trained model must beat the trivial 0.5-grey reconstruction: 48*48*log 2 ≈ 1597 nats per face
    assert result["neg_iwae"] <= result["neg_elbo"] + 1.0 < 48 * 48 * math.log(2)
    assert set(result["by_group"]["ethnicity"]) <= {"White", "Black", "Asian", "Indian", "Others"}
    out = model.reconstruct(test.images[:4], label_vectors(test.labels[:4]))
    assert out.shape == (4, 48, 48) and np.isfinite(out).all()
