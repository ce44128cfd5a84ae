"""The report page in a real browser, opened from disk with the network refused: the
inlined chart library draws the day's prices with a marker per alert, and the page logs
no error (issue 11, item 5: one self-contained page)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from helpers import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"


def test_the_report_draws_its_chart_offline(fixtures_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "spikewatch", "report", str(fixtures_dir / DAY)]
    done = subprocess.run(
        [*command, "--exchange", "binance-usdm", "--json", "day.json", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    alerts = len(json.loads((tmp_path / "day.json").read_text())["alerts"])
    assert alerts == 60
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((tmp_path / "report.html").as_uri())
            page.wait_for_selector("#chart canvas")
            drawn = page.evaluate(
                "() => [...document.querySelectorAll('#chart canvas')]"
                ".some(c => c.width > 0 && c.height > 0)"
            )
            assert drawn
            markers = page.evaluate(
                "() => JSON.parse(document.getElementById('data').textContent).markers.length"
            )
            assert markers == alerts
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert errors == []
    assert [r for r in requests if not r.startswith("file:")] == []  # nothing fetched
