"""TensorBoard event files written by shared code: framing, tags, steps, values, resume, both backends.

The writer needs neither TensorFlow nor the ``tensorboard`` package; TensorFlow's own reader is the
referee that the files are valid.
"""
from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from shared import training
from shared.event_log import TENSORBOARD_DIR, EventFileWriter, crc32c, masked_crc32c, scalar_tags
from shared.runs import read_metrics
from tests.conftest import REPO
from tests.unit.test_training_loop import NumpyEngine, _config


class BetaEngine(NumpyEngine):
    """The numpy engine, also reporting the KL weight it was given (as the VAEs do)."""

    def train_step(self, idx, beta, eps):
        return {**super().train_step(idx, beta, eps), "beta": beta}

    def val_step(self, idx, beta, eps):
        return {**super().val_step(idx, beta, eps), "beta": beta}


def read_events(logdir: Path) -> list:
    """Every event of every file in ``logdir``, in file-name order (as TensorBoard reads a folder)."""
    tf = pytest.importorskip("tensorflow")
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {logdir}"
    return [event for path in files for event in tf.compat.v1.train.summary_iterator(str(path))]


def scalars_by_step(events) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for event in events:
        for value in event.summary.value:
            assert value.tag not in out.get(event.step, {}), f"{value.tag} written twice at step {event.step}"
            out.setdefault(event.step, {})[value.tag] = value.simple_value
    return out


def expected(records, config) -> dict[int, dict[str, float]]:
    return {r["epoch"] + 1: scalar_tags(r, config.model.beta_at(r["epoch"])) for r in records}


def assert_same_values(got: dict[int, dict[str, float]], want: dict[int, dict[str, float]]) -> None:
    assert sorted(got) == sorted(want)
    for step in want:
        assert sorted(got[step]) == sorted(want[step]), f"tags differ at step {step}"
        for tag, value in want[step].items():
            assert got[step][tag] == pytest.approx(value, rel=1e-6), (step, tag)  # stored as float32


class TestCrc32c:
    @pytest.mark.parametrize("data, crc", [(b"", 0), (b"123456789", 0xE3069283), (bytes(32), 0x8A9136AA),
                                           (b"\xff" * 32, 0x62A8AB43), (bytes(range(32)), 0x46DD794E)])
    def test_known_vectors(self, data, crc):  # RFC 3720 (iSCSI) B.4 and the classic check value
        assert crc32c(data) == crc

    def test_each_record_is_framed_with_valid_crcs(self, tmp_path):
        with EventFileWriter(tmp_path) as writer:
            writer.add_scalars(1, {"train/loss": 1.5})
        raw, records = writer.path.read_bytes(), []
        while raw:
            header = raw[:8]
            (n,), (hcrc,) = struct.unpack("<Q", header), struct.unpack("<I", raw[8:12])
            data, (dcrc,) = raw[12:12 + n], struct.unpack("<I", raw[12 + n:16 + n])
            assert hcrc == masked_crc32c(header) and dcrc == masked_crc32c(data)
            records.append(data)
            raw = raw[16 + n:]
        assert len(records) == 2 and b"brain.Event:2" in records[0] and b"train/loss" in records[1]


class TestWriterAgainstTensorFlow:
    def test_round_trip(self, tmp_path):
        with EventFileWriter(tmp_path) as writer:
            writer.add_scalars(3, {"train/loss": 0.25, "lr": 1e-3, "val/rate": -2.5}, wall_time=1234.5)
            writer.add_scalars(2 ** 40, {"beta": 1.0})
        first, *events = read_events(tmp_path)
        assert first.file_version == "brain.Event:2"
        assert [e.step for e in events] == [3, 2 ** 40] and events[0].wall_time == 1234.5
        assert scalars_by_step(events) == {3: {"train/loss": 0.25, "lr": pytest.approx(1e-3), "val/rate": -2.5},
                                           2 ** 40: {"beta": 1.0}}

    def test_two_writers_in_one_second_do_not_share_a_file(self, tmp_path):
        with EventFileWriter(tmp_path) as a, EventFileWriter(tmp_path) as b:
            assert a.path != b.path


class TestFitWritesEvents:
    def test_tags_steps_and_values_match_metrics(self, tmp_path, capsys):
        config = _config(epochs=3, tensorboard=True)
        training.fit(BetaEngine(), config, tmp_path)
        records = read_metrics(tmp_path)
        got = scalars_by_step(read_events(tmp_path / TENSORBOARD_DIR))
        assert_same_values(got, expected(records, config))
        assert set(got[1]) == {"train/loss", "train/rate", "val/loss", "val/rate", "val/w", "lr", "beta"}
        assert [got[s]["beta"] for s in (1, 2, 3)] == pytest.approx([1.0, 2.0, 3.0])  # the warm-up, not val's β

    def test_off_by_default(self, tmp_path, capsys):
        training.fit(NumpyEngine(), _config(epochs=1), tmp_path)
        assert not (tmp_path / TENSORBOARD_DIR).exists()

    def test_resume_appends_a_new_file_and_no_step_twice(self, tmp_path, capsys):
        store = {}
        training.fit(BetaEngine(store=store), _config(epochs=2, tensorboard=True), tmp_path)
        config = _config(epochs=4, tensorboard=True)
        training.fit(BetaEngine(store=store), config, tmp_path, resume=True)
        training.fit(BetaEngine(store=store), config, tmp_path, resume=True)  # nothing left to train
        assert len(list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2
        assert_same_values(scalars_by_step(read_events(tmp_path / TENSORBOARD_DIR)),
                           expected(read_metrics(tmp_path), config))

    def test_writing_loads_no_framework(self, tmp_path):
        script = ("import sys; from pathlib import Path; from shared import training; "
                  "from shared.event_log import EventFileWriter; "
                  f"EventFileWriter(Path({str(tmp_path)!r})).add_scalars(1, {{'lr': 0.1}}); "
                  "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                  "('torch', 'tensorflow', 'keras', 'tensorboard')))")
        proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[]"
        assert list(tmp_path.glob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def backend_runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-epoch tiny VAE with TensorBoard on, per backend."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from shared import api
    runs = {}
    for backend in ("torch", "tf"):
        config = api.build_config(backend=backend, model="vae", data="synthetic:240", image_size=32,
                                  channels=(8, 16), hidden_dims=(32,), latent_dim=4, epochs=2, device="cpu",
                                  kl_warmup_epochs=1, beta=2.0, tensorboard=True)
        with training.console(False):
            runs[backend] = Path(api.train(config, tmp_path_factory.mktemp(backend) / "run"))
    return runs


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_each_backend_writes_its_metrics(backend_runs, backend):
    from shared.runs import load_run_config
    run = backend_runs[backend]
    got = scalars_by_step(read_events(run / TENSORBOARD_DIR))
    assert_same_values(got, expected(read_metrics(run), load_run_config(run)))
    assert [got[1]["beta"], got[2]["beta"]] == pytest.approx([1.0, 2.0])
    assert all(math.isfinite(v) for step in got.values() for v in step.values())


def test_both_backends_write_the_same_tags(backend_runs):
    tags = {b: {tag for step in scalars_by_step(read_events(run / TENSORBOARD_DIR)).values() for tag in step}
            for b, run in backend_runs.items()}
    assert tags["torch"] == tags["tf"]
    assert {"train/loss", "val/loss", "train/rate", "val/distortion", "lr", "beta"} <= tags["torch"]
