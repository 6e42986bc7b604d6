"""``facevae convert RUN_DIR --to tf|torch OUT_DIR`` on tiny trained runs of both backends.

A converted run is a complete run folder for the other backend (config with the backend changed,
the same split, a checkpoint its ``load`` reads) and reconstructs like the original within 1e-4.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from shared.api import build_config, convert, load_model, train  # noqa: E402
from shared.cli import main  # noqa: E402
from shared.errors import ConfigError, RunError  # noqa: E402
from shared.runs import CONFIG, SPLIT, load_run_config  # noqa: E402
from shared.synthetic import generate_faces  # noqa: E402
from tests.parity.parity_helpers import assert_same_torch_weights  # noqa: E402

TOL = 1e-4
TINY = dict(model="vae", data="synthetic:96", image_size=32, latent_dim=4, channels=(4, 8), hidden_dims=(16,),
            epochs=1, batch_size=32, early_stopping=0, device="cpu", seed=2)


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    return train(build_config(backend="torch", **TINY), tmp_path_factory.mktemp("runs") / "torch_vae")


@pytest.fixture(scope="module")
def tf_run(tmp_path_factory):
    return train(build_config(backend="tf", preset="seed", hidden_dims=(16, 8), **{k: v for k, v in TINY.items()
                                                                                 if k != "hidden_dims"}),
                 tmp_path_factory.mktemp("runs") / "tf_vae")


def _images() -> np.ndarray:
    return generate_faces(10, 32, seed=7).floats()


def _assert_same_model(a, b) -> None:
    x = _images()
    assert np.max(np.abs(a.reconstruct(x) - b.reconstruct(x))) <= TOL
    (m1, l1), (m2, l2) = a.encode(x), b.encode(x)
    assert np.max(np.abs(m1 - m2)) <= TOL and np.max(np.abs(l1 - l2)) <= TOL
    z = np.random.default_rng(3).standard_normal((6, a.latent_dim)).astype(np.float32)  # faces from the same z
    assert np.max(np.abs(a.decode(z) - b.decode(z))) <= TOL


def test_torch_run_to_tf_and_back(torch_run, tmp_path, capsys):
    out = tmp_path / "as_tf"
    assert main(["convert", str(torch_run), "--to", "tf", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert load_run_config(out).backend == "tf"
    assert load_run_config(out).model == load_run_config(torch_run).model
    assert json.loads((out / SPLIT).read_text()) == json.loads((torch_run / SPLIT).read_text())
    original, converted = load_model(torch_run), load_model(out)
    assert type(converted).__module__.startswith("facevae_tf")
    _assert_same_model(original, converted)

    back = tmp_path / "back"
    assert main(["convert", str(out), "--to", "torch", str(back)]) == 0
    assert_same_torch_weights(original.module, load_model(back).module)


def test_tf_run_to_torch(tf_run, tmp_path):
    out = convert(tf_run, to="torch", out=tmp_path / "as_torch")
    assert load_run_config(out).backend == "torch"
    _assert_same_model(load_model(tf_run), load_model(out))
    assert not list(tmp_path.glob(".as_torch.tmp-*"))  # the temporary folder was renamed away


def test_refusals_exit_2_and_leave_nothing(torch_run, tmp_path, capsys):
    assert main(["convert", str(torch_run), "--to", "torch", str(tmp_path / "same")]) == 2
    assert "other backend" in capsys.readouterr().err
    existing = tmp_path / "exists"
    existing.mkdir()
    assert main(["convert", str(torch_run), "--to", "tf", str(existing)]) == 2
    assert main(["convert", str(tmp_path / "nowhere"), "--to", "tf", str(tmp_path / "x")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]
    with pytest.raises(ConfigError, match="to"):
        convert(torch_run, to="jax", out=tmp_path / "y")
    with pytest.raises(RunError):
        convert(torch_run, to="tf", out=existing)
    assert (torch_run / CONFIG).is_file()
