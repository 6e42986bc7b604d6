"""Latent optimisation gives the same faces on both backends: ``refine`` and box-mask ``inpaint_optimize``.

The same weights (a torch VAE and its converted Keras twin, :func:`protocol_pair`), the same faces
and the same seed (the starting jitter is drawn with numpy, so z0 is identical): 20 Adam steps on z
must land on the same decoded images.

Tolerance: ``TOL_OPT`` = 2.5e-6 max abs over pixels in [0, 1], ten times the largest difference
measured (2.4e-7; torch on one thread; bernoulli and learned-σ gaussian; 8 seeds × 6 faces × both
functions) with both backends running torch's Adam update. A real divergence is far larger: Adam's
first steps are ≈ lr·sign(gradient), so lr 0.06 on one side moves the faces by ~2e-3. Each test also
checks that the steps moved the faces well beyond the tolerance, so two optimisers that did nothing
cannot pass by agreeing. The faces and seeds are fixed: on about one face in fifty the path crosses
a ReLU kink within 20 steps on one backend and not the other, and the runs part (~1e-5) although
every step is right to float32 precision (the chaotic cases of tests/parity/conftest.py).

Adam: ``facevae_tf.backend.inpaint_optimize`` uses Keras' Adam with torch's ``eps=1e-8``. Keras adds it
to the *uncorrected* √v, torch to the bias-corrected √v̂; with Keras' default 1e-7 the steps differed
by up to 8e-4 where a gradient component is small (``test_adam_step_is_the_same_where_gradients_are_small``
pins that case).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from shared.inference import refine  # noqa: E402
from shared.inpainting import make_mask  # noqa: E402
from shared.registry import get_backend  # noqa: E402
from tests.parity.parity_helpers import protocol_pair, random_images, small_config  # noqa: E402

TOL_OPT = 2.5e-6
MOVED = 100 * TOL_OPT  # the optimisation changed the faces by more than this (observed ≥ 1e-2)
STEPS = 20
LIKELIHOODS = [dict(likelihood="bernoulli"), dict(likelihood="gaussian", sigma_mode="learned")]


@pytest.fixture(scope="module", params=LIKELIHOODS, ids=["bernoulli", "gauss-learned"])
def pair(request):
    return protocol_pair(small_config("default", 32, **request.param), seed=3)


@pytest.fixture(scope="module")
def faces():
    return random_images(6, 32, seed=4)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _inpaint_both(pair, faces, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(masked faces, torch result, tf result)`` of ``inpaint_optimize`` with the box mask."""
    pt, ptf = pair
    holes = make_mask("box", len(faces), 32)
    masked = np.where(holes, 0.0, faces).astype(np.float32)
    got = [get_backend(name).inpaint_optimize(model, masked, holes, steps=STEPS, seed=seed)
           for name, model in (("torch", pt), ("tf", ptf))]
    return masked, got[0], got[1]


def test_refine_gives_the_same_faces(pair, faces):
    pt, ptf = pair
    got_torch = refine(pt, faces, steps=STEPS, seed=0)
    got_tf = refine(ptf, faces, steps=STEPS, seed=0)
    assert got_torch.shape == got_tf.shape == faces.shape and got_tf.dtype == np.float32
    assert _max_diff(got_torch, got_tf) <= TOL_OPT
    assert _max_diff(got_torch, pt.reconstruct(faces)) > MOVED


def test_inpaint_optimize_box_mask_gives_the_same_faces(pair, faces):
    masked, got_torch, got_tf = _inpaint_both(pair, faces, seed=0)
    assert got_torch.shape == got_tf.shape == faces.shape
    assert _max_diff(got_torch, got_tf) <= TOL_OPT
    assert _max_diff(got_torch, pair[0].reconstruct(masked)) > MOVED


def test_adam_step_is_the_same_where_gradients_are_small(pair, faces):
    # seed 4 starts 1 face of 6 where a gradient component is small: there the two epsilons differ most
    _, got_torch, got_tf = _inpaint_both(pair, faces, seed=4)
    assert _max_diff(got_torch, got_tf) <= TOL_OPT
