"""Resume of a run whose checkpoint no longer fits its config.json: one line and exit 2 on both backends."""
from __future__ import annotations

import json

import pytest

from shared.cli import main

TRAIN = ["train", "--model", "vae", "--data", "synthetic:96", "--image-size", "32", "--latent-dim", "4",
         "--epochs", "1", "--batch-size", "32"]


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_checkpoint_whose_tensors_do_not_fit_is_refused_on_resume(tmp_path, capsys, backend):
    pytest.importorskip("torch" if backend == "torch" else "tensorflow")
    run = tmp_path / "run"
    assert main(TRAIN + ["--backend", backend, "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    config["model"]["latent_dim"] = 6
    config["train"]["epochs"] = 2
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # nothing of the refused resume


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_a_checkpoint_without_training_state_says_it_cannot_be_resumed(tmp_path, capsys, backend):
    """Weights only (a converted run's checkpoint, or an older format) named 'last': refused with the reason."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from shared import api

    src = tmp_path / "src"
    other = "tf" if backend == "torch" else "torch"
    assert main(TRAIN + ["--backend", other, "--out", str(src)]) == 0
    run = api.convert(src, to=backend, out=tmp_path / "run")
    best = run / "checkpoints" / ("best.pt" if backend == "torch" else "best")
    best.rename(best.with_name(best.name.replace("best", "last")))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no training state" in err and "not resumed" in err and "Traceback" not in err
