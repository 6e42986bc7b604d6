"""benchmarks/seed_workload.py: the original workload, timed; its main path on tiny synthetic faces."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re

import pytest

pytest.importorskip("torch")

from benchmarks import seed_workload as sw  # noqa: E402
from shared.errors import ConfigError  # noqa: E402

TINY = ["--data", "synthetic:300", "--scale", "0.01", "--image-size", "32", "--models", "cnn:gender,vae:4",
        "--channels", "8,16", "--hidden-dims", "32", "--figure-n", "4", "--grid", "3"]


def _rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows of ``text`` by their first cell (bold markers removed)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """``(stdout, report, out)`` of one tiny run of the script's main path."""
    root = tmp_path_factory.mktemp("seed_workload")
    cache_before = os.environ.get("FACEVAE_CACHE")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = sw.main(TINY + ["--out", str(root / "runs"), "--json", str(root / "report.json")])
    assert rc == 0
    assert os.environ.get("FACEVAE_CACHE") == cache_before, "the fresh parse cache must not leak out of main"
    return stdout.getvalue(), json.loads((root / "report.json").read_text()), root / "runs"


class TestTable:
    def test_every_phase_and_a_positive_total(self, workload):
        rows = _rows(workload[0])
        header = rows["phase (s)"]
        assert header == ["data", "cnn:gender", "vae:4", "all"]
        for phase in sw.PHASES:
            assert phase in rows, f"phase {phase!r} missing from the table"
        totals = [float(c) for c in rows["total"]]
        assert all(t > 0 for t in totals[1:]), totals
        assert totals[-1] == pytest.approx(sum(totals[:-1]), abs=0.05 * len(totals))

    def test_model_phases_are_timed_and_cnn_figures_belong_to_evaluate(self, workload):
        rows = _rows(workload[0])
        for phase in ("train", "evaluate"):
            assert all(float(c) > 0 for c in rows[phase][1:3]), rows[phase]
        assert rows["figures"][1] == "in evaluate"
        assert float(rows["figures"][2]) > 0

    def test_header_names_the_device(self, workload):
        assert re.search(r"^device (cpu|cuda): ", workload[0], flags=re.M)


class TestReport:
    def test_json_holds_seconds_metrics_and_epochs(self, workload):
        report = workload[1]
        assert [m["model"] for m in report["models"]] == ["cnn:gender", "vae:4"]
        assert set(report["data"]["seconds"]) == set(sw.PHASES[:3])
        assert report["data"]["cache_hit_cold"] is None  # synthetic faces are generated, never cached
        cnn, vae = report["models"]
        assert cnn["epochs"] == vae["epochs"] == 1  # 0.01 x 10 epochs rounds to 0: at least one
        assert 0.0 <= cnn["metrics"]["accuracy"] <= 1.0
        assert vae["metrics"]["neg_elbo"] > 0 and vae["metrics"]["psnr"] > 0
        assert report["table"] in workload[0]

    def test_run_folders_are_evaluated_and_drawn(self, workload):
        out = workload[2]
        assert (out / "cnn_gender" / "eval.json").is_file()
        assert (out / "vae_d4" / "eval.json").is_file()
        figures = {p.name for p in (out / "vae_d4" / "figures").iterdir()}
        assert {"interpolation_lerp_sample.png", "denoise.png", "inpaint_box_iterate.png"} <= figures


class TestOptions:
    def test_models_filter_keeps_workload_order(self):
        assert [m.name for m in sw.parse_models("vae:16,cnn:age")] == ["cnn:age", "vae:16"]
        assert len(sw.parse_models("all")) == 7

    @pytest.mark.parametrize("text", ["vae:8", "cnn:smile", "", "cnn:gender,vae"])
    def test_unknown_models_are_refused(self, text):
        with pytest.raises(ConfigError, match="`models` must be"):
            sw.parse_models(text)

    def test_scale_keeps_at_least_one_epoch(self):
        assert sw.scaled_epochs(10, 0.1) == 1
        assert sw.scaled_epochs(10, 0.01) == 1
        assert sw.scaled_epochs(10, 1.0) == 10

    def test_refresh_replaces_only_the_selected_run_folders(self, tmp_path):
        (tmp_path / "cnn_gender").mkdir()
        (tmp_path / "cnn_gender" / "stale.txt").write_text("old")
        (tmp_path / "notes.txt").write_text("mine")
        sw._refresh(tmp_path, sw.parse_models("cnn:gender"))
        assert not (tmp_path / "cnn_gender").exists()
        assert (tmp_path / "notes.txt").read_text() == "mine"

    def test_bad_scale_exits_2(self, tmp_path, capsys):
        rc = sw.main(["--data", "synthetic:300", "--scale", "0", "--out", str(tmp_path / "runs"),
                      "--json", str(tmp_path / "r.json")])
        assert rc == 2
        assert "`scale` must be" in capsys.readouterr().err
        assert not (tmp_path / "r.json").exists()
