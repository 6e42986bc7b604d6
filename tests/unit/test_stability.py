"""The default VAE recipe learns on small data, on both backends (synthetic faces; always runs).

The real-face twin is tests/real_data/test_stability_real.py. The cases include the ones that
failed before the training core was rewritten: torch d=16 (KL of 4e9 nats), tf d=8 seed 1 (NaN
at step 3), torch β=0.1 (a decoder that ignored z) and the learned-σ Gaussian decoder.
"""
from __future__ import annotations

import pytest

from tests.stability_check import assert_learned, train_default

CASES = [  # backend, latent_dim, seed, likelihood, extra
    ("torch", 16, 0, "bernoulli", {}),
    ("torch", 256, 2, "gaussian", {}),
    ("torch", 16, 0, "bernoulli", {"beta": 0.1}),
    ("tf", 8, 1, "bernoulli", {}),
    ("tf", 2, 3, "gaussian", {}),
]


@pytest.mark.parametrize("backend, latent_dim, seed, likelihood, extra", CASES,
                         ids=[f"{c[0]}-d{c[1]}-s{c[2]}-{c[3]}{'-beta' if c[4] else ''}" for c in CASES])
def test_default_recipe_learns_on_600_synthetic_faces(tmp_path, backend, latent_dim, seed, likelihood, extra):
    pytest.importorskip("torch" if backend == "torch" else "tensorflow")
    result = train_default("synthetic:600", tmp_path / "run", backend, latent_dim, seed, likelihood, **extra)
    assert_learned(result)


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_a_run_that_did_not_learn_says_so_in_its_log_and_eval_json(tmp_path, caplog, backend):
    import json

    from shared import api

    pytest.importorskip("torch" if backend == "torch" else "tensorflow")
    config = api.build_config(backend=backend, model="vae", data="synthetic:96", image_size=32, latent_dim=4,
                              channels=(4, 8), hidden_dims=(16,), epochs=2, batch_size=32, lr=0.0, device="cpu")
    with caplog.at_level("WARNING"):
        run = api.train(config, tmp_path / "frozen")
    assert "no better than the mean face" in caplog.text  # lr 0: only BatchNorm statistics move
    api.evaluate(run, iwae_k=1)
    saved = json.loads((run / "eval.json").read_text())
    assert saved["psnr"] <= saved["mean_face_psnr"] + 0.1
    assert any("no better than the mean face" in w for w in saved["warnings"])


def test_evaluate_on_other_data_works_when_the_runs_own_data_is_gone(tmp_path):
    import json

    from shared import api
    from shared.data import convert

    pytest.importorskip("torch")
    csv = convert("synthetic:96", tmp_path / "faces.csv", image_size=32)
    config = api.build_config(backend="torch", model="vae", data=str(csv), image_size=32, latent_dim=4,
                              channels=(4, 8), hidden_dims=(16,), epochs=1, batch_size=32, device="cpu")
    run = api.train(config, tmp_path / "run")
    csv.unlink()
    result = api.evaluate(run, data="synthetic:40", iwae_k=1)
    assert result["n_faces"] == 40 and "mean_face_psnr" not in result
    assert json.loads((run / "eval_synthetic_40.json").read_text())["n_faces"] == 40
    assert not (run / "eval.json").exists()  # the test-split file is never overwritten by other data
