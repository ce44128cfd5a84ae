"""Take the README's screenshot of the dashboard: the demo, in Debian's Chromium.

    .venv/bin/python scripts/screenshot.py [--seconds 30] [--speed 20] [--out docs/dashboard.png]

Starts ``python app.py --demo`` (the bundled real BTCUSDT recording, replayed by the local
exchange) on a free port, lets it run so that there are candles and spike markers, then
opens the dashboard in headless Chromium and saves a PNG. Needs ``make assets`` and
``apt-get install chromium`` (Playwright drives it; it never downloads a browser).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 25 s at 20x: well into the recording, before the demo's loop starts it again
    parser.add_argument("--seconds", type=float, default=25, help="demo run time before the shot")
    parser.add_argument("--speed", default="20", help="demo replay speed")
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    ns = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--demo", "--speed", ns.speed, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(url)
        time.sleep(ns.seconds)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": ns.width, "height": ns.height})
            problems: list[str] = []
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.goto(url)
            page.wait_for_function("() => window.spikewatch && window.spikewatch.ready")
            if not page.evaluate("window.spikewatch.chart"):
                print("the chart library is not installed: run make assets", file=sys.stderr)
                return 1
            time.sleep(4)  # a few live updates and fresh rows
            page.screenshot(path=ns.out)
            browser.close()
        size = Path(ns.out).stat().st_size
        print(f"saved {ns.out} ({size / 1024:.0f} KB)")
        for problem in problems:
            print(f"console: {problem}", file=sys.stderr)
        return 1 if problems else 0
    finally:
        demo.terminate()
        demo.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
