"""Plotting: every figure writes a non-empty PNG; bad shapes raise clear errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from shared import plotting
from shared.errors import ConfigError

RNG = np.random.default_rng(0)


def _is_png(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 500
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


class TestImageFigures:
    def test_image_grid_array_with_titles(self, tmp_path):
        rows = RNG.random((2, 5, 16, 16))
        out = plotting.image_grid(rows, tmp_path / "g.png", row_titles=["a", "b"], col_titles=list("vwxyz"),
                                  title="grid")
        assert out == tmp_path / "g.png"
        w, h = _is_png(out)
        assert w > h  # 5 columns, 2 rows
        assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary

    def test_image_grid_ragged_list_uint8(self, tmp_path):
        rows = [RNG.integers(0, 256, (4, 12, 12), dtype=np.uint8), RNG.integers(0, 256, (2, 12, 12), dtype=np.uint8)]
        _is_png(plotting.image_grid(rows, tmp_path / "nested" / "r.png"))

    @pytest.mark.parametrize("rows,kwargs,match", [
        (np.zeros((3, 8, 8)), {}, r"\(R, C, H, W\)"),
        ([np.zeros((2, 8, 8)), np.zeros((2, 9, 9))], {}, "same"),
        ([np.zeros((8, 8))], {}, r"\(C, H, W\)"),
        (np.zeros((2, 3, 8, 8)), {"row_titles": ["only one"]}, "row_titles"),
        (np.zeros((2, 3, 8, 8)), {"col_titles": ["a", "b"]}, "col_titles"),
    ])
    def test_image_grid_bad_shapes(self, tmp_path, rows, kwargs, match):
        with pytest.raises(ConfigError, match=match):
            plotting.image_grid(rows, tmp_path / "bad.png", **kwargs)
        assert not (tmp_path / "bad.png").exists()

    def test_png_suffix_required(self, tmp_path):
        with pytest.raises(ConfigError, match=".png"):
            plotting.image_grid(np.zeros((1, 1, 8, 8)), tmp_path / "x.jpg")

    def test_comparison_rows(self, tmp_path):
        named = {"original": RNG.random((6, 16, 16)), "noisy": RNG.random((6, 16, 16)), "vae": RNG.random((6, 16, 16))}
        w, h = _is_png(plotting.comparison_rows(named, tmp_path / "c.png", title="denoising"))
        assert h > 100
        with pytest.raises(ConfigError, match="at least one"):
            plotting.comparison_rows({}, tmp_path / "c2.png")

    def test_interpolation_figure(self, tmp_path):
        w, h = _is_png(plotting.interpolation_figure(RNG.random((4, 4, 16, 16)), tmp_path / "i.png", title="t"))
        assert 0.6 < w / h < 1.6  # square-ish
        with pytest.raises(ConfigError, match=r"\(n, n, H, W\)"):
            plotting.interpolation_figure(RNG.random((3, 4, 16, 16)), tmp_path / "i2.png")


class TestChartFigures:
    def test_training_curves(self, tmp_path):
        records = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1),
                    "val_accuracy": None if e == 0 else 0.5 + 0.1 * e} for e in range(4)]
        _is_png(plotting.training_curves(records, tmp_path / "t.png", [["train_loss", "val_loss"], "val_accuracy"]))

    @pytest.mark.parametrize("records,keys,match", [([], ["loss"], "empty"), ([{"loss": 1.0}], ["loss"], "epoch"),
                                                    ([{"epoch": 0, "loss": 1.0}], ["acc"], "Available"),
                                                    ([{"epoch": 0, "loss": 1.0}], [], "at least one")])
    def test_training_curves_bad(self, tmp_path, records, keys, match):
        with pytest.raises(ConfigError, match=match):
            plotting.training_curves(records, tmp_path / "t.png", keys)

    def test_confusion_matrix(self, tmp_path):
        cm = np.array([[5, 1, 0], [2, 8, 0], [0, 0, 0]])  # last class has no samples
        _is_png(plotting.confusion_matrix_figure(cm, ["a", "b", "c"], tmp_path / "cm.png", title="cm"))
        with pytest.raises(ConfigError, match=r"\(2, 2\)"):
            plotting.confusion_matrix_figure(cm, ["a", "b"], tmp_path / "cm2.png")
        with pytest.raises(ConfigError, match="non-negative"):
            plotting.confusion_matrix_figure(-np.eye(2), ["a", "b"], tmp_path / "cm3.png")

    def test_rate_distortion(self, tmp_path):
        pts = [{"rate": 10.0, "distortion": 50.0, "label": "d=4"}, {"rate": 30.0, "distortion": 20.0, "label": "d=16"}]
        _is_png(plotting.rate_distortion_figure(pts, tmp_path / "rd.png", title="rd"))
        with pytest.raises(ConfigError, match="point 0"):
            plotting.rate_distortion_figure([{"rate": 1.0, "label": "x"}], tmp_path / "rd2.png")
        with pytest.raises(ConfigError, match="empty"):
            plotting.rate_distortion_figure([], tmp_path / "rd3.png")

    @pytest.mark.parametrize("kind", ["bar", "line"])
    def test_metric_by_group(self, tmp_path, kind):
        groups = {"0-9": 0.81, "10-19": 0.86, "20-39": 0.9, "40-59": 0.88, "60+": 0.84}
        _is_png(plotting.metric_by_group_figure(groups, tmp_path / f"{kind}.png", "accuracy", kind=kind))

    def test_metric_by_group_bad(self, tmp_path):
        with pytest.raises(ConfigError, match="kind"):
            plotting.metric_by_group_figure({"a": 1.0}, tmp_path / "m.png", "acc", kind="pie")
        with pytest.raises(ConfigError, match="finite"):
            plotting.metric_by_group_figure({"a": float("nan")}, tmp_path / "m.png", "acc")


def test_no_pyplot_state(tmp_path):
    """Figures are built without pyplot, so no global figure state (or GUI backend) is involved."""
    code = ("import sys, numpy as np; from shared import plotting; "
            f"plotting.image_grid(np.zeros((1, 2, 8, 8)), {str(tmp_path / 'p.png')!r}); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
