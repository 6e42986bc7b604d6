"""Layer plans, the backend registry, run-folder files and the Faces container."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared.architecture import vae_plan
from shared.config import ModelConfig
from shared.errors import ConfigError, RunError
from shared.faces import Faces, age_band, label_vectors
from shared.registry import BACKEND_MODULES, resolve_backend_name
from shared.runs import (append_metrics, atomic_write_json, atomic_write_text, load_run_config, read_metrics,
                         truncate_metrics)


class TestPlans:
    @pytest.mark.parametrize("size", [32, 48, 64])
    def test_default_plan_shapes_follow_the_config(self, size):
        plan = vae_plan(ModelConfig(image_size=size))
        side = size // 16
        assert plan.bottleneck == (256, side, side) and plan.flat_dim == 256 * side * side
        assert plan.encoder_dense[0].in_dim == plan.flat_dim
        assert plan.decoder[-1].kind == "deconv" and plan.decoder[-1].out_dim == 1  # logits, no sigmoid
        assert set(plan.heads) == {"mean", "logvar"}

    def test_seed_plan_is_the_original_architecture(self):
        plan = vae_plan(ModelConfig(preset="seed", latent_dim=256))
        convs = [(l.in_dim, l.out_dim, l.kernel) for l in plan.encoder if l.kind == "conv"]
        assert convs == [(1, 32, 3), (32, 128, 3), (128, 512, 3)]
        assert [l.out_dim for l in plan.encoder_dense if l.kind == "linear"] == [2048, 1024, 512]
        assert [l.out_dim for l in plan.decoder if l.kind == "linear"] == [512, 1024, 2048, 512 * 6 * 6]
        assert [(l.out_dim, l.kernel, l.stride) for l in plan.decoder if l.kind == "deconv"] == \
            [(128, 2, 2), (32, 2, 2), (1, 2, 2)]

    def test_conditional_and_flow_plans(self):
        cvae = vae_plan(ModelConfig(family="cvae", latent_dim=8))
        assert cvae.encoder_dense[0].in_dim == cvae.flat_dim + 7 and cvae.decoder[0].in_dim == 8 + 7
        assert "context" in vae_plan(ModelConfig(family="iaf", context_dim=12)).heads


class TestRegistry:
    def test_resolution_order(self, monkeypatch):
        monkeypatch.delenv("FACEVAE_BACKEND", raising=False)
        assert resolve_backend_name() == "torch"
        monkeypatch.setenv("FACEVAE_BACKEND", "tf")
        assert resolve_backend_name() == "tf" and resolve_backend_name("torch") == "torch"
        with pytest.raises(ConfigError, match="one of"):
            resolve_backend_name("jax")
        assert set(BACKEND_MODULES) == {"torch", "tf"}


class TestRuns:
    def test_atomic_write_replaces_and_leaves_no_temp_files(self, tmp_path):
        p = tmp_path / "sub" / "a.txt"
        atomic_write_text(p, "one")
        atomic_write_text(p, "two")
        assert p.read_text() == "two" and [f.name for f in p.parent.iterdir()] == ["a.txt"]

    def test_failed_write_keeps_the_old_file(self, tmp_path):
        p = tmp_path / "x.json"
        atomic_write_json(p, {"a": 1})
        with pytest.raises(TypeError):
            atomic_write_json(p, {"a": object()})
        assert json.loads(p.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1

    def test_json_has_no_nan(self, tmp_path):
        atomic_write_json(tmp_path / "m.json", {"x": float("nan"), "y": np.float32(2.5), "z": np.arange(2)})
        assert json.loads((tmp_path / "m.json").read_text()) == {"x": None, "y": 2.5, "z": [0, 1]}

    def test_metrics_append_read_truncate(self, tmp_path):
        for e in range(4):
            append_metrics(tmp_path, {"epoch": e, "loss": 1.0 / (e + 1)})
        truncate_metrics(tmp_path, 2)
        assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 1]

    def test_not_a_run_folder(self, tmp_path):
        with pytest.raises(RunError, match="not a run folder"):
            load_run_config(tmp_path)


class TestFaces:
    def test_subset_labels_and_bands(self):
        labels = pd.DataFrame({"age": [5, 15, 30, 50, 80], "ethnicity": [0, 1, 2, 3, 4], "gender": [0, 1, 0, 1, 0],
                               "img_name": list("abcde")})
        faces = Faces(np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2), labels)
        sub = faces.subset(np.array([3, 1]))
        assert len(sub) == 2 and list(sub.labels.img_name) == ["d", "b"] and sub.labels.index.tolist() == [0, 1]
        assert faces.floats().max() <= 1.0 and faces.floats().dtype == np.float32
        v = label_vectors(labels)
        assert v.shape == (5, 7) and v[1, 2] == 1 and v[4, 6] == pytest.approx(0.8) and v[3, 0] == 1
        assert age_band(labels.age).tolist() == [0, 1, 2, 3, 4]
        assert age_band(np.array([9, 10, 19, 20, 39, 40, 59, 60])).tolist() == [0, 1, 1, 2, 2, 3, 3, 4]



@pytest.mark.parametrize("missing", ["keras", "tensorflow", "torch"])
def test_a_missing_framework_is_one_line_naming_the_extra(monkeypatch, missing):
    """Without a framework installed, ``--backend`` gives the pip extra to install, not a traceback."""
    import importlib

    from shared.errors import FaceVAEError
    from shared.registry import get_backend

    def fail(name):
        raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)

    monkeypatch.setattr(importlib, "import_module", fail)
    backend = "torch" if missing == "torch" else "tf"
    with pytest.raises(FaceVAEError, match=rf"pip install 'facevae\[{backend}\]'"):
        get_backend(backend)
