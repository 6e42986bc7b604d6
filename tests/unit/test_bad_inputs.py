"""Every bad input is one ``facevae: error: ...`` line naming the culprit and exit code 2, never a traceback."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
from PIL import Image

from shared.cli import main
from shared.data import load, load_with_report
from shared.data.image_folder import to_square_gray
from shared.errors import ConfigError

HEADER = "age,ethnicity,gender,img_name,pixels"
PIXELS = [" ".join(str((7 * i + 11 * k) % 256) for k in range(16)) for i in range(4)]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))


def fails(argv, capsys, *words) -> str:
    """Run the CLI, expect exit 2 and one error line holding every word; return that line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("facevae: error: "), err
    for w in words:
        assert str(w).lower() in errors[0].lower(), (w, errors[0])
    return errors[0]


def _image(folder, name: str, value: int = 100, size: int = 20) -> None:
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(folder / name, format="PNG")


def _good_folder(tmp_path):
    d = tmp_path / "utk"
    for i in range(3):
        _image(d, f"{20 + i}_0_0_2017010100000000{i}.jpg.chip.jpg", value=50 * i)
    return d


# --------------------------------------------------------------------------- 1. --out and OS errors

TRAIN = ["train", "--data", "synthetic:16", "--image-size", "32", "--epochs", "1"]


def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "somefile"
    f.write_text("x")
    fails(TRAIN + ["--out", f], capsys, f, "not a folder")


def test_out_under_a_file(tmp_path, capsys):
    f = tmp_path / "somefile"
    f.write_text("x")
    fails(TRAIN + ["--out", f / "run"], capsys, f, "not a folder")
    fails(["sweep", "--out", f / "sweep"], capsys, f)


def test_full_disk_is_one_line_with_the_path(tmp_path, capsys, monkeypatch):
    import shared.api

    target = tmp_path / "run" / "config.json"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(shared.api, "train", full)
    fails(TRAIN + ["--out", tmp_path / "run"], capsys, target, "No space left on device")


# --------------------------------------------------------------------------- 2. odd folder entries

def test_symlink_loop_dangling_link_and_non_utf8_name_are_skipped(tmp_path, capsys):
    d = _good_folder(tmp_path)
    os.symlink(d / "30_0_0_1.jpg", d / "30_0_0_1.jpg")                       # points at itself
    os.symlink(d / "31_0_0_2.jpg", d / "32_0_0_3.jpg")                       # a two-link loop
    os.symlink(d / "32_0_0_3.jpg", d / "31_0_0_2.jpg")
    os.symlink(tmp_path / "gone.jpg", d / "33_0_0_4.jpg")                    # dangling
    raw = os.fsencode(d)
    with open(os.path.join(raw, b"\xff_0_0_x.jpg.chip.jpg"), "wb") as fh:
        fh.write(b"x")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(os.path.join(raw, b"34_0_0_5\xff.jpg.chip.jpg"), format="PNG")

    assert main(["data", "inspect", str(d)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Logging error" not in err
    report = json.loads(out)
    assert report["n"] == 3
    why = {e["item"]: e["message"] for e in report["skipped_items"]}
    assert "symbolic link loop" in why["30_0_0_1.jpg"] and "symbolic link loop" in why["31_0_0_2.jpg"]
    assert "dangling symbolic link" in why["33_0_0_4.jpg"]
    assert "not valid UTF-8" in why[r"\xff_0_0_x.jpg.chip.jpg"]
    assert "not valid UTF-8" in why[r"34_0_0_5\xff.jpg.chip.jpg"]
    assert all(item.isprintable() for item in why)


def test_folder_of_only_bad_entries_is_one_line(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    os.symlink(d / "30_0_0_1.jpg", d / "30_0_0_1.jpg")
    fails(["data", "inspect", d], capsys, d, "no valid faces")


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fails(["data", "inspect", tmp_path / "empty"], capsys, tmp_path / "empty", "empty folder")


# --------------------------------------------------------------------------- 3. image modes

GRADIENT = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # 64x64, 0..252


def _palette(g):
    im = Image.frombytes("P", g.shape[::-1], g.tobytes())
    im.putpalette([c for i in range(256) for c in (255 - i, 255 - i, 255 - i)][::-1])  # gray ramp, i -> i
    return im


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    d8, d16 = tmp_path / "eight", tmp_path / "sixteen"
    d8.mkdir(), d16.mkdir()
    name = "25_0_0_20170101000000001.jpg.chip.jpg"
    Image.fromarray(GRADIENT).save(d8 / name, format="PNG")
    Image.fromarray(GRADIENT.astype(np.uint16) * 257).save(d16 / name, format="PNG")
    assert Image.open(d16 / name).mode == "I;16"
    a, b = load(str(d8), image_size=48).images, load(str(d16), image_size=48).images
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert b.max() > 200 and b.min() < 10  # a gradient, not an all-white face


@pytest.mark.parametrize("make", [
    lambda g: Image.fromarray(g.astype(np.uint16) * 257),                    # I;16
    lambda g: Image.fromarray(g.astype(np.int32) * 257, mode=None),          # I, 16-bit values
    lambda g: Image.fromarray(g.astype(np.int32)),                           # I, 8-bit values
    lambda g: Image.fromarray(g.astype(np.float32) / 255.0),                 # F in [0, 1]
    lambda g: Image.fromarray(g.astype(np.float32)),                         # F in [0, 255]
    lambda g: Image.fromarray(g).convert("RGBA"),
    lambda g: Image.fromarray(g).convert("LA"),
    lambda g: _palette(g),
], ids=["I;16", "I-16bit", "I-8bit", "F-unit", "F-255", "RGBA", "LA", "P"])
def test_every_mode_becomes_the_same_8_bit_gray(make):
    want = to_square_gray(Image.fromarray(GRADIENT), 32).astype(int)
    got = to_square_gray(make(GRADIENT), 32).astype(int)
    assert np.abs(got - want).max() <= 1


def test_dark_16_bit_image_stays_dark():
    dark = Image.fromarray(np.full((8, 8), 200, np.uint16))  # 200/65535 of full scale
    assert to_square_gray(dark, 8).max() <= 1


def test_one_bit_image_is_black_and_white():
    got = to_square_gray(Image.fromarray(GRADIENT).convert("1", dither=Image.Dither.NONE), 64)
    assert set(np.unique(got).tolist()) <= {0, 255}


# --------------------------------------------------------------------------- 4. duplicated columns

@pytest.mark.parametrize("header, column", [
    ("age,ethnicity,gender,img_name,pixels,pixels", "pixels"),
    ("age,age,ethnicity,gender,img_name,pixels", "age"),
    ("age,ethnicity,gender,img_name,pixels,pixels.1", "pixels.1"),
])
def test_duplicated_column_is_named(tmp_path, capsys, header, column):
    extra = header.count(",") - 4
    rows = [f"{'25,' * (1 + extra if column == 'age' else 1)}1,0,x{i}.jpg,{PIXELS[i]}" +
            (f",{PIXELS[i]}" if column != "age" else "") for i in range(4)]
    path = tmp_path / "dup.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    fails(["data", "inspect", path], capsys, path, f"'{column}'", "duplicate")


# --------------------------------------------------------------------------- 5. whitespace in pixels

@pytest.mark.parametrize("sep, pad", [("\t", ""), ("  ", ""), (" ", "  "), ("\t ", "\t"), (" \n ", " ")],
                         ids=["tabs", "double-spaces", "padded", "mixed", "newlines"])
def test_any_whitespace_separates_pixels(tmp_path, sep, pad):
    def write(name, sep, pad):
        rows = [f'25,1,0,x{i}.jpg,"{pad}{sep.join(p.split())}{pad}"' for i, p in enumerate(PIXELS)]
        (tmp_path / name).write_text("\n".join([HEADER, *rows]) + "\n")
        return str(tmp_path / name)

    plain, report = load_with_report(write("plain.csv", " ", ""), image_size=4)
    odd, odd_report = load_with_report(write("odd.csv", sep, pad), image_size=4)
    assert odd_report["skipped"] == [] and len(odd) == 4
    np.testing.assert_array_equal(odd.images, plain.images)


# --------------------------------------------------------------------------- 6. synthetic:N

@pytest.mark.parametrize("spec", ["synthetic:²", "synthetic:-5", "synthetic:abc", "synthetic:0", "synthetic:",
                                  "synthetic:10000000", "synthetic: 5", "synthetic:" + "9" * 5000])
def test_bad_synthetic_count(spec, capsys):
    fails(["data", "inspect", spec], capsys, spec, "1-200000")


def test_synthetic_count_times_size_is_bounded(capsys):
    fails(["data", "inspect", "synthetic:200000", "--image-size", "512"], capsys, "synthetic:200000", "512x512")


# --------------------------------------------------------------------------- 7. list flags

@pytest.mark.parametrize("flag, value", [("--latent-dims", ""), ("--betas", ""), ("--latent-dims", "4,,8"),
                                         ("--betas", " , "), ("--latent-dims", "1e3"), ("--betas", "x")])
def test_sweep_lists(tmp_path, capsys, flag, value):
    fails(["sweep", "--out", tmp_path / "s", flag, value], capsys, flag)


@pytest.mark.parametrize("flag, value, field", [("--latent-dims", "4,100000", "latent_dim"),
                                                ("--betas", "1,nan", "beta")])
def test_every_sweep_value_is_checked_before_training(tmp_path, capsys, flag, value, field):
    fails(["sweep", "--out", tmp_path / "s", "--data", "synthetic:16", "--image-size", "32", flag, value],
          capsys, field)
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- 8. studio and evaluate bounds

@pytest.mark.parametrize("argv, words", [
    (["interpolate", "RUN", "--grid", "100000"], ["grid", "2, 64", "100000"]),
    (["interpolate", "RUN", "--grid", "1"], ["grid", "2, 64"]),
    (["inpaint", "RUN", "--steps", "-1"], ["steps", "-1"]),
    (["inpaint", "RUN", "--iterations", "-1"], ["iterations", "-1"]),
    (["inpaint", "RUN", "--n", "0"], ["`n`", "0"]),
    (["inpaint", "RUN", "--n", "-3"], ["`n`", "-3"]),
    (["denoise", "RUN", "--n", "0"], ["`n`", "0"]),
    (["denoise", "RUN", "--sigmas", "-0.1"], ["sigmas", "-0.1"]),
    (["denoise", "RUN", "--sigmas", "0.1,nan"], ["sigmas", "nan"]),
    (["evaluate", "RUN", "--iwae-k", "0"], ["--iwae-k", "1-10000", "0"]),
    (["evaluate", "RUN", "--iwae-k", "100000"], ["--iwae-k", "1-10000"]),
    (["generate", "RUN", "--edit", "-1"], ["--edit", "-1"]),
    (["interpolate", "RUN", "--seed", "-1"], ["--seed", "-1"]),
    (["generate", "RUN", "--n", "0", "--gender", "0", "--ethnicity", "0", "--age", "30"], ["`n`", "0"]),
])
def test_studio_bounds_come_before_the_run_is_opened(tmp_path, capsys, argv, words):
    fails([str(tmp_path / "no-run") if a == "RUN" else a for a in argv], capsys, *words)


def test_studio_checks_hold_for_notebooks_too(tmp_path):
    from shared import studio

    with pytest.raises(ConfigError, match="grid"):
        studio.interpolate(tmp_path, grid=100000)
    with pytest.raises(ConfigError, match="steps"):
        studio.inpaint(tmp_path, steps=0)
    with pytest.raises(ConfigError, match="sigmas"):
        studio.denoise(tmp_path, sigmas=(float("nan"),))
    with pytest.raises(ConfigError, match="seed"):
        studio.denoise(tmp_path, seed=-1)


# --------------------------------------------------------------------------- 9. run config files

@pytest.mark.parametrize("text, words", [("[1, 2]", ["list"]),
                                         ('{"model": [1]}', ["`model`", "JSON object"]),
                                         ('{"model": {"channels": [32.5, 64]}}', ["channels", "32.5"]),
                                         ('{"model": {"hidden_dims": [10000000]}}', ["hidden_dims", "65536"]),
                                         ("\xff\xfe", ["UTF-8"])])
def test_bad_config_json_names_the_file(tmp_path, capsys, text, words):
    (tmp_path / "config.json").write_bytes(text.encode("latin-1"))
    fails(["evaluate", tmp_path], capsys, tmp_path / "config.json", *words)


# --------------------------------------------------------------------------- 10. the rest

@pytest.mark.parametrize("extra, words", [
    (["--image-size", "7"], ["image_size", "7"]),
    (["--epochs", "0"], ["epochs", "0"]),
    (["--batch-size", "0"], ["batch_size", "0"]),
    (["--lr", "nan"], ["lr", "nan"]),
    (["--beta", "-1"], ["beta", "-1"]),
    (["--latent-dim", "100000"], ["latent_dim", "1, 1024"]),
])
def test_bad_training_flags(tmp_path, capsys, extra, words):
    fails(TRAIN + extra + ["--out", tmp_path / "r"], capsys, *words)
    assert not (tmp_path / "r").exists()


def test_binary_and_empty_csv(tmp_path, capsys):
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 8)
    line = fails(["data", "inspect", tmp_path / "bin.csv"], capsys, tmp_path / "bin.csv", "binary")
    assert line.isprintable()
    (tmp_path / "empty.csv").write_bytes(b"")
    fails(["data", "inspect", tmp_path / "empty.csv"], capsys, tmp_path / "empty.csv", "empty file")


def test_garbage_csv_message_is_printable(tmp_path, capsys):
    (tmp_path / "junk.csv").write_bytes(b"a,b\n\x80\x81\x1b[31m,\x07\x08,x\n")
    line = fails(["data", "inspect", tmp_path / "junk.csv"], capsys, tmp_path / "junk.csv")
    assert line.isprintable()


def test_argparse_errors_are_one_line(capsys):
    fails(["train", "--epochs", "many"], capsys, "--epochs", "many")
    fails(["nonsense"], capsys, "nonsense")


def test_non_utf8_header(tmp_path, capsys):
    (tmp_path / "latin.csv").write_bytes(b"age,ethnicity,gender,img_name,pixels\xe9\n1,0,0,a.jpg,1 2 3 4\n")
    fails(["data", "inspect", tmp_path / "latin.csv"], capsys, tmp_path / "latin.csv", "not UTF-8")


def test_empty_spec_is_not_the_current_folder(capsys):
    fails(["data", "inspect", ""], capsys, "empty SPEC")


def test_convert_destination_in_the_way(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dir.csv").mkdir()
    fails(["data", "convert", "synthetic:8", tmp_path / "afile" / "x.csv"], capsys, tmp_path / "afile", "not a folder")
    fails(["data", "convert", "synthetic:8", tmp_path / "dir.csv"], capsys, tmp_path / "dir.csv", "is a folder")
