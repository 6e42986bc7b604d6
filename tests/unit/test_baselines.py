"""Classical baselines (shared.baselines) against hand cases whose answer is known exactly."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from shared import baselines
from shared.baselines import (PCA, biharmonic_inpaint, gaussian_filter, mean_filter, nl_means, tune_denoiser,
                              tv_denoise)
from shared.corruptions import gaussian_noise
from shared.errors import ConfigError
from shared.inpainting import make_mask

SIDE = 8  # 8 x 8 faces: 64 pixels, enough room for a low-rank subspace and a hole


def _subspace(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A mean face ``(SIDE, SIDE)`` and ``k`` orthonormal directions ``(k, SIDE*SIDE)``."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((SIDE * SIDE, k)))
    return np.full((SIDE, SIDE), 0.5) + 0.05 * rng.standard_normal((SIDE, SIDE)), basis.T


def _in_span(mean: np.ndarray, basis: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` faces ``mean + codes @ basis``, small enough codes to stay inside [0, 1]."""
    codes = 0.4 * np.random.default_rng(seed).uniform(-1, 1, (n, len(basis)))
    faces = mean.reshape(1, -1) + codes @ basis
    assert 0.0 < faces.min() and faces.max() < 1.0
    return faces.reshape(n, SIDE, SIDE)


def _smooth(n: int = 4, side: int = 32) -> np.ndarray:
    """Smooth faces: a slow 2-D cosine per image, in [0.2, 0.8]."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    phase = np.arange(n)[:, None, None]
    return (0.5 + 0.3 * np.cos(2 * np.pi * (xx + 0.5 * yy) + phase)).astype(np.float64)


class TestPCA:
    @pytest.mark.parametrize("n_train", [20, 300])  # SVD path (N <= 2D) and Gram path (N > 2D)
    def test_projection_recovers_images_in_the_span(self, n_train):
        mean, basis = _subspace(3)
        pca = PCA().fit(_in_span(mean, basis, n_train, seed=1), 3)
        new = _in_span(mean, basis, 5, seed=2)
        np.testing.assert_allclose(pca.project(new), new, atol=1e-6)
        # a direction outside the span is removed exactly, so projection is not the identity
        outside = np.linalg.qr(np.c_[basis.T, np.random.default_rng(3).standard_normal(SIDE * SIDE)])[0][:, -1]
        bumped = new + 0.05 * outside.reshape(SIDE, SIDE)
        np.testing.assert_allclose(pca.project(bumped), new, atol=1e-6)
        assert np.abs(pca.project(bumped) - bumped).max() > 1e-3

    def test_rank_k_data_is_explained_fully(self):
        mean, basis = _subspace(4)
        pca = PCA().fit(_in_span(mean, basis, 50, seed=1), 4)
        assert pca.explained_variance_ratio_.sum() == pytest.approx(1.0, abs=1e-9)
        assert np.all(np.diff(pca.explained_variance_ratio_) <= 1e-12)  # largest variance first
        more = PCA().fit(_in_span(mean, basis, 50, seed=1), 6)
        np.testing.assert_allclose(more.explained_variance_ratio_[4:], 0.0, atol=1e-12)
        fewer = PCA().fit(_in_span(mean, basis, 50, seed=1), 2)
        assert fewer.explained_variance_ratio_.sum() < 0.99

    def test_components_orthonormal_and_sign_deterministic(self):
        mean, basis = _subspace(3)
        faces = _in_span(mean, basis, 40, seed=1)
        a = PCA().fit(faces, 3)
        b = PCA().fit(faces[::-1], 3)  # another row order: SVD signs could flip, the fixed sign must not
        np.testing.assert_allclose(a.components_ @ a.components_.T, np.eye(3), atol=1e-10)
        np.testing.assert_allclose(a.components_, b.components_, atol=1e-10)
        peak = a.components_[np.arange(3), np.argmax(np.abs(a.components_), axis=1)]
        assert np.all(peak > 0)

    def test_encode_decode_truncate_and_single_face(self):
        mean, basis = _subspace(3)
        faces = _in_span(mean, basis, 30, seed=1)
        pca = PCA().fit(faces, 3)
        codes = pca.encode(faces)
        assert codes.shape == (30, 3) and pca.encode(faces[0]).shape == (3,)
        np.testing.assert_allclose(codes.mean(axis=0), 0.0, atol=1e-10)  # centred on the training mean
        assert pca.decode(codes).dtype == np.float32 and pca.project(faces[0]).shape == (SIDE, SIDE)
        one = pca.truncated(1)
        assert one.n_components == 1
        np.testing.assert_allclose(one.encode(faces), codes[:, :1], atol=1e-10)
        np.testing.assert_array_equal(pca.denoise(faces), pca.project(faces))

    def test_iterative_inpainting_recovers_masked_face_in_span(self):
        mean, basis = _subspace(3)
        pca = PCA().fit(_in_span(mean, basis, 30, seed=1), 3)
        truth = _in_span(mean, basis, 4, seed=2)
        mask = np.zeros((SIDE, SIDE), dtype=bool)
        mask[2:5, 1:6] = True
        masked = np.where(mask, 0.0, truth)
        filled = pca.inpaint(masked, mask, iterations=5000, tol=1e-10)
        np.testing.assert_allclose(filled, truth, atol=1e-5)
        np.testing.assert_array_equal(filled[:, ~mask], masked[:, ~mask].astype(np.float32))
        # the hidden values are never read: garbage there changes nothing
        np.testing.assert_array_equal(pca.inpaint(np.where(mask, 7.0, truth), mask, iterations=5000, tol=1e-10),
                                      filled)
        # one round is far from converged: the loop does the work
        assert np.abs(pca.inpaint(masked, mask, iterations=1) - truth).max() > 1e-3

    @pytest.mark.parametrize("call,match", [
        (lambda p: p.fit(np.zeros((3, 4, 4)), 4), "n_components"),
        (lambda p: p.fit(np.zeros((3, 4, 4)), 0), "n_components"),
        (lambda p: p.fit(np.zeros((3, 4, 4), np.uint8), 1), "dtype"),
        (lambda p: p.project(np.zeros((2, 4, 4))), "not fitted"),
    ])
    def test_bad_input(self, call, match):
        with pytest.raises(ConfigError, match=match):
            call(PCA())

    def test_shape_mismatch_refused(self):
        pca = PCA().fit(np.random.default_rng(0).random((5, 4, 4)), 2)
        with pytest.raises(ConfigError, match="faces like the fitted"):
            pca.project(np.zeros((2, 5, 5)))
        with pytest.raises(ConfigError, match="codes"):
            pca.decode(np.zeros((2, 3)))


class TestFilters:
    @pytest.mark.parametrize("fn", [lambda x: mean_filter(x, 3), lambda x: gaussian_filter(x, 1.5)])
    def test_constant_image_is_unchanged(self, fn):
        x = np.full((3, 12, 12), 0.37, dtype=np.float32)
        out = fn(x)
        assert out.shape == x.shape
        np.testing.assert_allclose(out, 0.37, atol=1e-6)

    def test_gaussian_zero_sigma_is_identity_and_filters_per_image(self):
        x = np.random.default_rng(0).random((3, 10, 10))
        np.testing.assert_allclose(gaussian_filter(x, 0.0), x)
        # never across the batch axis: each face filtered alone gives the same result
        np.testing.assert_allclose(gaussian_filter(x, 1.0)[1], gaussian_filter(x[1], 1.0))
        with pytest.raises(ConfigError, match="sigma"):
            gaussian_filter(x, -1.0)

    @pytest.mark.parametrize("fn", [lambda x: tv_denoise(x, 0.1), lambda x: nl_means(x, 0.1)])
    def test_tv_and_nlm_reduce_the_error_of_noise(self, fn):
        clean = _smooth()
        noisy = gaussian_noise(clean, 0.1, seed=0)
        out = fn(noisy)
        assert out.shape == clean.shape
        err_in, err_out = np.mean((noisy - clean) ** 2), np.mean((out - clean) ** 2)
        assert err_out < 0.5 * err_in, (err_in, err_out)
        np.testing.assert_allclose(fn(noisy[2]), out[2], atol=1e-6)  # per image

    @pytest.mark.parametrize("call,match", [(lambda x: tv_denoise(x, 0.0), "weight"),
                                            (lambda x: nl_means(x, -0.1), "`h`"),
                                            (lambda x: nl_means(x, 0.1, patch_size=0), "patch_size")])
    def test_bad_parameters(self, call, match):
        with pytest.raises(ConfigError, match=match):
            call(np.zeros((2, 8, 8)))


class TestBiharmonic:
    def test_linear_ramp_is_filled_exactly(self):
        yy, xx = np.mgrid[0:32, 0:32]
        ramp = (0.1 + 0.015 * xx + 0.01 * yy)[None].repeat(2, axis=0)
        mask = np.zeros((32, 32), dtype=bool)
        mask[10:20, 8:24] = True
        masked = np.where(mask, 0.0, ramp)
        filled = biharmonic_inpaint(masked, mask)
        assert np.abs(filled - ramp)[:, mask].max() <= 1e-3
        np.testing.assert_array_equal(filled[:, ~mask], masked[:, ~mask])
        assert np.abs(masked - ramp)[:, mask].max() > 0.1  # the hole really was empty

    def test_per_face_masks_and_hidden_values_ignored(self):
        x = _smooth(3, 24)
        mask = make_mask("random", 3, 24, seed=1)
        a = biharmonic_inpaint(np.where(mask, 0.0, x), mask)
        b = biharmonic_inpaint(np.where(mask, 1.0, x), mask)
        np.testing.assert_allclose(a, b, atol=1e-12)
        assert np.mean((a - x)[mask] ** 2) < 1e-3  # smooth faces: the fill is close

    def test_non_boolean_mask_refused(self):
        with pytest.raises(ConfigError, match="boolean"):
            biharmonic_inpaint(np.zeros((2, 8, 8)), np.zeros((8, 8), dtype=int))


class TestTuneDenoiser:
    def test_picks_the_known_best_parameter(self):
        clean = _smooth(3, 16)
        shifted = clean - 0.1  # fn(x, p) = x + p undoes it exactly at p = 0.1
        res = tune_denoiser(lambda x, p: x + p, shifted, clean, [0.0, 0.05, 0.1, 0.2])
        assert res.param == 0.1 and res.psnr > 100
        assert set(res.scores) == {0.0, 0.05, 0.1, 0.2} and res.scores[0.05] < res.scores[0.1]

    def test_named_denoiser_blurs_only_as_much_as_helps(self):
        flat = np.full((4, 24, 24), 0.5)
        noisy = gaussian_noise(flat, 0.1, seed=0)
        # a constant face: more blur is always better
        assert tune_denoiser("gaussian", noisy, flat, [0.0, 0.5, 3.0]).param == 3.0
        # no noise: any blur only hurts, so sigma 0 wins
        sharp = np.random.default_rng(0).random((4, 24, 24))
        assert tune_denoiser("gaussian", sharp, sharp, [0.5, 0.0, 3.0]).param == 0.0

    def test_ties_keep_the_first_and_bad_input(self):
        x = _smooth(2, 8)
        assert tune_denoiser(lambda a, p: a, x, x, ["a", "b"]).param == "a"
        with pytest.raises(ConfigError, match="name"):
            tune_denoiser("wiener", x, x, [1])
        with pytest.raises(ConfigError, match="grid"):
            tune_denoiser("gaussian", x, x, [])
        with pytest.raises(ConfigError, match="same shape"):
            tune_denoiser("gaussian", x, x[:1], [1.0])


class TestMissingScikitImage:
    @pytest.mark.parametrize("call", [lambda x: tv_denoise(x, 0.1), lambda x: nl_means(x, 0.1),
                                      lambda x: biharmonic_inpaint(x, np.ones((8, 8), bool))])
    def test_one_line_error_names_the_extra(self, monkeypatch, call):
        monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage...` now raises ImportError
        monkeypatch.setitem(sys.modules, "skimage.restoration", None)
        with pytest.raises(ConfigError) as info:
            call(np.zeros((2, 8, 8)))
        message = str(info.value)
        assert "\n" not in message and baselines.SKIMAGE_HINT in message and "scikit-image" in message

    def test_pure_numpy_baselines_work_without_it(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "skimage", None)
        monkeypatch.setitem(sys.modules, "skimage.restoration", None)
        x = _smooth(2, 8)
        assert gaussian_filter(x, 1.0).shape == x.shape and PCA().fit(x, 1).project(x).shape == x.shape


class TestRealFacesBenchmark:
    """benchmarks/real_faces.py end to end on tiny synthetic faces (the baseline sections only)."""

    def test_quick_run_writes_tables_and_figures(self, tmp_path, monkeypatch):
        monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))
        from benchmarks import real_faces

        out = tmp_path / "bench"
        code = real_faces.main(["--data", "synthetic:240", "--image-size", "32", "--quick", "--n-test", "12",
                                "--n-val", "12", "--sigmas", "0.2", "--out", str(out)])
        assert code == 0
        results = json.loads((out / "results.json").read_text())
        assert results["n_test"] == 12 and set(results["sections"]) == {"reconstruction", "denoising", "inpainting"}
        rec = {r["method"]: r for r in results["sections"]["reconstruction"]["rows"]}
        assert rec["PCA-32"]["psnr"] > rec["PCA-8"]["psnr"] > rec["mean face"]["psnr"]
        den = {r["method"]: r for r in results["sections"]["denoising"]["rows"]}
        assert set(den) == {"noisy", "mean 3×3", "median 3×3", "gaussian", "PCA", "TV", "NLM", "PCA ⊕ gaussian",
                            "PCA ⊕ TV"}
        assert all(den[m]["psnr"] > den["noisy"]["psnr"] for m in ("gaussian", "PCA", "TV", "NLM"))
        assert "d=" in den["PCA ⊕ TV"]["param"] and "α=" in den["PCA ⊕ TV"]["param"]
        inp = [(r["mask"], r["method"]) for r in results["sections"]["inpainting"]["rows"]]
        assert ("box", "biharmonic") in inp and ("random", "PCA iterative projection") in inp
        assert {p.name for p in (out / "figures").iterdir()} == {"reconstruction.png", "denoising.png",
                                                                  "inpainting.png"}
        assert "## Denoising" in (out / "tables.md").read_text()

    def test_unknown_section_refused(self, capsys):
        from benchmarks import real_faces

        with pytest.raises(SystemExit):
            real_faces.parse_args(["--sections", "sharpening"])
        assert "unknown --sections" in capsys.readouterr().err
        with pytest.raises(SystemExit):  # sampling is scored in a CNN's features: it needs one
            real_faces.parse_args(["--sections", "sampling"])
        assert "needs --classifier" in capsys.readouterr().err

    def test_vae_rows_refine_rows_and_sampling_with_trained_runs(self, tmp_path, monkeypatch):
        """--vae and --classifier runs trained on the benchmark's split add VAE, refined and sampling rows."""
        monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))
        pytest.importorskip("torch")
        from benchmarks import real_faces
        from shared import api

        data = dict(data="synthetic:240", image_size=32, device="cpu", epochs=2)
        shape = dict(model="vae", latent_dim=8, channels=(8, 16), hidden_dims=(32,), **data)
        vae = api.train(api.build_config(**shape), tmp_path / "vae", verbose=False)
        vae_tf = api.train(api.build_config(backend="tf", **shape), tmp_path / "vae_tf", verbose=False)
        cnn = api.train(api.build_config(model="cnn", channels=(8, 16), hidden_dims=(32,), **data), tmp_path / "cnn",
                        verbose=False)
        out = tmp_path / "bench"
        code = real_faces.main(["--data", "synthetic:240", "--image-size", "32", "--quick", "--n-test", "12",
                                "--n-val", "12", "--sigmas", "0.2", "--out", str(out), "--vae", str(vae),
                                "--vae", str(vae_tf), "--classifier", str(cnn), "--refine-steps", "20",
                                "--n-samples", "64", "--sections", "reconstruction,denoising,sampling,agreement"])
        assert code == 0
        sections = json.loads((out / "results.json").read_text())["sections"]
        rec = {r["method"]: r for r in sections["reconstruction"]["rows"]}
        plain, refined = rec["VAE vae"], rec["VAE vae + refine 20"]
        assert plain["epochs"] == 2 and plain["likelihood"] == "gaussian-learned" and plain["pca_psnr"] is not None
        assert refined["psnr"] > plain["psnr"]  # MAP steps fit the faces better than the encoder's mean
        den = {r["method"]: r for r in sections["denoising"]["rows"]}
        assert "VAE vae + refine 20" in den and "α=" in den["VAE vae ⊕ PCA"]["param"]
        fd = {r["method"]: r["fd"] for r in sections["sampling"]["rows"]}
        assert fd["training faces (floor)"] < fd["VAE vae"] and "PCA-8, Gaussian coefficients" in fd
        (pair,) = sections["agreement"]["rows"]  # the torch and tf runs of one config, side by side
        assert pair["runs"] == "vae / vae_tf" and pair["epochs"] == "2 / 2" and pair["psnr_gap"] >= 0
        assert pair["neg_elbo_torch"] != pair["neg_elbo_tf"] and pair["elbo_gap_pct"] > 0
        assert {"samples_vae.png", "interpolation_vae.png", "corners_vae.png", "sampling.png"} <= {p.name for p in (out / "figures").iterdir()}
