"""The market view (the leaderboard) in a real browser: Debian's Chromium, driven by
Playwright, against the production server (waitress), the live engine and the simulator
playing the real BTCUSDT and ETHUSDT spot trades of the same ten minutes.

With more than one symbol watched the page opens on the leaderboard; with one, on that
symbol's chart, as before.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright

from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web.app import create_app
from spikewatch.web.dashboard import CHART_LIBRARY, STATIC_DIR

from helpers import CHROMIUM, CHROMIUM_ARGS, caught_up, two_symbols, wait_until, waitress_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 400, "height": 800}
ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def market_frames(fixtures_dir: Path, btc_frames: list[bytes]) -> list[bytes]:
    """The BTCUSDT recording interleaved by trade time with the real ETHUSDT trades."""
    return two_symbols(fixtures_dir, btc_frames)


@dataclass
class Market:
    """The app watching ``symbols`` (engine not yet started) and the simulator."""

    engine: Engine
    url: str
    last_ids: dict[str, int]

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path.lstrip('/')}", timeout=5) as response:
            return json.load(response)

    def played(self) -> None:
        """Until the engine has processed every frame of every symbol."""
        for symbol, last in self.last_ids.items():
            wait_until(caught_up(self.engine, last, symbol), 60)


@contextlib.contextmanager
def serve(tmp_path: Path, frames: list[bytes], symbols: str) -> Iterator[Market]:
    tape = tape_from_frames(frames)
    sim = SimulatorThread(Simulator(tape, speed=None))
    sim.start()
    settings = load_settings(
        {
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "db": str(tmp_path / "s.db"),
            "symbols": symbols,
            "alert_profile": "default",
        },
        env={},
    )
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.2))
    # no clock tick while the tape plays (it would cut taker orders wherever it falls)
    engine.status_interval = 60
    last_ids = {e.symbol: e.trade_id for e in tape}
    app = create_app(settings, engine)
    try:
        with waitress_server(app, threads=16, connection_limit=100) as server:
            url = f"http://127.0.0.1:{server.effective_port}/"
            try:
                yield Market(engine, url, last_ids)
            finally:
                engine.stop()
    finally:
        sim.stop()
        store.close()


@pytest.fixture
def market(tmp_path: Path, market_frames: list[bytes]) -> Iterator[Market]:
    with serve(tmp_path, market_frames, ",".join(SYMBOLS)) as served:
        yield served


@dataclass
class Board:
    page: Page
    problems: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function("() => window.spikewatch && window.spikewatch.ready")

    def shown(self) -> dict[str, int]:
        """Symbol -> the signals its leaderboard row shows."""
        rows: list[list[str]] = self.page.eval_on_selector_all(
            "#market tbody tr", "rows => rows.map(r => [r.dataset.symbol, r.dataset.signals])"
        )
        return {symbol: int(count) for symbol, count in rows}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found (apt-get install chromium)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chart_library() -> None:
    if not (STATIC_DIR / CHART_LIBRARY).is_file():
        pytest.fail(f"{STATIC_DIR / CHART_LIBRARY} is missing: run `make assets`", pytrace=False)


@contextlib.contextmanager
def open_board(chromium: Browser, **options: Any) -> Iterator[Board]:
    context = chromium.new_context(**options)
    board = Board(context.new_page())

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            board.problems.append(f"{message.type}: {message.text} ({message.location})")

    def on_request(request: Request) -> None:
        if urlsplit(request.url).hostname not in ("127.0.0.1", None):
            board.foreign.append(request.url)

    board.page.on("console", on_console)
    board.page.on("pageerror", lambda exc: board.crashes.append(str(exc)))
    board.page.on("request", on_request)
    board.page.set_default_timeout(10_000)
    try:
        yield board
    finally:
        context.close()


@pytest.fixture
def board(chromium: Browser) -> Iterator[Board]:
    with open_board(chromium, viewport={"width": 1280, "height": 800}) as opened:
        yield opened


@pytest.fixture
def phone(chromium: Browser) -> Iterator[Board]:
    with open_board(chromium, viewport=PHONE, is_mobile=True, has_touch=True) as opened:
        yield opened


def test_the_leaderboard_fills_live_and_a_row_opens_its_chart(
    market: Market, board: Board, chart_library: None
) -> None:
    page = board.page
    board.open(market.url)
    # several symbols: the page lands on the leaderboard, a row per symbol, all quiet
    assert page.evaluate("window.spikewatch.page") == "market"
    expect(page.locator("#market-view")).to_be_visible()
    expect(page.locator("#symbol-view")).to_be_hidden()
    expect(page.locator("#market tbody tr")).to_have_count(2)
    assert board.shown() == dict.fromkeys(SYMBOLS, 0)

    market.engine.start()
    market.played()
    final = {r["symbol"]: r["signals"] for r in market.api("/api/top?window=5m")["rows"]}
    assert all(final[s] > 0 for s in SYMBOLS)
    # live: the rows reach the board's counts without a reload (polls and signal events)
    page.wait_for_function(
        """want => [...document.querySelectorAll('#market tbody tr')].every(
             r => Number(r.dataset.signals) === want[r.dataset.symbol])""",
        arg=final,
        timeout=15_000,
    )
    first = page.locator("#market tbody tr").first
    expect(first.locator("td").nth(1)).to_contain_text(max(final, key=lambda s: final[s]))
    # every value with its unit; a spark line per active row
    top = market.api("/api/top?window=5m")["rows"][0]
    row = page.locator(f'#market tbody tr[data-symbol="{top["symbol"]}"]')
    expect(row.locator("td").nth(4)).to_contain_text("USD")
    expect(row.locator("td").nth(7)).to_contain_text("USDT")
    expect(row.locator("td").nth(8)).to_contain_text(top["symbol"][:3])  # the base asset
    assert row.locator("svg.spark rect").count() == sum(1 for n in top["spark"] if n)
    expect(row.locator("svg.spark")).to_have_attribute("role", "img")

    # the hour: the switch re-reads the board
    page.click('#market-view [data-window="1h"]')
    expect(page.locator('[data-window="1h"]')).to_have_attribute("aria-pressed", "true")
    hour = {r["symbol"]: r["signals"] for r in market.api("/api/top?window=1h")["rows"]}
    page.wait_for_function(
        """want => [...document.querySelectorAll('#market tbody tr')].every(
             r => Number(r.dataset.signals) === want[r.dataset.symbol])""",
        arg=hour,
    )
    expect(page.locator("#market-bucket")).to_have_text("1 min")

    # the search narrows the board (on the server: a quiet symbol among 2,000 is found)
    page.fill("#market-search", "eth")
    expect(page.locator("#market tbody tr")).to_have_count(1)
    expect(page.locator("#market tbody tr")).to_have_attribute("data-symbol", "ETHUSDT")
    page.fill("#market-search", "sol")
    expect(page.locator("#market tbody tr")).to_have_count(0)
    expect(page.locator("#market-empty")).to_be_visible()
    page.fill("#market-search", "")
    expect(page.locator("#market tbody tr")).to_have_count(2)

    # a click on a row opens its chart
    page.click('#market tbody tr[data-symbol="BTCUSDT"]')
    expect(page.locator("#symbol-view")).to_be_visible()
    expect(page.locator("#market-view")).to_be_hidden()
    expect(page.locator("#chart-title")).to_have_text("BTCUSDT · binance · price and volume")
    page.wait_for_function("() => window.spikewatch.bars() > 0")
    assert page.evaluate("location.hash") == "#binance:BTCUSDT"
    expect(page.locator("#to-market")).to_be_visible()

    # Back returns to the board; the keyboard opens a row too
    page.go_back()
    expect(page.locator("#market-view")).to_be_visible()
    eth = page.locator('#market tbody tr[data-symbol="ETHUSDT"]')
    eth.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#chart-title")).to_have_text("ETHUSDT · binance · price and volume")
    # and the header's Market link returns as well
    page.click("#to-market")
    expect(page.locator("#market-view")).to_be_visible()
    assert page.evaluate("location.hash") == "#market"

    assert board.problems == []
    assert board.crashes == []
    assert board.foreign == [], "the page loads nothing from outside the app"


def test_on_a_phone_the_leaderboard_fits_the_screen(
    market: Market, phone: Board, chart_library: None
) -> None:
    market.engine.start()
    market.played()
    page = phone.page
    phone.open(market.url)
    page.wait_for_function("() => window.spikewatch.market().reads > 0")

    expect(page.locator("#market tbody tr")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    scroll, client = page.eval_on_selector(
        "#market-view .table-wrap", "w => [w.scrollWidth, w.clientWidth]"
    )
    assert scroll <= client, "the table needs no sideways scrolling"
    row = page.locator("#market tbody tr").first
    for column in (1, 2, 4, 6):  # symbol, signals, top value, the spark line
        expect(row.locator("td").nth(column)).to_be_visible()
    expect(row.locator("svg.spark")).to_be_visible()
    row.tap()
    expect(page.locator("#symbol-view")).to_be_visible()
    assert phone.problems == []
    assert phone.crashes == []


def test_with_one_symbol_the_page_opens_on_its_chart_as_before(
    tmp_path: Path, btc_frames: list[bytes], board: Board, chart_library: None
) -> None:
    with serve(tmp_path, btc_frames[:2000], "BTCUSDT") as one:
        board.open(one.url)
        page = board.page

        assert page.evaluate("window.spikewatch.page") == "symbol"
        expect(page.locator("#symbol-view")).to_be_visible()
        expect(page.locator("#market-view")).to_be_hidden()
        expect(page.locator("#to-market")).to_be_hidden()
        assert page.evaluate("location.hash") == "#binance:BTCUSDT"
        # the leaderboard is still there for the asking
        page.goto(f"{one.url}#market")
        page.wait_for_function("() => window.spikewatch.market().reads > 0")
        expect(page.locator("#market tbody tr")).to_have_count(1)
    assert board.problems == []
    assert board.crashes == []
