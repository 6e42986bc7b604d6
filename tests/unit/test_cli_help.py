"""The CLI explains itself: ``python -m facevae``, ``--version``, help with defaults and examples, every
config field as a flag, ``--config`` with overrides, a short ``evaluate`` summary, resume that extends a
run, and a missing framework as one line."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import json
import os
import shlex
import subprocess
import sys

import pytest

from shared.cli import build_parser, main
from shared.cli_options import CONFIG_FLAGS, NOT_FLAGS, SECTIONS, config_from_args
from shared.cli_text import EXAMPLES
from shared.config import RunConfig
from tests.conftest import REPO

COMMANDS = [["data"], ["data", "inspect"], ["data", "convert"], ["train"], ["sweep"], ["evaluate"],
            ["interpolate"], ["denoise"], ["inpaint"], ["generate"], ["convert"], ["demo"]]
TINY = ["--data", "synthetic:240", "--image-size", "32", "--channels", "8,16", "--hidden-dims", "32",
        "--latent-dim", "4", "--epochs", "1", "--batch-size", "32", "--device", "cpu"]


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "FACEVAE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _python(code: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)


# --------------------------------------------------------------------------- entry points


def test_python_m_facevae_help_exits_0_and_imports_no_framework(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "facevae", "--help"], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: facevae" in proc.stdout and "Examples:" in proc.stdout
    code = ("import runpy, sys\nsys.argv = ['facevae', 'train', '--help']\n"
            "try:\n    runpy.run_module('facevae', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras'))\n"
            "print('RESULT', code, heavy)")
    proc = _python(code, tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "RESULT 0 []", proc.stdout[-500:] + proc.stderr[-500:]


def test_no_arguments_prints_the_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: facevae" in out and "train" in out and "Examples:" in out


def test_version_names_facevae_and_each_backend(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "facevae", "--version"], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"facevae {importlib.metadata.version('facevae')} ")
    for backend, dist in (("torch", "torch"), ("tf", "tensorflow")):
        line = next(x for x in lines if x.startswith(f"backend {backend}:"))
        try:
            assert f"{dist} {importlib.metadata.version(dist)}" in line
        except importlib.metadata.PackageNotFoundError:
            assert f"facevae[{backend}]" in line


def test_python_m_facevae_tf_defaults_new_runs_to_tf_without_overruling_flags(tmp_path):
    parse = build_parser().parse_args
    assert config_from_args(parse(["train", "--out", "x"]), default_backend="tf").backend == "tf"
    flagged = parse(["train", "--out", "x", "--backend", "torch"])
    assert config_from_args(flagged, default_backend="tf").backend == "torch"
    RunConfig(backend="torch").save(tmp_path / "config.json")
    assert config_from_args(parse(["train", "--out", "x", "--config", str(tmp_path / "config.json")]),
                            default_backend="tf").backend == "torch"
    proc = subprocess.run([sys.executable, "-m", "facevae_tf", "train", "--help"], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--backend" in proc.stdout


# --------------------------------------------------------------------------- help text


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_shows_defaults_and_examples(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "Examples:" in out and "usage: facevae" in out


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != ["data"]], ids=" ".join)
def test_every_flag_has_a_help_string(command):
    parser = build_parser()
    for word in command:  # walk down to the command's own parser
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = sub.choices[word]
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{' '.join(command)} {action.option_strings or action.dest}"


def _example_argvs() -> list[list[str]]:
    argvs = []
    for lines in EXAMPLES.values():
        for line in lines:
            for part in line.split("  #")[0].split("&&"):
                words = shlex.split(part.split(">")[0])
                if words[:3] == ["python", "-m", "facevae_tf"]:
                    words = ["facevae", *words[3:]]
                assert words[0] == "facevae", line
                argvs.append(words[1:])
    return argvs


@pytest.mark.parametrize("argv", _example_argvs(), ids=" ".join)
def test_every_example_parses_and_has_no_choice_list(argv):
    assert not any("|" in word for word in argv)
    if "--help" in argv:
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 0
    else:
        build_parser().parse_args(argv)  # argparse exits on a flag or value it refuses


# --------------------------------------------------------------------------- every config field is a flag


def test_every_config_field_has_a_flag_or_a_reason():
    parser = build_parser()
    train = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    by_field = {f.field: f for f in CONFIG_FLAGS}
    for cls in (RunConfig, *SECTIONS.values()):
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS:
                continue
            if f.name in NOT_FLAGS:
                assert len(NOT_FLAGS[f.name]) > 10, f"{f.name}: say why it is not a flag"
                continue
            assert f.name in by_field and by_field[f.name].flag in flags, f"{cls.__name__}.{f.name} has no flag"
            assert not by_field[f.name].help.startswith(f"{by_field[f.name].section}."), f"{f.name}: write its help"


# a non-default value per field, to check each flag reaches its field
VALUES = {"backend": "tf", "family": "cvae", "preset": "seed", "image_size": 64, "latent_dim": 7, "beta": 0.5,
          "channels": (8, 16), "hidden_dims": (32, 16), "likelihood": "gaussian", "sigma_mode": "learned",
          "sigma": 0.25, "kl_warmup_epochs": 3, "free_bits": 0.1, "task": "age", "flow_steps": 2, "flow_hidden": 16,
          "context_dim": 8, "label_loss": 2.5, "epochs": 2, "batch_size": 16, "lr": 0.003, "weight_decay": 0.01, "optimizer": "sgd",
          "schedule": "cosine", "early_stopping": 2, "min_steps_per_epoch": 4, "grad_clip": 1.5, "input_noise": 0.3,
          "label_smoothing": 0.2, "augment": True, "seed": 9, "device": "cpu", "compile": True, "tensorboard": True,
          "precision": "bf16", "devices": 2,
          "spec": "synthetic:300", "val_fraction": 0.2, "test_fraction": 0.15, "split_seed": 4}


def _cli_value(value) -> list[str]:
    if isinstance(value, tuple):
        return [",".join(map(str, value))]
    return [] if isinstance(value, bool) else [str(value)]


@pytest.mark.parametrize("with_file", [False, True], ids=["flags", "config+flags"])
def test_each_flag_sets_its_field(with_file, tmp_path):
    assert {f.field for f in CONFIG_FLAGS} == set(VALUES), "add the new field to VALUES"
    argv = ["train", "--out", "x"]
    for f in CONFIG_FLAGS:
        argv += [f.flag, *_cli_value(VALUES[f.field])]
    if with_file:
        RunConfig().save(tmp_path / "config.json")
        argv += ["--config", str(tmp_path)]  # a run folder works too
    config = config_from_args(build_parser().parse_args(argv))
    for f in CONFIG_FLAGS:
        section = config if f.section == "run" else getattr(config, f.section)
        assert getattr(section, f.field) == VALUES[f.field], f.flag
    assert config.data.image_size == 64


def test_bad_values_are_refused_by_the_configs_own_checks(tmp_path, capsys):
    for flag, value, words in [("--optimizer", "rmsprop", "invalid choice"), ("--grad-clip", "-1", "grad_clip"),
                               ("--val-fraction", "0.9", "val_fraction"), ("--channels", "8,0", "channels"),
                               ("--label-smoothing", "1", "label_smoothing")]:
        assert main(["train", "--out", str(tmp_path / "r"), flag, value]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- runs: --config, evaluate, resume


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("help") / "run"
    assert main(["train", "--backend", "torch", *TINY, "--lr", "0.003", "--augment", "--quiet", "--out", str(out)]) == 0
    return out


def test_config_file_with_overrides(run, tmp_path):
    new = tmp_path / "new"
    assert main(["train", "--config", str(run / "config.json"), "--epochs", "1", "--seed", "5", "--no-augment",
                 "--quiet", "--out", str(new)]) == 0
    old, got = json.loads((run / "config.json").read_text()), json.loads((new / "config.json").read_text())
    assert got["train"]["seed"] == 5 and got["train"]["augment"] is False
    assert got["train"]["lr"] == 0.003 and got["model"] == old["model"]  # flags left unset keep the file's values
    for section in ("train", "data"):
        changed = {k for k in old[section] if old[section][k] != got[section][k]}
        assert changed <= {"seed", "augment", "path", "fingerprint"}, changed


def test_evaluate_prints_a_short_summary_and_json_on_request(run, capsys):
    assert main(["evaluate", str(run), "--iwae-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    full = json.loads((run / "eval.json").read_text())
    assert len(lines) <= 30 and len(json.dumps(full, indent=2).splitlines()) > len(lines)
    assert any(line.split()[:1] == ["neg_elbo"] for line in lines)
    assert any(line.split()[:1] == ["psnr"] and float(line.split()[1]) == pytest.approx(full["psnr"], rel=1e-3)
               for line in lines)
    assert lines[-1].startswith(f"wrote: {run / 'eval.json'}")
    assert main(["evaluate", str(run), "--iwae-k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["psnr"] == pytest.approx(full["psnr"]) and "by_group" in printed


def test_resume_with_a_changed_model_flag_is_one_line_and_changes_nothing(run, capsys):
    before = (run / "metrics.jsonl").read_text()
    for extra in (["--latent-dim", "8"], ["--backend", "tf"], ["--image-size", "64"],
                  ["--config", str(run / "config.json")]):
        assert main(["train", "--out", str(run), "--resume", *extra]) == 2
        err = capsys.readouterr().err
        named = extra[0] if extra[0] == "--config" else " ".join(extra)  # the flag and the value refused
        assert len(err.strip().splitlines()) == 1 and named in err and "--resume" in err, err
    assert (run / "metrics.jsonl").read_text() == before


def test_resume_with_more_epochs_extends_the_run(run, tmp_path, capsys):
    from shared import api

    if "updates" not in inspect.signature(api.train).parameters:
        pytest.skip("shared.api.train has no `updates=` yet (H2a): resume cannot change training fields")
    import shutil

    copy = shutil.copytree(run, tmp_path / "run")
    assert main(["train", "--out", str(copy), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len((copy / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((copy / "config.json").read_text())["train"]["epochs"] == 2
    # the command that started the run, with --resume and a larger --epochs (the last one wins)
    started = ["train", "--backend", "torch", *TINY, "--lr", "0.003", "--augment", "--quiet", "--out", str(copy)]
    assert main([*started, "--resume", "--epochs", "3"]) == 0, capsys.readouterr().err
    assert len((copy / "metrics.jsonl").read_text().splitlines()) == 3


# --------------------------------------------------------------------------- a missing framework is one line

_BLOCKED = """
import contextlib, io, json, sys
sys.modules[sys.argv[1]] = None  # `import tensorflow` now fails as if it were not installed
from shared.cli import main
results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def _tf_run_folder(tmp_path):
    """A run folder whose config names the tf backend (no weights: every route fails before loading them)."""
    from shared.api import build_config
    from shared.data import load
    from shared.data.splits import make_split

    folder = tmp_path / "tf_run"
    folder.mkdir()
    build_config(backend="tf", data="synthetic:60", image_size=32).save(folder / "config.json")
    make_split(load("synthetic:60", image_size=32)).save(folder / "split.json")
    return str(folder)


def test_missing_tensorflow_is_one_line_naming_the_extra_on_every_route(run, tmp_path):
    tf_run, out = _tf_run_folder(tmp_path), str(tmp_path / "out")
    argvs = [["train", "--backend", "tf", *TINY, "--out", out], ["sweep", "--backend", "tf", *TINY[:4], "--out", out],
             ["evaluate", tf_run], ["interpolate", tf_run], ["denoise", tf_run], ["inpaint", tf_run],
             ["generate", tf_run, "--grid"], ["convert", str(run), "--to", "tf", out], ["convert", tf_run, out]]
    proc = _python(_BLOCKED, tmp_path, "tensorflow", json.dumps(argvs))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for argv, (code, err) in zip(argvs, json.loads(proc.stdout.strip().splitlines()[-1])):
        errors = [line for line in err.splitlines() if "error" in line]
        assert code == 2 and len(errors) == 1, (argv, err)
        assert "facevae[tf]" in errors[0] and "Traceback" not in err, (argv, err)
    assert not os.path.exists(out)


def test_missing_torch_is_one_line_naming_the_extra(run, tmp_path):
    out = str(tmp_path / "out")
    argvs = [["train", *TINY, "--out", out], ["evaluate", str(run)], ["denoise", str(run)]]
    proc = _python(_BLOCKED, tmp_path, "torch", json.dumps(argvs))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for argv, (code, err) in zip(argvs, json.loads(proc.stdout.strip().splitlines()[-1])):
        assert code == 2 and "facevae[torch]" in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not os.path.exists(out)
