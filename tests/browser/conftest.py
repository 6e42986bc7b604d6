"""Fixtures of the browser tests: headless Chromium driven by Selenium, and two tiny explorers.

The browser is the system one (Debian ``chromium`` and ``chromium-driver``; ``make test`` installs
them as root): nothing is downloaded at run time. When selenium, chromium or chromedriver is missing
the tests skip with the reason. Two runs are trained once per module on synthetic faces: a torch
``vae`` and a TF ``cvae`` (the conditional panel), each served by an :class:`Explorer` on a free port.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

__all__ = ["MISSING", "Page"]

WIDTH, HEIGHT = 1280, 800
TIMEOUT = 30  # seconds for one page update; the tiny models answer in milliseconds, a busy machine in seconds


def _missing() -> Optional[str]:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install 'facevae[test]')"
    for program, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if shutil.which(program) is None:
            return f"{program} not found (apt-get install {package}; `make test` does it as root)"
    return None


MISSING = _missing()

# JavaScript run in the page: the grey levels of a loaded <img> (drawn on a canvas: blob:/data: URLs are
# same-origin, so the canvas is readable), or null while it is not loaded.
_GREY = """
function grey(img) {
  if (!img || !img.getAttribute('src') || !img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const rgba = g.getImageData(0, 0, c.width, c.height).data;
  const out = [];
  for (let i = 0; i < rgba.length; i += 4) out.push(rgba[i]);
  return out;
}
"""
_PIXELS = _GREY + "return grey(arguments[0]);"
# every <img> under a container read in one script, so a panel replacing its images cannot race the read
_ALL_PIXELS = _GREY + """
const imgs = [...document.querySelectorAll(arguments[0])];
const out = imgs.map(grey);
return imgs.length && out.every(p => p !== null) ? out : null;
"""
_LOADED = "const i = arguments[0]; return !!(i && i.getAttribute('src') && i.complete && i.naturalWidth > 0);"
_SET = """
const el = arguments[0];
el.value = arguments[1];
el.dispatchEvent(new Event('input', {bubbles: true}));
el.dispatchEvent(new Event('change', {bubbles: true}));
"""


class Page:
    """The explorer page in the browser, with the waits and reads the tests need."""

    def __init__(self, driver: Any, tmp_path: Path) -> None:
        self.driver = driver
        self.tmp_path = tmp_path

    def open(self, explorer: Any) -> "Page":
        """Load the page and wait until the header and the first decoded face are there."""
        self.driver.set_window_size(WIDTH, HEIGHT)
        self.driver.get(explorer.url)
        self.wait(lambda: self.text("#run-name") and self.all(".latent-slider"), "the header and the sliders")
        self.wait(lambda: self.loaded("#slider-face"), "the first decoded face in #slider-face")
        return self

    # ---- reading
    def el(self, css: str) -> Any:
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def shown(self, css: str) -> bool:
        """Whether ``css`` is on the page and visible (a panel may remove what does not apply)."""
        return any(e.is_displayed() for e in self.all(css))

    def text(self, css: str) -> str:
        return self.el(css).text.strip()

    def src(self, css: str) -> str:
        return self.el(css).get_attribute("src") or ""

    def loaded(self, css_or_element: Any) -> bool:
        element = self.el(css_or_element) if isinstance(css_or_element, str) else css_or_element
        return bool(self.driver.execute_script(_LOADED, element))

    def pixels(self, css_or_element: Any) -> Optional[list[int]]:
        element = self.el(css_or_element) if isinstance(css_or_element, str) else css_or_element
        return self.driver.execute_script(_PIXELS, element)

    def all_pixels(self, css: str) -> Optional[list[list[int]]]:
        """The grey levels of every <img> matching ``css``, or None while there is none or one is loading."""
        return self.driver.execute_script(_ALL_PIXELS, css)

    def size(self, css: str) -> tuple[int, int]:
        return tuple(self.driver.execute_script(  # type: ignore[return-value]
            "const i = arguments[0]; return [i.naturalWidth, i.naturalHeight];", self.el(css)))

    def status(self) -> str:
        return self.driver.execute_script("return document.getElementById('status').textContent.trim();")

    def console_errors(self) -> list[str]:
        """SEVERE messages of the browser console since the last call (chromedriver keeps a log)."""
        try:
            entries = self.driver.get_log("browser")
        except Exception:  # noqa: BLE001 - a driver without logs: nothing to check
            return []
        return [e["message"] for e in entries if e.get("level") == "SEVERE"]

    # ---- acting
    def set(self, css: str, value: Any) -> None:
        """Set a control's value as a user would end up (``input`` and ``change`` events)."""
        self.driver.execute_script(_SET, self.el(css), str(value))

    def click(self, css: str) -> None:
        element = self.el(css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        try:  # an element the page replaced while we looked at it: look again
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: predicate())
        except Exception as exc:  # a TimeoutException: say what did not happen and what the page said
            shot = self.shot("timeout")
            raise AssertionError(f"waited {timeout} s for {what}; #status: {self.status()!r}; "
                                 f"screenshot: {shot}") from exc

    def wait_new_image(self, css: str, old_src: str) -> str:
        """Wait until the <img> ``css`` shows a new, loaded image (a fresh src); returns the src."""
        self.wait(lambda: self.src(css) not in ("", old_src) and self.loaded(css), f"a new image in {css}")
        return self.src(css)

    def shot(self, name: str) -> Path:
        path = self.tmp_path / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def full_shot(self, name: str) -> Path:
        """The whole page in one picture (the window grown to its height), then the window back to 1280x800."""
        height = self.driver.execute_script("return document.documentElement.scrollHeight;")
        self.driver.set_window_size(WIDTH, max(HEIGHT, height + 150))  # + the window's own bars
        try:
            return self.shot(name)
        finally:
            self.driver.set_window_size(WIDTH, HEIGHT)

    def assert_clean(self) -> None:
        """No API error in #status and no error in the browser console."""
        assert self.status() == "", f"#status shows an error: {self.status()!r}"
        errors = self.console_errors()
        assert not errors, f"browser console errors: {errors}"


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if MISSING:
        pytest.skip(MISSING)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},{HEIGHT}",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    browser.set_script_timeout(TIMEOUT)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def page(driver: Any, tmp_path: Path) -> Page:
    """The browser as a :class:`Page`; screenshots go to the test's temporary folder."""
    page = Page(driver, tmp_path)
    page.console_errors()  # drop what earlier tests left in the log
    return page


_TINY = dict(data="synthetic:240", image_size=32, channels=(8, 16), hidden_dims=(32,), latent_dim=6, epochs=1,
             batch_size=32, device="cpu", verbose=False)


def _serve(run: Any) -> Iterator[Any]:
    from shared.api import evaluate
    from shared.explorer.server import Explorer

    evaluate(run, iwae_k=2)  # eval.json: the header's metrics
    explorer = Explorer(run, port=0).start()
    try:
        yield explorer
    finally:
        explorer.stop()


@pytest.fixture(scope="module")
def vae_explorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An explorer on a tiny torch ``vae`` run (folder name ``vae_torch``)."""
    if MISSING:
        pytest.skip(MISSING)
    pytest.importorskip("torch")
    import torch

    import facevae

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run much faster on one thread of a busy machine
    try:
        run = facevae.train(tmp_path_factory.mktemp("explorer") / "vae_torch", **_TINY)
        yield from _serve(run)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cvae_explorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An explorer on a tiny TF ``cvae`` run (folder name ``cvae_tf``)."""
    if MISSING:
        pytest.skip(MISSING)
    pytest.importorskip("tensorflow")
    import facevae_tf

    run = facevae_tf.train(tmp_path_factory.mktemp("explorer") / "cvae_tf", model="cvae", **_TINY)
    yield from _serve(run)


@pytest.fixture(params=["vae", "cvae"])
def explorer(request: pytest.FixtureRequest) -> Any:
    """Each of the two explorers in turn (a test that must work on every run)."""
    return request.getfixturevalue(f"{request.param}_explorer")
