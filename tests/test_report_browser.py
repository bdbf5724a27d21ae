"""The report opened in a real (headless) Chromium: it renders offline, whole, without errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from custseg.report.html import REPORT_SECTIONS
from test_report import train_tiny_run

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def test_report_renders_offline_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, _, results = train_tiny_run(tmp_path)
    report = results / "report.html"

    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("CUSTSEG_SCREENSHOT_DIR"):
                target = Path(os.environ["CUSTSEG_SCREENSHOT_DIR"])
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, target / "report.png")
            section_ids = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
            headings = page.eval_on_selector_all("section > h2", "els => els.map(e => e.textContent.trim())")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({complete: e.complete, width: e.naturalWidth}))")
        finally:
            browser.close()

    assert errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert section_ids == [section_id for section_id, _ in REPORT_SECTIONS]
    assert headings == [heading for _, heading in REPORT_SECTIONS]
    # every figure the page embeds was decoded by the browser (the tiny run draws nine)
    assert len(images) == report.read_text(encoding="utf-8").count("<img") == 9
    assert all(img["complete"] and img["width"] > 0 for img in images), images
    assert shot.stat().st_size > 10_000
