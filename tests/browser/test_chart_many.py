"""The chart view when the app watches the whole market (issue 12), in a real browser:
Debian's Chromium, driven by Playwright, against the production server (waitress), the
live engine watching ``ALL:USDT`` and the simulator serving a market of 120 symbols
re-labelled from the real BTCUSDT recording.

With that many symbols the chart view has a search box (completions from /api/symbols)
instead of a select of every symbol, and cards only for the chosen, pinned and recently
opened symbols; the header's total counts every watched symbol (the live stream's
``totals`` event), not only those a ``status`` event lists. With a short list the view is
as before: a select and a card per symbol.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.rest import RestClient
from spikewatch.replay.market import MarketTape, market_tape, sources_of_tape
from spikewatch.replay.simulator import Faults, Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web.app import create_app
from spikewatch.web.dashboard import CHART_LIBRARY, STATIC_DIR

from helpers import CHROMIUM, CHROMIUM_ARGS, wait_until, waitress_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SYMBOLS = 120
PER_SYMBOL = 600  # trades each symbol plays (a stretch of the recording, re-labelled)
#: the cards the chart view may show with many symbols: the chosen one, the pinned ones
#: (8 at most) and the last 4 opened besides
MAX_CARDS = 1 + 8 + 4
PHONE: ViewportSize = {"width": 400, "height": 800}


@pytest.fixture(scope="module")
def tape(btc_frames: list[bytes]) -> MarketTape:
    """120 USDT symbols, each playing 600 real BTCUSDT trades (one of two stretches)."""
    stretches = [btc_frames[:PER_SYMBOL], btc_frames[5000 : 5000 + PER_SYMBOL]]
    sources = [source for part in stretches for source in sources_of_tape(tape_from_frames(part))]
    return market_tape(sources, SYMBOLS, ("USDT",), seed=3)


def final_ids(tape: MarketTape) -> dict[str, int]:
    """The id of each symbol's last trade in one pass of the market."""
    last: dict[str, int] = {}
    for symbol, played in tape.streams(endless=False):
        for entry, _ in played:
            last[symbol] = entry.trade_id
    return last


@dataclass
class App:
    engine: Engine
    sim: SimulatorThread
    url: str

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path.lstrip('/')}", timeout=10) as response:
            return json.load(response)

    def next_event(self, kind: str) -> Any:
        """The data of the next ``kind`` event of the live stream."""
        with urllib.request.urlopen(f"{self.url}api/stream", timeout=10) as stream:
            current = None
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    current = line[len("event: ") :]
                elif line.startswith("data: ") and current == kind:
                    return json.loads(line[len("data: ") :])
        raise AssertionError(f"the stream ended before a {kind} event")

    def symbols(self) -> list[dict[str, Any]]:
        """Every watched symbol from /api/symbols, page by page."""
        rows: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = self.api(f"/api/symbols?limit=50&offset={offset}")
            rows += page["symbols"]
            offset = page["next_offset"]
        return rows


@contextlib.contextmanager
def serve(tmp_path: Path, tape: MarketTape, symbols: str) -> Iterator[App]:
    """The simulator playing ``tape`` once, as fast as the app reads; the app watching
    ``symbols`` (started)."""
    sim = SimulatorThread(Simulator(tape, speed=None, faults=Faults(max_weight_per_min=10**6)))
    sim.start()
    settings = load_settings(
        {
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "db": str(tmp_path / "s.db"),
            "symbols": symbols,
        },
        env={},
    )
    store = SQLiteSignalStore(settings.db)
    # the REST weight budget has tests of its own: a limit that never holds warm start up
    rest = RestClient(
        settings.rest_url, weight_limit=10**6, backoff=lambda: Backoff(first=0.02, cap=0.1)
    )
    engine = Engine(settings, store, rest=rest, backoff=Backoff(first=0.05, cap=0.2))
    engine.status_interval = 0.5
    app = create_app(settings, engine)
    try:
        with waitress_server(app, threads=16, connection_limit=100) as server:
            engine.start()
            try:
                yield App(engine, sim, f"http://127.0.0.1:{server.effective_port}/")
            finally:
                engine.stop()
    finally:
        sim.stop()
        store.close()


@dataclass
class Tab:
    page: Page
    problems: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function("() => window.spikewatch && window.spikewatch.ready")

    def cards(self) -> list[str]:
        keys: list[str] = self.page.eval_on_selector_all(
            "#symbols li", "cards => cards.map(c => c.dataset.key)"
        )
        return keys

    def find(self, typed: str) -> list[str]:
        """Type into the header's search box; the symbols it offers."""
        before = self.page.evaluate("window.spikewatch.finds")
        self.page.fill("#find-input", typed)
        self.page.wait_for_function("n => window.spikewatch.finds > n", arg=before)
        offered: list[str] = self.page.eval_on_selector_all(
            "#find-list li[role=option]", "items => items.map(i => i.dataset.symbol)"
        )
        return offered

    def chart_of(self, symbol: str) -> None:
        """Until the chart view shows ``symbol``'s chart, with bars."""
        expect(self.page.locator("#symbol-view")).to_be_visible()
        expect(self.page.locator("#chart-title")).to_have_text(
            f"{symbol} · binance · price and volume"
        )
        assert self.page.evaluate("location.hash") == f"#binance:{symbol}"
        self.page.wait_for_function(
            "s => window.spikewatch.symbol === s && window.spikewatch.bars() > 0", arg=symbol
        )


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found (apt-get install chromium)", pytrace=False)
    if not (STATIC_DIR / CHART_LIBRARY).is_file():
        pytest.fail(f"{STATIC_DIR / CHART_LIBRARY} is missing: run `make assets`", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def tab(chromium: Browser) -> Iterator[Tab]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    opened = Tab(context.new_page())

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            opened.problems.append(f"{message.type}: {message.text} ({message.location})")

    opened.page.on("console", on_console)
    opened.page.on("pageerror", lambda exc: opened.crashes.append(str(exc)))
    opened.page.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        context.close()


def test_with_the_whole_market_the_chart_view_shows_a_finder_and_a_few_cards(
    tmp_path: Path, tape: MarketTape, tab: Tab, chromium: Browser
) -> None:
    last_ids = final_ids(tape)
    watched = sorted(last_ids)
    with serve(tmp_path, tape, "ALL:USDT") as app:
        wait_until(lambda: app.engine.symbols() == tuple(watched), timeout=30)
        tab.open(app.url)
        page = tab.page
        # many symbols: the leaderboard first; the header has a search box, no select
        assert page.evaluate("window.spikewatch.page") == "market"
        assert page.evaluate("window.spikewatch.many") is True
        expect(page.locator("#find-input")).to_be_visible()
        expect(page.locator("#symbol")).to_be_hidden()

        def played() -> bool:
            status = app.engine.status().symbols
            return all(
                status[s].last_trade_id == last_ids[s] and not status[s].backfilling
                for s in watched
            )

        wait_until(played, timeout=60)
        # the tape has ended: the header's total is every symbol's, as the API sums them
        rows = app.symbols()
        assert len(rows) == SYMBOLS
        total = sum(r["trades"] for r in rows)
        assert total == sum(s["trades"] for s in app.api("/api/status")["symbols"].values())
        assert total > SYMBOLS * PER_SYMBOL // 2
        # the stream's totals event says the same, as the API document describes it
        totals = app.next_event("totals")
        spec = app.api("/api/openapi.json")
        events = spec["paths"]["/api/stream"]["get"]["responses"]["200"]["content"][
            "text/event-stream"
        ]["x-events"]
        schema = {**events["totals"]["data"], "components": spec["components"]}
        Draft202012Validator(schema).validate(totals)
        assert totals["trades"] == total
        assert (totals["symbols"], totals["connection"]) == (SYMBOLS, "connected")
        # (a quiet symbol's last taker order may still close and signal: counts only grow)
        later = app.symbols()
        signals = (sum(r["signals"] for r in rows), sum(r["signals"] for r in later))
        assert signals[0] <= totals["signals"] <= signals[1]
        page.wait_for_function(
            "n => Number(document.querySelector('#totals').dataset.trades) === n", arg=total
        )
        expect(page.locator("#totals")).to_contain_text(f"{SYMBOLS} symbols · {total:,} trades")

        # part of a name, typed in any case: the symbols containing it, the exact one first
        first, second, third = watched[7], watched[30], watched[64]
        offered = tab.find(first[:4].lower())
        assert offered, "no completion"
        assert all(first[:4] in s for s in offered)
        assert first in offered
        offered = tab.find(first.lower())
        assert offered[0] == first
        page.keyboard.press("Enter")  # the best match
        tab.chart_of(first)
        # one card: the symbol on the chart (not 120)
        assert tab.cards() == [f"binance:{first}"]
        expect(page.locator("#find-list")).to_be_hidden()

        # a completion picked with the mouse; the card of the one before stays (recent)
        offered = tab.find(second[:-4])
        page.click(f'#find-list li[data-symbol="{second}"]')
        tab.chart_of(second)
        assert tab.cards() == [f"binance:{second}", f"binance:{first}"]
        expect(page.locator(f'#symbols li[data-key="binance:{second}"]')).to_have_class(
            re.compile(r"\bselected\b")
        )
        # pinned: the first symbol's card stays however many are opened after it
        page.click(f'#symbols li[data-key="binance:{first}"] .pin')
        expect(page.locator(f'#symbols li[data-key="binance:{first}"] .pin')).to_have_attribute(
            "aria-pressed", "true"
        )
        for symbol in watched[80:87]:
            tab.find(symbol)
            page.keyboard.press("Enter")
            tab.chart_of(symbol)
        cards = tab.cards()
        assert cards[0] == f"binance:{watched[86]}"
        assert f"binance:{first}" in cards
        assert f"binance:{second}" not in cards  # no longer among the last opened
        assert len(cards) <= MAX_CARDS
        # a card of a quiet symbol (the tape has ended) says it is connected all the same
        expect(page.locator(f'#symbols li[data-key="binance:{first}"]')).to_have_attribute(
            "data-connection", "connected"
        )
        # a click on a card opens its chart; Back returns to the symbol before
        page.click(f'#symbols li[data-key="binance:{first}"] .name')
        tab.chart_of(first)
        page.go_back()
        tab.chart_of(watched[86])

        # the leaderboard: a row opens that symbol's chart, Back returns to the board
        page.click("#to-market")
        expect(page.locator("#market-view")).to_be_visible()
        # a press on a row holds the board's redraws until it is released (a busy market
        # redraws it about every second: a row replaced mid-click would swallow the click)
        page.wait_for_function("() => window.spikewatch.market().reads > 0")
        pressed = page.locator("#market tbody tr").nth(2)
        held = pressed.get_attribute("data-symbol")
        assert held is not None
        pressed.evaluate("tr => { tr.dataset.pressed = 'yes'; }")
        box = pressed.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 40, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.wait_for_function("() => Boolean(window.spikewatch.market().held)")
        expect(page.locator('#market tbody tr[data-pressed="yes"]')).to_have_count(1)
        page.mouse.up()
        tab.chart_of(held)
        page.go_back()
        expect(page.locator("#market-view")).to_be_visible()
        row = page.locator(f'#market tbody tr[data-symbol="{third}"]')
        page.fill("#market-search", third)
        expect(page.locator("#market tbody tr")).to_have_count(1)
        row.click()
        tab.chart_of(third)
        assert len(tab.cards()) <= MAX_CARDS
        page.go_back()
        expect(page.locator("#market-view")).to_be_visible()
        assert page.evaluate("location.hash") == "#market"
        # and forward again: the chart, as the address says
        page.go_forward()
        tab.chart_of(third)

        # a link names a symbol: the chart view opens on it, with its card alone besides
        # those this browser pinned or opened
        page.goto("about:blank")
        tab.open(f"{app.url}#binance:{second}")
        tab.chart_of(second)
        assert f"binance:{first}" in tab.cards()  # still pinned (remembered in the browser)
        # a link to a symbol not watched: the leaderboard, as with no symbol named
        page.goto("about:blank")
        tab.open(f"{app.url}#binance:NOPE1USDT")
        expect(page.locator("#market-view")).to_be_visible()
        assert page.evaluate("window.spikewatch.symbol") is None

        # a symbol listed after the page opened is found too (the server completes)
        app.sim.list_symbol("ZZZ9USDT", like=watched[0])
        assert app.engine.refresh_listing()
        assert "ZZZ9USDT" in app.engine.symbols()
        assert tab.find("zzz9") == ["ZZZ9USDT"]
        page.keyboard.press("Enter")
        expect(page.locator("#chart-title")).to_have_text("ZZZ9USDT · binance · price and volume")
        assert page.evaluate("location.hash") == "#binance:ZZZ9USDT"
        # nothing matches: said so, and Enter opens nothing
        tab.find("qqq")
        expect(page.locator("#find-list")).to_contain_text("No watched symbol contains “QQQ”")
        page.keyboard.press("Enter")
        assert page.evaluate("location.hash") == "#binance:ZZZ9USDT"

        # on a phone: the chart view fits the screen's width, the finder too
        phone = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        try:
            small = Tab(phone.new_page())
            small.page.on("pageerror", lambda exc: small.crashes.append(str(exc)))
            small.open(f"{app.url}#binance:{third}")
            small.chart_of(third)
            assert small.find(third[:3]) != []
            expect(small.page.locator("#find-list")).to_be_visible()
            width = small.page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"]
            assert small.crashes == []
        finally:
            phone.close()

    assert tab.problems == []
    assert tab.crashes == []


def test_with_a_short_list_the_chart_view_keeps_a_card_per_symbol(
    tmp_path: Path, tape: MarketTape, tab: Tab
) -> None:
    watched = sorted(final_ids(tape))[:3]
    with serve(tmp_path, tape, ",".join(watched)) as app:
        tab.open(f"{app.url}#binance:{watched[1]}")
        page = tab.page
        assert page.evaluate("window.spikewatch.many") is False
        tab.chart_of(watched[1])
        # as before: the select lists every symbol, a card each, no search box
        expect(page.locator("#symbol")).to_be_visible()
        expect(page.locator("#symbol option:not([hidden])")).to_have_count(3)
        expect(page.locator("#find")).to_be_hidden()
        assert sorted(tab.cards()) == [f"binance:{s}" for s in watched]
        expect(page.locator("#cards-note")).to_be_hidden()
        page.select_option("#symbol", f"binance:{watched[2]}")
        tab.chart_of(watched[2])
        assert len(tab.cards()) == 3

        # the header's total is every symbol's
        def settled() -> int | None:
            sums = [sum(s["trades"] for s in app.api("/api/status")["symbols"].values())]
            page.wait_for_timeout(1200)
            sums.append(sum(s["trades"] for s in app.api("/api/status")["symbols"].values()))
            return sums[0] if sums[0] == sums[1] and sums[0] > 0 else None

        total = wait_until(settled, timeout=60)
        page.wait_for_function(
            "n => Number(document.querySelector('#totals').dataset.trades) === n", arg=total
        )
        expect(page.locator("#totals")).to_contain_text("3 symbols")
    assert tab.problems == []
    assert tab.crashes == []
