"""The page in a real headless Chromium (Debian's /usr/bin/chromium through Playwright; no browser
download): it loads, and each control changes the image it drives (seed, a direction slider, the
class picker, the interpolation scrubber, drawing on the VAE canvas). Screenshots go to a tmp folder
and, once, to /work/serve-out/ (or $GENLAB_SCREENSHOTS) for a person to look at."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genlab
from conftest import TINY, make_tiny_npz

CHROMIUM = "/usr/bin/chromium"
# slow: three real servers and a browser, ~35 s of CPU (2 min on the loaded 2-core machine)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                                   reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")]
SHOTS = Path(os.environ.get("GENLAB_SCREENSHOTS", "/work/serve-out"))


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """$GENLAB_CACHE in a tmp folder (the servers inherit it: the VAE's latent map is cached there)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GENLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Tiny runs: gan and vae 2 steps; cgan 20 (at 2 steps its DCGAN-initialised G still draws the
    same grey image for every class, N(0, 0.02) weights)."""
    d = tmp_path_factory.mktemp("runs")
    make_tiny_npz(d / "tiny.npz")
    torch.set_num_threads(1)
    steps = {"gan": 2, "cgan": 20, "vae": 2}
    return {m: Path(genlab.train(m, preset="tiny", max_steps=s, **TINY, data_dir=str(d / "tiny.npz"),
                                 out=str(d / m))) for m, s in steps.items()}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Server:
    def __init__(self, run):
        self.p = subprocess.Popen([sys.executable, "-m", "genlab.cli", "serve", str(run), "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        m = re.search(r"open (http://\S+)", line)
        assert m, (line, self.p.stderr.read() if self.p.poll() is not None else "")
        self.url = m.group(1)

    def close(self):
        self.p.terminate()
        self.p.wait(10)


def seq(page, sel) -> int:
    return int(page.get_attribute(sel, "data-seq") or 0)


def after(page, sel, action, n=1) -> bytes:
    """Do `action`, wait until `sel` has shown n new images, return its screenshot."""
    before = seq(page, sel)
    action()
    page.wait_for_function(f"+document.querySelector('{sel}').dataset.seq >= {before + n}", timeout=30_000)
    page.wait_for_timeout(200)  # later updates of the same control (latest wins) settle
    return page.locator(sel).screenshot()


def shot(page, tmp_path, name):
    p = tmp_path / f"{name}.png"
    page.screenshot(path=p, full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(p, SHOTS / p.name)


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url)
    page.wait_for_function("+document.querySelector('#grid').dataset.seq >= 1", timeout=30_000)
    page.wait_for_function("+document.querySelector('#frame').dataset.seq >= 1", timeout=30_000)
    return page, errors


def test_seed_slider_and_scrubber(browser, runs, tmp_path):
    server = Server(runs["gan"])
    try:
        page, errors = open_page(browser, server)
        assert "gan · checkpoint step 2" in page.inner_text("#info")
        grid0 = page.locator("#grid").screenshot()
        grid1 = after(page, "#grid", lambda: (page.fill("#seed", "7"), page.press("#seed", "Enter")))
        assert grid1 != grid0
        slider = page.locator("#sliders input").first
        grid2 = after(page, "#grid", lambda: slider.fill("2.5"))   # fill() fires input: live update
        assert grid2 != grid1
        frame0 = page.locator("#frame").screenshot()
        frame1 = after(page, "#frame", lambda: page.locator("#t").fill("0.9"))
        assert frame1 != frame0
        with page.expect_download() as dl:
            page.click("#gif")
        assert dl.value.suggested_filename.endswith(".gif")
        assert page.is_hidden("#vae") and page.is_hidden("#class-box") and not errors
        shot(page, tmp_path, "serve-gan")
    finally:
        server.close()


def test_class_picker(browser, runs, tmp_path):
    server = Server(runs["cgan"])
    try:
        page, errors = open_page(browser, server)
        grid0 = page.locator("#grid").screenshot()
        grid3 = after(page, "#grid", lambda: page.select_option("#class", "3"))
        grid8 = after(page, "#grid", lambda: page.select_option("#class", "8"))
        assert len({grid0, grid3, grid8}) == 3 and not errors
        shot(page, tmp_path, "serve-cgan")
    finally:
        server.close()


def test_vae_canvas(browser, runs, tmp_path):
    server = Server(runs["vae"])
    try:
        page, errors = open_page(browser, server)
        page.wait_for_function("+document.querySelector('#map').dataset.seq >= 1", timeout=30_000)
        box = page.locator("#pad").bounding_box()

        def stroke(points):
            page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
            page.mouse.down()
            for x, y in points[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
            page.mouse.up()

        one = after(page, "#recon", lambda: stroke([(140, 40), (140, 240)]))   # a "1"
        map1 = page.locator("#map").screenshot()
        seven = after(page, "#recon", lambda: stroke([(60, 40), (220, 40), (100, 240)]))
        assert seven != one and page.locator("#map").screenshot() != map1 and not errors
        shot(page, tmp_path, "serve-vae")
    finally:
        server.close()
