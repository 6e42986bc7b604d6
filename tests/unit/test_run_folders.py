"""Run folders never lose or mix work: the writer lock, refusals that touch nothing, restart of
failed runs, leftover cleanup, torn metrics lines, checksummed torch checkpoints."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared import api
from shared.errors import ConfigError, FaceVAEError, RunError
from shared.io import atomic_write_text
from shared.runs import (append_metrics, has_any_checkpoint, load_run_config, lock_run, read_metrics,
                         remove_leftovers, truncate_metrics)

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "checkpoints" / "model.pt").write_bytes(b"\x00user weights")
    (folder / "metrics.jsonl").write_text('{"mine": 1}\n')
    return folder


def _config(**kw):
    return api.build_config(backend="torch", model="vae", data="synthetic:64", image_size=32, latent_dim=4,
                            epochs=1, **kw)


class _FakeBackend:
    """Stands in for a backend's ``train``; checks the lock is held and writes a checkpoint."""

    def __init__(self, fail: bool = False):
        self.calls: list[bool] = []
        self.fail = fail

    def train(self, config, faces, split, run_dir, *, resume=False):
        self.calls.append(resume)
        with pytest.raises(RunError, match=f"in use by pid {os.getpid()}"):
            with lock_run(run_dir):
                pass
        if self.fail:
            raise KeyboardInterrupt  # e.g. Ctrl-C before the first checkpoint
        append_metrics(run_dir, {"epoch": 0, "loss": 1.0})
        (Path(run_dir) / "checkpoints" / "last.pt").parent.mkdir(exist_ok=True)
        (Path(run_dir) / "checkpoints" / "last.pt").write_bytes(b"ckpt")


@pytest.fixture()
def fake(monkeypatch):
    backend = _FakeBackend()
    monkeypatch.setattr(api, "get_backend", lambda name: backend)
    return backend


# ---------------------------------------------------------------- shared.io


def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600


def test_config_does_not_import_runs():
    code = "import sys, shared.config; sys.exit('shared.runs' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# ---------------------------------------------------------------- the lock


def test_lock_names_its_holder_in_another_process(tmp_path):
    code = ("import sys; from shared.runs import lock_run\n"
            f"with lock_run({str(tmp_path)!r}):\n    print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=f"is in use by pid {proc.pid} on host .+ since "):
            with lock_run(tmp_path):
                pass
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    with lock_run(tmp_path):  # released when the holder exited
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_stale_lock_file_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "since": "yesterday"}))
    with lock_run(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_leftovers_of_killed_writes_are_removed(tmp_path):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    for name in (".config.json.k3j.tmp", "checkpoints/.last.pt.a1b2.tmp", "notes.tmp", "checkpoints/.keep"):
        (tmp_path / name).write_text("x")
    (ck / ".best.tmp-deadbeef").mkdir()
    (ck / ".best.tmp-deadbeef" / "ckpt.index").write_text("x")
    with lock_run(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoints", "notes.tmp"]
    assert [p.name for p in ck.iterdir()] == [".keep"]


def test_interrupted_tf_swap_is_restored_not_deleted(tmp_path):
    ck = tmp_path / "checkpoints"
    for name in (".last.old-aaaa", "best", ".best.old-bbbb"):
        (ck / name).mkdir(parents=True)
        (ck / name / "checkpoint").write_text(name)
    assert has_any_checkpoint(tmp_path)
    remove_leftovers(tmp_path)
    # 'last' was only in its old copy: moved back into place; 'best' is complete: its old copy goes
    assert sorted(p.name for p in ck.iterdir()) == ["best", "last"]
    assert (ck / "last" / "checkpoint").read_text() == ".last.old-aaaa"


def test_has_any_checkpoint(tmp_path):
    assert not has_any_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / "last").mkdir(parents=True)
    assert not has_any_checkpoint(tmp_path)            # a TF folder without its completion marker
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"x")
    assert has_any_checkpoint(tmp_path) and not has_any_checkpoint(tmp_path, ("last",))


# ---------------------------------------------------------------- metrics and config files


def test_torn_last_metrics_line_is_ignored_and_repaired(tmp_path, caplog):
    append_metrics(tmp_path, {"epoch": 0, "loss": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 1, "lo')                  # a crash in the middle of an append
    with caplog.at_level(logging.WARNING, logger="shared.runs"):
        assert read_metrics(tmp_path) == [{"epoch": 0, "loss": 1.0}]
    assert "line 2 is incomplete" in caplog.text
    append_metrics(tmp_path, {"epoch": 1, "loss": 0.5})  # drops the torn tail first
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 1]
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2')
    truncate_metrics(tmp_path, 5)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2 and len(read_metrics(tmp_path)) == 2


def test_bad_metrics_line_in_the_middle_names_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(RunError, match=r"metrics.jsonl: line 2 is not a metrics record"):
        read_metrics(tmp_path)


@pytest.mark.parametrize("text, words", [("[1, 2]", "holds a JSON list"), ("{not json", "not a readable"),
                                         ('{"model": 3}', "`model` must be a JSON object")])
def test_foreign_config_json_is_one_error_naming_the_file(tmp_path, text, words):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(FaceVAEError, match=words) as info:
        load_run_config(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)


def test_invalid_value_in_our_config_is_a_config_error(tmp_path):
    data = _config().to_dict()
    data["model"]["latent_dim"] = 0
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="latent_dim"):
        load_run_config(tmp_path)


# ---------------------------------------------------------------- api.train rules (backend faked)


def test_new_run_into_a_folder_that_is_not_a_run_touches_nothing(tmp_path, fake):
    folder = _user_folder(tmp_path)
    before = _snapshot(folder)
    for resume in (False, True):
        with pytest.raises(RunError, match="not a run folder|is not a facevae run folder"):
            api.train(_config(), folder, resume=resume)
    assert _snapshot(folder) == before
    (folder / "config.json").write_text("[1, 2]")       # a config.json that is not ours
    before = _snapshot(folder)
    with pytest.raises(RunError, match="holds a JSON list"):
        api.train(_config(), folder)
    assert _snapshot(folder) == before and fake.calls == []


def test_run_with_a_checkpoint_is_refused_without_resume(tmp_path, fake):
    out = api.train(_config(), tmp_path / "run")
    before = _snapshot(out)
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        api.train(_config(), out)
    assert _snapshot(out) == before
    api.train(None, out, resume=True)
    assert fake.calls == [False, True]


def test_run_that_failed_before_its_first_checkpoint_starts_again(tmp_path, monkeypatch):
    out = tmp_path / "run"
    failing = _FakeBackend(fail=True)
    monkeypatch.setattr(api, "get_backend", lambda name: failing)
    with pytest.raises(KeyboardInterrupt):
        api.train(_config(seed=1), out)
    append_metrics(out, {"epoch": 0, "stale": True})
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / ".last.pt.x.tmp").write_bytes(b"half")
    with pytest.raises(RunError, match="has no checkpoint yet.*without --resume"):
        api.train(None, out, resume=True)
    ok = _FakeBackend()
    monkeypatch.setattr(api, "get_backend", lambda name: ok)
    api.train(_config(seed=2), out)
    assert ok.calls == [False] and load_run_config(out).train.seed == 2
    assert read_metrics(out) == [{"epoch": 0, "loss": 1.0}]        # the stale line went with the failed try
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]


def test_best_without_last_is_kept_and_cannot_be_resumed(tmp_path, fake):
    """A converted run holds only 'best': neither a new train nor a resume may touch it."""
    out = api.train(_config(), tmp_path / "run")
    (out / "checkpoints" / "last.pt").rename(out / "checkpoints" / "best.pt")
    before = _snapshot(out)
    with pytest.raises(RunError, match="no 'last' one.*converted run.*not resumed"):
        api.train(None, out, resume=True)
    with pytest.raises(RunError, match="already holds a run"):
        api.train(_config(), out)
    assert _snapshot(out) == before and fake.calls == [False]


def test_train_into_a_locked_folder_is_refused(tmp_path, fake):
    out = tmp_path / "run"
    with lock_run(out):
        with pytest.raises(RunError, match=f"in use by pid {os.getpid()}"):
            api.train(_config(), out)
    assert fake.calls == [] and not (out / "config.json").exists()


# ---------------------------------------------------------------- checksummed torch checkpoints


def _torch_ckpt(tmp_path):
    torch = pytest.importorskip("torch")
    from facevae.checkpoint import checkpoint_path, save_checkpoint

    state = {"model": {"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(3)}, "epoch": 4, "name": "x"}
    path = save_checkpoint(checkpoint_path(tmp_path, "last"), state)
    return torch, path, state


def test_torch_checkpoint_round_trip(tmp_path):
    torch, path, state = _torch_ckpt(tmp_path)
    from facevae.checkpoint import has_checkpoint, load_checkpoint

    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert has_checkpoint(tmp_path, "last") and not has_checkpoint(tmp_path, "best")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_torch_checkpoint_any_flipped_byte_is_refused(tmp_path):
    _, path, _ = _torch_ckpt(tmp_path)
    from facevae.checkpoint import load_checkpoint

    good = path.read_bytes()
    n = len(good)
    for offset in sorted({0, 5, 21, 30, 85, 200, n // 3, n // 2, n - 100, n - 22, n - 1}):
        data = bytearray(good)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(RunError, match="checkpoint is damaged|refused to load"):
            load_checkpoint(path)
    for size in (0, 10, 30, n // 2, n - 1):
        path.write_bytes(good[:size])
        with pytest.raises(RunError, match="damaged"):
            load_checkpoint(path)


def test_torch_checkpoint_of_the_older_format_still_loads(tmp_path):
    torch = pytest.importorskip("torch")
    from facevae.checkpoint import load_checkpoint

    torch.save({"epoch": 3}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt") == {"epoch": 3}


# ---------------------------------------------------------------- through the CLI (a tiny torch run)

TRAIN = ["train", "--backend", "torch", "--model", "vae", "--data", "synthetic:96", "--image-size", "32",
         "--latent-dim", "4", "--epochs", "1", "--batch-size", "32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("torch")
    from shared.cli import main

    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def _copy(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _cli(argv, capsys) -> tuple[int, str]:
    from shared.cli import main

    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_cli_second_trainer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    with lock_run(out):
        rc, err = _cli(TRAIN + ["--out", out], capsys)
    assert rc == 2 and f"in use by pid {os.getpid()}" in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_cli_train_into_a_user_folder_changes_nothing(tmp_path, capsys):
    folder = _user_folder(tmp_path)
    before = _snapshot(folder)
    rc, err = _cli(TRAIN + ["--out", folder], capsys)
    assert rc == 2 and "is not a facevae run folder" in err and "nothing in it was changed" in err
    assert _snapshot(folder) == before


def test_cli_failed_run_resume_advises_and_train_starts_it_again(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    shutil.rmtree(out / "checkpoints")        # as if it had stopped before its first checkpoint
    rc, err = _cli(TRAIN + ["--out", out, "--resume"], capsys)
    assert rc == 2 and "has no checkpoint yet" in err and "without --resume" in err
    rc, _ = _cli(TRAIN + ["--out", out], capsys)
    assert rc == 0 and has_any_checkpoint(out) and [r["epoch"] for r in read_metrics(out)] == [0]


def test_cli_damaged_checkpoint_is_refused_on_evaluate(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    for which in ("best", "last"):
        path = out / "checkpoints" / f"{which}.pt"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))
    rc, err = _cli(["evaluate", out, "--iwae-k", "2"], capsys)
    assert rc == 2 and "checkpoint is damaged (checksum mismatch)" in err
    assert not (out / "eval.json").exists()


def test_cli_resume_drops_a_torn_metrics_line_and_leftovers(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 1, "train_lo')
    for name in (".config.json.abc.tmp", "checkpoints/.last.pt.x1y2.tmp"):
        (out / name).write_bytes(b"half-written")
    rc, _ = _cli(TRAIN + ["--out", out, "--resume"], capsys)
    assert rc == 0
    assert not list(out.glob(".*.tmp")) and not list((out / "checkpoints").glob(".*"))
    assert [r["epoch"] for r in read_metrics(out)] == [0]
    assert (out / "metrics.jsonl").read_text().endswith("}\n")
