"""The explorer's HTTP API on real runs (a tiny torch vae and a tiny TF cvae) on ephemeral ports.

Every endpoint answers what the numpy protocol gives for the same request (the model is asked
directly, under the server's lock, and compared); the same seed gives the same bytes; every bad
request a client can send gets a 4xx JSON whose message names the field; static files cannot be
escaped; an unexpected exception is a logged 500 without a traceback (lifecycle: test_explorer_session.py).
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from shared.explorer import server as server_mod
from shared.explorer.validate import to_uint8

from tests.unit.explorer_helpers import (DIM, SIZE, call, from_url, image_bytes, ok_json, ok_png, own_labels,
                                        protocol, reference)


# --------------------------------------------------------------------------- GET endpoints

def test_info_describes_the_run_and_ranks_every_dimension(ex):
    from shared.studio import latent_activity

    info = ok_json(ex, "/api/info", method="GET")
    assert info["run"] == ex.session.run_dir.name and info["latent_dim"] == DIM and info["image_size"] == SIZE
    assert (info["backend"], info["family"], info["conditional"]) == \
        (("torch", "vae", False) if ex.session.model.config.backend == "torch" else ("tf", "cvae", True))
    assert info["n_test"] == len(ex.session.faces) > 0 and info["top_k"] == DIM and info["metrics"] == {}
    kl = [d["kl"] for d in info["dims"]]
    assert sorted(d["dim"] for d in info["dims"]) == list(range(DIM)) and kl == sorted(kl, reverse=True)
    with ex.session.lock:
        expected = latent_activity(ex.session.model, ex.session.faces)
    np.testing.assert_allclose([expected[d["dim"]] for d in info["dims"]], kl, rtol=1e-5, atol=1e-7)
    assert info["limits"] == {"max_grid": 12, "max_count": 16, "max_upload_bytes": 4 * 1024 * 1024}
    assert info["ethnicities"][2] == "Asian" and info["age_range"] == [0, 116] and info["slider_range"] == 3.0


def test_faces_are_the_test_split_with_labels(vae):
    faces = ok_json(vae, "/api/faces?start=2&count=3", method="GET")["faces"]
    assert [f["index"] for f in faces] == [2, 3, 4]
    for f in faces:
        np.testing.assert_array_equal(from_url(f["image"]), vae.session.faces.images[f["index"]])
        row = vae.session.faces.labels.iloc[f["index"]]
        assert f["label"] == f"{'MF'[int(row['gender'])]} {int(row['age'])}y " + \
            ["White", "Black", "Asian", "Indian", "Others"][int(row["ethnicity"])]
        assert f["labels"] == {k: int(row[k]) for k in ("gender", "ethnicity", "age")}
    n = len(vae.session.faces)
    tail = ok_json(vae, f"/api/faces?start={n - 1}&count=64", method="GET")["faces"]
    assert [f["index"] for f in tail] == [n - 1]


def test_the_page_is_served_when_it_is_installed(vae):
    if not (server_mod.STATIC / "index.html").is_file():
        pytest.skip("shared/explorer/static/index.html is not written yet")
    status, headers, data = call(vae, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<html" in data.lower()


# --------------------------------------------------------------------------- latent space

def test_encode_and_decode_match_the_protocol(ex):
    face = ex.session.faces.floats()[3:4]
    got = ok_json(ex, "/api/encode", {"face": 3})
    mean, logvar = protocol(ex, "encode", face, own_labels(ex, 3))
    np.testing.assert_allclose(got["z"], mean[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["logvar"], logvar[0], rtol=1e-6, atol=1e-6)
    image = ok_png(ex, "/api/decode", {"z": got["z"]})
    assert image.shape == (SIZE, SIZE)
    z = np.asarray(got["z"], np.float32)[None]
    np.testing.assert_array_equal(image, to_uint8(protocol(ex, "decode", z, reference(ex))[0]))
    if not ex.session.conditional:  # the encoded mean decodes to the reconstruction
        recon = to_uint8(protocol(ex, "reconstruct", face)[0]).astype(int)
        assert np.abs(image.astype(int) - recon).max() <= 1
    again = call(ex, "POST", "/api/decode", {"z": got["z"]})[2]
    assert again == call(ex, "POST", "/api/decode", {"z": got["z"]})[2]  # same request, same bytes


def test_labels_change_a_conditional_decode(cvae):
    z = [0.5, -0.5, 1.0, 0.0]
    default = ok_png(cvae, "/api/decode", {"z": z})
    same = ok_png(cvae, "/api/decode", {"z": z, "labels": {"gender": 0, "ethnicity": 0, "age": 30}})
    other = ok_png(cvae, "/api/decode", {"z": z, "labels": {"gender": 1, "ethnicity": 2, "age": 80}})
    np.testing.assert_array_equal(default, same)  # the default is the reference label
    assert not np.array_equal(default, other)


@pytest.mark.parametrize("slerp", [False, True])
def test_matrix_is_the_decoded_grid_with_white_gaps(ex, slerp):
    from shared.grids import interpolation_matrix

    corners = np.random.default_rng(1).standard_normal((4, DIM)).round(3)
    n = 4
    mosaic = ok_png(ex, "/api/matrix", {"corners": corners.tolist(), "n": n, "slerp": slerp})
    assert mosaic.shape == (n * SIZE + n - 1,) * 2
    gaps = [(SIZE + 1) * k - 1 for k in range(1, n)]
    assert (mosaic[gaps, :] == 255).all() and (mosaic[:, gaps] == 255).all()
    z = interpolation_matrix(corners.astype(np.float32), n, slerp=slerp).reshape(n * n, DIM).astype(np.float32)
    tiles = to_uint8(protocol(ex, "decode", z, reference(ex, n * n)))
    for k in (0, 5, n * n - 1):
        i, j = divmod(k, n)
        np.testing.assert_array_equal(mosaic[i * (SIZE + 1):i * (SIZE + 1) + SIZE,
                                             j * (SIZE + 1):j * (SIZE + 1) + SIZE], tiles[k])


def test_sample_draws_the_protocols_prior_noise(vae):
    from shared.protocol import latent_noise

    z = ok_json(vae, "/api/sample", {"seed": 7, "count": 3})["z"]
    np.testing.assert_array_equal(np.asarray(z, np.float32), latent_noise(3, DIM, 7))
    assert ok_json(vae, "/api/sample", {"seed": 8, "count": 3})["z"] != z


# --------------------------------------------------------------------------- corruptions

def test_denoise_shows_each_method_with_its_psnr(ex):
    from shared.corruptions import gaussian_noise
    from shared.image_metrics import psnr

    got = ok_json(ex, "/api/denoise", {"face": 1, "sigma": 0.3, "seed": 5})
    assert set(got["images"]) == {"clean", "noisy", "mean", "median", "vae", "vae+pca"}
    assert set(got["psnr"]) == {"noisy", "mean", "median", "vae", "vae+pca"}
    clean = ex.session.faces.floats()[1:2]
    np.testing.assert_array_equal(from_url(got["images"]["clean"]), ex.session.faces.images[1])
    noisy = np.clip(gaussian_noise(clean, 0.3, 5), 0, 1)
    np.testing.assert_array_equal(from_url(got["images"]["noisy"]), to_uint8(noisy[0]))
    assert got["psnr"]["noisy"] == pytest.approx(float(psnr(noisy, clean)[0]), rel=1e-6)
    vae_out = protocol(ex, "reconstruct", noisy, own_labels(ex, 1))
    np.testing.assert_array_equal(from_url(got["images"]["vae"]), to_uint8(vae_out[0]))
    assert ok_json(ex, "/api/denoise", {"face": 1, "sigma": 0.3, "seed": 5}) == got


def test_denoise_blends_the_vae_with_pca_tuned_as_the_denoise_command_tunes_it(ex):
    from shared.denoise_blend import apply_blend, tune_blend
    from shared.studio_denoise import blend_basis

    got = ok_json(ex, "/api/denoise", {"face": 2, "sigma": 0.4, "seed": 3})
    s = ex.session
    basis = blend_basis(s.run_dir, s.config, s.model)
    fit = tune_blend(s.model, basis, 0.4, seed=1000)  # as `facevae denoise --seed 0` at one σ
    assert got["blend"] == {"d": fit.d, "alpha": fit.alpha}
    noisy = from_url(got["images"]["noisy"]).astype(np.float32) / 255.0
    vae = from_url(got["images"]["vae"]).astype(np.float32) / 255.0
    want = apply_blend(fit, vae[None], noisy[None], basis.pca)[0]
    # the server blends the unrounded images; these are its 8-bit PNGs: one grey level apart at most
    assert np.abs(from_url(got["images"]["vae+pca"]).astype(int) - to_uint8(want).astype(int)).max() <= 1
    tuned = dict(s._blends)
    again = ok_json(ex, "/api/denoise", {"face": 0, "sigma": 0.4, "seed": 9})
    assert again["blend"] == got["blend"] and s._blends == tuned  # tuned once per σ, whatever the seed


@pytest.mark.parametrize("method", ["decode", "iterate", "optimize", "hybrid"])
def test_inpaint_keeps_known_pixels_and_scores_the_hole(ex, method):
    from shared.corruptions import box_mask

    got = ok_json(ex, "/api/inpaint", {"face": 2, "mask": "box", "method": method, "seed": 0})
    assert set(got["images"]) == {"original", "masked", "mean_fill", "result"}
    hole = box_mask(SIZE)
    assert got["missing_fraction"] == pytest.approx(hole.mean())
    original, result = from_url(got["images"]["original"]), from_url(got["images"]["result"])
    np.testing.assert_array_equal(original, ex.session.faces.images[2])
    np.testing.assert_array_equal(result[~hole], original[~hole])
    assert (from_url(got["images"]["masked"])[hole] == 0).all()
    assert all(isinstance(v, float) for v in got["psnr"].values())


def test_iterate_is_the_iterative_projection_of_the_library(vae):
    from shared.corruptions import apply_mask, mean_fill
    from shared.inpainting import composite, iterative_projection
    from shared.explorer.session import ITERATE_ROUNDS

    bits = np.zeros((SIZE, SIZE), bool)
    bits[8:20, 4:28] = True
    got = ok_json(vae, "/api/inpaint", {"face": 0, "mask": "drawn", "method": "iterate",
                                        "mask_bits": "".join("1" if b else "0" for b in bits.ravel())})
    assert got["missing_fraction"] == pytest.approx(bits.mean())
    clean = vae.session.faces.floats()[:1]
    masked = apply_mask(clean, bits[None], 0.0)
    start = composite(masked, mean_fill(masked, bits[None]), bits[None])
    with vae.session.lock:
        expected = iterative_projection(vae.session.model, masked, bits[None], iterations=ITERATE_ROUNDS, start=start)
    np.testing.assert_array_equal(from_url(got["images"]["result"]), to_uint8(expected[0]))


def test_random_masks_follow_the_seed(vae):
    a = ok_json(vae, "/api/inpaint", {"face": 0, "mask": "random", "method": "decode", "seed": 3})
    b = ok_json(vae, "/api/inpaint", {"face": 0, "mask": "random", "method": "decode", "seed": 3})
    c = ok_json(vae, "/api/inpaint", {"face": 0, "mask": "random", "method": "decode", "seed": 4})
    assert a == b and a["images"]["masked"] != c["images"]["masked"]


# --------------------------------------------------------------------------- conditional runs

def test_generate_and_edit_on_a_cvae(cvae):
    from shared.conditional import label_matrix

    body = {"gender": 1, "ethnicity": 2, "age": 40, "seed": 3, "count": 5}
    images = ok_json(cvae, "/api/generate", body)["images"]
    assert len(images) == 5 and ok_json(cvae, "/api/generate", body)["images"] == images
    expected = protocol(cvae, "sample", 5, 3, label_matrix(1, 2, 40, 5))
    np.testing.assert_array_equal(from_url(images[4]), to_uint8(expected[4]))
    from shared.protocol import latent_noise
    cold = ok_json(cvae, "/api/generate", {**body, "temperature": 0.5})["images"]
    shrunk = protocol(cvae, "decode", 0.5 * latent_noise(5, cvae.session.dim, 3), label_matrix(1, 2, 40, 5))
    np.testing.assert_array_equal(from_url(cold[4]), to_uint8(shrunk[4]))  # as `facevae generate --temperature`
    assert cold != images
    edit = ok_json(cvae, "/api/edit", {"face": 0, "gender": 1 - int(cvae.session.faces.labels["gender"][0]),
                                       "ethnicity": 3, "age": 90})["images"]
    np.testing.assert_array_equal(from_url(edit["original"]), cvae.session.faces.images[0])
    assert from_url(edit["edited"]).shape == (SIZE, SIZE)
    assert not np.array_equal(from_url(edit["edited"]), from_url(edit["reconstruction"]))


@pytest.mark.parametrize("path,body", [("/api/generate", {"gender": 0, "ethnicity": 0, "age": 30}),
                                       ("/api/edit", {"face": 0, "gender": 0, "ethnicity": 0, "age": 30}),
                                       ("/api/decode", {"z": [0, 0, 0, 0], "labels": {"gender": 0, "ethnicity": 0,
                                                                                      "age": 3}})])
def test_conditional_requests_are_refused_on_a_vae(vae, path, body):
    status, _, data = call(vae, "POST", path, body)
    assert status == 400 and ("cvae" in json.loads(data)["error"])


# --------------------------------------------------------------------------- uploads

@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_upload_converts_like_the_folder_loader_and_encodes(ex, fmt):
    from PIL import Image

    from shared.data.image_folder import to_square_gray

    rgb = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    raw = image_bytes(rgb, fmt)
    got = ok_json(ex, "/api/upload", raw)
    with Image.open(io.BytesIO(raw)) as im:
        expected = to_square_gray(im, SIZE)
    face = from_url(got["image"])
    np.testing.assert_array_equal(face, expected)
    mean, _ = protocol(ex, "encode", face[None].astype(np.float32) / 255, reference(ex))
    np.testing.assert_allclose(got["z"], mean[0], rtol=1e-6, atol=1e-6)
    again = ok_json(ex, "/api/encode", {"image": got["image"]})  # the converted face encodes the same
    np.testing.assert_allclose(again["z"], got["z"], rtol=1e-6, atol=1e-6)
