"""IAF posterior (facevae_tf.iaf): autoregressive structure, exact log-det, tracking, save/load."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

facevae_tf = pytest.importorskip("facevae_tf")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from facevae_tf.iaf import GATE_BIAS, MADE, IAFPosterior, IAFStep  # noqa: E402

D, C, H = 4, 3, 16


def _inputs(batch: int = 6, dim: int = D, context: int = C, seed: int = 0):
    rng = np.random.default_rng(seed)
    mean, logvar, eps = (rng.normal(size=(batch, dim)) for _ in range(3))
    h = rng.normal(size=(batch, context))
    return [tf.constant(a, tf.float32) for a in (mean, 0.5 * logvar, h, eps)]


def _scramble(layer, seed: int = 1, scale: float = 0.5) -> None:
    """Random weights far from the near-identity init, so tests see a genuinely non-trivial flow."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        v.assign(rng.normal(scale=scale, size=v.shape).astype(np.float32))


def _built_posterior(steps: int, dim: int = D, seed: int = 0) -> IAFPosterior:
    keras.utils.set_random_seed(seed)
    post = IAFPosterior(dim, C, steps, H)
    post(*_inputs(dim=dim))
    return post


class TestAutoregressiveStructure:
    def test_step_jacobian_is_lower_triangular_with_sigma_diagonal(self):
        keras.utils.set_random_seed(0)
        step = IAFStep(5, C, H)
        z = tf.constant(np.random.default_rng(0).normal(size=(3, 5)), tf.float32)
        h = tf.constant(np.random.default_rng(1).normal(size=(3, C)), tf.float32)
        step(z, h)
        _scramble(step)
        with tf.GradientTape() as tape:
            tape.watch(z)
            z_new, _ = step(z, h)
        jac = tape.batch_jacobian(z_new, z).numpy()            # (B, D_out, D_in)
        assert np.all(np.triu(jac, k=1) == 0.0), "output i must not depend on z_j, j > i"
        assert np.abs(np.tril(jac, k=-1)).sum() > 1e-3, "the MADE must actually use earlier inputs"
        _, s = step.made(z, h)
        np.testing.assert_allclose(np.diagonal(jac, axis1=1, axis2=2), tf.sigmoid(s).numpy(), rtol=1e-5, atol=1e-6)

    def test_made_outputs_depend_only_on_earlier_inputs_and_on_context_everywhere(self):
        keras.utils.set_random_seed(0)
        made = MADE(D, C, H)
        z, h = _inputs()[0], _inputs()[2]
        made(z, h)
        _scramble(made)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([z, h])
            m, s = made(z, h)
        for out in (m, s):
            jz = tape.batch_jacobian(out, z).numpy()
            assert np.all(np.triu(jz, k=0) == 0.0), "output i must not depend on z_j, j >= i"
            jh = tape.batch_jacobian(out, h).numpy()
            assert np.all(np.abs(jh).sum(axis=(0, 2)) > 0), "every output, the first included, must see h"

    def test_steps_alternate_order(self):
        post = _built_posterior(steps=2)
        _scramble(post)
        mean, logvar, h, eps = _inputs()
        z0 = mean + tf.exp(0.5 * logvar) * eps
        with tf.GradientTape() as tape:
            tape.watch(z0)
            z, _ = post.flow(z0, h)
        jac = tape.batch_jacobian(z, z0).numpy()
        # two steps with a reversal between them: a dense Jacobian, neither lower nor upper triangular
        assert np.abs(np.triu(jac, k=1)).sum() > 1e-3 and np.abs(np.tril(jac, k=-1)).sum() > 1e-3


class TestExactDensity:
    @pytest.mark.parametrize("steps", [2, 3])
    def test_log_det_matches_autodiff_jacobian(self, steps):
        post = _built_posterior(steps)
        _scramble(post)
        mean, logvar, h, eps = _inputs(seed=3)
        z0 = mean + tf.exp(0.5 * logvar) * eps
        with tf.GradientTape() as tape:
            tape.watch(z0)
            z, log_det = post.flow(z0, h)
        jac = tape.batch_jacobian(z, z0).numpy().astype(np.float64)
        sign, logabs = np.linalg.slogdet(jac)
        assert np.all(sign != 0)
        assert np.abs(logabs).max() > 0.1, "the test case must be far from a volume-preserving map"
        np.testing.assert_allclose(log_det.numpy(), logabs, atol=1e-5)
        np.testing.assert_array_equal(post.log_det(z0, h).numpy(), log_det.numpy())
        # log q = log N(z0) - log|det J| (change of variables)
        _, log_q = post(mean, logvar, h, eps)
        base = stats.norm.logpdf(z0.numpy(), mean.numpy(), np.exp(0.5 * logvar.numpy())).sum(-1)
        np.testing.assert_allclose(log_q.numpy(), base - logabs, atol=1e-4)

    def test_zero_steps_is_the_diagonal_gaussian(self):
        post = _built_posterior(steps=0)
        assert post.trainable_variables == []
        mean, logvar, h, eps = _inputs(seed=5)
        z, log_q = post(mean, logvar, h, eps)
        np.testing.assert_array_equal(z.numpy(), (mean + tf.exp(0.5 * logvar) * eps).numpy())
        ref = stats.norm.logpdf(z.numpy().astype(np.float64), mean.numpy(), np.exp(0.5 * logvar.numpy())).sum(-1)
        np.testing.assert_allclose(log_q.numpy(), ref, rtol=1e-6, atol=1e-5)

    def test_one_step_equals_tfp_inverted_maf(self):
        """The gated update is the inverse of a TFP MAF with log_scale = softplus(-s), shift = -(1-σ)m/σ."""
        tfp = pytest.importorskip("tensorflow_probability")
        tfb = tfp.bijectors
        post = _built_posterior(steps=1)
        _scramble(post, scale=0.3)
        step = post.flow_steps[0]
        mean, logvar, h, eps = _inputs(seed=7)
        z0 = mean + tf.exp(0.5 * logvar) * eps

        def shift_and_log_scale(x):
            m, s = step.made(x, h)
            sigma = tf.sigmoid(s)
            return -(1.0 - sigma) * m / sigma, tf.nn.softplus(-s)

        iaf = tfb.Invert(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=shift_and_log_scale))
        z, log_det = post.flow(z0, h)
        np.testing.assert_allclose(z.numpy(), iaf.forward(z0).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(log_det.numpy(), iaf.forward_log_det_jacobian(z0, event_ndims=1).numpy(),
                                   rtol=1e-5, atol=1e-5)

    def test_graph_mode_matches_eager(self):
        post = _built_posterior(steps=2)
        args = _inputs(seed=9)
        eager = post(*args)
        graph = tf.function(lambda *a: post(*a))(*args)
        for e, g in zip(eager, graph):
            np.testing.assert_allclose(e.numpy(), g.numpy(), rtol=1e-6, atol=1e-6)


class TestInitialisation:
    def test_flow_starts_near_identity(self):
        steps = 4
        post = _built_posterior(steps, dim=8)
        mean, logvar, h, eps = _inputs(batch=64, dim=8, seed=11)
        z0 = mean + tf.exp(0.5 * logvar) * eps
        gates = [tf.sigmoid(step.made(z0, h)[1]).numpy() for step in post.flow_steps]
        for g in gates:
            assert np.all(g > 0.9) and np.all(g < 1.0)
            np.testing.assert_allclose(g, 1.0 / (1.0 + np.exp(-GATE_BIAS)), atol=0.02)
        z, log_det = post.flow(z0, h)
        rel = np.linalg.norm((z - z0).numpy(), axis=-1) / np.linalg.norm(z0.numpy(), axis=-1)
        # each step shrinks by about σ = 0.953 and adds (1-σ)·m with m ~ 0: |z - z0| ≈ (1 - σ^K)|z0|
        assert rel.max() < 1.0 - 0.9 ** steps
        assert np.all(log_det.numpy() > steps * 8 * np.log(0.9))

    def test_the_gate_bias_is_read_when_the_flow_is_built(self, monkeypatch):
        """What benchmarks/iaf_vs_diagonal.py --gate-bias relies on: the module's value at build time."""
        import facevae_tf.iaf
        monkeypatch.setattr(facevae_tf.iaf, "GATE_BIAS", 1.0)
        post = IAFPosterior(D, C, 2, H)
        assert post.gate_bias == 1.0 and IAFPosterior(D, C, 2, H, gate_bias=2.0).gate_bias == 2.0
        assert [step.made.s_head.bias_value for step in post.flow_steps] == [1.0, 1.0]

    def test_invalid_steps_raise(self):
        with pytest.raises(ValueError, match="steps"):
            IAFPosterior(D, C, -1, H)


class _TinyIAFModel(keras.Model):
    """Encoder heads + IAF posterior + a KL-style loss, as the real `iaf` model wires them."""

    def __init__(self, steps: int = 2):
        super().__init__()
        self.trunk = keras.layers.Dense(8, activation="relu")
        self.mean_head = keras.layers.Dense(D)
        self.logvar_head = keras.layers.Dense(D)
        self.context_head = keras.layers.Dense(C)
        self.posterior = IAFPosterior(D, C, steps, H)

    def call(self, x, eps):
        a = self.trunk(x)
        return self.posterior(self.mean_head(a), self.logvar_head(a), self.context_head(a), eps)


def _loss(model, x, eps):
    z, log_q = model(x, eps)
    log_p = -0.5 * tf.reduce_sum(z ** 2 + np.log(2 * np.pi), axis=-1)
    return tf.reduce_mean(log_q - log_p + tf.reduce_sum((z - 1.0) ** 2, axis=-1))


class TestKerasTracking:
    """The known trap: flow weights that a Keras 3 model does not track never train."""

    def _model_and_batch(self, seed: int = 0):
        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)
        x = tf.constant(rng.normal(size=(16, 10)), tf.float32)
        eps = tf.constant(rng.normal(size=(16, D)), tf.float32)
        model = _TinyIAFModel()
        model(x, eps)
        return model, x, eps

    def test_every_flow_variable_is_tracked_gets_gradient_and_changes(self):
        model, x, eps = self._model_and_batch()
        flow_vars = model.posterior.trainable_variables
        assert len(flow_vars) == 2 * 9, "2 steps × (2 hidden k/b, context k, m k/b, s k/b)"
        tracked = {id(v) for v in model.trainable_variables}
        assert all(id(v) in tracked for v in flow_vars)
        with tf.GradientTape() as tape:
            loss = _loss(model, x, eps)
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
            assert g is not None, f"{v.path} gets no gradient"
            assert float(tf.reduce_max(tf.abs(g))) > 0.0, f"{v.path} gets a zero gradient"
        before = [v.numpy().copy() for v in flow_vars]
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        for v, b in zip(flow_vars, before):
            assert not np.array_equal(v.numpy(), b), f"{v.path} did not change after one step"

    def test_save_load_weights_round_trip(self, tmp_path):
        model, x, eps = self._model_and_batch(seed=0)
        _scramble(model.posterior)
        path = tmp_path / "iaf.weights.h5"
        model.save_weights(path)
        fresh, _, _ = self._model_and_batch(seed=1)
        z_before, _ = fresh(x, eps)
        assert not np.allclose(z_before.numpy(), model(x, eps)[0].numpy())
        fresh.load_weights(path)
        for a, b in zip(model(x, eps), fresh(x, eps)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())

    def test_tf_train_checkpoint_round_trip(self, tmp_path):
        """The TF backend checkpoints with tf.train.Checkpoint, which skips layers held in Keras-3 lists."""
        model, x, eps = self._model_and_batch(seed=0)
        _scramble(model.posterior)
        path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
        fresh, _, _ = self._model_and_batch(seed=1)
        tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
        for a, b in zip(model.posterior.weights, fresh.posterior.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(model(x, eps)[1].numpy(), fresh(x, eps)[1].numpy())

    def test_variable_paths_are_stable_across_builds(self):
        """Path-keyed checkpoints need the same paths in a second model built in the same process."""
        paths = [[v.path for v in _built_posterior(steps=2, seed=s).weights] for s in (0, 1)]
        assert paths[0] == paths[1] and len(set(paths[0])) == len(paths[0])
        assert paths[0][0].startswith("iaf_posterior/iaf_step_0/made/")
