"""Studio commands (interpolate, denoise, inpaint) on a fake linear "PCA VAE" satisfying the protocol.

Each returns a Result (figure, images, table); ``save=False`` writes nothing into the run folder.
"""
from __future__ import annotations

import json
import os
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from shared import api, studio
from shared.config import RunConfig
from shared.errors import ConfigError, RunError
from shared.inpainting import composite, inpaint_metrics, iterative_projection, make_mask, residual_correction
from shared.protocol import GenerativeModel, as_unit_float
from shared.results import Result

SIZE = 32


class LinearVAE:
    """encode = projection onto the top principal directions, decode = clip(mean + z @ W).

    Dimension 0 has the largest variance, so it is the most active latent. Records the inputs of
    ``reconstruct`` so tests can check what a method was shown.
    """

    conditional = False

    def __init__(self, images: np.ndarray, latent_dim: int = 4, config: RunConfig | None = None):
        x = as_unit_float(images[:64]).reshape(min(len(images), 64), -1).astype(np.float64)
        self.mean = x.mean(axis=0)
        # principal directions from the small Gram matrix (N x N), cheaper than an SVD of (N, P)
        evals, evecs = np.linalg.eigh((x - self.mean) @ (x - self.mean).T)
        w = (evecs[:, ::-1][:, :latent_dim].T @ (x - self.mean))
        self.w = w / np.linalg.norm(w, axis=1, keepdims=True)  # (D, P) orthonormal rows
        self.latent_dim, self.config, self.shape = latent_dim, config, images.shape[1:]
        self.seen: list[np.ndarray] = []

    def encode(self, images, labels=None):
        z = (as_unit_float(images).reshape(len(images), -1) - self.mean) @ self.w.T
        return z.astype(np.float32), np.full_like(z, -2.0, dtype=np.float32)

    def decode(self, z, labels=None):
        x = self.mean + np.asarray(z, np.float64) @ self.w
        return np.clip(x, 0.0, 1.0).reshape(len(z), *self.shape).astype(np.float32)

    def sample(self, n, seed, labels=None):
        return self.decode(np.random.default_rng(seed).standard_normal((n, self.latent_dim)))

    def reconstruct(self, images, labels=None):
        self.seen.append(np.array(images, dtype=np.float32))
        return self.decode(self.encode(images)[0])


@pytest.fixture()
def fake_run(tmp_path, monkeypatch):
    """A run folder (config + real split of synthetic faces) whose model is a :class:`LinearVAE`."""
    from shared.data.splits import make_split

    config = api.build_config(backend="torch", model="vae", data="synthetic:120", image_size=SIZE,
                              latent_dim=4, test_fraction=0.25)
    faces = api.load_run_data(config)
    split = make_split(faces, val_fraction=0.1, test_fraction=0.25, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    config.save(run / "config.json")
    split.save(run / "split.json")
    model = LinearVAE(faces.subset(split.train).images, 4, config)
    monkeypatch.setattr(api, "load_model", lambda run_dir: model)
    test = faces.subset(np.asarray(split.test))
    return types.SimpleNamespace(dir=run, model=model, test=test, config=config)


def test_fake_model_satisfies_protocol(fake_run):
    assert isinstance(fake_run.model, GenerativeModel)


def listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative), to compare before and after a call."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


class RunPath(os.PathLike):
    """A PathLike that is not a str or Path (as a Run object would be)."""

    def __init__(self, path: Path):
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


class TestHelpers:
    def test_test_faces_are_the_split_test_faces(self, fake_run):
        got = studio.held_out_faces(fake_run.dir, fake_run.config, 5)
        np.testing.assert_array_equal(got.images, fake_run.test.images[:5])

    def test_classifier_run_is_refused(self, fake_run, monkeypatch):
        monkeypatch.setattr(api, "load_model", lambda run_dir: object())
        with pytest.raises(RunError, match="not a generative model"):
            studio.denoise(fake_run.dir, n=4)

    def test_markdown_table(self):
        text = studio.markdown_table(["a", "b"], [[1, 0.123456], ["x", float("nan")]])
        assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| x | – |"]


class TestInterpolate:
    def test_sampled_corners_and_edges(self, fake_run):
        from shared.grids import lerp

        res = studio.interpolate(fake_run.dir, grid=5, seed=3)
        images, m = res.images, fake_run.model
        assert images.shape == (5, 5, SIZE, SIZE)
        z4 = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
        corners = m.decode(z4)
        for (i, j), k in zip([(0, 0), (0, -1), (-1, 0), (-1, -1)], range(4)):
            np.testing.assert_allclose(images[i, j], corners[k], atol=1e-5)
        # top edge: linear between the two top corners
        np.testing.assert_allclose(images[0, 2], m.decode(np.asarray(lerp(z4[0], z4[1], 0.5))[None])[0], atol=1e-5)
        # left edge: linear between the two left corners
        np.testing.assert_allclose(images[1, 0], m.decode(np.asarray(lerp(z4[0], z4[2], 0.25))[None])[0], atol=1e-5)
        assert (fake_run.dir / "figures" / "traversal.png").is_file()
        assert list(res.table["corner"]) == ["A", "B", "C", "D"]
        np.testing.assert_allclose(res.table["z_norm"], np.linalg.norm(z4, axis=1), rtol=1e-5)

    def test_encoded_corners_are_reconstructions(self, fake_run):
        res = studio.interpolate(fake_run.dir, grid=3, corners="encode", seed=1, traversal=False)
        assert not (fake_run.dir / "figures" / "traversal.png").exists() and "traversal" not in res.extra
        faces = studio.held_out_faces(fake_run.dir, fake_run.config, 512)
        chosen = np.sort(np.random.default_rng(1).choice(len(faces), size=4, replace=False))
        rec = fake_run.model.reconstruct(faces.floats()[chosen])
        got = res.images
        np.testing.assert_allclose(np.stack([got[0, 0], got[0, -1], got[-1, 0], got[-1, -1]]), rec, atol=1e-5)
        # the table says which test faces the corners are, and the figure's title names them
        assert list(res.table["test_index"]) == [int(i) for i in chosen]
        assert list(res.table["img_name"]) == list(faces.labels["img_name"].iloc[chosen])
        assert f"A = test face {chosen[0]}" in res.figure._suptitle.get_text()

    def test_figures_written_and_traversal_ranks_dimension_0_first(self, fake_run):
        res = studio.interpolate(fake_run.dir, grid=3, slerp=True)
        figs = fake_run.dir / "figures"
        assert (figs / "interpolation_slerp_sample.png").stat().st_size > 1000
        assert (figs / "traversal.png").stat().st_size > 1000
        assert sorted(res.paths) == [figs / "interpolation_slerp_sample.png", figs / "traversal.png"]
        trav = res.extra["traversal"]
        assert isinstance(trav, Result) and trav.paths == [figs / "traversal.png"]
        assert trav.images.shape == (4, len(studio.TRAVERSAL_VALUES), SIZE, SIZE)
        faces = studio.held_out_faces(fake_run.dir, fake_run.config)
        activity = studio.latent_activity(fake_run.model, faces)
        assert activity.shape == (4,) and int(np.argmax(activity)) == 0
        assert trav.table["dim"].iloc[0] == 0 and trav.table["mean_kl"].is_monotonic_decreasing

    def test_save_false_writes_nothing_and_returns_everything(self, fake_run):
        before = listing(fake_run.dir)
        res = studio.interpolate(fake_run.dir, grid=4, save=False)
        assert listing(fake_run.dir) == before and res.paths == [] and res.extra["traversal"].paths == []
        assert isinstance(res.figure, Figure) and res.images.shape == (4, 4, SIZE, SIZE)
        assert isinstance(res.extra["traversal"].figure, Figure)
        assert res._repr_png_().startswith(b"\x89PNG")

    @pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF"), ("svg", b"<?xml")])
    def test_format_and_pathlike_run(self, fake_run, fmt, magic):
        res = studio.interpolate(RunPath(fake_run.dir), grid=3, fmt=fmt, dpi=72, traversal=False)
        assert res.paths == [fake_run.dir / "figures" / f"interpolation_lerp_sample.{fmt}"]
        assert res.paths[0].read_bytes().startswith(magic)
        assert not (fake_run.dir / "figures" / "interpolation_lerp_sample.png").exists()

    @pytest.mark.parametrize("kw", [dict(grid=1), dict(corners="faces"), dict(fmt="jpg"), dict(dpi=5),
                                    dict(save="yes")])
    def test_bad_arguments(self, fake_run, kw):
        before = listing(fake_run.dir)
        with pytest.raises(ConfigError):
            studio.interpolate(fake_run.dir, **kw)
        assert listing(fake_run.dir) == before


class IdentityModel(LinearVAE):
    def reconstruct(self, images, labels=None):
        return as_unit_float(images).copy()


class TestDenoise:
    def test_table_is_against_the_clean_faces(self):
        clean = np.full((6, SIZE, SIZE), 0.5, np.float32)
        model = IdentityModel(clean + np.random.default_rng(0).random(clean.shape).astype(np.float32) * 0.1, 2)
        rows, images = studio.denoise_table(model, clean, [0.05], seed=0)
        by = {r["method"]: r for r in rows}
        assert set(by) == set(studio.DENOISERS)
        # identity "VAE" returns the noisy input: same scores as the input row
        assert by["vae"]["psnr"] == pytest.approx(by["noisy"]["psnr"])
        # against the clean faces, noise of σ on mid-gray gives PSNR ≈ -10 log10(σ²) = 26 dB
        assert by["noisy"]["psnr"] == pytest.approx(26.0, abs=0.3)
        # a 3×3 mean filter on i.i.d. noise over a flat face cuts its variance ~9×: about +9.5 dB
        assert by["mean"]["psnr"] > by["noisy"]["psnr"] + 8
        from shared.corruptions import gaussian_noise, median_filter
        noisy = np.clip(gaussian_noise(clean, 0.05, 0), 0, 1)
        np.testing.assert_allclose(images[0.05]["noisy"], noisy)
        np.testing.assert_allclose(images[0.05]["median"], median_filter(noisy))

    def test_outputs(self, fake_run):
        res = studio.denoise(fake_run.dir, sigmas=(0.1, 0.3), n=6)
        run = fake_run.dir
        result = json.loads((run / "denoise.json").read_text())
        assert result["n_faces"] == 6 and result["sigmas"] == [0.1, 0.3]
        assert {(r["sigma"], r["method"]) for r in result["results"]} == {
            (s, m) for s in (0.1, 0.3) for m in studio.DENOISERS}
        md = (run / "denoise.md").read_text()
        assert md.count("\n| 0.") == 2
        assert (run / "figures" / "denoise.png").is_file()
        noisy = {r["sigma"]: r["psnr"] for r in result["results"] if r["method"] == "noisy"}
        assert noisy[0.1] > noisy[0.3]
        assert sorted(res.paths) == sorted([run / "denoise.json", run / "denoise.md", run / "figures" / "denoise.png"])
        assert all(p.is_file() for p in res.paths)
        # the table is the json's results, row for row
        pd.testing.assert_frame_equal(res.table, pd.DataFrame(result["results"]), check_like=True)
        assert res.info["n_faces"] == 6 and res.info["sigmas"] == [0.1, 0.3]

    def test_images_are_what_the_table_scores(self, fake_run):
        from shared.image_metrics import psnr

        res = studio.denoise(fake_run.dir, sigmas=(0.1, 0.3), n=2, save=False)
        assert res.images.shape == (2, 1 + len(studio.DENOISERS), 2, SIZE, SIZE)
        clean = studio.held_out_faces(fake_run.dir, fake_run.config, 2).floats()
        np.testing.assert_allclose(res.images[1, 0], clean)          # axis 1: clean first
        row = res.table[(res.table["sigma"] == 0.3) & (res.table["method"] == "median")]
        assert float(row["psnr"].iloc[0]) == pytest.approx(float(np.mean(psnr(res.images[1, 3], clean))), rel=1e-5)

    def test_save_false_writes_nothing(self, fake_run):
        before = listing(fake_run.dir)
        res = studio.denoise(fake_run.dir, sigmas=(0.2,), n=3, save=False)
        assert listing(fake_run.dir) == before and res.paths == []
        assert isinstance(res.figure, Figure) and len(res.table) == len(studio.DENOISERS)
        assert list(res.table.columns) == ["sigma", "method", "psnr", "ssim"]

    def test_bad_sigma(self, fake_run):
        with pytest.raises(ConfigError, match="sigmas"):
            studio.denoise(fake_run.dir, sigmas=(0.0,))


class TestInpaintPieces:
    def test_masks(self):
        box = make_mask("box", 3, 48)
        assert box.shape == (3, 48, 48) and box.dtype == bool
        assert box[0, 5:20, 5:40].all() and box[0].sum() == 15 * 35  # rows 5–20, cols 5–40 (end exclusive)
        rnd = make_mask("random", 4, SIZE, seed=2)
        assert rnd.shape == (4, SIZE, SIZE) and 0.4 < rnd.mean() < 0.6
        np.testing.assert_array_equal(rnd, make_mask("random", 4, SIZE, seed=2))
        with pytest.raises(ConfigError, match="mask"):
            make_mask("circle", 1, SIZE)

    def test_iterate_keeps_known_pixels_exactly(self, fake_run):
        clean = fake_run.test.floats()[:5]
        mask = make_mask("random", 5, SIZE, seed=0)
        masked = np.where(mask, 0.0, clean).astype(np.float32)
        out = iterative_projection(fake_run.model, masked, mask, iterations=3)
        np.testing.assert_array_equal(out[~mask], clean[~mask])
        assert not np.allclose(out[mask], 0.0)
        assert len(fake_run.model.seen) == 3

    def test_masked_psnr_only_counts_missing_pixels(self):
        clean = np.full((2, 16, 16), 0.5, np.float32)
        mask = np.zeros((2, 16, 16), bool)
        mask[:, 6:8, 6:10] = True
        filled = clean.copy()
        filled[mask] += 0.1                       # error 0.1 in the hole -> 20 dB
        assert inpaint_metrics(filled, clean, mask)["psnr"] == pytest.approx(20.0, abs=1e-4)
        filled[~mask] = 0.0                       # errors outside the hole do not count for PSNR ...
        scores = inpaint_metrics(filled, clean, mask)
        assert scores["psnr"] == pytest.approx(20.0, abs=1e-4)
        assert scores["ssim"] < 0.5               # ... but SSIM is over the whole image

    def test_residual_correction_removes_a_linear_error_exactly(self):
        # a model whose fill is the face plus a linear ramp: the error on the known pixels is that
        # ramp, whose biharmonic continuation is the ramp itself, so the correction recovers the face
        yy, xx = np.mgrid[0:24, 0:24].astype(np.float32)
        clean = np.stack([0.3 + 0.01 * xx + 0.005 * yy, 0.6 - 0.008 * yy]).astype(np.float32)
        ramp = (0.002 * xx - 0.003 * yy + 0.05).astype(np.float32)
        filled = clean + ramp
        mask = np.zeros(clean.shape, bool)
        mask[:, 8:15, 5:20] = True
        masked = np.where(mask, 0.0, clean).astype(np.float32)
        out = residual_correction(masked, mask, filled)
        np.testing.assert_allclose(out, clean, atol=1e-4)
        np.testing.assert_array_equal(out[~mask], clean[~mask])   # known pixels kept exactly
        assert inpaint_metrics(out, clean, mask)["psnr"] > inpaint_metrics(filled, clean, mask)["psnr"] + 20

    def test_residual_correction_never_reads_hidden_pixels_and_checks_shapes(self):
        rng = np.random.default_rng(0)
        clean = rng.uniform(0.2, 0.8, (3, 16, 16)).astype(np.float32)
        mask = make_mask("random", 3, 16, seed=1)
        filled = rng.uniform(0, 1, clean.shape).astype(np.float32)
        a = residual_correction(np.where(mask, 0.0, clean), mask, filled)
        b = residual_correction(np.where(mask, 1.0, clean), mask, filled)   # other hidden values
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
        with pytest.raises(ConfigError, match="same shape"):
            residual_correction(clean, mask, filled[:2])

    def test_composite(self):
        mask = np.array([[True, False]])
        np.testing.assert_array_equal(composite(np.array([[1.0, 2.0]]), np.array([[5.0, 6.0]]), mask), [[5.0, 2.0]])


class TestInpaint:
    @pytest.mark.parametrize("mask", ["box", "random"])
    def test_iterate_outputs(self, fake_run, mask):
        res = studio.inpaint(fake_run.dir, mask=mask, method="iterate", n=6, iterations=4)
        run = fake_run.dir
        result = json.loads((run / f"inpaint_{mask}_iterate.json").read_text())
        assert set(result["results"]) == {"mean_fill", "iterate"}
        assert result["n_faces"] == 6 and result["iterations"] == 4
        assert (run / f"inpaint_{mask}_iterate.md").is_file()
        assert (run / "figures" / f"inpaint_{mask}_iterate.png").is_file()
        assert len(res.paths) == 3 and all(p.is_file() for p in res.paths)
        table = res.table.set_index("method")
        assert list(table.index) == ["mean_fill", "iterate"]
        for method, scores in result["results"].items():
            assert table.loc[method, "psnr"] == pytest.approx(scores["psnr"])
            assert table.loc[method, "ssim"] == pytest.approx(scores["ssim"])
        assert res.images.shape == (4, 6, SIZE, SIZE)       # original, masked, mean-fill, iterate
        # the method never sees the hidden pixels: every input agrees with the masked faces off the mask
        holes = make_mask(mask, 6, SIZE, seed=0)
        clean = studio.held_out_faces(fake_run.dir, fake_run.config, 6).floats()
        for seen in fake_run.model.seen:
            np.testing.assert_array_equal(seen[~holes], clean[~holes])
        assert not np.allclose(fake_run.model.seen[0][holes], clean[holes])

    def test_save_false_writes_nothing(self, fake_run):
        before = listing(fake_run.dir)
        res = studio.inpaint(fake_run.dir, mask="random", method="decode", n=3, save=False)
        assert listing(fake_run.dir) == before and res.paths == []
        assert isinstance(res.figure, Figure) and res.images.shape == (4, 3, SIZE, SIZE)
        assert list(res.table["method"]) == ["mean_fill", "decode"]
        holes = make_mask("random", 3, SIZE, seed=0)
        np.testing.assert_array_equal(res.images[1][holes], 0.0)  # the masked row has its holes blanked

    def test_decode_beats_nothing_on_box(self, fake_run):
        studio.inpaint(fake_run.dir, mask="box", method="decode", n=8)
        res = json.loads((fake_run.dir / "inpaint_box_decode.json").read_text())["results"]
        assert np.isfinite(res["decode"]["psnr"]) and 0 < res["decode"]["ssim"] <= 1

    def test_optimize_calls_backend_with_masked_images(self, fake_run, monkeypatch):
        import shared.registry as registry
        calls = {}

        def inpaint_optimize(model, images, mask, *, steps=200, lr=0.05, prior_weight=1.0, seed=0):
            calls.update(images=images, mask=mask, steps=steps, seed=seed)
            return np.full_like(images, 0.25)

        monkeypatch.setattr(registry, "get_backend", lambda name=None: types.SimpleNamespace(
            inpaint_optimize=inpaint_optimize))
        studio.inpaint(fake_run.dir, mask="box", method="optimize", n=4, seed=5, steps=7)
        assert calls["steps"] == 7 and calls["seed"] == 5
        assert np.all(calls["images"][calls["mask"]] == 0.0)   # hidden pixels were blanked
        result = json.loads((fake_run.dir / "inpaint_box_optimize.json").read_text())
        assert result["steps"] == 7 and set(result["results"]) == {"mean_fill", "optimize"}

    def test_hybrid_corrects_the_optimised_fill(self, fake_run, monkeypatch):
        import shared.registry as registry

        def inpaint_optimize(model, images, mask, *, steps=200, lr=0.05, prior_weight=1.0, seed=0):
            return np.full_like(images, 0.25)   # a flat fill: the correction must add the faces' detail

        monkeypatch.setattr(registry, "get_backend", lambda name=None: types.SimpleNamespace(
            inpaint_optimize=inpaint_optimize))
        res = studio.inpaint(fake_run.dir, mask="random", method="hybrid", n=4, steps=3)
        result = json.loads((fake_run.dir / "inpaint_random_hybrid.json").read_text())
        assert result["steps"] == 3 and set(result["results"]) == {"mean_fill", "hybrid"}
        holes = make_mask("random", 4, SIZE, seed=0)
        clean = studio.held_out_faces(fake_run.dir, fake_run.config, 4).floats()
        flat = inpaint_metrics(composite(clean, np.full_like(clean, 0.25), holes), clean, holes)["psnr"]
        assert result["results"]["hybrid"]["psnr"] > flat + 3
        np.testing.assert_array_equal(res.images[3][~holes], res.images[0][~holes])  # known pixels kept

    def test_bad_method(self, fake_run):
        with pytest.raises(ConfigError, match="method"):
            studio.inpaint(fake_run.dir, method="magic")


class ConditionalLinearVAE(LinearVAE):
    """A conditional fake: every call must carry (N, 7) labels; decode labels are recorded."""

    conditional = True

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.decode_labels: list[np.ndarray] = []

    def encode(self, images, labels=None):
        assert labels is not None and labels.shape == (len(images), 7)
        return super().encode(images)

    def decode(self, z, labels=None):
        assert labels is not None and labels.shape == (len(z), 7)
        self.decode_labels.append(labels)
        return super().decode(z)

    def reconstruct(self, images, labels=None):
        assert labels is not None and labels.shape == (len(images), 7)
        self.seen.append(np.array(images, dtype=np.float32))
        return super().decode(super().encode(images)[0])

    def sample(self, n, seed, labels=None):
        return self.decode(np.random.default_rng(seed).standard_normal((n, self.latent_dim)), labels)


@pytest.fixture()
def cond(fake_run, monkeypatch):
    """The fake conditional model, served by api.load_model for any run folder."""
    model = ConditionalLinearVAE(fake_run.test.images, 4, fake_run.config)
    monkeypatch.setattr(api, "load_model", lambda run_dir: model)
    return model


class TestConditional:
    def test_interpolation_decodes_with_the_reference_label(self, fake_run, cond):
        from shared.faces import label_vectors
        import pandas as pd

        studio.interpolate(fake_run.dir, grid=3, corners="encode")
        ref = label_vectors(pd.DataFrame({k: [v] for k, v in studio.REFERENCE_LABEL.items()}))[0]
        assert cond.decode_labels and all(np.allclose(lab, ref) for lab in cond.decode_labels)

    def test_denoise_and_optimize_pass_the_faces_labels(self, fake_run, cond, monkeypatch):
        import shared.registry as registry
        from shared.faces import label_vectors

        studio.denoise(fake_run.dir, sigmas=(0.2,), n=4)      # reconstruct asserts labels were given
        got = {}
        monkeypatch.setattr(registry, "get_backend", lambda name=None: types.SimpleNamespace(
            inpaint_optimize=lambda model, images, mask, *, steps, seed, labels: got.update(labels=labels) or images))
        studio.inpaint(fake_run.dir, method="optimize", n=4)
        np.testing.assert_array_equal(got["labels"], label_vectors(fake_run.test.labels.head(4)))


class TestConditionalResults:
    """shared.conditional on the fake conditional model: Results, and save=False writes nothing."""

    def test_generate(self, fake_run, cond):
        from shared.conditional import generate

        before = listing(fake_run.dir)
        res = generate(fake_run.dir, gender=1, ethnicity="Asian", age=30, n=5, seed=2, save=False)
        assert listing(fake_run.dir) == before and res.paths == []
        assert isinstance(res.figure, Figure) and res.images.shape == (5, SIZE, SIZE)
        saved = generate(RunPath(fake_run.dir), gender=1, ethnicity="Asian", age=30, n=5, seed=2, fmt="svg")
        stem = fake_run.dir / "generated" / "female_asian_age30_seed2"
        assert saved.paths == [stem.with_suffix(".npy"), stem.with_suffix(".svg")]
        np.testing.assert_array_equal(np.load(stem.with_suffix(".npy")), res.images)
        assert stem.with_suffix(".svg").read_bytes().startswith(b"<?xml")

    def test_attribute_grid(self, fake_run, cond):
        from shared.conditional import attribute_grid

        before = listing(fake_run.dir)
        res = attribute_grid(fake_run.dir, seed=1, save=False)
        assert listing(fake_run.dir) == before
        assert res.images.shape == (2, 5, 5, SIZE, SIZE) and len(res.table) == 50
        assert set(res.extra) == {"male", "female"}
        # the table lists the cells in images order: the female Black 60+ cell
        row = res.table.iloc[25 + 5 + 4]
        assert (row["gender"], row["ethnicity"], row["age_band"]) == ("female", "Black", "60+")
        res = attribute_grid(fake_run.dir, seed=1)
        names = sorted(p.name for p in res.paths)
        assert names == ["attribute_grid_female.npy", "attribute_grid_female.png", "attribute_grid_male.npy",
                         "attribute_grid_male.png"]
        np.testing.assert_array_equal(np.load(fake_run.dir / "generated" / "attribute_grid_female.npy"),
                                      res.images[1])

    def test_edit_attributes(self, fake_run, cond):
        from shared.conditional import edit_attributes

        before = listing(fake_run.dir)
        res = edit_attributes(fake_run.dir, n=3, save=False)
        assert listing(fake_run.dir) == before
        assert res.images.shape == (3, 13, SIZE, SIZE) and len(res.info["columns"]) == 13
        # the first test faces of each gender, taken in turn, so "gender flipped" shows both directions
        labels = fake_run.test.labels.reset_index(drop=True)
        men, women = (list(labels.index[labels["gender"] == g]) for g in (0, 1))
        expected = [men[0], women[0], men[1]] if men and women else list(labels.index[:3])
        assert list(res.table["img_name"]) == list(labels["img_name"][expected])
        assert set(res.table["gender"]) == {0, 1} or not (men and women)
        saved = edit_attributes(fake_run.dir, n=3, fmt="pdf", dpi=50)
        assert [p.name for p in saved.paths] == ["attribute_edits.npy", "attribute_edits.pdf"]
