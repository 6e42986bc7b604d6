"""``shared.inference.refine`` (semi-amortized reconstruction) and its ``vae_refined`` denoiser.

On a tiny torch VAE trained for 2 epochs: refinement reconstructs held-out faces better than the
encoder mean; ``steps=0`` is ``reconstruct``; one ``(H, W)`` face keeps its shape. With a fake
backend (monkeypatched registry, as tests/unit/test_studio.py does): what reaches
``inpaint_optimize`` (an all-False mask, the settings, labels only for conditional models), the
argument checks, and ``denoise``/``denoise_table``/the CLI with ``refine_steps``.
"""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

from shared import registry
from shared.errors import ConfigError
from shared.inference import MAX_REFINE_STEPS, refine

SIZE = 32


# --------------------------------------------------------------------------- a tiny trained torch VAE

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(run_dir, model, held-out faces)`` of a 2-epoch torch VAE (default preset: learned-σ gaussian)."""
    pytest.importorskip("torch")
    from shared import api, studio

    run_dir = tmp_path_factory.mktemp("refine") / "vae"
    config = api.build_config(backend="torch", model="vae", data="synthetic:240", image_size=SIZE, channels=(8, 16),
                              hidden_dims=(32,), latent_dim=8, epochs=2, batch_size=16, device="cpu")
    api.train(config, run_dir, verbose=False)
    model = api.load_model(run_dir)
    faces = studio.held_out_faces(run_dir, config).floats()
    return types.SimpleNamespace(dir=run_dir, model=model, faces=faces)


def _mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-face mean squared error ``(N,)``."""
    return np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2))


class TestOnATrainedModel:
    def test_refined_reconstruction_is_closer_to_held_out_faces(self, trained):
        x = trained.faces
        plain, refined = trained.model.reconstruct(x), refine(trained.model, x, steps=50)
        assert refined.shape == x.shape and refined.dtype == np.float32
        assert 0.0 <= refined.min() and refined.max() <= 1.0
        # measured: MSE 0.040 -> 0.026 after 50 steps, every one of the 24 test faces better
        assert _mse(refined, x).mean() < 0.9 * _mse(plain, x).mean()
        assert np.mean(_mse(refined, x) < _mse(plain, x)) >= 0.9

    def test_zero_steps_is_reconstruct(self, trained):
        x = trained.faces[:5]
        np.testing.assert_array_equal(refine(trained.model, x, steps=0), trained.model.reconstruct(x))

    def test_one_face_keeps_its_shape(self, trained):
        x = trained.faces[:3]
        one = refine(trained.model, x[0], steps=5)
        assert one.shape == (SIZE, SIZE)
        np.testing.assert_allclose(one, refine(trained.model, x[:1], steps=5)[0], atol=1e-6)
        assert refine(trained.model, x[0], steps=0).shape == (SIZE, SIZE)

    def test_uint8_faces_are_scaled(self, trained):
        x = trained.faces[:2]
        as_bytes = np.round(x * 255).astype(np.uint8)
        np.testing.assert_allclose(refine(trained.model, as_bytes, steps=3),
                                   refine(trained.model, as_bytes.astype(np.float32) / 255, steps=3), atol=1e-6)

    def test_denoise_adds_vae_refined(self, trained):
        from shared import studio

        res = studio.denoise(trained.dir, sigmas=(0.3,), n=8, refine_steps=20)
        saved = json.loads((trained.dir / "denoise.json").read_text())
        assert saved["refine_steps"] == 20
        assert [r["method"] for r in saved["results"]] == [*studio.DENOISERS, "vae_refined"]
        assert "vae_refined PSNR" in (trained.dir / "denoise.md").read_text()
        assert res.images.shape == (1, 2 + len(studio.DENOISERS), 2, SIZE, SIZE)  # clean + 4 methods + refined
        row = res.table[res.table["method"] == "vae_refined"]
        assert float(row["psnr"].iloc[0]) > float(res.table[res.table["method"] == "vae"]["psnr"].iloc[0])
        assert np.abs(res.images[0, -1] - res.images[0, -2]).max() > 1e-3  # the figure's last column: refined
        # without refinement the outputs are the old ones: no key, no row
        studio.denoise(trained.dir, sigmas=(0.3,), n=8)
        again = json.loads((trained.dir / "denoise.json").read_text())
        assert "refine_steps" not in again and [r["method"] for r in again["results"]] == list(studio.DENOISERS)


    def test_evaluate_reports_the_refined_psnr_beside_the_encoders(self, trained, capsys):
        from shared import api
        from shared.cli import main

        result = api.evaluate(trained.dir, iwae_k=2, refine_steps=30)
        keys = list(result)
        assert keys[keys.index("ssim") + 1:keys.index("ssim") + 4] == ["refine_steps", "psnr_refined", "ssim_refined"]
        assert result["refine_steps"] == 30 and result["psnr_refined"] > result["psnr"] + 0.3
        assert json.loads((trained.dir / "eval.json").read_text())["psnr_refined"] == result["psnr_refined"]
        assert "psnr_refined" not in api.evaluate(trained.dir, iwae_k=2)  # off by default
        assert main(["evaluate", str(trained.dir), "--iwae-k", "2", "--refine-steps", "5"]) == 0
        assert "psnr_refined" in capsys.readouterr().out

    def test_evaluate_refuses_bad_refine_steps(self, trained, capsys):
        from shared import api
        from shared.cli import main

        for bad in (-1, MAX_REFINE_STEPS + 1, 2.0, True):
            with pytest.raises(ConfigError, match="refine_steps"):
                api.evaluate(trained.dir, refine_steps=bad)
        assert main(["evaluate", str(trained.dir), "--refine-steps", "-3"]) == 2
        assert "--refine-steps" in capsys.readouterr().err

    def test_evaluate_refuses_refine_steps_for_a_cnn_run(self, tmp_path):
        from shared import api

        api.build_config(backend="torch", model="cnn", data="synthetic:40").save(tmp_path / "config.json")
        with pytest.raises(ConfigError, match="cnn run"):
            api.evaluate(tmp_path, refine_steps=10)


# --------------------------------------------------------------------------- fake models and a fake backend

def _fake_model(conditional: bool = False, backend: str = "tf") -> types.SimpleNamespace:
    config = types.SimpleNamespace(backend=backend, model=types.SimpleNamespace(image_size=SIZE, family="cvae"))
    return types.SimpleNamespace(config=config, conditional=conditional, latent_dim=4,
                                 reconstruct=lambda images, labels=None: np.asarray(images) * 0.5)


@pytest.fixture()
def backend_calls(monkeypatch):
    """Every call of the (fake) backend's ``inpaint_optimize``; it returns 2·images (clipped by refine)."""
    calls: list[dict] = []

    def get_backend(name=None):
        def inpaint_optimize(model, images, mask, **kw):
            calls.append({"backend": name, "images": images, "mask": mask, **kw})
            return images * 2.0
        return types.SimpleNamespace(inpaint_optimize=inpaint_optimize)

    monkeypatch.setattr(registry, "get_backend", get_backend)
    return calls


class TestBackendCall:
    def test_settings_and_an_all_false_mask_reach_the_models_backend(self, backend_calls):
        x = np.random.default_rng(0).random((3, SIZE, SIZE)).astype(np.float32) * 0.6
        out = refine(_fake_model(backend="tf"), x, steps=7, lr=0.2, prior_weight=0.5, seed=9)
        (call,) = backend_calls
        assert call["backend"] == "tf" and call["steps"] == 7 and call["lr"] == 0.2
        assert call["prior_weight"] == 0.5 and call["seed"] == 9
        assert call["mask"].shape == x.shape and call["mask"].dtype == bool and not call["mask"].any()
        assert "labels" not in call  # the torch backend takes none; unconditional models get none
        np.testing.assert_allclose(out, np.clip(2 * x, 0, 1))  # clipped to [0, 1]

    def test_conditional_models_get_their_labels(self, backend_calls):
        from shared.faces import label_vectors
        import pandas as pd

        labels = label_vectors(pd.DataFrame({"age": [30, 61], "gender": [0, 1], "ethnicity": [2, 4]}))
        x = np.full((2, SIZE, SIZE), 0.25, np.float32)
        refine(_fake_model(conditional=True), x, steps=3, labels=labels)
        np.testing.assert_array_equal(backend_calls[0]["labels"], labels)
        refine(_fake_model(conditional=True), x[0], steps=3, labels=labels[0])  # one face, one label vector
        assert backend_calls[1]["labels"].shape == (1, labels.shape[1])
        with pytest.raises(ConfigError, match="conditional"):
            refine(_fake_model(conditional=True), x, steps=3)

    def test_zero_steps_never_calls_the_backend(self, backend_calls):
        x = np.full((2, SIZE, SIZE), 0.5, np.float32)
        np.testing.assert_allclose(refine(_fake_model(), x, steps=0), 0.25)
        assert backend_calls == []

    def test_denoise_table_refines_the_noisy_faces_with_labels(self, backend_calls):
        from shared.studio import DENOISERS, denoise_table

        clean = np.full((2, SIZE, SIZE), 0.3, np.float32)
        labels = np.tile(np.eye(1, 7, dtype=np.float32), (2, 1))
        rows, images = denoise_table(_fake_model(conditional=True), clean, [0.1, 0.2], seed=4, labels=labels,
                                     refine_steps=6)
        assert [r["method"] for r in rows] == [*DENOISERS, "vae_refined"] * 2
        assert [c["seed"] for c in backend_calls] == [4, 5] and all(c["steps"] == 6 for c in backend_calls)
        np.testing.assert_array_equal(backend_calls[0]["images"], images[0.1]["noisy"])
        np.testing.assert_array_equal(backend_calls[1]["labels"], labels)
        rows0, images0 = denoise_table(_fake_model(conditional=True), clean, [0.1], seed=4, labels=labels)
        assert [r["method"] for r in rows0] == list(DENOISERS) and set(images0[0.1]) == set(DENOISERS)
        assert len(backend_calls) == 2  # refine_steps=0: no backend call


_IMG = np.full((1, SIZE, SIZE), 0.5, np.float32)


@pytest.mark.parametrize("kw, words", [
    (dict(steps=-1), "`steps` must be an integer in [0, 10000]. Received: steps=-1"),
    (dict(steps=MAX_REFINE_STEPS + 1), "steps=10001"),
    (dict(steps=2.0), "steps=2.0"),
    (dict(steps=True), "steps=True"),
    (dict(lr=0), "`lr` must be a number in (0, 10]. Received: lr=0"),
    (dict(lr=float("nan")), "lr=nan"),
    (dict(lr=11.0), "lr=11.0"),
    (dict(lr="0.1"), "lr='0.1'"),
    (dict(prior_weight=-0.1), "`prior_weight` must be a number in [0, 1000]. Received: prior_weight=-0.1"),
    (dict(prior_weight=float("inf")), "prior_weight=inf"),
    (dict(seed=-1), "`seed` must be an integer in [0, 4294967295]. Received: seed=-1"),
    (dict(images=np.full((1, 16, 16), 0.5, np.float32)), r"shape \(N, 32, 32\) or \(32, 32\)"),
    (dict(images=np.full((2, 1, SIZE, SIZE), 0.5, np.float32)), r"images.shape=\(2, 1, 32, 32\)"),
    (dict(images=np.full((1, SIZE, SIZE), 1.5, np.float32)), r"in \[0, 1\]"),
    (dict(images=np.full((1, SIZE, SIZE), np.nan, np.float32)), "non-finite"),
    (dict(images=np.full((1, SIZE, SIZE), 200, np.int64)), "floats"),
])
def test_bad_arguments_are_refused_before_any_work(kw, words, backend_calls):
    images = kw.pop("images", _IMG)
    with pytest.raises(ConfigError, match=words if "\\" in words else None) as err:
        refine(_fake_model(), images, **kw)
    if "\\" not in words:
        assert words in str(err.value)
    assert backend_calls == []


def test_a_classifier_is_refused(backend_calls):
    with pytest.raises(ConfigError, match="`model` must be a trained generative model"):
        refine(types.SimpleNamespace(config=types.SimpleNamespace(backend="torch")), _IMG)


def test_denoise_refuses_bad_refine_steps(tmp_path):
    from shared.studio import denoise

    for bad in (-1, 10_001, 1.5):
        with pytest.raises(ConfigError, match="refine_steps"):
            denoise(tmp_path, refine_steps=bad, save=False)  # refused before the run folder is read
