"""The draw-a-digit page in a real browser: draw with the mouse, see a prediction and ten bars.

Drives Debian's Chromium through Playwright; skips (with the reason) only where no Chromium exists.
The screenshot goes to $DEEPCONVNET_SCREENSHOT_DIR (default: the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepconvnet.checkpoint import save_model
from deepconvnet.models import build_model
from deepconvnet.serve import DigitClassifier
from deepconvnet.serve.app import create_app, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def _chromium() -> str:
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    if found is None:
        pytest.skip(f"no Chromium at {CHROMIUM} or on PATH (apt-get install chromium)")
    return found


def draw_seven(page, canvas) -> None:
    """A '7' stroke with the mouse: across the top, then down to the lower left."""
    box = canvas.bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    points = [(0.3, 0.2), (0.7, 0.2), (0.45, 0.85)]
    page.mouse.move(x + points[0][0] * w, y + points[0][1] * h)
    page.mouse.down()
    for px, py in points[1:]:
        page.mouse.move(x + px * w, y + py * h, steps=12)
    page.mouse.up()


def draw_page(url: str, screenshot: Path, width: int = 940) -> dict:
    """Open the page ``width`` pixels wide, draw, wait for the answer; returns what the page
    shows."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 640})
            page.route(lambda u: not u.startswith(url), lambda route: route.abort())
            answers = []
            page.on(
                "response",
                lambda r: answers.append(r) if r.url.endswith("/api/predict") else None,
            )
            page.goto(url, timeout=15_000)
            assert page.locator("#label").inner_text() == "\u2013"
            with page.expect_response(lambda r: r.url.endswith("/api/predict"), timeout=15_000):
                draw_seven(page, page.locator("#pad"))
            page.wait_for_function(
                "document.getElementById('label').textContent.trim().match(/^[0-9]$/)",
                timeout=15_000,
            )
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(400)  # the bars' width transition (0.2 s)
            shown = {
                "answer": answers[-1].json(),
                "label": page.locator("#label").inner_text().strip(),
                "values": page.locator(".bar-value").all_inner_texts(),
                "widths": page.eval_on_selector_all(
                    ".bar-fill", "els => els.map(e => e.getBoundingClientRect().width)"
                ),
                "tracks": page.eval_on_selector_all(
                    ".bar-track", "els => els.map(e => e.getBoundingClientRect().width)"
                ),
                "top": page.locator(".bar-row.top .bar-digit").all_inner_texts(),
                "page_width": page.evaluate("document.documentElement.scrollWidth"),
                "seen_ink": page.evaluate(
                    """() => {
                        const c = document.getElementById('seen').getContext('2d');
                        const d = c.getImageData(0, 0, 28, 28).data;
                        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i];
                        return s / 255;
                    }"""
                ),
            }
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            return shown
        finally:
            browser.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    save_model(path, build_model("deepconvnet", rng=np.random.default_rng(7)))
    with running_server(create_app(DigitClassifier.from_path(path))) as base:
        yield base + "/"


def test_drawing_a_digit_shows_a_prediction_and_ten_bars(url, tmp_path):
    _chromium()
    shots = Path(os.environ.get("DEEPCONVNET_SCREENSHOT_DIR") or tmp_path)
    screenshot = shots / "draw-a-digit.png"
    shown = draw_page(url, screenshot)
    percents = [float(v.rstrip("%")) for v in shown["values"]]
    assert len(percents) == 10 and len(shown["widths"]) == 10
    assert sum(percents) == pytest.approx(100, abs=0.6)
    answer = shown["answer"]  # what the server said; the page must show exactly that
    label = answer["label"]
    assert shown["label"] == str(label) and shown["top"] == [str(label)]
    assert shown["values"] == [f"{100 * p:.1f}%" for p in answer["probabilities"]]
    tracks = np.array(shown["tracks"])
    assert tracks.min() > 100  # each bar is drawn, as wide as its share of the track
    expected = tracks * np.array(answer["probabilities"])
    np.testing.assert_allclose(shown["widths"], expected, atol=1.0)
    assert shown["seen_ink"] > 10  # the 28x28 input the network saw is drawn
    assert screenshot.stat().st_size > 10_000


@pytest.mark.parametrize("width", [320, 360, 390])
def test_on_a_phone_the_page_fits_its_width_after_drawing(url, tmp_path, width):
    """The status line under the pad used to widen the page to 416 px: sideways scrolling."""
    _chromium()
    shown = draw_page(url, tmp_path / f"phone-{width}.png", width=width)
    assert shown["label"].isdigit()
    assert shown["page_width"] <= width
