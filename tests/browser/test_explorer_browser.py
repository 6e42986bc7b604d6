"""The latent explorer in headless Chromium: every panel works on a torch ``vae`` and a TF ``cvae`` run.

Each test acts as a user would (drags a slider, drags on the pad, paints a mask with the mouse, picks
a file) and asserts what the user would see change: a new image whose pixels differ, a PSNR text, no
error in the header or the console, no horizontal overflow at 1280x800. Screenshots are saved in
each test's temporary folder (the path is in the failure message when a wait times out).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from tests.browser.conftest import MISSING, Page

pytestmark = [pytest.mark.browser, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

_DB = r"-?\d+(?:\.\d+)?\s*dB"


def _changed(before: list[int] | None, after: list[int] | None) -> bool:
    return before is not None and after is not None and (len(before) != len(after) or before != after)


def _drag(page: Page, css: str, path: list[tuple[int, int]]) -> None:
    """Press the mouse at the first point (offsets from the element's centre), move through the rest, release."""
    from selenium.webdriver.common.action_chains import ActionChains

    element = page.el(css)
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    x0, y0 = path[0]
    chain = ActionChains(page.driver, duration=20).move_to_element_with_offset(element, x0, y0).click_and_hold()
    for (xa, ya), (xb, yb) in zip(path, path[1:]):
        chain = chain.move_by_offset(xb - xa, yb - ya)
    chain.release().perform()


# --------------------------------------------------------------------------- the page


def test_page_loads_with_run_name_metrics_and_no_overflow(page, explorer):
    page.open(explorer)
    info = explorer_info(page)
    name = page.text("#run-name")
    assert info["run"] in name and info["backend"] in name and info["family"] in name, name
    metrics = page.text("#run-metrics")
    assert "PSNR" in metrics and re.search(r"\d", metrics), metrics  # the fixture wrote eval.json
    assert len(page.all(".latent-slider")) == info["top_k"]
    ranking = page.text("#dim-ranking")
    assert str(info["dims"][0]["dim"]) in ranking
    overflow = page.driver.execute_script(
        "const w = document.documentElement.clientWidth;"
        "return [document.documentElement.scrollWidth, window.innerWidth,"
        " [...document.querySelectorAll('main > section, header')].filter("
        "   e => e.getBoundingClientRect().right > w + 1).map(e => e.id || e.tagName)];")
    assert overflow[0] <= 1280 and overflow[0] <= overflow[1] and overflow[2] == [], overflow
    panels = page.all("main > section")
    assert [p.get_attribute("id") for p in panels] == ["panel-sliders", "panel-pad", "panel-attributes",
                                                       "panel-denoise", "panel-inpaint", "panel-upload"]
    assert page.shown("#attributes-unavailable") == (not info["conditional"])
    assert page.shown("#attr-generate") == page.shown("#attr-edit") == info["conditional"]
    page.shot("first_view")
    page.full_shot("full_page")
    page.assert_clean()


def explorer_info(page: Page) -> dict:
    """``/api/info`` as the page sees it (fetched from the page, so from its origin)."""
    return page.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('api/info').then(r => r.json()).then(done, e => done({error: String(e)}));")


# --------------------------------------------------------------------------- 1 latent sliders


def test_dragging_a_slider_changes_the_decoded_face(page, explorer):
    page.open(explorer)
    old_src, old_pixels = page.src("#slider-face"), page.pixels("#slider-face")
    slider = page.all(".latent-slider")[0]
    dim = slider.get_attribute("data-dim")
    _drag(page, f'.latent-slider[data-dim="{dim}"]', [(0, 0), (40, 0), (90, 0)])
    assert float(page.el(f'.latent-slider[data-dim="{dim}"]').get_attribute("value")) > 0.5
    page.wait_new_image("#slider-face", old_src)
    page.wait(lambda: _changed(old_pixels, page.pixels("#slider-face")), "different pixels in #slider-face")
    page.shot("slider_moved")
    page.assert_clean()


# --------------------------------------------------------------------------- 2 interpolation pad


def test_dragging_on_the_pad_mixes_the_corners_and_render_gives_the_matrix(page, explorer):
    page.open(explorer)
    page.wait(lambda: page.loaded("#pad-face"), "the mix at the pad's starting point")
    old_src, old_pixels = page.src("#pad-face"), page.pixels("#pad-face")
    _drag(page, "#pad", [(-80, -80), (-40, -70), (0, -75), (70, 70)])  # ends near corner D
    page.wait_new_image("#pad-face", old_src)
    page.wait(lambda: _changed(old_pixels, page.pixels("#pad-face")), "different pixels in #pad-face")

    page.set("#pad-n", 4)
    page.click("#pad-render")
    page.wait(lambda: page.loaded("#pad-matrix"), "the rendered matrix")
    side = explorer_info(page)["image_size"]
    width, height = page.size("#pad-matrix")
    assert width == height and 4 * side <= width <= 4 * side + 5, (width, side)
    old_matrix = page.src("#pad-matrix")
    page.click("#pad-sample")  # new corners from the prior, then a new matrix
    page.set("#pad-seed", 7)
    page.click("#pad-sample")
    page.click("#pad-render")
    page.wait_new_image("#pad-matrix", old_matrix)
    page.shot("pad")
    page.assert_clean()


# --------------------------------------------------------------------------- 3 attributes (cvae)


def test_attributes_generate_and_edit_on_the_cvae_run(page, cvae_explorer):
    page.open(cvae_explorer)
    assert not page.shown("#attributes-unavailable")
    page.set("#attr-gender", 1)
    page.set("#attr-ethnicity", 2)
    page.set("#attr-age", 60)
    page.click("#attr-generate")
    first = page.wait(lambda: page.all_pixels("#attr-generated img"), "generated faces in #attr-generated")
    page.set("#attr-gender", 0)
    page.set("#attr-age", 5)
    page.click("#attr-generate")  # other labels, same seed: other faces
    second = page.wait(lambda: (faces := page.all_pixels("#attr-generated img")) and _changed(first[0], faces[0])
                       and faces, "faces generated for the new labels")
    page.set("#attr-temperature", 0.3)  # the same draw, shrunk toward the labels' own face
    assert page.text("#attr-temperature-value") == "0.30"
    page.click("#attr-generate")
    page.wait(lambda: (faces := page.all_pixels("#attr-generated img")) and _changed(second[0], faces[0]),
              "faces generated at temperature 0.3")

    old_original, old_result = page.src("#attr-edit-original"), page.src("#attr-edit-result")
    page.set("#attr-face", page.driver.execute_script("return document.getElementById('attr-face').options[1].value"))
    page.click("#attr-edit")  # another test face, edited to the new labels
    page.wait_new_image("#attr-edit-original", old_original)
    page.wait_new_image("#attr-edit-result", old_result)
    size = explorer_info(page)["image_size"]
    assert page.size("#attr-edit-result") == (size, size)
    page.shot("attributes")
    page.assert_clean()


# --------------------------------------------------------------------------- 4 denoise


def test_the_sigma_slider_updates_the_denoising_results(page, explorer):
    page.open(explorer)
    noisy = '#denoise-results img[data-method="noisy"]'
    page.wait(lambda: all(page.loaded(i) for i in page.all("#denoise-results img")), "the six denoise images")
    assert [i.get_attribute("data-method") for i in page.all("#denoise-results img")] == \
        ["clean", "noisy", "mean", "median", "vae", "vae+pca"]
    old_src, old_pixels = page.src(noisy), page.pixels(noisy)
    page.set("#denoise-sigma", 0.9)
    page.wait_new_image(noisy, old_src)
    new_pixels = page.pixels(noisy)
    assert _changed(old_pixels, new_pixels)
    clean = np.array(page.pixels('#denoise-results img[data-method="clean"]'), float)
    # stronger noise: the noisy face is further from the clean one
    assert np.abs(np.array(new_pixels) - clean).mean() > np.abs(np.array(old_pixels) - clean).mean()
    captions = page.text("#denoise-results")
    assert len(re.findall(_DB, captions)) >= 5, captions  # noisy, mean, median, VAE and VAE ⊕ PCA PSNRs
    page.shot("denoise")
    page.assert_clean()


# --------------------------------------------------------------------------- 5 inpaint


def test_a_mask_drawn_with_the_mouse_is_inpainted(page, explorer):
    page.open(explorer)
    page.wait(lambda: page.driver.execute_script(
        "const c = document.getElementById('inpaint-canvas'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; return d.some(v => v > 0);"), "the face on the canvas")
    page.set("#inpaint-mask", "drawn")
    page.set("#inpaint-method", "iterate")
    _drag(page, "#inpaint-canvas", [(-50, -20), (-20, -20), (10, -10), (40, 0), (40, 20), (-40, 20)])
    coverage = page.text("#inpaint-coverage")
    assert not coverage.startswith("0 %"), coverage
    page.click("#inpaint-run")
    page.wait(lambda: page.loaded("#inpaint-result") and re.search(_DB, page.text("#inpaint-psnr")),
              "the inpainted face and its PSNR")
    psnr = page.text("#inpaint-psnr")
    assert len(re.findall(_DB, psnr)) == 2 and "mean" in psnr.lower(), psnr
    assert page.loaded("#inpaint-masked") and page.loaded("#inpaint-mean")
    page.shot("inpaint")

    old = page.src("#inpaint-result")
    page.set("#inpaint-mask", "box")
    page.set("#inpaint-method", "decode")
    page.click("#inpaint-run")
    page.wait_new_image("#inpaint-result", old)
    page.assert_clean()


# --------------------------------------------------------------------------- 6 your own face


def test_an_uploaded_image_is_converted_and_becomes_the_slider_origin(page, explorer, tmp_path):
    from PIL import Image

    from shared.synthetic import generate_faces

    face = generate_faces(1, 96, 3).images[0]
    # a wide colour picture: the page must show it square, grey and at the model's size
    picture = np.zeros((96, 160, 3), np.uint8)
    picture[:, 32:128] = face[..., None] * np.array([1.0, 0.8, 0.6])
    Image.fromarray(picture).save(tmp_path / "me.png")

    page.open(explorer)
    page.el("#upload-input").send_keys(str(tmp_path / "me.png"))
    page.wait(lambda: page.loaded("#upload-preview"), "the converted face in #upload-preview")
    size = explorer_info(page)["image_size"]
    assert page.size("#upload-preview") == (size, size)
    assert page.el("#upload-as-origin").is_enabled()

    old_src, old_pixels = page.src("#slider-face"), page.pixels("#slider-face")
    page.click("#upload-as-origin")
    page.wait(lambda: "upload" in page.el("#slider-origin").text.lower()
              and page.driver.execute_script(
                  "const s = document.getElementById('slider-origin');"
                  "return s.options[s.selectedIndex].text.toLowerCase().includes('upload');"),
              "'uploaded face' chosen as the slider origin")
    page.wait_new_image("#slider-face", old_src)
    page.wait(lambda: _changed(old_pixels, page.pixels("#slider-face")), "the uploaded face decoded")

    old_pad = page.src("#pad-face")
    page.set("#upload-as-corner", 0)
    page.click("#upload-set-corner")
    page.wait_new_image("#pad-face", old_pad)
    page.shot("upload")
    page.assert_clean()
