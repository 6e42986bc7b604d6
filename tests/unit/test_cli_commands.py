"""The model commands end to end through ``shared.cli.main`` on a tiny torch VAE: exit codes and outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from shared.cli import main  # noqa: E402

TRAIN = ["train", "--backend", "torch", "--model", "vae", "--data", "synthetic:96", "--image-size", "32",
         "--latent-dim", "4", "--epochs", "1", "--batch-size", "32"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "vae"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def test_train_writes_a_complete_run_folder(run):
    for name in ("config.json", "split.json", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["model"]["latent_dim"] == 4


def test_evaluate_interpolate_denoise_inpaint(run, capsys):
    assert main(["evaluate", str(run), "--iwae-k", "2"]) == 0
    assert json.loads((run / "eval.json").read_text())["n_faces"] > 0
    assert f"wrote: {run / 'eval.json'}" in capsys.readouterr().out
    assert main(["interpolate", str(run), "--grid", "3", "--slerp"]) == 0
    assert (run / "figures" / "interpolation_slerp_sample.png").is_file()
    assert f"wrote: {run / 'figures' / 'interpolation_slerp_sample.png'}" in capsys.readouterr().out
    assert main(["denoise", str(run), "--sigmas", "0.1,0.3", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "median" in out and "psnr" in out  # the table, not only where it was written
    assert main(["inpaint", str(run), "--mask", "random", "--method", "optimize", "--n", "4", "--steps", "3"]) == 0
    written = [line[len("wrote: "):] for line in capsys.readouterr().out.splitlines() if line.startswith("wrote: ")]
    assert written and all(Path(p).is_file() for p in written)


def test_figure_format_and_dpi_reach_the_files(run, capsys):
    assert main(["interpolate", str(run), "--grid", "2", "--format", "pdf", "--dpi", "50"]) == 0
    pdfs = [line.split(" ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.endswith(".pdf")]
    assert pdfs and all(Path(p).read_bytes().startswith(b"%PDF") for p in pdfs)


def test_existing_run_is_not_overwritten(run, capsys):
    before = (run / "checkpoints" / "best.pt").read_bytes()
    assert main(TRAIN + ["--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run / "checkpoints" / "best.pt").read_bytes() == before


@pytest.mark.parametrize("argv, words", [
    (["evaluate", "/nonexistent/run"], "not a run folder"),
    (["train", "--data", "/nonexistent.csv", "--out", "{tmp}/x"], "/nonexistent.csv"),
    (["train", "--latent-dim", "0", "--out", "{tmp}/y"], "latent_dim"),
    (["train", "--backend", "tf", "--model", "cnn", "--out", "{tmp}/z"], "cnn"),
])
def test_user_errors_exit_2_with_one_line(argv, words, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_classifier_must_be_a_cnn_run(run, capsys):
    assert main(["evaluate", str(run), "--classifier", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--classifier needs a cnn run" in err and "Traceback" not in err


def test_denoise_refine_steps_adds_vae_refined(run, capsys):
    assert main(["denoise", str(run), "--sigmas", "0.3", "--n", "4", "--refine-steps", "3"]) == 0
    assert "vae_refined" in capsys.readouterr().out  # the printed table has the refined row
    saved = json.loads((run / "denoise.json").read_text())
    assert saved["refine_steps"] == 3 and [r["method"] for r in saved["results"]][-2:] == ["vae", "vae_refined"]
    assert main(["denoise", str(run), "--refine-steps", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--refine-steps" in err and "0-10000" in err and "Traceback" not in err


def test_denoise_blend_pca_adds_a_tuned_vae_pca_row(run, capsys):
    assert main(["denoise", str(run), "--sigmas", "0.2,0.4", "--n", "6", "--blend-pca"]) == 0
    assert "vae+pca" in capsys.readouterr().out
    saved = json.loads((run / "denoise.json").read_text())
    blended = [r for r in saved["results"] if r["method"] == "vae+pca"]
    assert [r["sigma"] for r in blended] == [0.2, 0.4] and saved["blend"]["val_faces"] > 0
    by = {(r["sigma"], r["method"]): r for r in saved["results"]}
    for r in blended:
        assert r["d"] >= 1 and 0.0 <= r["alpha"] <= 1.0 and r["val_psnr"] > 0
        assert r["psnr"] > by[r["sigma"], "noisy"]["psnr"] + 3  # a denoiser, tuned on other faces
    assert "vae+pca" in (run / "denoise.md").read_text()


def test_blend_pca_must_be_a_bool(run):
    from shared.errors import ConfigError
    from shared.studio import denoise

    with pytest.raises(ConfigError, match="blend_pca"):
        denoise(run, sigmas=(0.3,), n=2, blend_pca="no", save=False)
