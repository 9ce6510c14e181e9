"""The explorer in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

``attri-ssc serve`` runs as its own process on a free 127.0.0.1 port; the page loads, a slider is
moved with the keyboard, the test waits until the edited image changes and checks that the model's
re-read of that attribute moved the way the slider asked (the same re-read ``Run.edit`` reports),
then saves a screenshot.

A missing browser FAILS this test (CI installs it: ``.ci/run``); it is never skipped.
Environment:
  ATTRI_SSC_CHROMIUM             the browser executable (default: /usr/bin/chromium, else on PATH)
  ATTRI_SSC_EXPLORER_SCREENSHOT  where to save the screenshot (e.g. docs/images/explorer.png)
  ATTRI_SSC_EXPLORER_RUN         serve this run instead of the smoke run (e.g. the demo model, for
                                 the README screenshot); ATTRI_SSC_EXPLORER_DATA its data folder
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def chromium() -> str:
    wanted = os.environ.get("ATTRI_SSC_CHROMIUM")
    for candidate in ([wanted] if wanted else []) + ["/usr/bin/chromium", shutil.which("chromium") or "",
                                                      shutil.which("chromium-browser") or ""]:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("no Chromium found: the browser test needs Debian's chromium "
                "(apt-get install chromium; .ci/run installs it) or ATTRI_SSC_CHROMIUM=/path/to/chromium")


@pytest.fixture
def server(smoke_run, tmp_path):
    run = os.environ.get("ATTRI_SSC_EXPLORER_RUN") or str(smoke_run)
    argv = [sys.executable, "-m", "attri_ssc", "serve", run, "--port", "0", "--threads", "1"]
    if os.environ.get("ATTRI_SSC_EXPLORER_DATA"):
        argv += ["--data", os.environ["ATTRI_SSC_EXPLORER_DATA"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        line = proc.stdout.readline()  # "attri-ssc explorer for RUN: http://127.0.0.1:PORT/ ..."
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            proc.wait(timeout=30)
            log.seek(0)
            pytest.fail(f"attri-ssc serve did not start: {line!r} {log.read()[-2000:]}")
        yield f"http://127.0.0.1:{match.group(1)}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_moving_a_slider_edits_the_image_and_the_reread_follows(server, tmp_path):
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1650, "height": 1250})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server, wait_until="load", timeout=120_000)
            # the first gallery item is chosen and its reconstruction drawn (α = 0)
            page.wait_for_selector("#last-edit[data-alpha='0']", state="attached", timeout=240_000)
            names = page.eval_on_selector_all("#slider-list input[type=range]", "els => els.map(e => e.dataset.attribute)")
            attribute = "lv_area" if "lv_area" in names else names[0]
            before_src = page.get_attribute("#img-edited", "src")
            for img in ("original", "reconstruction", "edited", "difference"):
                box = page.locator(f"#img-{img}").bounding_box()
                assert box["width"] >= 256 and box["height"] >= 256, (img, box)
            slider = page.locator(f"#slider-list input[data-attribute='{attribute}']")
            slider.focus()
            slider.press("End")  # α = +1: ask for more of the attribute (input, then change: released)
            page.wait_for_selector(f"#last-edit[data-attribute='{attribute}'][data-alpha='1'][data-detail='1']",
                                   state="attached", timeout=240_000)
            page.wait_for_function("src => document.getElementById('img-edited').src !== src", arg=before_src,
                                   timeout=60_000)
            out = page.locator("#last-edit")
            before, after = float(out.get_attribute("data-before")), float(out.get_attribute("data-after"))
            assert after > before, f"{attribute}: re-read {before} -> {after} at α = +1"
            reading = page.inner_text(f"[data-reading-of='{attribute}']")
            assert "→" in reading and ("cm²" in reading or "mm" in reading or "mL" in reading)
            assert page.locator("#img-saliency").get_attribute("src").startswith("data:image/png")
            # the other way
            slider.press("Home")
            page.wait_for_selector(f"#last-edit[data-attribute='{attribute}'][data-alpha='-1'][data-detail='1']",
                                   state="attached", timeout=240_000)
            before2, after2 = float(out.get_attribute("data-before")), float(out.get_attribute("data-after"))
            assert after2 < before2, f"{attribute}: re-read {before2} -> {after2} at α = -1"
            slider.press("End")
            page.wait_for_selector(f"#last-edit[data-attribute='{attribute}'][data-alpha='1'][data-detail='1']",
                                   state="attached", timeout=240_000)
            assert page.locator("#img-saliency").is_visible()
            # export: a PNG of the panel and the settings that replay the edit
            with page.expect_download(timeout=60_000) as png:
                page.click("#export-png")
            assert Path(png.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            with page.expect_download(timeout=240_000) as settings:
                page.click("#export-json")
            exported = json.loads(Path(settings.value.path()).read_text())
            assert exported["attribute"] == attribute and exported["alphas"] == [1.0]
            assert exported["rule"] == "feedback" and exported["case_id"]
            page.wait_for_timeout(300)
            assert not errors, errors
            target = Path(os.environ.get("ATTRI_SSC_EXPLORER_SCREENSHOT") or tmp_path / "explorer.png")
            target.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target), full_page=True)
            assert target.stat().st_size > 10_000
        finally:
            browser.close()
