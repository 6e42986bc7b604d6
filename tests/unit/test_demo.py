"""The demo: data preview, orchestration with fake backends (fast), and the real torch run (quick)."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

from shared import api
from shared.demo import QUICK, data_preview, demo
from tests.unit.test_sweep import FakeBackend

EXPECTED_FIGURES = [
    "figures/data_preview.png",
    "vae/figures/interpolation_lerp_sample.png", "vae/figures/interpolation_slerp_sample.png",
    "vae/figures/interpolation_lerp_encode.png", "vae/figures/traversal.png", "vae/figures/denoise.png",
    *[f"vae/figures/inpaint_{m}_{k}.png" for m in ("box", "random") for k in ("decode", "iterate", "optimize")],
    "sweep/figures/rate_distortion.png", "sweep/figures/reconstructions.png",
]
EXPECTED_TABLES = ["vae/denoise.md", "vae/inpaint_box_iterate.md", "vae/inpaint_random_optimize.md", "sweep/sweep.md"]


def _check_outputs(out):
    for rel in EXPECTED_FIGURES:
        assert (out / rel).stat().st_size > 1000, rel
    summary = (out / "demo_summary.md").read_text()
    for rel in EXPECTED_FIGURES + EXPECTED_TABLES:
        assert f"`{rel}`" in summary, rel
        assert (out / rel).is_file()
    assert json.loads((out / "vae" / "eval.json").read_text())
    return summary


def test_data_preview(tmp_path):
    from shared.synthetic import generate_faces

    path = data_preview(generate_faces(10, 32), tmp_path / "p.png", n=6, cols=3)
    from PIL import Image
    with Image.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 200


class FakeDemoBackend(FakeBackend):
    """Fake backend for the demo: also serves the CNN run and records the classifier passed."""

    def __init__(self):
        super().__init__()
        self.classifiers = []

    def evaluate(self, run_dir, *, data=None, iwae_k=64, classifier=None, seed=0):
        self.classifiers.append(classifier)
        return super().evaluate(run_dir, data=data, iwae_k=iwae_k, classifier=classifier, seed=seed)


def test_demo_orchestration_with_fake_backend(tmp_path, monkeypatch):
    import shared.registry as registry

    fake = FakeDemoBackend()
    for name in ("train", "evaluate", "load_model"):
        monkeypatch.setattr(api, name, getattr(fake, name))
    monkeypatch.setattr(registry, "get_backend", lambda name=None: types.SimpleNamespace(
        inpaint_optimize=lambda model, images, mask, *, steps=200, seed=0, **kw: model.reconstruct(images)))
    out = demo(tmp_path / "demo", quick=True)
    summary = _check_outputs(out)
    assert "`cnn/` evaluation" in summary and "`vae/` evaluation" in summary
    names = [n for n, _ in fake.trained]
    assert names[:2] == ["cnn", "vae"] and len(names) == 2 + len(QUICK.sweep_dims) * len(QUICK.sweep_betas)
    assert json.loads((out / "cnn" / "config.json").read_text())["model"]["task"] == "all"
    assert str(fake.classifiers[1]).endswith("cnn")          # the VAE is scored with the CNN's features


@pytest.mark.slow
def test_demo_quick_real_torch(tmp_path):
    pytest.importorskip("torch")
    out = demo(tmp_path / "demo", quick=True)
    _check_outputs(out)
    ev = json.loads((out / "vae" / "eval.json").read_text())
    assert np.isfinite(ev["rate"]) and np.isfinite(ev["distortion"])
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    assert len(sweep["runs"]) == len(QUICK.sweep_dims) * len(QUICK.sweep_betas)
