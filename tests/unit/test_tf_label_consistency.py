"""Label consistency for the TF cvae (``label_loss``, facevae_tf.label_consistency)."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from facevae_tf.label_consistency import (LABEL_NOISE, LabelClassifier, classifier_loss,  # noqa: E402
                                          excess_over_real, label_terms, noise_dim, numpy_requested_labels)
from facevae_tf.models import build_model  # noqa: E402
from shared import api  # noqa: E402
from shared.config import ModelConfig  # noqa: E402
from shared.errors import ConfigError  # noqa: E402
from shared.faces import AGE_BANDS, AGE_SCALE  # noqa: E402
from shared.runs import read_metrics  # noqa: E402

from tests.unit.tf_test_helpers import tiny_faces, tiny_model_config  # noqa: E402


class TestConfig:
    @pytest.mark.parametrize("family", ["vae", "iaf"])
    def test_refused_outside_the_cvae(self, family):
        with pytest.raises(ConfigError, match="`label_loss` is for the conditional VAE"):
            ModelConfig(family=family, label_loss=1.0)

    @pytest.mark.parametrize("value", [-1.0, float("nan"), True, "10"])
    def test_refuses_bad_values(self, value):
        with pytest.raises(ConfigError, match="`label_loss`"):
            ModelConfig(family="cvae", label_loss=value)

    def test_cli_refuses_it_for_a_vae_with_one_line(self, tmp_path, capsys):
        from shared.cli import main

        code = main(["train", "--backend", "tf", "--model", "vae", "--data", "synthetic:64", "--label-loss", "5",
                     "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "label_loss" in err[0]
        assert not (tmp_path / "r").exists()

    def test_the_default_cvae_has_it_and_the_seed_preset_does_not(self):
        assert ModelConfig(family="cvae").label_loss == 100.0
        assert ModelConfig(family="cvae", preset="seed").label_loss == 0.0
        assert ModelConfig(family="vae").label_loss == 0.0

    def test_a_run_saved_before_the_field_loads_without_it(self, tmp_path):
        """Its weights hold no classifier: reading it with today's default (100) would not restore."""
        import json

        from shared.config import RunConfig
        from shared.runs import load_run_config

        data = RunConfig(backend="tf", model=ModelConfig(family="cvae")).to_dict()
        del data["model"]["label_loss"]
        (tmp_path / "config.json").write_text(json.dumps(data))
        assert load_run_config(tmp_path).model.label_loss == 0.0

    def test_noise_width(self):
        assert noise_dim(8, 0.0) == 8 and noise_dim(8, 2.5) == 16 + LABEL_NOISE


class TestRequestedLabels:
    def test_every_class_and_age_band_is_requested_evenly(self):
        u = np.random.default_rng(0).standard_normal((60_000, 3)).astype(np.float32)
        y = numpy_requested_labels(u)
        assert y.shape == (60_000, 7)
        np.testing.assert_array_equal(y[:, 0], (u[:, 0] > 0).astype(np.float32))
        np.testing.assert_array_equal(y[:, 1:6].sum(1), 1.0)
        assert np.abs(y[:, 1:6].mean(0) - 0.2).max() < 0.01
        ages = y[:, 6] * AGE_SCALE
        bands = np.array([np.flatnonzero([lo <= a <= min(hi, 80) for lo, hi in AGE_BANDS])[0] for a in ages[:5000]])
        assert np.abs(np.bincount(bands, minlength=5) / 5000 - 0.2).max() < 0.03
        assert ages.min() >= 0 and ages.max() <= 80
        # within the 20-39 band the age is spread over the band, not piled at one end
        mid = ages[(ages >= 20) & (ages <= 39)]
        assert 27 < mid.mean() < 32 and mid.min() < 21 and mid.max() > 38

    def test_classifier_loss_by_hand(self):
        y = np.array([[1, 0, 0, 1, 0, 0, 0.30]], np.float32)
        out = np.array([[0.0, 0, 0, 0, 0, 0, 0.50]], np.float32)
        # log 2 (gender) + log 5 (ethnicity) + 20 years = 2 decades
        assert float(classifier_loss(tf.constant(out), tf.constant(y))[0]) == pytest.approx(
            np.log(2) + np.log(5) + 2.0, rel=1e-5)


    def test_generated_faces_pay_only_above_the_real_faces_level(self):
        real = tf.constant([1.0, 3.0])               # level 2
        generated = tf.constant([1.0, 3.0, 5.0])     # excess 0, 1, 3
        assert float(excess_over_real(real, generated)) == pytest.approx(4.0 / 3.0)
        assert float(excess_over_real(real, tf.constant([0.5, 1.5]))) == 0.0  # recognisable enough: no push

    def test_mirror_flips_only_the_real_faces_it_names(self):
        clf = LabelClassifier(32)
        rng = np.random.default_rng(1)
        x = tf.constant(rng.random((2, 32, 32, 1), np.float32))
        gen = tf.constant(rng.random((2, 32, 32, 1), np.float32))
        y = tf.constant(numpy_requested_labels(rng.standard_normal((2, 3)).astype(np.float32)))
        terms = label_terms(clf, x, y, gen, y, mirror=tf.constant([True, False]))
        mirrored = classifier_loss(clf.outputs(x[:, :, ::-1]), y).numpy()
        plain = classifier_loss(clf.outputs(x), y).numpy()
        assert abs(mirrored[0] - plain[0]) > 1e-6  # the mirror changes what the classifier sees
        np.testing.assert_allclose(terms["label_real"].numpy(), [mirrored[0], plain[1]], rtol=1e-6)
        np.testing.assert_allclose(terms["label_generated"].numpy(), classifier_loss(clf.outputs(gen), y).numpy(),
                                   rtol=1e-6)


def _model(label_loss=10.0):
    return build_model(tiny_model_config("cvae", label_loss=label_loss))


class TestGradients:
    """The classifier learns only from real faces; the decoder and prior only from generated ones."""

    def test_routing(self):
        model = _model()
        faces = tiny_faces(16)
        from shared.faces import label_vectors
        x = tf.constant(faces.images[..., None].astype(np.float32) / 255.0)
        y = tf.constant(label_vectors(faces.labels))
        eps = tf.random.stateless_normal((16, model.noise_dim), seed=(1, 2))
        clf = model.label_classifier.trainable_variables
        decoder = [v for layer in model.decoder_layers for v in layer.trainable_variables]
        encoder = [v for layer in model.encoder_layers for v in layer.trainable_variables]
        with tf.GradientTape(persistent=True) as tape:
            terms = model.loss_terms(x, y, eps, 1.0, training=True)
        g_real_clf = tape.gradient(terms["label_real"], clf)
        g_fake_clf = tape.gradient(terms["label_generated"], clf)
        g_excess_clf = tape.gradient(terms["label_excess"], clf)
        g_fake_dec = tape.gradient(terms["label_generated"], decoder)
        g_fake_enc = tape.gradient(terms["label_generated"], encoder)
        g_real_dec = tape.gradient(terms["label_real"], decoder)
        assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in g_real_clf)
        assert all(g is None for g in g_fake_clf)          # frozen for the generated faces
        assert all(g is None for g in g_excess_clf)        # ... and the real faces' level is held fixed
        assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in g_fake_dec)
        assert all(g is None for g in g_fake_enc)          # generated from the prior, not encoded
        assert all(g is None for g in g_real_dec)
        # the loss is the VAE's plus label_real + label_loss * label_excess
        base = model.batch_terms(*model.image_terms(x, y, eps[:, :4], training=True)[:2], 1.0, True)["loss"]
        assert float(terms["loss"]) == pytest.approx(
            float(base + terms["label_real"] + 10.0 * terms["label_excess"]), rel=1e-4)

    def test_wrong_noise_width_is_refused(self):
        model = _model()
        x = tf.zeros((2, 32, 32, 1))
        y = tf.zeros((2, 7))
        with pytest.raises(ValueError, match="eps of width"):
            model.loss_terms(x, y, tf.zeros((2, 4)), 1.0)

    def test_off_means_no_classifier_and_the_plain_noise(self):
        model = _model(0.0)
        assert model.label_classifier is None and model.noise_dim == 4
        assert not any("label_classifier" in v.path for v in model.variables)


@pytest.fixture(scope="module")
def paired_runs(tmp_path_factory):
    """Two cvae runs alike in everything but label_loss (their classifiers train on the same real faces)."""
    root = tmp_path_factory.mktemp("label_consistency")
    runs = {}
    for name, weight in (("off", 1e-6), ("on", 50.0)):
        cfg = api.build_config(backend="tf", model="cvae", data="synthetic:1200", image_size=32, latent_dim=4,
                               channels=(8, 16), hidden_dims=(32,), epochs=10, batch_size=32, lr=3e-3,
                               grad_clip=0.0, label_loss=weight, seed=3)
        runs[name] = api.train(cfg, root / name)
    return runs


class TestTraining:
    def test_generated_faces_become_recognisable(self, paired_runs):
        """Judged by the same classifier (trained on the real faces alone, identically in both runs), the
        faces the weighted run generates match their requested labels better than the other's."""
        last = {k: read_metrics(v)[-1] for k, v in paired_runs.items()}
        assert last["on"]["val_label_real"] == pytest.approx(last["off"]["val_label_real"], rel=1e-3)
        # measured 1.88 against 3.54 (the classifier's loss on the real validation faces: 2.24 in both)
        assert last["on"]["val_label_generated"] < last["off"]["val_label_generated"] - 1.0, last

    def test_classifier_learns_from_the_real_faces(self, paired_runs):
        records = read_metrics(paired_runs["on"])
        assert records[-1]["val_label_real"] < 0.85 * records[0]["val_label_real"]

    def test_saved_run_reloads_with_its_classifier(self, paired_runs):
        from facevae_tf import backend

        model = backend.load(paired_runs["on"]).keras_model
        assert model.label_classifier is not None and model.noise_dim == 2 * 4 + LABEL_NOISE
        assert any("label_classifier" in v.path for v in model.variables)
