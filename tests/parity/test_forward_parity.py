"""Identical weights and inputs (fp32, eval mode) give identical outputs on both backends.

Tolerances: images, logits, posterior means and log-variances ≤ ``TOL`` = 1e-4 max abs (observed
≈ 1e-7). Loss terms are sums over ~10³ pixels of order 10²–10³ nats, where float32 resolution is
~1e-4 nats, so they are compared with rtol 1e-5 (observed ≈ 1e-7 relative).

The same noise is fed to both: torch ``loss_terms`` draws ``torch.randn_like`` from the global
generator, so it is reseeded and the identical draw is handed to TF's ``eps`` argument; torch
``iwae_bound`` draws ``(k, B, D)`` from the generator it is given, which TF receives transposed
to its ``(B, k, D)`` layout.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

from facevae.evaluation import iwae_bound  # noqa: E402
from shared.grids import interpolation_matrix  # noqa: E402
from tests.parity.parity_helpers import TOL, protocol_pair, random_images, small_config  # noqa: E402

RTOL_TERMS = 1e-5
CASES = [("default", 32), ("default", 48), ("seed", 32), ("seed", 48)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{p}-{s}" for p, s in CASES])
def pair(request):
    preset, size = request.param
    return protocol_pair(small_config(preset, size), seed=1)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


class TestProtocol:
    def test_encoder_mean_and_logvar(self, pair):
        pt, ptf = pair
        x = random_images(6, pt.config.model.image_size)
        (m1, l1), (m2, l2) = pt.encode(x), ptf.encode(x)
        assert m1.shape == m2.shape == (6, pt.latent_dim)
        assert _max_diff(m1, m2) <= TOL and _max_diff(l1, l2) <= TOL
        assert np.std(m1) > 1e-3  # not a degenerate all-zero comparison

    def test_decoder_output_and_samples_from_the_same_z(self, pair):
        pt, ptf = pair
        z = np.random.default_rng(4).standard_normal((7, pt.latent_dim)).astype(np.float32)
        d1, d2 = pt.decode(z), ptf.decode(z)
        assert d1.shape == d2.shape and _max_diff(d1, d2) <= TOL
        assert np.std(d1) > 1e-3

    def test_reconstruction(self, pair):
        pt, ptf = pair
        x = random_images(5, pt.config.model.image_size, seed=2)
        assert _max_diff(pt.reconstruct(x), ptf.reconstruct(x)) <= TOL

    def test_interpolation_matrix_decoded_by_both(self, pair):
        pt, ptf = pair
        corners = np.random.default_rng(5).standard_normal((4, pt.latent_dim))
        for slerp in (False, True):
            grid = interpolation_matrix(corners, 4, slerp=slerp).reshape(-1, pt.latent_dim).astype(np.float32)
            assert _max_diff(pt.decode(grid), ptf.decode(grid)) <= TOL


LIKELIHOODS = [dict(likelihood="bernoulli"), dict(likelihood="gaussian", sigma_mode="fixed", sigma=0.2),
               dict(likelihood="gaussian", sigma_mode="learned")]


@pytest.mark.parametrize("lik", LIKELIHOODS, ids=["bernoulli", "gauss-fixed", "gauss-learned"])
def test_elbo_terms_with_the_same_noise(lik):
    pt, ptf = protocol_pair(small_config("default", 32, beta=0.5, **lik), seed=2)
    x = random_images(8, 32, seed=3)
    torch.manual_seed(11)
    eps = torch.randn(8, pt.latent_dim)
    torch.manual_seed(11)  # loss_terms' randn_like makes the same draw
    with torch.no_grad():
        t_terms = pt.module.eval().loss_terms({"images": torch.from_numpy(x)[:, None]})
    k_terms = ptf.keras_model.loss_terms(tf.constant(x[..., None]), tf.zeros((8, 0)), tf.constant(eps.numpy()),
                                         beta=0.5, training=False)
    for name in ("loss", "distortion", "rate", "elbo"):
        np.testing.assert_allclose(float(k_terms[name]), float(t_terms[name]), rtol=RTOL_TERMS, err_msg=name)
    assert float(t_terms["rate"]) > 0


@pytest.mark.parametrize("preset,size", [("default", 48), ("seed", 32)])
def test_iwae_bound_with_the_same_noise(preset, size):
    pt, ptf = protocol_pair(small_config(preset, size), seed=3)
    x = random_images(4, size, seed=4)
    k, d = 8, pt.latent_dim
    gen = torch.Generator().manual_seed(7)
    eps = torch.randn((k, 4, d), generator=gen)  # what iwae_bound draws from a generator in this state
    t_bound = iwae_bound(pt.module.eval(), torch.from_numpy(x)[:, None], k, torch.Generator().manual_seed(7)).numpy()
    log_w = ptf.keras_model.log_weights(tf.constant(x[..., None]), tf.zeros((4, 0)),
                                        tf.constant(eps.numpy().transpose(1, 0, 2)))
    k_bound = -(tf.reduce_logsumexp(log_w, axis=1).numpy() - math.log(k))
    np.testing.assert_allclose(k_bound, t_bound, rtol=RTOL_TERMS)
