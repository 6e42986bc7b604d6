"""Conditional generation (shared.conditional) and label fidelity on a tiny trained TF cvae."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from facevae_tf.evaluation import FIDELITY_AGES, evaluate, label_fidelity  # noqa: E402
from shared import api  # noqa: E402
from shared.conditional import GENERATED, GRID_AGES, attribute_grid, edit_attributes, generate, label_matrix  # noqa: E402
from shared.errors import ConfigError, RunError  # noqa: E402


def _config(family: str):
    return api.build_config(backend="tf", model=family, data="synthetic:120", image_size=32, latent_dim=4,
                            channels=(4, 8), hidden_dims=(16,), epochs=2, batch_size=32, lr=0.01)


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    return api.train(_config("cvae"), tmp_path_factory.mktemp("tf_cond") / "cvae")


class TestEndToEnd:
    def test_api_train_and_evaluate_cvae(self, cvae_run):
        from shared.runs import read_metrics

        assert [r["epoch"] for r in read_metrics(cvae_run)] == [0, 1]
        result = api.evaluate(cvae_run, iwae_k=4)
        assert json.loads((cvae_run / "eval.json").read_text())["family"] == "cvae"
        for key in ("neg_elbo", "rate", "distortion", "neg_iwae", "psnr", "ssim"):
            assert math.isfinite(result[key]), key
        assert result["neg_iwae"] <= result["neg_elbo"] + 1.0
        assert "label_fidelity" not in result  # no classifier given


class TestLabels:
    def test_label_matrix_accepts_codes_and_names(self):
        a = label_matrix(1, "asian", 30, n=2)
        np.testing.assert_array_equal(a, label_matrix("female", 2, "30", n=2))
        assert a.shape == (2, 7) and a[0, 0] == 1 and a[0, 3] == 1 and a[0, 6] == pytest.approx(0.3)

    @pytest.mark.parametrize("kw, field", [(dict(gender=2), "gender"), (dict(ethnicity="Martian"), "ethnicity"),
                                           (dict(age=-1), "age"), (dict(age="old"), "age")])
    def test_invalid_labels_name_the_field(self, kw, field):
        args = dict(gender=0, ethnicity=0, age=30) | kw
        with pytest.raises(ConfigError, match=f"`{field}`"):
            label_matrix(**args)


class TestGeneration:
    def test_generate_writes_figure_and_images(self, cvae_run):
        res = generate(cvae_run, gender=1, ethnicity=2, age=30, n=5, seed=3)
        npy, png = res.paths
        assert npy.parent == cvae_run / GENERATED and png.suffix == ".png" and png.stat().st_size > 0
        images = np.load(npy)
        assert images.shape == (5, 32, 32) and 0 <= images.min() and images.max() <= 1
        np.testing.assert_array_equal(images, res.images)
        again = generate(cvae_run, gender="female", ethnicity="Asian", age=30, n=5, seed=3, save=False)
        np.testing.assert_array_equal(images, again.images)
        assert again.paths == []
        other = generate(cvae_run, gender=0, ethnicity=2, age=30, n=5, seed=3, save=False)
        assert np.abs(other.images - images).max() > 0

    def test_attribute_grid_one_figure_per_gender(self, cvae_run):
        res = attribute_grid(cvae_run, seed=1)
        out = cvae_run / GENERATED
        for g, gender in enumerate(("male", "female")):
            assert (out / f"attribute_grid_{gender}.png").stat().st_size > 0
            grid = np.load(out / f"attribute_grid_{gender}.npy")
            assert grid.shape == (5, 5, 32, 32)
            np.testing.assert_array_equal(grid, res.images[g])
            assert np.abs(grid[0, 0] - grid[1, 0]).max() > 0  # ethnicity changes the face

    def test_edit_attributes(self, cvae_run):
        res = edit_attributes(cvae_run, n=2)
        grid = np.load(res.paths[0])
        assert res.paths[0].suffix == ".npy" and grid.shape == (2, 1 + 1 + 1 + 5 + 5, 32, 32)
        assert np.abs(grid[:, 1] - grid[:, 2]).max() > 0  # gender flip changes the decoding
        assert len(res.table) == 2 and res.info["columns"][2] == "gender flipped"

    def test_generate_rejects_bad_n_and_unconditional_runs(self, cvae_run, tmp_path):
        with pytest.raises(ConfigError, match="`n`"):
            generate(cvae_run, gender=0, ethnicity=0, age=20, n=0)
        from facevae_tf import checkpoint
        from facevae_tf.models import build_model

        config = _config("vae")
        vae_run = tmp_path / "vae"
        vae_run.mkdir()
        config.save(vae_run / "config.json")
        checkpoint.save(vae_run, "last", checkpoint.model_checkpoint(build_model(config.model)))
        with pytest.raises(RunError, match="cvae"):
            generate(vae_run, gender=0, ethnicity=0, age=20)


class TestTemperature:
    def test_generate_shrinks_the_same_prior_draw(self, cvae_run):
        from shared.conditional import label_matrix
        from shared.protocol import latent_noise

        model = api.load_model(cvae_run)
        labels = label_matrix(1, 2, 30, 4)
        cold = generate(cvae_run, gender=1, ethnicity=2, age=30, n=4, seed=3, temperature=0.5, save=False)
        np.testing.assert_allclose(cold.images, model.decode(0.5 * latent_noise(4, model.latent_dim, 3), labels),
                                   atol=1e-6)
        warm = generate(cvae_run, gender=1, ethnicity=2, age=30, n=4, seed=3, save=False)  # T = 1: as it always was
        np.testing.assert_allclose(warm.images, model.sample(4, 3, labels), atol=1e-6)
        assert cold.info["temperature"] == 0.5 and warm.info["temperature"] == 1.0
        # shrinking the draw pulls the faces together: less variety at T = 0.5
        assert float(np.std(cold.images, axis=0).mean()) < float(np.std(warm.images, axis=0).mean())

    @pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "hot", True])
    def test_bad_temperatures_are_refused(self, cvae_run, bad):
        with pytest.raises(ConfigError, match="temperature"):
            generate(cvae_run, gender=1, ethnicity=2, age=30, n=2, temperature=bad, save=False)
        with pytest.raises(ConfigError, match="temperature"):
            attribute_grid(cvae_run, temperature=bad, save=False)

    def test_attribute_grid_at_a_temperature_shrinks_its_one_draw(self, cvae_run):
        from shared.protocol import latent_noise

        model = api.load_model(cvae_run)
        res = attribute_grid(cvae_run, seed=2, temperature=0.5)
        cell = model.decode(0.5 * latent_noise(1, model.latent_dim, 2), label_matrix(1, 3, GRID_AGES[2]))
        np.testing.assert_allclose(res.images[1, 3, 2], cell[0], atol=1e-6)  # female, Indian, third age band
        assert res.info["temperature"] == 0.5
        assert {p.name for p in res.paths} >= {"attribute_grid_male_t0.5.png", "attribute_grid_female_t0.5.png"}

    def test_cli_temperature_names_the_file_and_refuses_bad_values(self, cvae_run, capsys):
        from shared.cli import main

        assert main(["generate", str(cvae_run), "--gender", "1", "--ethnicity", "0", "--age", "20", "--n", "2",
                     "--temperature", "0.7"]) == 0
        assert "female_white_age20_seed0_t0.7" in capsys.readouterr().out
        assert main(["generate", str(cvae_run), "--gender", "1", "--ethnicity", "0", "--age", "20",
                     "--temperature", "0"]) == 2
        err = capsys.readouterr().err
        assert "temperature" in err and "(0, 1]" in err and "Traceback" not in err

    def test_fidelity_is_reported_at_each_temperature_with_its_own_draws(self, cvae_run):
        from facevae_tf.evaluation import FIDELITY_TEMPERATURES
        from shared.synthetic import generate_faces

        seen = []

        class Recording(_ConstantClassifier):
            def predict(self, images):
                seen.append(np.array(images))
                return super().predict(images)

        model = api.load_model(cvae_run)
        result = evaluate(model, generate_faces(12, 32, seed=5), iwae_k=0, classifier=Recording())
        by_t = result["label_fidelity_by_temperature"]
        assert sorted(by_t) == sorted(f"{t:g}" for t in FIDELITY_TEMPERATURES)
        assert all(by_t[f"{t:g}"]["temperature"] == t for t in FIDELITY_TEMPERATURES)
        assert result["label_fidelity"]["temperature"] == 1.0
        generated = [x for x in seen if len(x) == result["label_fidelity"]["n_generated"]]
        assert len(generated) == 1 + len(FIDELITY_TEMPERATURES)
        assert not np.allclose(generated[0], generated[1])  # each temperature decoded its own (shrunken) draws


class _ConstantClassifier:
    """Always predicts male, White, 30 years: fidelity must equal the requested shares exactly."""

    task = "all"

    def predict(self, images):
        n = len(images)
        return {"gender": np.zeros(n, np.int64), "ethnicity": np.tile([[5.0, 0, 0, 0, 0]], (n, 1)),
                "age": np.full(n, 30.0)}


class TestLabelFidelity:
    def test_label_fidelity_against_a_known_classifier(self, cvae_run):
        model = api.load_model(cvae_run)
        result = label_fidelity(model, _ConstantClassifier(), n_per=2, seed=0)
        assert result["n_generated"] == 2 * 5 * len(FIDELITY_AGES) * 2
        assert result["gender_fidelity"] == pytest.approx(0.5)
        assert result["gender_fidelity_by_class"] == {"male": 1.0, "female": 0.0}
        assert result["ethnicity_fidelity"] == pytest.approx(0.2)
        assert result["age_mae"] == pytest.approx(np.mean([abs(30 - a) for a in FIDELITY_AGES]))

    def test_evaluate_adds_label_fidelity_with_a_classifier(self, cvae_run):
        from shared.synthetic import generate_faces

        model = api.load_model(cvae_run)
        result = evaluate(model, generate_faces(12, 32, seed=5), iwae_k=0, classifier=_ConstantClassifier())
        assert result["label_fidelity"]["gender_fidelity"] == pytest.approx(0.5)
        assert "neg_iwae" not in result and result["n"] == 12

    def test_the_judges_ceiling_is_class_balanced_on_real_and_reconstructed_faces(self, cvae_run):
        from shared.faces import AGE_BANDS
        from shared.synthetic import generate_faces

        faces = generate_faces(40, 32, seed=6)
        ceiling = evaluate(api.load_model(cvae_run), faces, iwae_k=0,
                           classifier=_ConstantClassifier())["label_fidelity_ceiling"]
        lab = faces.labels
        age = lab["age"].to_numpy(float)
        bands = [abs(30 - age[(age >= lo) & (age <= hi)]).mean() for lo, hi in AGE_BANDS
                 if ((age >= lo) & (age <= hi)).any()]
        # always "male, White, 30": right on every male and every White face, so 1/classes present
        want = {"gender_fidelity": 1 / lab["gender"].nunique(), "ethnicity_fidelity": 1 / lab["ethnicity"].nunique(),
                "age_mae": float(np.mean(bands))}
        assert ceiling["n_faces"] == 40 and lab["ethnicity"].nunique() > 1
        for kind in ("real", "reconstructed"):
            assert {k: ceiling[kind][k] for k in want} == pytest.approx(want)
            assert ceiling[kind]["gender_fidelity_by_class"] == {"male": 1.0, "female": 0.0}
            by_band = ceiling[kind]["age_mae_by_band"]
            assert list(by_band.values()) == pytest.approx(bands)  # "age 30" is off by |30 - age| in each band
            assert set(by_band) <= {"0-9", "10-19", "20-39", "40-59", "60+"} and len(by_band) == len(bands)
            assert set(ceiling[kind]["age_predicted_by_band"].values()) == {30.0}


class TestGenerateCLI:
    def test_generate_grid_and_edit_from_the_command_line(self, cvae_run, capsys):
        from shared.cli import main

        assert main(["generate", str(cvae_run), "--gender", "0", "--ethnicity", "1", "--age", "40", "--n", "3",
                     "--grid", "--edit", "2"]) == 0
        out = capsys.readouterr().out
        for name in ("male_black_age40_seed0.png", "attribute_grid_female.png", "attribute_edits.png"):
            assert name in out and (cvae_run / GENERATED / name).is_file()
        assert (cvae_run / GENERATED / "male_black_age40_seed0.npy").is_file()

    def test_partial_labels_exit_2_with_a_message(self, cvae_run, capsys):
        from shared.cli import main

        assert main(["generate", str(cvae_run), "--gender", "0"]) == 2
        assert "--ethnicity" in capsys.readouterr().err


class TestLabelPrior:
    """The cvae's prior p(z|y) = N(shift(y), I), exposed as a standard z (facevae_tf.models.ConditionalVAE)."""

    def test_the_shift_moves_prior_samples_but_not_reconstructions(self, cvae_run):
        import tensorflow as tf

        from shared.faces import label_vectors
        from shared.synthetic import generate_faces

        model = api.load_model(cvae_run)
        net = model.keras_model
        faces = generate_faces(6, 32, seed=3)
        x, y = faces.floats(), label_vectors(faces.labels)
        z = np.random.default_rng(0).standard_normal((6, net.latent_dim)).astype(np.float32)
        rec0, dec0 = model.reconstruct(x, y), model.decode(z, y)
        net.head_prior_shift.kernel.assign(tf.fill(net.head_prior_shift.kernel.shape, 0.7))
        # the encoder reports mean − shift and the decoder adds the shift back: same reconstruction ...
        np.testing.assert_allclose(model.reconstruct(x, y), rec0, atol=2e-5)
        # ... while a z drawn from N(0, I) now lands elsewhere for every label
        assert np.abs(model.decode(z, y) - dec0).mean() > 1e-3

    def test_training_learns_the_shift_from_zero(self, cvae_run):
        from facevae_tf.models import build_model
        from shared.config import RunConfig

        fresh = build_model(RunConfig.load(cvae_run / "config.json").model)
        assert not np.any(fresh.head_prior_shift.kernel.numpy()) and not np.any(fresh.head_prior_shift.bias.numpy())
        trained = api.load_model(cvae_run).keras_model.head_prior_shift
        assert np.abs(trained.kernel.numpy()).max() > 1e-4

    def test_a_cvae_saved_before_the_label_prior_loads_with_a_standard_prior(self, cvae_run, tmp_path):
        import shutil

        import tensorflow as tf

        from facevae_tf import checkpoint

        old = tmp_path / "old_cvae"
        shutil.copytree(cvae_run, old)
        shutil.rmtree(old / "checkpoints")
        net = api.load_model(cvae_run).keras_model
        kept = [v for v in net.variables if not v.path.startswith("head_prior_shift/")]
        assert len(kept) == len(net.variables) - 2
        checkpoint.save(old, "best", tf.train.Checkpoint(model=checkpoint.named_variables(kept)))
        loaded = api.load_model(old).keras_model
        assert not np.any(loaded.head_prior_shift.kernel.numpy())  # the old model's N(0, I) prior
        for a, b in zip(kept, [v for v in loaded.variables if not v.path.startswith("head_prior_shift/")]):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
