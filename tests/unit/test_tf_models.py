"""TF models: loss definition (against numpy), labels, gradients, architecture, numpy protocol, save/load."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from facevae_tf import checkpoint  # noqa: E402
from facevae_tf.backend import load  # noqa: E402
from facevae_tf.adapter import TFGenerativeModel  # noqa: E402
from facevae_tf.models import build_model  # noqa: E402
from facevae_tf.engine import seed_everything  # noqa: E402
from shared.errors import ConfigError, FaceVAEError, RunError  # noqa: E402
from shared.faces import label_vectors  # noqa: E402
from shared.protocol import GenerativeModel  # noqa: E402
from tests.unit.tf_test_helpers import new_run_dir, tiny_faces, tiny_model_config, tiny_run_config  # noqa: E402

FAMILIES = ("vae", "cvae", "iaf")


@pytest.fixture(scope="module")
def faces():
    return tiny_faces(16, seed=3)


@pytest.fixture(scope="module")
def models():
    out = {}
    for fam in FAMILIES:
        seed_everything(0)
        out[fam] = build_model(tiny_model_config(fam))
    return out


def _batch(faces, model, n=6):
    x = tf.constant(faces.floats()[:n, ..., None])
    y = tf.constant(label_vectors(faces.labels[:n]) if model.label_dim else np.zeros((n, 0), np.float32))
    return x, y


def _np_bce(x, logits):
    return (np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))).reshape(len(x), -1).sum(1)


class TestLossDefinition:
    @pytest.mark.parametrize("family", ["vae", "cvae"])
    def test_loss_is_reconstruction_plus_beta_kl(self, models, faces, family):
        model = models[family]
        x, y = _batch(faces, model)
        eps = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
        beta = 0.37
        terms = {k: float(v) for k, v in model.loss_terms(x, y, tf.constant(eps), beta, training=False).items()}
        post = model.posterior(x, y, training=False)
        mean, logvar = post["mean"].numpy().astype(np.float64), post["logvar"].numpy().astype(np.float64)
        z = mean + np.exp(0.5 * logvar) * eps
        logits = model.decode_logits(tf.constant(z, tf.float32), y, training=False).numpy().astype(np.float64)
        recon = _np_bce(x.numpy().astype(np.float64), logits)
        kl = 0.5 * (np.exp(logvar) + mean ** 2 - 1.0 - logvar).sum(1)
        np.testing.assert_allclose(terms["distortion"], recon.mean(), rtol=1e-5)
        np.testing.assert_allclose(terms["rate"], kl.mean(), rtol=1e-5)
        np.testing.assert_allclose(terms["loss"], recon.mean() + beta * kl.mean(), rtol=1e-5)
        np.testing.assert_allclose(terms["elbo"], recon.mean() + kl.mean(), rtol=1e-5)
        assert terms["beta"] == pytest.approx(beta)
        assert terms["rate"] > 0

    @pytest.mark.parametrize("family", ["vae", "cvae", "iaf"])
    def test_kl_reaches_the_gradient_of_logvar_head(self, models, faces, family):
        # with eps = 0 the decoder never sees logvar: its gradient can only come from the KL term
        model = models[family]
        x, y = _batch(faces, model)
        with tf.GradientTape() as tape:
            loss = model.loss_terms(x, y, tf.zeros((6, 4)), 1.0, training=False)["loss"]
        grad = tape.gradient(loss, model.head_logvar.kernel)
        assert grad is not None and float(tf.norm(grad)) > 1e-6

    def test_gaussian_fixed_sigma_matches_formula(self, faces):
        seed_everything(0)
        model = build_model(tiny_model_config("vae", likelihood="gaussian", sigma=0.2))
        x, y = _batch(faces, model)
        eps = tf.zeros((6, 4))
        terms = model.loss_terms(x, y, eps, 1.0, training=False)
        logits = model.decode_logits(model.posterior(x, y)["mean"], y).numpy().astype(np.float64)
        mu = 1 / (1 + np.exp(-logits))
        nll = (0.5 * ((x.numpy() - mu) / 0.2) ** 2 + np.log(0.2) + 0.5 * np.log(2 * np.pi)).reshape(6, -1).sum(1)
        np.testing.assert_allclose(float(terms["distortion"]), nll.mean(), rtol=1e-5)

    def test_iaf_rate_is_log_q_minus_log_prior(self, models, faces):
        model = models["iaf"]
        x, y = _batch(faces, model)
        eps = tf.constant(np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32))
        terms = model.loss_terms(x, y, eps, 0.5, training=False)
        post = model.posterior(x, y)
        z, log_q = model.flow(post["mean"], post["logvar"], post["context"], eps)
        log_p = -0.5 * (np.log(2 * np.pi) + z.numpy() ** 2).sum(1)
        rate = (log_q.numpy() - log_p).mean()
        np.testing.assert_allclose(float(terms["rate"]), rate, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(float(terms["loss"]), float(terms["distortion"]) + 0.5 * rate, rtol=1e-5)

    def test_free_bits_raise_training_loss_only(self, faces):
        seed_everything(0)
        model = build_model(tiny_model_config("vae", free_bits=5.0))
        x, y = _batch(faces, model)
        train_t = model.loss_terms(x, y, tf.zeros((6, 4)), 1.0, training=False)
        fb = model.loss_terms(x, y, tf.zeros((6, 4)), 1.0, training=True)
        assert float(fb["loss"]) >= float(fb["distortion"]) + 4 * 5.0 - 1e-3
        assert float(train_t["loss"]) == pytest.approx(float(train_t["elbo"]), rel=1e-6)


class TestConditioning:
    def test_cvae_output_changes_with_labels(self, models, faces):
        model = models["cvae"]
        z = tf.constant(np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
        y = label_vectors(faces.labels[:2])
        other = y.copy()
        other[:, 0] = 1 - other[:, 0]  # flip gender
        a = model.decode_logits(z, tf.constant(y)).numpy()
        b = model.decode_logits(z, tf.constant(other)).numpy()
        assert np.abs(a - b).max() > 1e-4
        x, _ = _batch(faces, model, 2)
        pa = model.posterior(x, tf.constant(y))["mean"].numpy()
        pb = model.posterior(x, tf.constant(other))["mean"].numpy()
        assert np.abs(pa - pb).max() > 1e-5

    def test_cvae_input_widths_follow_the_plan(self, models):
        model = models["cvae"]
        first_dense = model.encoder_dense[0]
        assert first_dense.kernel.shape[0] == model.plan.flat_dim + 7
        assert model.decoder_layers[0].kernel.shape[0] == 4 + 7


class TestGradients:
    @pytest.mark.parametrize("family", FAMILIES)
    def test_every_trainable_variable_gets_a_gradient(self, models, faces, family):
        model = models[family]
        x, y = _batch(faces, model)
        eps = tf.constant(np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = model.loss_terms(x, y, eps, 1.0, training=True)["loss"]
        grads = tape.gradient(loss, model.trainable_variables)
        missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None or float(tf.norm(g)) == 0]
        assert not missing, f"variables without gradient: {missing}"
        if family == "iaf":
            flow_vars = {id(v) for v in model.flow.trainable_variables}
            assert flow_vars and flow_vars <= {id(v) for v in model.trainable_variables}


class TestArchitecture:
    def test_layers_follow_the_plan_in_order(self, models):
        model = models["vae"]
        names = [layer.name for layer in model.plan_layers()]
        plan = model.plan
        assert len(names) == len(plan.encoder) + len(plan.encoder_dense) + 2 + len(plan.decoder)
        assert names[0] == "encoder_00_conv" and names[-1].endswith("_deconv")
        assert "head_mean" in names and "head_logvar" in names and "head_context" not in names
        assert "head_context" in [layer.name for layer in models["iaf"].plan_layers()]

    def test_logits_shape_and_unknown_family(self, models, faces):
        model = models["vae"]
        x, y = _batch(faces, model, 3)
        assert tuple(model((x, y)).shape) == (3, 32, 32, 1)
        with pytest.raises(ConfigError, match="family"):
            build_model(tiny_model_config("cnn"))


class TestProtocol:
    @pytest.fixture(scope="class")
    @classmethod
    def saved(cls, tmp_path_factory, models):
        """A cvae written to a run folder and loaded back, plus the in-memory original."""
        config = tiny_run_config("cvae")
        run = new_run_dir(tmp_path_factory.mktemp("tf_protocol"), "cvae", config)
        original = models["cvae"]
        checkpoint.save(run, "best", checkpoint.model_checkpoint(original))
        return TFGenerativeModel(original, config), load(run)

    def test_protocol_shapes_and_ranges(self, saved, faces):
        _, model = saved
        assert isinstance(model, GenerativeModel) and model.conditional and model.latent_dim == 4
        labels = label_vectors(faces.labels[:5])
        mean, logvar = model.encode(faces.images[:5], labels)
        assert mean.shape == logvar.shape == (5, 4) and mean.dtype == np.float32
        for out in (model.decode(mean, labels), model.sample(5, 0, labels), model.reconstruct(faces.images[:5], labels)):
            assert out.shape == (5, 32, 32) and out.dtype == np.float32
            assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_array_equal(model.sample(5, 7, labels), model.sample(5, 7, labels))

    def test_save_load_gives_identical_outputs(self, saved, faces):
        original, loaded = saved
        labels = label_vectors(faces.labels[:5])
        np.testing.assert_array_equal(original.reconstruct(faces.images[:5], labels),
                                      loaded.reconstruct(faces.images[:5], labels))
        np.testing.assert_array_equal(original.encode(faces.images[:5], labels)[0],
                                      loaded.encode(faces.images[:5], labels)[0])

    def test_conditional_model_requires_labels(self, saved, faces):
        _, model = saved
        with pytest.raises(FaceVAEError, match="conditional"):
            model.sample(3, 0)
        with pytest.raises(FaceVAEError, match="shape"):
            model.decode(np.zeros((3, 4), np.float32), np.zeros((3, 5), np.float32))
        with pytest.raises(FaceVAEError, match="images must have shape"):
            model.reconstruct(np.zeros((2, 16, 16), np.float32), np.zeros((2, 7), np.float32))

    def test_load_rejects_a_checkpoint_of_another_architecture(self, tmp_path, models):
        run = new_run_dir(tmp_path, "iaf", tiny_run_config("iaf"))
        checkpoint.save(run, "last", checkpoint.model_checkpoint(models["vae"]))
        with pytest.raises(RunError, match="does not fit"):
            load(run)

    def test_unconditional_model_ignores_labels(self, models, faces):
        model = TFGenerativeModel(models["iaf"], tiny_run_config("iaf"))
        assert not model.conditional
        out = model.reconstruct(faces.images[:3])
        assert out.shape == (3, 32, 32)
        np.testing.assert_array_equal(out, model.reconstruct(faces.images[:3], np.zeros((3, 7))))
