"""The VAE ⊕ PCA denoiser is the same on both backends: same weights, same faces, same tuned (d, α), same faces out.

The blend is numpy on top of ``reconstruct``, so the backends can only differ through their
reconstructions (≤ 1e-5 apart, tests/parity/test_forward_parity.py); the tuned blend must then be the
same grid point and the outputs within ``TOL`` (max abs, pixels in [0, 1]).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from shared.denoise_blend import BlendBasis, blend_denoise, noisy_faces  # noqa: E402
from tests.parity.parity_helpers import protocol_pair, random_images, small_config  # noqa: E402

TOL = 1e-4


def test_blend_denoise_agrees_across_backends():
    pt, ptf = protocol_pair(small_config("default", 32, likelihood="gaussian", sigma_mode="learned"), seed=5)
    faces = random_images(110, 32, seed=6)
    basis = BlendBasis.from_faces(faces[:80], faces[80:100])
    test = faces[100:]
    noisy = noisy_faces(test, 0.3, seed=7)
    # an untrained decoder earns no weight on the full grid (α = 0 would compare PCA with itself): α ≥ 0.25 here
    (out_pt, fit_pt), (out_tf, fit_tf) = (blend_denoise(m, noisy, basis, 0.3, seed=8, alphas=(0.25, 0.5, 0.75, 1.0))
                                          for m in (pt, ptf))
    assert (fit_pt.d, fit_pt.alpha) == (fit_tf.d, fit_tf.alpha)
    assert abs(fit_pt.val_psnr - fit_tf.val_psnr) < 1e-3
    assert float(np.max(np.abs(out_pt - out_tf))) < TOL
    assert float(np.max(np.abs(out_pt - basis.pca.truncated(fit_pt.d).project(noisy)))) > 100 * TOL  # the VAE's share shows
