"""`import facevae` / `import facevae_tf`: the whole user API, the same names on both, bound to a backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.config import RunConfig
from shared.errors import ConfigError, RunError
from shared.package_api import COMMON, TF_ONLY, _config
from tests.conftest import REPO
from tests.unit.torch_vae_helpers import single_thread  # noqa: F401  (autouse: one torch thread)

TINY = dict(image_size=32, channels=(8, 16), hidden_dims=(32,), latent_dim=4, epochs=1, batch_size=16,
            device="cpu", verbose=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))


_IMPORT = """
import json, sys
import facevae, facevae_tf
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "tensorflow", "keras", "jax"})
print(json.dumps({"heavy": heavy, "torch": facevae.__all__, "tf": facevae_tf.__all__,
                  "version": facevae.__version__}))
"""


def test_import_is_cheap_and_both_packages_offer_the_same_functions():
    proc = subprocess.run([sys.executable, "-c", _IMPORT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    assert set(COMMON) <= set(got["torch"]) and set(got["tf"]) == set(got["torch"]) | set(TF_ONLY)
    assert {"Faces", "Run", "Result", "__version__"} <= set(got["torch"])
    assert got["version"]


def test_every_function_is_documented_with_an_example_naming_its_package():
    import facevae
    import facevae_tf

    for package in (facevae, facevae_tf):
        for name in package.__all__:
            obj = getattr(package, name)
            if callable(obj) and name not in ("Faces", "Run", "Result"):
                assert obj.__module__ == package.__name__
                assert "Example::" in obj.__doc__ and f"{package.__name__}." in obj.__doc__, name
                assert "{pkg}" not in obj.__doc__ and "backend" not in str(obj.__signature__), name
    assert "torch" in facevae.train.__doc__ and "tf" in facevae_tf.train.__doc__


class TestOptions:
    def test_unknown_option_is_refused_with_the_known_ones(self, tmp_path):
        import facevae

        with pytest.raises(ConfigError, match=r"unknown option\(s\) \['latnt_dim'\].*'latent_dim'"):
            facevae.train(tmp_path / "run", latnt_dim=4)
        assert not (tmp_path / "run").exists()

    def test_config_file_and_options_merge_options_winning(self, tmp_path):
        base = _config("tf", "synthetic:300", None, None, dict(image_size=32, latent_dim=4, epochs=3, beta=2.0))
        base.save(tmp_path / "c.json")
        cfg = _config("torch", None, None, tmp_path / "c.json", {"epochs": 5})
        assert isinstance(cfg, RunConfig) and cfg.backend == "torch"
        assert (cfg.train.epochs, cfg.model.latent_dim, cfg.model.beta, cfg.data.spec) == (5, 4, 2.0, "synthetic:300")
        assert cfg.train == _config("torch", None, None, base, {"epochs": 5}).train

    def test_in_memory_faces_set_the_image_size(self):
        faces = np.zeros((4, 64, 64), np.uint8)
        labels = __import__("pandas").DataFrame({"age": [1, 2, 3, 4], "ethnicity": 0, "gender": 0})
        cfg = _config("torch", (faces, labels), None, None, {})
        assert cfg.data.image_size == 64 and cfg.data.spec == "run:faces.npz"


def test_torch_train_load_evaluate_and_extend(tmp_path):
    import facevae
    from shared.protocol import GenerativeModel

    run = facevae.train(tmp_path / "r", data="synthetic:240", **TINY)
    assert isinstance(run, facevae.Run) and isinstance(run, os.PathLike)
    assert str(run) == str(tmp_path / "r") and Path(run) == tmp_path / "r" and run == tmp_path / "r"
    assert (run / "config.json").is_file() and run.config.backend == "torch"
    assert list(run.metrics["epoch"]) == [0] and run.eval is None
    assert len(run.figure.axes) >= 1 and run._repr_png_().startswith(b"\x89PNG")
    assert "torch/vae, 1/1 epochs" in repr(run)
    assert isinstance(facevae.load(run), GenerativeModel)
    metrics = facevae.evaluate(run)
    assert metrics["written_to"] == str(run / "eval.json") and run.eval["n_faces"] == metrics["n_faces"]
    res = facevae.denoise(run, sigmas=(0.1,), n=4, save=False)
    assert isinstance(res, facevae.Result) and res.table is not None
    facevae.train(run, resume=True, epochs=2, verbose=False)
    assert list(facevae.open_run(run).metrics["epoch"]) == [0, 1]


def test_sweep_checks_its_arguments_before_any_training(tmp_path):
    import facevae

    with pytest.raises(ConfigError, match="SPEC or a path"):
        facevae.sweep(tmp_path / "s", latent_dims=(2,), betas=(1.0,), data=facevae.load_data("synthetic:5", 32))
    with pytest.raises(ConfigError, match="non-empty"):
        facevae.sweep(tmp_path / "s", latent_dims=(), betas=(1.0,), data="synthetic:240", image_size=32)
    assert not (tmp_path / "s").exists()


def test_torch_trains_on_faces_and_on_arrays(tmp_path):
    import facevae
    import pandas as pd

    faces = facevae.load_data("synthetic:240", image_size=32)
    women = faces.subset(np.flatnonzero(faces.labels["gender"].to_numpy() == 1))
    run = facevae.train(tmp_path / "women", data=women, **TINY)
    assert run.config.data.spec == "run:faces.npz" and (run / "faces.npz").is_file()
    assert facevae.evaluate(run)["n_faces"] > 0

    images = faces.images.astype(np.float32) / 255.0
    labels = pd.DataFrame(faces.labels[["age", "ethnicity", "gender"]])
    options = {k: v for k, v in TINY.items() if k != "image_size"}  # taken from the arrays
    run = facevae.train(tmp_path / "arrays", data=(images, labels), **options)
    assert run.config.data.image_size == 32 and len(run.metrics) == 1


def test_tf_train_load_evaluate(tmp_path):
    pytest.importorskip("tensorflow")
    import facevae_tf
    from shared.protocol import GenerativeModel

    run = facevae_tf.train(tmp_path / "r", data="synthetic:240", **TINY)
    assert run.config.backend == "tf" and list(run.metrics["epoch"]) == [0]
    assert isinstance(facevae_tf.load(run), GenerativeModel)
    assert facevae_tf.evaluate(run)["written_to"] == str(run / "eval.json")
    with pytest.raises(RunError, match="cvae|conditional"):  # the tf-only functions reach shared.conditional
        facevae_tf.generate(run, gender=0, ethnicity=0, age=30, save=False)


@pytest.mark.parametrize("name,impl", [("interpolate", "shared.studio"), ("denoise", "shared.studio"),
                                       ("inpaint", "shared.studio"), ("generate", "shared.conditional"),
                                       ("attribute_grid", "shared.conditional"),
                                       ("edit_attributes", "shared.conditional")])
def test_studio_functions_show_the_options_and_defaults_of_their_implementation(name, impl):
    """help() and tab completion in a notebook list the real options, and they cannot drift apart."""
    import importlib
    import inspect

    import facevae_tf

    ours = inspect.signature(getattr(facevae_tf, name)).parameters
    theirs = inspect.signature(getattr(importlib.import_module(impl), name)).parameters
    assert list(ours)[1:] == list(theirs)[1:]
    assert [p.default for p in list(ours.values())[1:]] == [p.default for p in list(theirs.values())[1:]]
