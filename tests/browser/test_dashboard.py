"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against the
production server (waitress), the live engine and the simulator playing real recorded
Binance trades.

Chromium is the machine's own (``apt-get install chromium``; `.ci/run` installs it), never a
browser that Playwright downloads. The chart library comes from ``make assets``.
"""

from __future__ import annotations

import contextlib
import queue
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright

from spikewatch.config import load_settings
from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.core.model import Signal, VolumeSpikeSignal, iso_utc
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web.app import create_app
from spikewatch.web.dashboard import CHART_LIBRARY, STATIC_DIR

from helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    caught_up,
    free_port,
    served_engine,
    wait_until,
    waitress_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: The issue: a signal pushed through the engine is in the table and on the chart within 1 s.
LATENCY_LIMIT_S = 1.0
SYMBOL = "BTCUSDT"
EXCHANGE = "binance"
#: A phone held upright (the issue: the dashboard must work 400 px wide).
PHONE = {"width": 400, "height": 800}
#: Frames of the spot recording with the shipped alert profile's two alerts in them (the
#: first opens on a $617k trade at 23:57:33 and two more signals fold into it; the second
#: opens at 00:01:24), 4.5 minutes of trades: more than the chart shows at once.
ALERT_FRAMES = slice(3000, 13100)
#: Records calls of the page to Notification.requestPermission and new Notification
#: (passed on to the browser's own).
RECORD_NOTIFICATIONS = """
window.permissionRequests = 0;
window.notified = [];
if (window.Notification) {
  const Real = window.Notification;
  const request = Real.requestPermission.bind(Real);
  class Recorded extends Real {
    constructor(title, options) {
      super(title, options);
      window.notified.push(title);
    }
  }
  Recorded.requestPermission = (...args) => {
    window.permissionRequests += 1;
    return request(...args);
  };
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  window.Notification = Recorded;
}
"""
#: Records every text the header's stream pill shows, from the page's first moment on.
RECORD_PILL = """
window.pillTexts = [];
new MutationObserver(() => {
  const pill = document.getElementById("stream");
  const seen = window.pillTexts;
  if (pill && seen[seen.length - 1] !== pill.textContent) seen.push(pill.textContent);
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@dataclass
class Emitted:
    """A signal as the engine emitted it, and when (wall clock, like the page's Date.now)."""

    at: float
    signal: Signal


@dataclass
class Live:
    engine: Engine
    app: Flask
    url: str
    emitted: queue.Queue[Emitted] = field(default_factory=queue.Queue)
    history: list[Emitted] = field(default_factory=list)

    def wait_for_signals(self, count: int, timeout: float = 30) -> None:
        """Until the engine has emitted at least ``count`` signals."""
        deadline = time.monotonic() + timeout
        while len(self.history) < count:
            assert time.monotonic() < deadline, f"only {len(self.history)} of {count} signals"
            time.sleep(0.02)


@dataclass
class Dashboard:
    page: Page
    problems: list[str] = field(default_factory=list)  # console errors and warnings
    crashes: list[str] = field(default_factory=list)  # uncaught exceptions
    foreign: list[str] = field(default_factory=list)  # requests that leave 127.0.0.1
    api: list[str] = field(default_factory=list)  # paths and queries of its /api/ requests

    def open(self, url: str) -> None:
        """Open the page and wait until it has loaded its history."""
        self.page.goto(url)
        self.page.wait_for_function("() => window.spikewatch && window.spikewatch.ready")

    def row_ids(self) -> list[str]:
        """The signal ids in the table, top to bottom."""
        ids: list[str] = self.page.eval_on_selector_all(
            "#signals tbody tr", "rows => rows.map(r => r.dataset.id)"
        )
        return ids


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, for this module's tests (closed before any other's)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's Chromium "
            "(apt-get install chromium; .ci/run installs it)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chart_library() -> None:
    """The chart library must be installed: a missing one fails, never skips."""
    if not (STATIC_DIR / CHART_LIBRARY).is_file():
        pytest.fail(
            f"the dashboard's chart library {STATIC_DIR / CHART_LIBRARY} is missing: "
            "run `make assets` (npm ci, then copy into static/vendor/)",
            pytrace=False,
        )


@pytest.fixture
def dashboard(chromium: Browser) -> Iterator[Dashboard]:
    """A fresh page on a laptop-sized screen that records every console problem."""
    with open_board(chromium, viewport={"width": 1280, "height": 800}) as board:
        yield board


@pytest.fixture
def phone(chromium: Browser) -> Iterator[Dashboard]:
    """The same on a phone: 400 x 800 CSS pixels, touch, the page's viewport meta honoured."""
    with open_board(chromium, viewport=PHONE, is_mobile=True, has_touch=True) as board:
        yield board


@contextlib.contextmanager
def open_board(chromium: Browser, **options: Any) -> Iterator[Dashboard]:
    """A fresh page in a new browser context (``options`` as Playwright's new_context)."""
    context = chromium.new_context(**options)
    board = Dashboard(context.new_page())

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            board.problems.append(f"{message.type}: {message.text} ({message.location})")

    def on_request(request: Request) -> None:
        url = urlsplit(request.url)
        if url.hostname not in ("127.0.0.1", None):
            board.foreign.append(request.url)
        elif url.path.startswith("/api/"):
            board.api.append(f"{url.path}?{url.query}")

    board.page.on("console", on_console)
    board.page.on("pageerror", lambda exc: board.crashes.append(str(exc)))
    board.page.on("request", on_request)
    board.page.set_default_timeout(10_000)
    try:
        yield board
    finally:
        context.close()


@pytest.fixture
def live(tmp_path: Path, btc_frames: list[bytes]) -> Iterator[Live]:
    """The simulator (paused until the engine connects), the engine (not yet started), and
    the web server; every signal the engine emits is recorded with its time."""
    with served_engine(
        btc_frames[:8000],
        tmp_path / "s.db",
        speed=10,
        threads=32,
        connection_limit=100,
        status_interval=0.2,
    ) as served:
        live = Live(served.engine, served.app, f"http://127.0.0.1:{served.port}/")

        def on_signal(signal: Signal) -> None:
            emitted = Emitted(time.time(), signal)
            live.history.append(emitted)
            live.emitted.put(emitted)

        served.engine.add_listener(on_signal)
        yield live


@dataclass
class Offline:
    """The app as on a machine without internet: its exchange URL is a port of 127.0.0.1
    that nothing listens on, so every connection attempt is refused."""

    engine: Engine
    url: str
    exchange_port: int
    frames: list[bytes]
    exchanges: list[SimulatorThread] = field(default_factory=list)

    def exchange_comes_up(self) -> None:
        """The exchange appears at last: the simulator starts on the engine's port."""
        sim = SimulatorThread(
            Simulator(tape_from_frames(self.frames), speed=10), port=self.exchange_port
        )
        self.exchanges.append(sim)
        sim.start()


@pytest.fixture
def offline(tmp_path: Path, btc_frames: list[bytes]) -> Iterator[Offline]:
    """The engine (not yet started) aimed at a closed local port, and the web server."""
    port = free_port()
    settings = load_settings(
        {
            "ws_url": f"ws://127.0.0.1:{port}",
            "rest_url": f"http://127.0.0.1:{port}",
            "db": str(tmp_path / "s.db"),
        },
        env={},
    )
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.2))
    engine.status_interval = 0.2
    app = create_app(settings, engine)
    board = Offline(engine, "", port, btc_frames[:3000])
    try:
        with waitress_server(app, threads=8, connection_limit=100) as server:
            board.url = f"http://127.0.0.1:{server.effective_port}/"
            try:
                yield board
            finally:
                engine.stop()
    finally:
        for sim in board.exchanges:
            sim.stop()
        store.close()


@dataclass
class Alerting:
    """The app with the shipped alert profile, the engine (not yet started) and the
    simulator playing the frames with alerts in them as fast as the engine reads."""

    engine: Engine
    url: str
    sim: SimulatorThread
    events: list[AlertEvent]
    last_id: int

    def opened(self) -> list[Alert]:
        return [e.alert for e in list(self.events) if e.opened]

    def latest(self) -> dict[str, Alert]:
        return {e.alert.id: e.alert for e in list(self.events)}

    def played(self) -> None:
        """Until the engine has processed every frame (and so raised every alert)."""
        wait_until(caught_up(self.engine, self.last_id), 30)


@pytest.fixture
def alerting(tmp_path: Path, btc_frames: list[bytes]) -> Iterator[Alerting]:
    tape = tape_from_frames(btc_frames[ALERT_FRAMES])
    sim = SimulatorThread(Simulator(tape, speed=None))
    sim.start()
    settings = load_settings(
        {
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "db": str(tmp_path / "s.db"),
            "alert_profile": "default",
        },
        env={},
    )
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.2))
    # No clock tick while the tape plays: a tick completes every open taker order whose
    # first fill is 2 s older than the wall clock, which recorded trades always are, so
    # ticks would cut orders wherever they fall and the alerts' folds would vary by load.
    engine.status_interval = 60
    events: list[AlertEvent] = []
    engine.add_alert_sink(events.extend)
    app = create_app(settings, engine)
    try:
        with waitress_server(app, threads=16, connection_limit=100) as server:
            url = f"http://127.0.0.1:{server.effective_port}/"
            try:
                yield Alerting(engine, url, sim, events, tape[-1].trade_id)
            finally:
                engine.stop()
    finally:
        sim.stop()
        store.close()


def assert_newest_first(board: Dashboard) -> None:
    times: list[int] = board.page.eval_on_selector_all(
        "#signals tbody tr", "rows => rows.map(r => Number(r.dataset.time))"
    )
    assert times == sorted(times, reverse=True)


def test_a_signal_is_in_the_table_and_on_the_chart_within_a_second_of_the_engine(
    live: Live, dashboard: Dashboard, chart_library: None
) -> None:
    page = dashboard.page
    dashboard.open(live.url)
    expect(page.locator("#stream")).to_have_attribute("data-state", "live")
    expect(page.locator("#banner")).to_be_hidden()
    assert page.locator("#chart canvas").count() > 0, "the chart draws on canvases"
    expect(page.locator("#chart-note")).to_be_hidden()
    # the series is named with its exchange: BTCUSDT spot is not BTCUSDT futures
    expect(page.locator("#symbol")).to_have_value(f"{EXCHANGE}:{SYMBOL}")
    expect(page.locator("#symbol option:checked")).to_have_text(f"{SYMBOL} · {EXCHANGE}")
    expect(page.locator("#chart-title")).to_have_text(f"{SYMBOL} · {EXCHANGE} · price and volume")
    # every request for signals, bars or the stream names the exchange
    named = [
        u for u in dashboard.api if u.split("?")[0] in ("/api/signals", "/api/bars", "/api/stream")
    ]
    assert {u.split("?")[0] for u in named} == {"/api/signals", "/api/bars", "/api/stream"}
    assert all(f"exchange={EXCHANGE}" in u for u in named), named
    expect(page.locator("#signals-empty")).to_be_visible()  # nothing yet

    live.engine.start()
    card = page.locator(f'#symbols li[data-symbol="{SYMBOL}"]')
    expect(card).to_have_attribute("data-connection", "connected")
    expect(card).to_have_attribute("data-exchange", EXCHANGE)
    expect(card.locator(".name")).to_have_text(f"{SYMBOL} {EXCHANGE}")

    latencies = []
    for _ in range(10):
        emitted = live.emitted.get(timeout=30)
        signal_id = emitted.signal.id
        row = page.locator(f'#signals tbody tr[data-id="{signal_id}"]')
        expect(row).to_have_count(1, timeout=2_000)
        # the marker: the chart library's own list of markers holds the signal's id
        page.wait_for_function(
            "id => window.spikewatch.markers().includes(id)", arg=signal_id, timeout=2_000
        )
        shown_ms = page.evaluate(
            "id => Math.max(window.spikewatch.rendered[id], window.spikewatch.marked[id])",
            signal_id,
        )
        latencies.append(shown_ms / 1000 - emitted.at)
        cells = row.locator("td")
        expect(cells.nth(1)).to_have_text(f"{SYMBOL} · {EXCHANGE}")
        expect(cells.nth(2)).to_have_text(emitted.signal.side)
        spike = emitted.signal
        assert isinstance(spike, VolumeSpikeSignal)
        expect(cells.nth(5)).to_have_text(f"{spike.ratio:.1f}\N{MULTIPLICATION SIGN}")

    worst = max(latencies)
    print(
        f"engine -> table row and chart marker: median {sorted(latencies)[5] * 1000:.0f} ms, "
        f"worst {worst * 1000:.0f} ms over {len(latencies)} signals"
    )
    assert worst < LATENCY_LIMIT_S, f"a signal took {worst:.3f} s to show: {latencies}"
    assert_newest_first(dashboard)
    assert page.evaluate("window.spikewatch.bars()") > 0, "live bars reach the chart"
    expect(card.locator(".last")).not_to_have_text("—")
    assert dashboard.problems == []
    assert dashboard.crashes == []
    assert dashboard.foreign == [], "the page loads nothing from outside the app"


def test_opening_the_page_loads_recent_bars_and_signals(
    live: Live, dashboard: Dashboard, chart_library: None
) -> None:
    live.engine.start()
    live.wait_for_signals(15)
    assert live.engine.flush(5)
    before = {e.signal.id for e in list(live.history)}
    bars_before = len(live.engine.bars(SYMBOL))

    dashboard.open(live.url)

    assert before <= set(dashboard.row_ids()), "every stored signal is in the table"
    assert_newest_first(dashboard)
    assert dashboard.page.evaluate("window.spikewatch.bars()") >= min(600, bars_before)
    dashboard.page.wait_for_function(
        "ids => ids.every(id => window.spikewatch.markers().includes(id))", arg=sorted(before)
    )
    assert dashboard.problems == []
    assert dashboard.crashes == []


def test_a_dropped_stream_is_shown_and_the_page_catches_up_on_what_it_missed(
    live: Live, dashboard: Dashboard, chart_library: None
) -> None:
    page = dashboard.page
    live.engine.start()
    dashboard.open(live.url)
    live.wait_for_signals(5)
    banner = page.locator("#banner")

    live.engine.hub.close()  # ends every live stream, and refuses new ones (503)
    expect(banner).to_be_visible(timeout=5_000)
    expect(banner).to_contain_text("disconnected")
    expect(page.locator("#stream")).not_to_have_attribute("data-state", "live")
    card = page.locator(f'#symbols li[data-symbol="{SYMBOL}"]')
    expect(card).to_have_attribute("data-connection", "unknown")  # no longer known
    live.wait_for_signals(len(live.history) + 10)  # signals the page cannot get live

    live.engine.hub.max_clients = 100  # the server takes streams again
    expect(page.locator("#stream")).to_have_attribute("data-state", "live", timeout=10_000)
    expect(banner).to_be_hidden()
    expect(card).to_have_attribute("data-connection", "connected")
    missed = [e.signal.id for e in list(live.history)]
    assert len(missed) < 200, "all of them fit in the table"
    page.wait_for_function(
        "ids => ids.every(id => id in window.spikewatch.rendered)", arg=missed, timeout=5_000
    )
    ids = dashboard.row_ids()
    assert len(ids) == len(set(ids)), "each signal once"
    assert_newest_first(dashboard)
    # A 503 is logged by the browser itself; the page's code raised nothing.
    assert dashboard.crashes == []


def test_without_the_chart_library_the_page_still_works_and_says_how_to_install_it(
    live: Live, dashboard: Dashboard, tmp_path: Path
) -> None:
    live.app.config["SPIKEWATCH_CHART_LIBRARY"] = str(tmp_path / "not-installed.js")
    page = dashboard.page
    dashboard.open(live.url)
    note = page.locator("#chart-note")
    expect(note).to_be_visible()
    expect(note).to_have_text("chart library not installed: run make assets")
    assert page.evaluate("window.spikewatch.chart") is False

    live.engine.start()
    expect(page.locator(f'#symbols li[data-symbol="{SYMBOL}"]')).to_have_attribute(
        "data-connection", "connected"
    )
    emitted = live.emitted.get(timeout=30)
    expect(page.locator(f'#signals tbody tr[data-id="{emitted.signal.id}"]')).to_have_count(1)
    assert dashboard.problems == [], "no 404, no script error"
    assert dashboard.crashes == []


def test_without_the_exchange_the_page_is_not_live_says_why_and_goes_live_once_connected(
    offline: Offline, dashboard: Dashboard, chart_library: None, tmp_path: Path
) -> None:
    """`python app.py` on a machine without internet: the stream to the page is up, the
    exchange is not. The page must not say LIVE, and must say why its chart is empty."""
    page = dashboard.page
    page.add_init_script(RECORD_PILL)
    offline.engine.start()
    dashboard.open(offline.url)
    pill = page.locator("#stream")
    note = page.locator("#exchange-note")
    card = page.locator(f'#symbols li[data-symbol="{SYMBOL}"]')

    expect(pill).to_have_text("offline")
    expect(pill).to_have_attribute("data-look", "offline")
    expect(note).to_be_visible()
    connection = offline.engine.status().connection
    assert connection.state != "connected"
    assert connection.last_error, "the engine has tried and failed"
    expect(note).to_contain_text(f"Not connected to Binance: {connection.last_error.rstrip('. ')}.")
    expect(note).to_contain_text("No trades yet.")
    expect(note).to_contain_text("Offline? Try make demo.")
    expect(note.locator("code")).to_have_text("make demo")
    expect(card).to_have_attribute("data-connection", re.compile("^(waiting|connecting)$"))
    assert page.evaluate("window.spikewatch.bars()") == 0, "the chart is empty"

    # it keeps trying, and the page keeps saying so (and never says live meanwhile)
    tried = connection.failed_attempts
    wait_until(lambda: offline.engine.status().connection.failed_attempts >= tried + 5, 10)
    expect(note).to_contain_text(re.compile(r"Retrying \(\d+ failed attempts so far\)"))
    expect(note).to_be_visible()
    page.screenshot(path=tmp_path / "offline.png")
    shown = page.evaluate("window.pillTexts")
    assert "live" not in shown, shown

    offline.exchange_comes_up()
    expect(pill).to_have_text("live", timeout=10_000)
    expect(pill).to_have_attribute("data-look", "live")
    expect(note).to_be_hidden()
    expect(card).to_have_attribute("data-connection", "connected")
    page.wait_for_function("() => window.spikewatch.bars() > 0")
    assert dashboard.problems == []
    assert dashboard.crashes == []
    assert dashboard.foreign == []


def test_on_a_phone_the_page_fits_the_screen_with_price_state_and_the_essential_columns(
    live: Live, phone: Dashboard, chart_library: None, tmp_path: Path
) -> None:
    page = phone.page
    live.engine.start()
    live.wait_for_signals(5)
    phone.open(live.url)
    expect(page.locator("#stream")).to_have_text("live")
    expect(page.locator("#price")).not_to_have_text("\N{EM DASH}")
    expect(page.locator("#signals tbody tr").first).to_be_visible()
    page.wait_for_function("() => window.spikewatch.bars() > 0")

    # no sideways scrolling
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # the price, the stream's state and the symbol's connection on the first screen
    for selector in ("#price", "#stream", f'#symbols li[data-symbol="{SYMBOL}"] .conn'):
        box = page.locator(selector).bounding_box()
        assert box is not None, f"{selector} is not shown"
        left, top = box["x"], box["y"]
        right, bottom = left + box["width"], top + box["height"]
        assert left >= 0, (selector, box)
        assert right <= PHONE["width"], (selector, box)
        assert top >= 0, (selector, box)
        assert bottom <= PHONE["height"], (selector, box)
    # the table keeps the essential columns, and all of each fits its panel
    expect(page.locator("#signals thead th:visible")).to_have_text(
        ["Time (UTC)", "Symbol", "Price", "Volume"]
    )
    expect(page.locator("#signals tbody tr").first.locator("td:visible")).to_have_count(4)
    scroll, client = page.eval_on_selector(".table-wrap", "w => [w.scrollWidth, w.clientWidth]")
    assert scroll <= client, "the table is cut off in its panel"
    page.screenshot(path=tmp_path / "phone.png", full_page=True)
    assert phone.problems == []
    assert phone.crashes == []


# -- alerts -------------------------------------------------------------------------------


#: True once the chart's visible time range holds the moment passed (seconds).
SHOWS_MOMENT = (
    "t => { const r = window.spikewatch.visibleRange(); return r && r.from <= t && t <= r.to; }"
)


def visible_range(page: Page) -> tuple[float, float]:
    shown = page.evaluate("window.spikewatch.visibleRange()")
    assert shown is not None
    return float(shown["from"]), float(shown["to"])


def test_with_alert_rules_the_table_shows_alerts_that_arrive_live_and_update_their_row(
    alerting: Alerting, dashboard: Dashboard, chart_library: None, tmp_path: Path
) -> None:
    page = dashboard.page
    dashboard.open(alerting.url)
    # the app has alert rules: the table opens on alerts, and waits for the first
    expect(page.locator("#view-alerts")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#alerts-view")).to_be_visible()
    expect(page.locator("#signals-view")).to_be_hidden()
    expect(page.locator("#alerts-empty")).to_have_text(
        "Awaiting first alert\N{HORIZONTAL ELLIPSIS}"
    )
    expect(page.locator("#alert-sound")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#alert-notify")).to_have_attribute("aria-pressed", "false")

    # alerts that open while the signals are shown are counted on the switch
    page.locator("#view-signals").click()
    alerting.engine.start()
    alerting.played()
    first, second = alerting.opened()
    badge = page.locator("#alert-badge")
    expect(badge).to_have_text("2")
    page.locator("#view-alerts").click()
    expect(badge).to_be_hidden()
    rows = page.locator("#alerts tbody tr.alert")
    expect(rows).to_have_count(2)  # one row per alert: its updates replaced it
    assert page.eval_on_selector_all(
        "#alerts tbody tr.alert", "rows => rows.map(r => r.dataset.id)"
    ) == [second.id, first.id]  # newest first
    folded = alerting.latest()[first.id]
    assert folded.signals == 3  # as a replay of these trades gives (no tick cut an order)
    row = page.locator(f'#alerts tbody tr[data-id="{first.id}"]')
    expect(row).to_have_attribute("data-signals", "3")  # the latest fold, pushed live
    expect(row).to_have_attribute("data-severity", "warning")
    cells = row.locator("td")
    expect(cells.nth(0)).to_have_text(first.timestamp[11:19])
    expect(cells.nth(1)).to_have_text("BTCUSDT")
    expect(cells.nth(1)).to_have_attribute("title", "BTCUSDT on binance")
    expect(cells.nth(2)).to_have_text("whale")
    expect(cells.nth(3)).to_have_text(folded.side)
    assert first.usd_value is not None
    expect(cells.nth(4)).to_have_text(f"${first.usd_value / 1000:.1f}k")  # USD
    expect(cells.nth(5)).to_have_text(f"{first.price:,.2f} USDT")  # in the quote asset
    expect(cells.nth(6)).to_have_text("3 \N{BLACK RIGHT-POINTING SMALL TRIANGLE}")
    # the severity's colour down the row's edge
    edge = cells.nth(0).evaluate("td => getComputedStyle(td).boxShadow")
    assert "rgb(245, 166, 35)" in edge, edge

    # an alert of several signals opens to its summary
    row.locator("button.expand").click()
    detail = page.locator(f'#alerts tr.detail[data-for="{first.id}"]')
    expect(detail).to_be_visible()
    expect(detail.locator(".summary")).to_have_text(folded.summary)
    expect(detail).to_contain_text(
        f"3 signals from {first.timestamp[11:19]} to {iso_utc(folded.last_time_us)[11:19]} UTC"
    )
    expect(row.locator("button.expand")).to_have_attribute("aria-expanded", "true")
    scroll, client = page.eval_on_selector("#alerts-view", "w => [w.scrollWidth, w.clientWidth]")
    assert scroll <= client, "every column of the alerts table fits its panel"
    page.screenshot(path="/tmp/spikewatch-alerts.png")
    page.screenshot(path=tmp_path / "alerts.png")

    # the switch: signals, and back
    page.locator("#view-signals").click()
    expect(page.locator("#signals-view")).to_be_visible()
    expect(page.locator("#alerts-view")).to_be_hidden()
    expect(page.locator("#alert-options")).to_be_hidden()
    expect(page.locator("#signals tbody tr").first).to_be_visible()
    page.locator("#view-alerts").click()
    expect(page.locator("#alerts-view")).to_be_visible()
    expect(detail).to_be_visible()  # still open
    assert dashboard.problems == []
    assert dashboard.crashes == []
    assert dashboard.foreign == []


def test_a_click_on_an_alert_moves_the_chart_to_its_moment(
    alerting: Alerting, dashboard: Dashboard, chart_library: None
) -> None:
    alerting.engine.start()
    alerting.played()
    first = alerting.opened()[0]
    page = dashboard.page
    dashboard.open(alerting.url)
    row = page.locator(f'#alerts tbody tr[data-id="{first.id}"]')
    expect(row).to_be_visible()
    moment = first.time_us / 1e6
    page.wait_for_function("() => window.spikewatch.bars() > 0")
    start, end = visible_range(page)
    assert not start <= moment <= end, "the chart shows the latest minutes, not the alert's"

    row.click()

    page.wait_for_function(SHOWS_MOMENT, arg=moment)
    start, end = visible_range(page)
    assert start <= moment <= end
    expect(row).to_have_class(re.compile(r"\bfocused\b"))
    page.wait_for_function(
        "id => window.spikewatch.alertMarkers().includes(id)", arg=first.id
    )  # and its marker on the chart
    page.screenshot(path="/tmp/spikewatch-alert-focus.png")
    assert dashboard.problems == []
    assert dashboard.crashes == []


def test_without_alert_rules_the_table_shows_signals_and_the_alerts_tab_says_how_to_add_rules(
    live: Live, dashboard: Dashboard, chart_library: None
) -> None:
    page = dashboard.page
    dashboard.open(live.url)
    expect(page.locator("#view-signals")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#signals-view")).to_be_visible()
    expect(page.locator("#alerts-view")).to_be_hidden()

    page.locator("#view-alerts").click()

    expect(page.locator("#alerts-view")).to_be_visible()
    empty = page.locator("#alerts-empty")
    expect(empty).to_contain_text("No alert rules are configured")
    expect(empty).to_contain_text("--alert-profile default")
    expect(page.locator("#alerts tbody tr")).to_have_count(0)
    assert dashboard.problems == []
    assert dashboard.crashes == []


def test_sound_and_notifications_are_off_until_turned_on_and_then_come_with_new_alerts(
    alerting: Alerting, chromium: Browser, chart_library: None
) -> None:
    origin = alerting.url.rstrip("/")
    # a browser where this page may notify (as after the user said yes once)
    with open_board(chromium, viewport={"width": 1280, "height": 800}) as board:
        page = board.page
        page.context.grant_permissions(["notifications"], origin=origin)
        page.add_init_script(RECORD_NOTIFICATIONS)
        board.open(alerting.url)
        assert page.evaluate("window.permissionRequests") == 0, "never asked on its own"
        page.locator("#alert-sound").click()
        page.locator("#alert-notify").click()
        expect(page.locator("#alert-sound")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#alert-notify")).to_have_attribute("aria-pressed", "true")

        alerting.engine.start()
        alerting.played()
        opened = alerting.opened()
        page.wait_for_function("n => window.spikewatch.notifications.length >= n", arg=len(opened))
        assert page.evaluate("window.spikewatch.notifications") == [a.id for a in opened]
        assert page.evaluate("window.notified") == [f"WARNING BTCUSDT {a.rule}" for a in opened], (
            "one notification per alert opened, none for its updates"
        )
        assert page.evaluate("window.spikewatch.sounds") == len(opened)
        assert board.crashes == []
        assert board.problems == []

    # a browser that was never asked: asked on the click only
    with open_board(chromium, viewport={"width": 1280, "height": 800}) as board:
        page = board.page
        page.add_init_script(RECORD_NOTIFICATIONS)
        board.open(alerting.url)
        expect(page.locator("#alerts tbody tr.alert")).to_have_count(len(opened))
        assert page.evaluate("window.permissionRequests") == 0
        assert page.evaluate("window.spikewatch.sounds") == 0  # off by default

        page.locator("#alert-notify").click()

        page.wait_for_function("() => window.permissionRequests === 1")
        assert board.crashes == []


def test_on_a_phone_alerts_fit_the_screen_and_a_click_brings_the_chart_to_its_moment(
    alerting: Alerting, phone: Dashboard, chart_library: None, tmp_path: Path
) -> None:
    alerting.engine.start()
    alerting.played()
    first = alerting.opened()[0]
    page = phone.page
    phone.open(alerting.url)
    row = page.locator(f'#alerts tbody tr[data-id="{first.id}"]')
    expect(row).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(page.locator("#alerts thead th:visible")).to_have_text(
        ["Time (UTC)", "Symbol", "Rule", "Value", "Signals"]
    )
    scroll, client = page.eval_on_selector("#alerts-view", "w => [w.scrollWidth, w.clientWidth]")
    assert scroll <= client, "the alerts table is cut off in its panel"
    page.screenshot(path="/tmp/spikewatch-phone-alerts.png", full_page=True)
    page.screenshot(path=tmp_path / "phone-alerts.png", full_page=True)

    row.click()

    moment = first.time_us / 1e6
    page.wait_for_function(SHOWS_MOMENT, arg=moment)
    box = page.locator("#chart").bounding_box()
    assert box is not None
    assert box["y"] < PHONE["height"], "the chart is in view"
    assert box["y"] + box["height"] > 0, "the chart is in view"
    page.screenshot(path="/tmp/spikewatch-phone-focus.png")
    assert phone.problems == []
    assert phone.crashes == []
