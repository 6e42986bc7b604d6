"""benchmarks/peers.py: the pure parts (variant specs, per-run rates, paired ratios, the table).

The measurement itself needs pythae's virtualenv and minutes of CPU; it is a benchmark, not a test.
"""
from __future__ import annotations

import pytest

from benchmarks import peers


def _run(variant: str, rep: int, rates: list, ok: bool = True, **extra) -> dict:
    return {"variant": variant, "rep": rep, "ok": ok, "images_per_s": rates, **extra}


class TestParseVariant:
    def test_default_has_no_change(self):
        assert peers.parse_variant("default") == {"name": "default", "flags": set(), "batch": None}

    def test_tokens_combine_with_a_batch(self):
        spec = peers.parse_variant("bf16+fused+b64")
        assert spec["flags"] == {"bf16", "fused"} and spec["batch"] == 64 and spec["name"] == "bf16+fused+b64"

    @pytest.mark.parametrize("spec, fragment", [("bf17", "unknown variant token 'bf17'"), ("b0", "unknown"),
                                                ("", "empty variant"), ("pythae+bf16", "take no other token"),
                                                ("bare+fused", "take no other token"),
                                                ("fused+loop", "at most one of fused, foreach, loop")])
    def test_bad_specs_are_refused(self, spec, fragment):
        with pytest.raises(ValueError, match=fragment):
            peers.parse_variant(spec)

    def test_baselines_accept_a_batch(self):
        assert peers.parse_variant("pythae+b64") == {"name": "pythae+b64", "flags": {"pythae"}, "batch": 64}


class TestRates:
    def test_warm_up_epochs_are_left_out(self):
        assert peers.run_rate(_run("default", 0, [1.0, 100.0, 300.0, 200.0]), warmup=1) == 200.0

    def test_failed_or_untimed_runs_have_no_rate(self):
        assert peers.run_rate(_run("default", 0, [5.0, 6.0], ok=False), warmup=1) is None
        assert peers.run_rate(_run("default", 0, [5.0]), warmup=1) is None

    def test_cpu_rates_skip_missing_epochs(self):
        run = _run("default", 0, [1.0, 2.0], images_per_cpu_s=[9.0, None, 30.0])
        assert peers.run_rate(run, warmup=1, key="images_per_cpu_s") == 30.0


class TestSummarize:
    # the machine got 3x slower between repetitions: the medians mix the two loads, the paired ratios do not
    RUNS = [_run("default", 0, [0, 300.0]), _run("pythae", 0, [0, 150.0]), _run("fused", 0, [0, 330.0]),
            _run("pythae", 1, [0, 50.0]), _run("default", 1, [0, 80.0]), _run("fused", 1, [0, 0], ok=False,
                                                                                     error="RuntimeError: boom")]

    def rows(self) -> dict:
        return {r["variant"]: r for r in peers.summarize(self.RUNS, warmup=1)}

    def test_ratios_are_paired_by_repetition(self):
        rows = self.rows()
        assert rows["default"]["vs_baseline"] == pytest.approx(1.8)  # median of 300/150 and 80/50, not 190/100
        assert rows["default"]["rate"] == pytest.approx(190.0)  # median of 300 and 80
        assert rows["pythae"]["vs_baseline"] == pytest.approx(1.0)
        assert rows["pythae"]["vs_reference"] == pytest.approx(0.5625)

    def test_a_failed_repetition_is_reported_and_left_unpaired(self):
        fused = self.rows()["fused"]
        assert fused["reps"] == 1 and fused["failed"] == ["RuntimeError: boom"]
        assert fused["vs_baseline"] == pytest.approx(330.0 / 150.0)
        assert fused["vs_reference"] == pytest.approx(1.1)

    def test_rows_keep_the_order_variants_were_first_seen(self):
        assert [r["variant"] for r in peers.summarize(self.RUNS, warmup=1)] == ["default", "pythae", "fused"]

    def test_no_baseline_gives_no_ratio(self):
        rows = peers.summarize([_run("default", 0, [0, 10.0])], warmup=1)
        assert rows[0]["vs_baseline"] is None and rows[0]["vs_reference"] == pytest.approx(1.0)


def test_markdown_shows_rates_ratios_and_failures():
    runs = TestSummarize.RUNS
    wall = peers.summarize(runs, warmup=1)
    cpu = peers.summarize([dict(r, images_per_cpu_s=[0, 2 * r["images_per_s"][1]]) for r in runs], warmup=1,
                          key="images_per_cpu_s")
    text = peers.markdown(wall, cpu, header="Machine: test")
    lines = text.splitlines()
    assert lines[0] == "Machine: test"
    row = next(line for line in lines if line.startswith("| default "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["default", "190", "80–300", "2", "1.80", "1.00", "380", "1.80"]
    fused = next(line for line in lines if line.startswith("| fused "))
    assert "1 (+1 failed: RuntimeError: boom)" in fused


def test_main_refuses_a_run_with_no_timed_epoch(capsys):
    with pytest.raises(SystemExit) as exc:
        peers.main(["--epochs", "2", "--warmup", "2"])
    assert exc.value.code == 2
    assert "--warmup must be below --epochs" in capsys.readouterr().err


def test_main_refuses_unknown_variants(capsys):
    with pytest.raises(SystemExit):
        peers.main(["--variants", "default,turbo"])
    assert "unknown variant token 'turbo'" in capsys.readouterr().err


def test_markdown_marks_a_variant_with_no_timed_run():
    rows = peers.summarize([_run("compile", 0, [], ok=False, error="ran past --timeout 600 s")], warmup=1)
    cells = [c.strip() for c in peers.markdown(rows).splitlines()[-1].strip("|").split("|")]
    assert cells[:4] == ["compile", "–", "–", "0 (+1 failed: ran past --timeout 600 s)"]
