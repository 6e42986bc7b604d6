"""What a training run shows: epoch lines and a progress bar (or silence), the training-curve figure.

Most checks drive :func:`shared.training.fit` with the numpy engine of ``test_training_loop`` (no
framework); one class trains a tiny model on each backend through :func:`shared.api.train`.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest

from shared import event_log, training
from shared.errors import ConfigError
from shared.runs import read_metrics
from tests.unit.test_training_loop import NumpyEngine, _config

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  train ")
PNG = b"\x89PNG\r\n\x1a\n"


def epoch_lines(text: str) -> list[str]:
    """Epoch lines of captured stderr; a text progress bar redraws itself after ``\\r``, so split on both."""
    return [part for part in re.split(r"[\r\n]", text) if EPOCH_LINE.match(part)]


def curves(run_dir: Path) -> Path:
    return run_dir / "figures" / training.CURVES_FIGURE


class TestConsole:
    def test_default_is_verbose_and_blocks_nest(self):
        assert event_log.is_verbose()
        with training.console(False) as value:
            assert value is False and not event_log.is_verbose()
            with training.console() as inner:
                assert inner is True and event_log.is_verbose()
            assert not event_log.is_verbose()
        assert event_log.is_verbose()

    @pytest.mark.parametrize("bad", [1, "yes", 0.0])
    def test_verbose_must_be_a_bool_or_none(self, bad):
        with pytest.raises(ConfigError, match=r"`verbose` must be True, False or None\. Received: verbose="):
            with training.console(bad):
                pass

    def test_a_silent_thread_does_not_silence_another(self):
        inside, release = threading.Event(), threading.Event()
        seen = {}

        def worker():
            with training.console(False):
                seen["worker"] = event_log.is_verbose()
                inside.set()
                release.wait(5)

        thread = threading.Thread(target=worker)
        thread.start()
        inside.wait(5)
        seen["main"] = event_log.is_verbose()
        release.set()
        thread.join(5)
        assert seen == {"worker": False, "main": True}


class TestFitOutput:
    def test_silent_prints_nothing(self, tmp_path, capfd):
        with training.console(False):
            training.fit(NumpyEngine(), _config(epochs=3), tmp_path)
        out, err = capfd.readouterr()
        assert out == "" and err == ""

    def test_verbose_prints_one_line_per_epoch_and_a_bar_outside_a_terminal(self, tmp_path, capsys):
        with training.console(True):
            training.fit(NumpyEngine(), _config(epochs=3), tmp_path)
        out, err = capsys.readouterr()  # capsys' stderr is no TTY, as in a script writing to a log
        lines = epoch_lines(err)
        assert [EPOCH_LINE.match(line).groups() for line in lines] == [("1", "3"), ("2", "3"), ("3", "3")]
        assert out == ""
        assert re.search(r"epoch 1/3: +\d+%\|", err), "the progress bar was hidden outside a terminal"
        for line, record in zip(lines, read_metrics(tmp_path)):
            assert f"val {record['val_loss']:.4g}" in line and f"lr {record['lr']:.3g}" in line
            assert "rate" in line and "beta" not in line  # the numpy model reports no KL weight
        assert lines[0].endswith("best")

    def test_the_default_is_verbose(self, tmp_path, capsys):
        training.fit(NumpyEngine(), _config(epochs=2), tmp_path)
        assert len(epoch_lines(capsys.readouterr().err)) == 2

    def test_the_bar_refreshes_rarely_outside_a_terminal(self, capsys):
        bar = event_log.progress_bar(10, "epoch 1/1")
        try:
            assert not bar.disable and bar.mininterval >= 1.0
        finally:
            bar.close()
        with training.console(False):
            assert event_log.progress_bar(10, "x").disable

    def test_early_stop_is_said_on_the_last_line(self, tmp_path, capsys):
        engine = NumpyEngine()
        engine.val = engine.val - 50.0  # validation far below the training mean: it worsens after epoch 1
        training.fit(engine, _config(epochs=8, early_stopping=2), tmp_path)
        lines = epoch_lines(capsys.readouterr().err)
        assert len(lines) == len(read_metrics(tmp_path)) < 8
        assert "early stop" in lines[-1] and not any("early stop" in line for line in lines[:-1])

    def test_library_logging_is_left_alone(self, tmp_path, caplog, capsys):
        before = {name: list(logging.getLogger(name).handlers) for name in ("", "shared", "shared.training")}
        with caplog.at_level(logging.DEBUG, logger="shared"):
            training.fit(NumpyEngine(), _config(epochs=2), tmp_path)
        after = {name: list(logging.getLogger(name).handlers) for name in before}
        assert after == before
        epoch_records = [r for r in caplog.records if EPOCH_LINE.match(r.getMessage())]
        assert [r.levelno for r in epoch_records] == [logging.DEBUG, logging.DEBUG]  # the CLI's INFO shows none


class TestCurvesFigure:
    def test_written_after_training_and_again_after_resume(self, tmp_path, capsys):
        store = {}
        training.fit(NumpyEngine(store=store), _config(epochs=2), tmp_path)
        assert curves(tmp_path).read_bytes().startswith(PNG)
        curves(tmp_path).unlink()
        training.fit(NumpyEngine(store=store), _config(epochs=3), tmp_path, resume=True)
        assert curves(tmp_path).read_bytes().startswith(PNG)

    def test_written_after_an_early_stop(self, tmp_path, capsys):
        engine = NumpyEngine()
        engine.val = engine.val - 50.0
        training.fit(engine, _config(epochs=8, early_stopping=2), tmp_path)
        assert len(read_metrics(tmp_path)) < 8 and curves(tmp_path).is_file()

    def test_the_figure_gets_every_epoch_counted_from_one(self, tmp_path, monkeypatch, capsys):
        from shared import plotting
        seen = []
        monkeypatch.setattr(plotting, "training_curves", lambda records, path, **kw: seen.append(records))
        training.fit(NumpyEngine(), _config(epochs=3), tmp_path)
        assert [r["epoch"] for r in seen[0]] == [1, 2, 3]
        assert [r["val_loss"] for r in seen[0]] == [r["val_loss"] for r in read_metrics(tmp_path)]

    def test_a_plotting_failure_never_costs_the_run(self, tmp_path, monkeypatch, caplog, capsys):
        from shared import plotting

        def broken(*args, **kwargs):
            raise RuntimeError("no font")

        monkeypatch.setattr(plotting, "training_curves", broken)
        with caplog.at_level(logging.WARNING, logger="shared"):
            best = training.fit(NumpyEngine(), _config(epochs=2), tmp_path)
        assert best["epoch"] in (0, 1) and len(read_metrics(tmp_path)) == 2
        assert not curves(tmp_path).exists()
        assert any("training-curve figure" in r.getMessage() and "no font" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_a_real_run_prints_its_epochs_and_draws_its_curves(backend, tmp_path, capsys):
    pytest.importorskip("torch" if backend == "torch" else "tensorflow")
    from shared import api
    config = api.build_config(backend=backend, model="vae", data="synthetic:240", image_size=32, channels=(8, 16),
                              hidden_dims=(32,), latent_dim=4, epochs=2, device="cpu")
    with training.console(True):
        run = Path(api.train(config, tmp_path / "run"))
    assert len(epoch_lines(capsys.readouterr().err)) == 2
    assert curves(run).read_bytes().startswith(PNG)
