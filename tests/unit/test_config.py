"""Configs: validation messages, presets, JSON round trip, flat building and the warm-up ramp."""
from __future__ import annotations

import json

import pytest

from shared.api import build_config
from shared.config import DataConfig, ModelConfig, RunConfig, TrainConfig, default_train_config
from shared.errors import ConfigError


class TestValidation:
    @pytest.mark.parametrize("cls, kw, words", [
        (ModelConfig, dict(latent_dim=0), "`latent_dim` must be an integer in [1, 1024]. Received: latent_dim=0"),
        (ModelConfig, dict(family="gan"), "`family` must be one of"),
        (ModelConfig, dict(likelihood="laplace"), "Received: likelihood='laplace'"),
        (ModelConfig, dict(beta=-1.0), "`beta`"),
        (ModelConfig, dict(image_size=40), "divisible by 2**len(channels) = 16"),
        (ModelConfig, dict(channels=(8, -1)), "`channels`"),
        (TrainConfig, dict(epochs=0), "`epochs`"),
        (TrainConfig, dict(optimizer="lamb"), "`optimizer` must be one of"),
        (TrainConfig, dict(batch_size=True), "`batch_size`"),
        (DataConfig, dict(spec=""), "`spec`"),
        (DataConfig, dict(test_fraction=0.9), "`test_fraction`"),
    ])
    def test_errors_name_the_field_and_the_value(self, cls, kw, words):
        with pytest.raises(ConfigError) as exc:
            cls(**kw)
        assert words in str(exc.value)

    def test_run_config_checks_backend_family_and_sizes(self):
        with pytest.raises(ConfigError, match="only on the tf backend"):
            RunConfig(backend="torch", model=ModelConfig(family="cvae"))
        with pytest.raises(ConfigError, match="only on the torch backend"):
            RunConfig(backend="tf", model=ModelConfig(family="cnn"))
        with pytest.raises(ConfigError, match="must equal"):
            RunConfig(model=ModelConfig(image_size=64), data=DataConfig(image_size=48))
        with pytest.raises(ConfigError, match="`backend`"):
            RunConfig(backend="jax")


class TestPresets:
    def test_presets_fill_shapes(self):
        assert ModelConfig(preset="seed").channels == (32, 128, 512)
        assert ModelConfig(preset="seed").hidden_dims == (2048, 1024, 512)
        assert ModelConfig(family="cnn", preset="seed").channels == (16, 64, 256)
        assert ModelConfig(family="iaf").channels == ModelConfig(family="vae").channels
        assert ModelConfig(channels=(4, 8), hidden_dims=(16,)).channels == (4, 8)

    def test_seed_recipe_is_the_original(self):
        t = default_train_config("cnn", "seed")
        assert (t.epochs, t.batch_size, t.lr, t.optimizer, t.schedule) == (10, 50, 5e-4, "adam", "seed")
        assert default_train_config("vae", "default", epochs=3, lr=None).epochs == 3  # None keeps the recipe

    def test_label_dim_only_for_cvae(self):
        assert ModelConfig(family="cvae").label_dim == 7 and ModelConfig().label_dim == 0


class TestJson:
    def test_round_trip(self, tmp_path):
        cfg = build_config(backend="tf", model="iaf", data="synthetic:100", image_size=64, latent_dim=8,
                           flow_steps=2, epochs=3, split_seed=5)
        cfg.save(tmp_path / "config.json")
        assert RunConfig.load(tmp_path / "config.json") == cfg
        assert json.loads((tmp_path / "config.json").read_text())["model"]["flow_steps"] == 2

    def test_unknown_fields_and_bad_json_are_named(self, tmp_path):
        with pytest.raises(ConfigError, match="latent_size"):
            ModelConfig.from_dict({"latent_size": 3})
        (tmp_path / "c.json").write_text("{not json")
        with pytest.raises(ConfigError, match="c.json"):
            RunConfig.load(tmp_path / "c.json")
        with pytest.raises(ConfigError, match="not found"):
            RunConfig.load(tmp_path / "missing.json")

    @pytest.mark.parametrize("data, words", [
        ([1, 2], "`config` must be a JSON object"),
        ({"model": [1]}, "`model` must be a JSON object"),
        ({"train": "fast"}, "`train` must be a JSON object"),
        ({"data": None}, "`data` must be a JSON object"),
    ])
    def test_every_level_must_be_an_object(self, data, words):
        with pytest.raises(ConfigError, match=words):
            RunConfig.from_dict(data)
        with pytest.raises(ConfigError, match="must be a JSON object"):
            ModelConfig.from_dict([("latent_dim", 3)])

    def test_huge_and_deep_json_is_a_config_error(self):
        with pytest.raises(ConfigError, match="not valid JSON"):
            RunConfig.from_json('{"train": {"seed": ' + "9" * 5000 + "}}")
        with pytest.raises(ConfigError, match="not valid JSON"):
            RunConfig.from_json("[" * 100_000 + "]" * 100_000)

    def test_load_names_the_file(self, tmp_path):
        (tmp_path / "list.json").write_text("[1, 2]")
        with pytest.raises(ConfigError, match=r"list\.json: `config` must be a JSON object.*list"):
            RunConfig.load(tmp_path / "list.json")
        (tmp_path / "latin.json").write_bytes(b'{"backend": "\xe9"}')
        with pytest.raises(ConfigError, match=r"latin\.json: not UTF-8"):
            RunConfig.load(tmp_path / "latin.json")


class TestBounds:
    @pytest.mark.parametrize("kw, words", [
        (dict(channels=(32.5, 64)), "bad element 32.5"),
        (dict(channels=[32.0, 64.0]), "bad element 32.0"),     # JSON 32.0: refused, not truncated
        (dict(channels=[True, 64]), "bad element True"),
        (dict(channels="32"), "Received: channels='32'"),
        (dict(channels=(8192,)), "integers in [1, 4096]"),
        (dict(hidden_dims=(10_000_000,)), "integers in [1, 65536]"),
        (dict(hidden_dims=(8,) * 17), "at most 16 integers"),
        (dict(latent_dim=2048), "`latent_dim` must be an integer in [1, 1024]. Received: latent_dim=2048"),
        (dict(beta=float("nan")), "`beta` must be a finite number in [0.0, 1000.0]. Received: beta=nan"),
    ])
    def test_model_bounds(self, kw, words):
        with pytest.raises(ConfigError) as exc:
            ModelConfig(**kw)
        assert words in str(exc.value)

    def test_numpy_integers_and_null_shapes_are_fine(self):
        import numpy as np
        assert ModelConfig(channels=[np.int64(8), 16], hidden_dims=None).channels == (8, 16)
        assert ModelConfig(channels=[], hidden_dims=()).channels == ModelConfig().channels

    @pytest.mark.parametrize("kw", [dict(lr=float("nan")), dict(grad_clip=float("nan")), dict(augment="false"),
                                    dict(compile=1), dict(lr=float("inf"))])
    def test_train_bounds(self, kw):
        with pytest.raises(ConfigError, match=f"`{next(iter(kw))}`"):
            TrainConfig(**kw)

    def test_from_json_refuses_floats_for_widths(self):
        with pytest.raises(ConfigError, match="channels"):
            RunConfig.from_json(json.dumps({"model": {"channels": [32.0, 64.0, 128.0, 256.0]}}))


class TestBuildConfig:
    def test_routes_flat_keywords(self):
        cfg = build_config(model="vae", latent_dim=16, beta=0.5, epochs=2, lr=1e-2, split_seed=3, seed=7)
        assert (cfg.model.latent_dim, cfg.model.beta) == (16, 0.5)
        assert (cfg.train.epochs, cfg.train.lr, cfg.train.seed) == (2, 1e-2, 7)
        assert cfg.data.split_seed == 3

    def test_backend_from_environment(self, monkeypatch):
        monkeypatch.setenv("FACEVAE_BACKEND", "tf")
        assert build_config(model="vae").backend == "tf"
        assert build_config(backend="torch", model="vae").backend == "torch"


def test_warmup_ramp_never_starts_at_zero():
    cfg = ModelConfig(beta=2.0, kl_warmup_epochs=3)
    assert [cfg.beta_at(e) for e in range(5)] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])
    assert ModelConfig(beta=0.7).beta_at(0) == 0.7


def test_lr_schedules():
    assert TrainConfig(schedule="seed").lr_factor(3) == pytest.approx(0.25)
    assert [TrainConfig(schedule="cosine", epochs=4).lr_factor(e) for e in (0, 2, 4, 9)] == pytest.approx([1, 0.5, 0, 0])
    assert TrainConfig().lr_factor(7) == 1.0
