"""Weight transfer torch <-> tf: every plan weight moves, layouts are right, round trips are exact.

Covers every layer kind of both presets (conv, deconv, maxpool, bn 2-D and 1-D, linear,
flatten/unflatten) at image sizes 32 and 48. Forward outputs after a transfer are compared in
``test_forward_parity``; here the weights themselves are checked.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from facevae import weights_io as torch_io  # noqa: E402
from facevae_tf import weights_io as tf_io  # noqa: E402
from facevae_tf.models import build_model  # noqa: E402
from shared.architecture import vae_plan  # noqa: E402
from shared.config import ModelConfig  # noqa: E402
from shared.errors import ConfigError  # noqa: E402
from shared.weight_layout import chw_to_hwc_index, convert_weights, expected_keys, plan_slots  # noqa: E402
from tests.parity.parity_helpers import (SMALL_SHAPES, assert_same_torch_weights, small_config, tf_from_torch,  # noqa: E402
                                         torch_from_tf, torch_vae)

CASES = sorted(SMALL_SHAPES)


class TestLayout:
    def test_every_layer_kind_is_covered(self):
        kinds = set()
        for preset, size in CASES:
            plan = vae_plan(small_config(preset, size))
            kinds |= {layer.kind for layer in (*plan.encoder, *plan.encoder_dense, *plan.decoder)}
        assert {"conv", "deconv", "maxpool", "bn", "linear", "flatten", "unflatten"} <= kinds

    def test_flatten_neighbours_are_marked(self):
        plan = vae_plan(small_config("default", 48))
        slots = {s.prefix: s for s in plan_slots(plan)}
        assert slots["encoder_dense.00"].in_shape == plan.bottleneck
        projection = [s for s in plan_slots(plan) if s.section == "decoder" and s.out_shape]
        assert len(projection) == 1 and projection[0].layer.out_dim == plan.flat_dim

    def test_chw_to_hwc_index_matches_numpy_transpose(self):
        maps = np.arange(2 * 3 * 4).reshape(2, 3, 4)
        assert np.array_equal(maps.reshape(-1)[chw_to_hwc_index((2, 3, 4))], maps.transpose(1, 2, 0).reshape(-1))

    def test_conv_and_deconv_kernels_change_layout(self):
        vae = torch_vae(small_config("default", 32))
        tw = torch_io.export_plan_weights(vae)
        kw = convert_weights(tw, vae_plan(vae.cfg), src="torch", dst="tf")
        conv = tw["encoder.00.kernel"]      # (O, I, kh, kw)
        assert np.array_equal(kw["encoder.00.kernel"][1, 2, 0, 3], conv[3, 0, 1, 2])
        dec = [k for k in tw if k.startswith("decoder") and tw[k].ndim == 4][0]  # (I, O, kh, kw)
        assert np.array_equal(kw[dec][1, 2, 0, 3], tw[dec][3, 0, 1, 2])  # tf (kh, kw, O, I)

    def test_wrong_keys_and_shapes_are_refused(self):
        cfg = small_config("default", 32)
        weights = torch_io.export_plan_weights(torch_vae(cfg))
        plan = vae_plan(cfg)
        with pytest.raises(ConfigError, match="missing"):
            convert_weights({k: v for k, v in weights.items() if k != "head_mean.00.bias"}, plan, src="torch", dst="tf")
        bad = dict(weights, **{"encoder.00.kernel": weights["encoder.00.kernel"][:1]})
        with pytest.raises(ConfigError, match="encoder.00.kernel"):
            convert_weights(bad, plan, src="torch", dst="tf")
        with pytest.raises(ConfigError, match="dst"):
            convert_weights(weights, plan, src="torch", dst="jax")


@pytest.mark.parametrize("preset,size", CASES)
class TestTransfer:
    def test_torch_to_tf_to_torch_is_exact(self, preset, size):
        vae = torch_vae(small_config(preset, size), seed=3)
        assert_same_torch_weights(vae, torch_from_tf(tf_from_torch(vae)))

    def test_tf_to_torch_to_tf_is_exact(self, preset, size):
        model = build_model(small_config(preset, size))
        original = tf_io.export_plan_weights(model)
        again = tf_io.export_plan_weights(tf_from_torch(torch_from_tf(model)))
        assert list(original) == expected_keys(model.plan)
        assert all(np.array_equal(original[k], again[k]) for k in original)

    def test_every_keras_weight_is_in_the_plan(self, preset, size):
        model = build_model(small_config(preset, size))
        exported = tf_io.export_plan_weights(model)
        assert sum(v.size for v in exported.values()) == model.count_params()


@pytest.mark.slow
def test_full_seed_preset_round_trip():
    """The seed preset at full width (≈ 40 M weights): slow because of its size only."""
    cfg = ModelConfig(family="vae", preset="seed", image_size=48, latent_dim=32)
    vae = torch_vae(cfg)
    assert_same_torch_weights(vae, torch_from_tf(tf_from_torch(vae)))


def test_full_default_preset_round_trip():
    vae = torch_vae(ModelConfig(family="vae", preset="default", image_size=48, latent_dim=32))
    assert_same_torch_weights(vae, torch_from_tf(tf_from_torch(vae)))
