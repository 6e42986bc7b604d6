"""Plotting: every function returns a Figure, writes a file only when given a path; bad inputs raise clear errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from shared import plotting
from shared.errors import ConfigError

RNG = np.random.default_rng(0)


def _is_png(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 500
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _renderer(fig: Figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lay the text out so its extents are real
    return canvas.get_renderer()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


class TestImageFigures:
    def test_image_grid_array_with_titles(self, tmp_path):
        rows = RNG.random((2, 5, 16, 16))
        fig = plotting.image_grid(rows, tmp_path / "g.png", row_titles=["a", "b"], col_titles=list("vwxyz"),
                                  title="grid")
        assert isinstance(fig, Figure) and len(fig.axes) == 10
        w, h = _is_png(tmp_path / "g.png")
        assert w > h  # 5 columns, 2 rows
        assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary

    def test_no_path_writes_nothing(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        fig = plotting.image_grid(RNG.random((1, 2, 8, 8)))
        assert isinstance(fig, Figure) and list(tmp_path.iterdir()) == []

    def test_image_grid_ragged_list_uint8(self, tmp_path):
        rows = [RNG.integers(0, 256, (4, 12, 12), dtype=np.uint8), RNG.integers(0, 256, (2, 12, 12), dtype=np.uint8)]
        plotting.image_grid(rows, tmp_path / "nested" / "r.png")
        _is_png(tmp_path / "nested" / "r.png")

    @pytest.mark.parametrize("rows,kwargs,match", [
        (np.zeros((3, 8, 8)), {}, r"\(R, C, H, W\)"),
        ([np.zeros((2, 8, 8)), np.zeros((2, 9, 9))], {}, "same"),
        ([np.zeros((8, 8))], {}, r"\(C, H, W\)"),
        (np.zeros((2, 3, 8, 8)), {"row_titles": ["only one"]}, "row_titles"),
        (np.zeros((2, 3, 8, 8)), {"col_titles": ["a", "b"]}, "col_titles"),
        (np.zeros((1, 1, 8, 8)), {"dpi": 5}, "dpi"),
    ])
    def test_image_grid_bad_inputs(self, tmp_path, rows, kwargs, match):
        with pytest.raises(ConfigError, match=match):
            plotting.image_grid(rows, tmp_path / "bad.png", **kwargs)
        assert not (tmp_path / "bad.png").exists()

    @pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
    def test_formats_by_suffix(self, tmp_path, suffix, magic):
        plotting.image_grid(np.zeros((1, 2, 8, 8)), tmp_path / f"x{suffix}")
        assert (tmp_path / f"x{suffix}").read_bytes().startswith(magic)

    def test_unknown_suffix_refused(self, tmp_path):
        with pytest.raises(ConfigError, match=r"\.png.*\.pdf.*\.svg"):
            plotting.image_grid(np.zeros((1, 1, 8, 8)), tmp_path / "x.jpg")
        assert not (tmp_path / "x.jpg").exists()

    def test_dpi_sets_pixel_size(self, tmp_path):
        plotting.image_grid(RNG.random((1, 2, 8, 8)), tmp_path / "a.png", dpi=50)
        plotting.image_grid(RNG.random((1, 2, 8, 8)), tmp_path / "b.png", dpi=200)
        (wa, ha), (wb, hb) = _is_png(tmp_path / "a.png"), _is_png(tmp_path / "b.png")
        assert wb == pytest.approx(4 * wa, rel=0.1) and hb == pytest.approx(4 * ha, rel=0.1)

    @pytest.mark.parametrize("tile", [0.5, 0.9])
    def test_long_column_titles_do_not_overlap(self, tile):
        """attribute_edits: 13 columns, titles such as 'reconstruction' and 'gender flipped'."""
        cols = ["original", "reconstruction", "gender flipped", "age 4", "age 14", "age 29", "age 49", "age 70",
                "White", "Black", "Asian", "Indian", "Others"]
        fig = plotting.image_grid(RNG.random((2, 13, 16, 16)), col_titles=cols, row_titles=["a", "b"], tile=tile)
        r = _renderer(fig)
        boxes = [ax.title.get_window_extent(r) for ax in fig.axes[:13]]
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 < right.x0, "neighbouring column titles overlap"
        # every title stays within its own image column (a bit of slack for the gap)
        for ax, box in zip(fig.axes[:13], boxes):
            tile = ax.get_window_extent(r)
            assert box.width <= tile.width * 1.06

    def test_comparison_rows(self, tmp_path):
        named = {"original": RNG.random((6, 16, 16)), "noisy": RNG.random((6, 16, 16)), "vae": RNG.random((6, 16, 16))}
        fig = plotting.comparison_rows(named, tmp_path / "c.png", title="denoising")
        assert [ax.get_ylabel() for ax in fig.axes[::6]] == ["original", "noisy", "vae"]
        w, h = _is_png(tmp_path / "c.png")
        assert h > 100
        with pytest.raises(ConfigError, match="at least one"):
            plotting.comparison_rows({}, tmp_path / "c2.png")

    def test_interpolation_figure_marks_its_corners(self, tmp_path):
        fig = plotting.interpolation_figure(RNG.random((4, 4, 16, 16)), tmp_path / "i.png", title="t",
                                            corners=["face 1", "face 2", "face 3", "face 4"])
        w, h = _is_png(tmp_path / "i.png")
        assert 0.6 < w / h < 1.6  # square-ish
        corner_axes = {0: "A", 3: "B", 12: "C", 15: "D"}
        for k, ax in enumerate(fig.axes):
            letters = [t.get_text() for t in ax.texts]
            widths = {s.get_linewidth() for s in ax.spines.values()}
            if k in corner_axes:
                assert letters == [corner_axes[k]] and min(widths) >= 2.5
            else:
                assert letters == [] and max(widths) < 2.5
        title = fig._suptitle.get_text()
        assert "A = face 1" in title and "D = face 4" in title

    def test_interpolation_figure_bad(self, tmp_path):
        with pytest.raises(ConfigError, match=r"\(n, n, H, W\)"):
            plotting.interpolation_figure(RNG.random((3, 4, 16, 16)), tmp_path / "i2.png")
        with pytest.raises(ConfigError, match="corners"):
            plotting.interpolation_figure(RNG.random((3, 3, 16, 16)), corners=["a"])


class TestChartFigures:
    def test_training_curves(self, tmp_path):
        records = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1),
                    "val_accuracy": None if e == 0 else 0.5 + 0.1 * e} for e in range(4)]
        plotting.training_curves(records, tmp_path / "t.png", [["train_loss", "val_loss"], "val_accuracy"])
        _is_png(tmp_path / "t.png")

    def test_training_curves_default_panels(self):
        """What H2b's ``training_curves(records)`` shows: loss first, train beside val, constant terms left out."""
        records = [{"epoch": e, "lr": 0.1, "images_per_s": 9.0 + e, "train_beta": 1.0, "val_beta": 1.0,
                    "train_kl": 0.5 + e, "val_kl": 0.6, "train_loss": 1.0 / (e + 1), "val_loss": 2.0 - e,
                    "val_psnr": 20.0 + e} for e in range(3)]
        fig = plotting.training_curves(records, title="run")
        panels = [sorted(line.get_label() for line in ax.get_lines()) for ax in fig.axes if ax.get_lines()]
        assert panels == [["train_loss", "val_loss"], ["train_kl", "val_kl"], ["val_psnr"]]
        one_epoch = plotting.training_curves(records[:1])   # nothing varies yet: every term is shown
        assert len([ax for ax in one_epoch.axes if ax.get_lines()]) == 4
        for ax in (a for a in one_epoch.axes if a.get_lines()):  # one integer tick, not 0.95, 0.96, ...
            assert list(ax.get_xticks()) == [0] and ax.get_xlim() == (-0.5, 0.5)

    def test_a_term_equal_to_the_loss_gets_no_panel_and_run_curves_count_from_one(self):
        records = [{"epoch": e, "train_loss": 3.0 - e, "val_loss": 4.0 - e, "train_elbo": 3.0 - e,
                    "val_elbo": 4.0 - e, "train_rate": 1.0 + e, "val_rate": 2.0} for e in range(3)]
        fig = plotting.run_curves(records, title="run")
        axes = [ax for ax in fig.axes if ax.get_lines()]
        assert [ax.get_ylabel() for ax in axes] == ["loss", "rate"]  # the ELBO (beta = 1) repeats the loss
        assert list(axes[0].get_lines()[0].get_xdata()) == [1, 2, 3]

    @pytest.mark.parametrize("records,keys,match", [([], ["loss"], "empty"), ([{"loss": 1.0}], ["loss"], "epoch"),
                                                    ([{"epoch": 0, "loss": 1.0}], ["acc"], "Available"),
                                                    ([{"epoch": 0, "loss": 1.0}], [], "at least one"),
                                                    ([{"epoch": 0, "loss": 1.0}], None, "at least one")])
    def test_training_curves_bad(self, tmp_path, records, keys, match):
        with pytest.raises(ConfigError, match=match):
            plotting.training_curves(records, tmp_path / "t.png", keys)

    def test_confusion_matrix(self, tmp_path):
        cm = np.array([[5, 1, 0], [2, 8, 0], [0, 0, 0]])  # last class has no samples
        plotting.confusion_matrix_figure(cm, ["a", "b", "c"], tmp_path / "cm.png", title="cm")
        _is_png(tmp_path / "cm.png")
        with pytest.raises(ConfigError, match=r"\(2, 2\)"):
            plotting.confusion_matrix_figure(cm, ["a", "b"], tmp_path / "cm2.png")
        with pytest.raises(ConfigError, match="non-negative"):
            plotting.confusion_matrix_figure(-np.eye(2), ["a", "b"], tmp_path / "cm3.png")

    def test_rate_distortion_has_title_units_and_unclipped_labels(self, tmp_path):
        pts = [{"rate": 3.0 * d, "distortion": 400.0 / d, "label": f"d={d} β={b}", "group": f"β={b}"}
               for d in (4, 16, 64, 256) for b in (0.1, 1)]
        fig = plotting.rate_distortion_figure(pts, tmp_path / "rd.png")
        _is_png(tmp_path / "rd.png")
        ax = fig.axes[0]
        assert ax.get_title() and "nats/face" in ax.get_xlabel() and "nats/face" in ax.get_ylabel()
        assert ax.get_xscale() == "log"  # rates span two decades
        assert len(ax.get_legend().get_texts()) == 2  # one line per β
        r = _renderer(fig)
        frame = ax.get_window_extent(r)
        for text in ax.texts:  # every point label lies inside the axes, so nothing can be clipped
            box = text.get_window_extent(r)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, \
                text.get_text()

    def test_rate_distortion_bad(self, tmp_path):
        with pytest.raises(ConfigError, match="point 0"):
            plotting.rate_distortion_figure([{"rate": 1.0, "label": "x"}], tmp_path / "rd2.png")
        with pytest.raises(ConfigError, match="empty"):
            plotting.rate_distortion_figure([], tmp_path / "rd3.png")

    @pytest.mark.parametrize("kind", ["bar", "line"])
    def test_metric_by_group(self, tmp_path, kind):
        groups = {"0-9": 0.81, "10-19": 0.86, "20-39": 0.9, "40-59": 0.88, "60+": 0.84}
        plotting.metric_by_group_figure(groups, tmp_path / f"{kind}.png", "accuracy", kind=kind)
        _is_png(tmp_path / f"{kind}.png")

    def test_metric_by_group_shows_n(self):
        groups = {"0-9": 0.81, "10-19": 0.86, "60+": 0.84}
        fig = plotting.metric_by_group_figure(groups, None, "accuracy", counts={"0-9": 12, "10-19": 340, "60+": 7})
        _renderer(fig)
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0-9\nn=12", "10-19\nn=340", "60+\nn=7"]

    def test_metric_by_group_bad(self, tmp_path):
        with pytest.raises(ConfigError, match="kind"):
            plotting.metric_by_group_figure({"a": 1.0}, tmp_path / "m.png", "acc", kind="pie")
        with pytest.raises(ConfigError, match="finite"):
            plotting.metric_by_group_figure({"a": float("nan")}, tmp_path / "m.png", "acc")
        with pytest.raises(ConfigError, match="counts.*'b'"):
            plotting.metric_by_group_figure({"a": 1.0, "b": 2.0}, tmp_path / "m.png", "acc", counts={"a": 3})
        assert not (tmp_path / "m.png").exists()


def test_no_pyplot_state(tmp_path):
    """Figures are built without pyplot, so no global figure state (or GUI backend) is involved."""
    code = ("import sys, numpy as np; from shared import plotting; "
            f"plotting.image_grid(np.zeros((1, 2, 8, 8)), {str(tmp_path / 'p.png')!r}); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
