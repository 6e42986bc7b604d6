"""shared.results: figures saved as PNG/PDF/SVG at a chosen dpi, the Result object, the output writer."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from shared.errors import ConfigError
from shared.results import OutputWriter, Result, figure_bytes, markdown_table, save_figure

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


def _figure() -> Figure:
    fig = Figure(figsize=(2.0, 1.0))
    ax = fig.subplots()
    ax.imshow(np.random.default_rng(0).random((8, 16)), cmap="gray")
    ax.set_axis_off()
    return fig


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return im.size


class TestSaveFigure:
    @pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
    def test_suffix_chooses_the_format(self, tmp_path, fmt):
        path = save_figure(_figure(), tmp_path / "sub" / f"f.{fmt}")
        assert path == tmp_path / "sub" / f"f.{fmt}"
        data = path.read_bytes()
        assert data.startswith(MAGIC[fmt])
        if fmt == "svg":
            assert b"<svg" in data[:2000]
        assert not list(path.parent.glob(".*.tmp"))

    def test_dpi_changes_the_pixel_size(self, tmp_path):
        small = _png_size(save_figure(_figure(), tmp_path / "a.png", dpi=50).read_bytes())
        large = _png_size(save_figure(_figure(), tmp_path / "b.png", dpi=300).read_bytes())
        assert large[0] == pytest.approx(6 * small[0], rel=0.1) and large[1] == pytest.approx(6 * small[1], rel=0.1)

    @pytest.mark.parametrize("name", ["f.jpg", "f", "f.png.txt"])
    def test_bad_suffix_refused(self, tmp_path, name):
        with pytest.raises(ConfigError, match="`path` must end in one of"):
            save_figure(_figure(), tmp_path / name)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("dpi", [5, 0, -1, 1201, 72.0, True, "100"])
    def test_bad_dpi_refused(self, tmp_path, dpi):
        with pytest.raises(ConfigError, match=r"`dpi` must be an integer in \[10, 1200\]. Received: dpi="):
            save_figure(_figure(), tmp_path / "f.png", dpi=dpi)
        assert not (tmp_path / "f.png").exists()

    def test_figure_bytes_bad_format(self):
        with pytest.raises(ConfigError, match="`fmt` must be one of .*Received: fmt='jpeg'"):
            figure_bytes(_figure(), "jpeg")


class TestResult:
    def test_repr_png_returns_png_bytes(self):
        data = Result("x", _figure())._repr_png_()
        assert isinstance(data, bytes) and data.startswith(MAGIC["png"])
        assert _png_size(data)[0] > 50

    def test_no_figure(self, tmp_path):
        res = Result("numbers", None, table=pd.DataFrame({"a": [1]}))
        assert res._repr_png_() is None
        with pytest.raises(ConfigError, match="no figure"):
            res.save(tmp_path / "x.png")

    def test_save_records_the_path(self, tmp_path):
        res = Result("x", _figure(), images=np.zeros((2, 4, 4)))
        written = res.save(tmp_path / "x.pdf", dpi=150)
        assert written.read_bytes().startswith(MAGIC["pdf"]) and res.paths == [written]
        assert "images=(2, 4, 4)" in repr(res) and "x.pdf" in repr(res)


class TestOutputWriter:
    def test_save_false_writes_nothing(self, tmp_path):
        out = OutputWriter(tmp_path / "run", save=False, fmt="svg", dpi=200)
        assert out.figure(_figure(), "figures/a") is None
        assert out.json("a.json", {"x": 1}) is None and out.text("a.md", "x") is None
        assert out.array("a.npy", np.zeros(3)) is None
        assert out.paths == [] and not (tmp_path / "run").exists()

    def test_save_true_writes_in_the_chosen_format(self, tmp_path):
        out = OutputWriter(tmp_path, fmt="pdf")
        fig_path = out.figure(_figure(), "figures/a")
        assert fig_path == tmp_path / "figures" / "a.pdf" and fig_path.read_bytes().startswith(MAGIC["pdf"])
        out.json("a.json", {"x": np.float32(1.5)})
        out.array("a.npy", np.arange(3, dtype=np.float32))
        assert [p.name for p in out.paths] == ["a.pdf", "a.json", "a.npy"]
        np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), [0, 1, 2])

    @pytest.mark.parametrize("kw, match", [(dict(fmt="jpg"), "`fmt`"), (dict(dpi=2000), "`dpi`"),
                                           (dict(save="no"), "`save`")])
    def test_bad_settings_refused_up_front(self, tmp_path, kw, match):
        with pytest.raises(ConfigError, match=match):
            OutputWriter(tmp_path, **kw)


def test_markdown_table():
    text = markdown_table(["a", "b"], [[1, 0.123456], ["x", float("nan")], ["y", None]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| x | – |", "| y | – |"]
