"""The demo: data preview, orchestration with fake backends (fast), the tf part and the real quick run."""
from __future__ import annotations

import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from shared import api
from shared.demo import QUICK, data_preview, demo
from shared.demo_summary import figure_files
from shared.demo_tf import comparison_sentence, iaf_vs_diagonal, tf_demo
from tests.unit.test_sweep import FakeBackend

EXPECTED_FIGURES = [
    "figures/data_preview.png",
    "vae/figures/interpolation_lerp_sample.png", "vae/figures/interpolation_slerp_sample.png",
    "vae/figures/interpolation_lerp_encode.png", "vae/figures/traversal.png", "vae/figures/denoise.png",
    *[f"vae/figures/inpaint_{m}_{k}.png" for m in ("box", "random") for k in ("decode", "iterate", "optimize", "hybrid")],
    "sweep/figures/rate_distortion.png", "sweep/figures/reconstructions.png",
]
EXPECTED_TABLES = ["vae/denoise.md", "vae/inpaint_box_iterate.md", "vae/inpaint_random_optimize.md", "sweep/sweep.md"]
TF_FIGURES = ["tf/cvae/generated/attribute_grid_male.png", "tf/cvae/generated/attribute_grid_female.png",
              "tf/cvae/generated/attribute_edits.png", "tf/cvae/generated/female_asian_age25_seed0.png",
              "tf/cvae/generated/male_black_age65_seed0.png"]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links(out: Path) -> set[str]:
    """Every markdown link target of the summary, each checked to resolve from the summary's folder."""
    targets = set(_LINK.findall((out / "demo_summary.md").read_text()))
    for t in targets:
        assert not Path(t).is_absolute() and (out / t).is_file(), f"link does not resolve: {t}"
    return targets


def _check_outputs(out: Path, figures=EXPECTED_FIGURES) -> str:
    for rel in figures:
        assert (out / rel).stat().st_size > 1000, rel
    links = _links(out)
    on_disk = {p.relative_to(out).as_posix() for p in figure_files(out)}
    assert set(figures) <= on_disk
    assert on_disk <= links, f"figures not linked in the summary: {sorted(on_disk - links)}"
    assert set(EXPECTED_TABLES) <= links
    assert json.loads((out / "vae" / "eval.json").read_text())
    return (out / "demo_summary.md").read_text()


def test_data_preview(tmp_path):
    from shared.synthetic import generate_faces

    path = data_preview(generate_faces(10, 32), tmp_path / "p.png", n=6, cols=3)
    from PIL import Image
    with Image.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 200


def test_iaf_vs_diagonal_says_who_won_either_way():
    vae = {"neg_iwae": 100.0, "neg_elbo": 103.0, "rate": 10.0, "distortion": 93.0, "iwae_k": 16, "n_faces": 200}
    iaf = {"neg_iwae": 98.5, "neg_elbo": 104.0, "rate": 12.0, "distortion": 92.0, "iwae_k": 16, "n_faces": 200}
    c = iaf_vs_diagonal(vae, iaf)
    assert c["better"] == "iaf" and c["iaf_gain_iwae"] == pytest.approx(1.5) and c["iaf_gain_elbo"] == -1.0
    text = comparison_sentence(c)
    assert "IAF posterior is better by 1.50 nats" in text and "diagonal better by 1.00" in text
    assert text.endswith(": met.")
    c = iaf_vs_diagonal(iaf, vae)  # swapped: now the diagonal posterior has the tighter bound
    assert c["better"] == "vae" and "diagonal posterior is better by 1.50 nats" in comparison_sentence(c)
    assert comparison_sentence(c).endswith(": missed.")


class FakeDemoBackend(FakeBackend):
    """Fake backend for the demo: also serves the CNN run and records the classifier passed."""

    def __init__(self):
        super().__init__()
        self.classifiers = []

    def evaluate(self, run_dir, *, data=None, iwae_k=64, classifier=None, seed=0):
        self.classifiers.append(classifier)
        return super().evaluate(run_dir, data=data, iwae_k=iwae_k, classifier=classifier, seed=seed)


def test_demo_orchestration_with_fake_backend_and_no_tf(tmp_path, monkeypatch):
    import shared.demo_tf as demo_tf
    import shared.registry as registry
    from shared.errors import FaceVAEError

    fake = FakeDemoBackend()
    for name in ("train", "evaluate", "load_model"):
        monkeypatch.setattr(api, name, getattr(fake, name))

    def backend(name=None):
        if name == "tf":  # as if TensorFlow were not installed
            raise FaceVAEError("backend 'tf' needs 'tensorflow', which is not installed: pip install 'facevae[tf]'")
        return types.SimpleNamespace(
            inpaint_optimize=lambda model, images, mask, *, steps=200, seed=0, **kw: model.reconstruct(images))

    monkeypatch.setattr(registry, "get_backend", backend)
    monkeypatch.setattr(registry, "require_backend", lambda name=None: name)
    out = demo(tmp_path / "demo", quick=True)
    summary = _check_outputs(out)
    assert "torch CNN `cnn/`" in summary and "| `vae/` | torch vae |" in summary
    assert "tensorflow part (tf vae, cvae, iaf) was skipped" in summary.lower() and "facevae[tf]" in summary
    assert not (out / "tf").exists()
    names = [n for n, _ in fake.trained]
    assert names[:2] == ["cnn", "vae"] and len(names) == 2 + len(QUICK.sweep_dims) * len(QUICK.sweep_betas)
    assert json.loads((out / "cnn" / "config.json").read_text())["model"]["task"] == "all"
    assert str(fake.classifiers[1]).endswith("cnn")          # the VAE is scored with the CNN's features

    demo(out, quick=True)                                     # re-run: every finished run is reused
    assert [n for n, _ in fake.trained] == names
    assert demo_tf.tf_unavailable() is not None


def _tf_or_skip():
    pytest.importorskip("tensorflow")
    from shared.demo_tf import tf_unavailable
    if tf_unavailable():
        pytest.skip(tf_unavailable())


def _check_tf(out: Path, tf) -> None:
    assert tf.skipped is None and set(tf.evals) == {"vae", "cvae", "iaf"}
    for family in ("vae", "cvae", "iaf"):
        ev = json.loads((out / "tf" / family / "eval.json").read_text())
        assert ev["family"] == family and ev["backend"] == "tf"
        assert np.isfinite(ev["neg_iwae"]) and np.isfinite(ev["neg_elbo"])
    for rel in TF_FIGURES:
        assert (out / rel).stat().st_size > 1000, rel
        assert out / rel in tf.paths
    c = json.loads((out / "tf" / "iaf_vs_diagonal.json").read_text())
    assert c["iaf_gain_iwae"] == pytest.approx(tf.evals["vae"]["neg_iwae"] - tf.evals["iaf"]["neg_iwae"])
    # the comparison is fair: the two configs differ only in the family and the flow's own fields
    vae, iaf = (json.loads((out / "tf" / f / "config.json").read_text()) for f in ("vae", "iaf"))
    assert vae["train"] == iaf["train"] and vae["data"] == iaf["data"]
    flow_fields = {"family", "flow_steps", "flow_hidden", "context_dim"}
    assert {k: v for k, v in vae["model"].items() if k not in flow_fields} == \
           {k: v for k, v in iaf["model"].items() if k not in flow_fields}


def test_demo_quick_real_both_backends(tmp_path, monkeypatch):
    """The quick demo on the real backends (~35 s on 1 thread): every output, the summary, then a re-run."""
    pytest.importorskip("torch")
    _tf_or_skip()
    out = demo(tmp_path / "demo", quick=True)
    summary = _check_outputs(out, EXPECTED_FIGURES + TF_FIGURES)
    ev = json.loads((out / "vae" / "eval.json").read_text())
    assert np.isfinite(ev["rate"]) and np.isfinite(ev["distortion"])
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    assert len(sweep["runs"]) == len(QUICK.sweep_dims) * len(QUICK.sweep_betas)
    for run in ("| `tf/vae/` | tf vae |", "| `tf/cvae/` | tf cvae |", "| `tf/iaf/` | tf iaf |"):
        assert run in summary
    assert "IAF vs diagonal" in summary and "skipped" not in summary

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(api, "train", no_training)
    again = tf_demo(out, QUICK, classifier=out / "cnn")  # the tf part re-run: every run is reused
    _check_tf(out, again)
    assert again.evals["iaf"] == json.loads((out / "tf" / "iaf" / "eval.json").read_text())
