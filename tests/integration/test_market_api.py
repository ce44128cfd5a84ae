"""The market view's API (``/api/symbols``, ``/api/top``) over a real engine, a real SQLite
file and real recorded Binance trades of two symbols (BTCUSDT and ETHUSDT spot, the same
ten minutes), fed by hand through ``Engine.handle_frame`` as the WebSocket client would.
The engine is never started, so nothing touches the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from spikewatch.config import load_settings
from spikewatch.core.alerts import AlertEvent, usd_of
from spikewatch.core.model import Signal
from spikewatch.engine import Engine
from spikewatch.store import SQLiteSignalStore, StoreWriter
from spikewatch.web import create_app

from helpers import spike_signal, two_symbols

ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
ETH_TRADES = 14_515
BTC_TRADES = 19_904
#: The last trade of the two recordings (BTCUSDT's), the board's read time after them.
LAST_TRADE_TIME = "2024-08-09T00:05:05.800Z"


@pytest.fixture(scope="module")
def market_frames(fixtures_dir: Path, btc_frames: list[bytes]) -> list[bytes]:
    """The BTCUSDT recording interleaved by trade time with the real ETHUSDT trades."""
    frames = two_symbols(fixtures_dir, btc_frames)
    assert len(frames) == ETH_TRADES + BTC_TRADES
    return frames


@dataclass
class Market:
    """One spikewatch process: engine, its store writer, the app; what it emitted."""

    store: SQLiteSignalStore
    engine: Engine
    writer: StoreWriter
    app: Flask
    client: FlaskClient
    emitted: list[Signal]
    alerts: list[AlertEvent]

    def feed(self, frames: Iterable[bytes]) -> None:
        for frame in frames:
            self.engine.handle_frame(frame)
        assert self.writer.flush(timeout=10)

    def get(self, path: str, **query: str | int) -> tuple[int, Any]:
        response = self.client.get(path, query_string=query)
        assert response.mimetype == "application/json"
        return response.status_code, response.get_json()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Market]]:
    """Start spikewatch on this test's database; call again to "restart" on it."""
    made: list[Market] = []

    def launch(**flags: str) -> Market:
        settings = load_settings(
            {"db": str(tmp_path / "s.db"), "symbols": "BTCUSDT,ETHUSDT", **flags}, env={}
        )
        store = SQLiteSignalStore(settings.db)
        engine = Engine(settings, store)
        # Engine.start() would connect to Binance: this writer is the same write path
        writer = StoreWriter(store, maxsize=settings.store_queue)
        emitted: list[Signal] = []
        alerts: list[AlertEvent] = []
        engine.add_listener(emitted.append)
        engine.add_listener(writer.put)
        engine.add_alert_sink(alerts.extend)
        app = create_app(settings, engine)
        app.config["TESTING"] = True
        market = Market(store, engine, writer, app, app.test_client(), emitted, alerts)
        made.append(market)
        return market

    yield launch
    for market in made:
        market.writer.close()
        market.engine.stop()
        market.store.close()


@pytest.fixture
def fed(launch: Callable[..., Market], market_frames: list[bytes]) -> Market:
    """Spikewatch with the shipped alert rules after both recordings went through it."""
    market = launch(alert_profile="default")
    market.feed(market_frames)
    assert {s.symbol for s in market.emitted} == {"BTCUSDT", "ETHUSDT"}
    return market


def micros(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def in_window(time_us: int, now_us: int, window: str) -> bool:
    """The API's windows: 30 buckets of 10 s, or 60 of a minute, up to now's bucket."""
    width, size = {"5m": (10_000_000, 30), "1h": (60_000_000, 60)}[window]
    return now_us // width - size < time_us // width <= now_us // width


# -- /api/top --------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["5m", "1h"])
def test_the_leaderboard_counts_what_the_engine_emitted_in_the_window(
    fed: Market, window: str
) -> None:
    status, body = fed.get("/api/top", window=window)

    assert status == 200, body
    assert body["now"] == LAST_TRADE_TIME  # read at the latest trade, exchange time
    assert body["bucket_s"] == (10 if window == "5m" else 60)
    assert {r["symbol"] for r in body["rows"]} == {"BTCUSDT", "ETHUSDT"}
    now = micros(LAST_TRADE_TIME)
    for row in body["rows"]:
        mine = [
            s
            for s in fed.emitted
            if s.symbol == row["symbol"] and in_window(s.time_us, now, window)
        ]
        opened = [
            e.alert
            for e in fed.alerts
            if e.opened
            and e.alert.symbol == row["symbol"]
            and in_window(e.alert.time_us, now, window)
        ]
        assert row["exchange"] == "binance"
        assert (row["base"], row["quote"]) == (row["symbol"][:3], "USDT")
        assert row["signals"] == len(mine) == sum(row["spark"])
        assert row["alerts"] == len(opened)
        values = [v for v in map(usd_of, mine) if v is not None]
        assert row["usd_max"] == (max(values) if values else None)
        ratios = [float(r) for s in mine if (r := getattr(s, "ratio", None)) is not None]
        assert row["ratio_max"] == (max(ratios) if ratios else None)
        assert len(row["spark"]) == (30 if window == "5m" else 60)
        assert row["last_price"] > 0
        latest = max((s for s in fed.emitted if s.symbol == row["symbol"]), key=lambda s: s.time_us)
        assert row["last_signal"]["time_us"] == latest.time_us
    hour = fed.get("/api/top", window="1h")[1]
    assert sum(r["signals"] for r in hour["rows"]) == len(fed.emitted)  # ten minutes: all


@pytest.mark.parametrize("by", ["signals", "alerts", "usd", "ratio"])
def test_the_leaderboard_ranks_by_what_is_asked(fed: Market, by: str) -> None:
    body = fed.get("/api/top", window="1h", by=by)[1]
    field = {"signals": "signals", "alerts": "alerts", "usd": "usd_max", "ratio": "ratio_max"}

    values = [r[field[by]] or 0 for r in body["rows"]]
    assert values == sorted(values, reverse=True)
    assert [r["rank"] for r in body["rows"]] == [1, 2]
    assert (body["window"], body["by"], body["count"], body["total"]) == ("1h", by, 2, 2)


def test_search_quote_and_limit_narrow_the_leaderboard(fed: Market) -> None:
    assert [r["symbol"] for r in fed.get("/api/top", q="eth")[1]["rows"]] == ["ETHUSDT"]
    assert fed.get("/api/top", q="SOL")[1]["rows"] == []
    assert fed.get("/api/top", quote="usdt")[1]["total"] == 2
    assert fed.get("/api/top", quote="BTC")[1]["total"] == 0
    top = fed.get("/api/top", window="1h", limit=1)[1]
    assert (top["count"], top["total"]) == (1, 2)


def test_the_leaderboard_of_a_quiet_market_is_its_symbols_with_zeros(
    launch: Callable[..., Market],
) -> None:
    market = launch()

    status, body = market.get("/api/top")
    assert status == 200
    assert body["now"] is None
    assert [r["symbol"] for r in body["rows"]] == ["BTCUSDT", "ETHUSDT"]  # by name
    assert all(r["signals"] == 0 and r["usd_max"] is None for r in body["rows"])


def test_a_restart_does_not_blank_the_board(fed: Market, launch: Callable[..., Market]) -> None:
    before = fed.get("/api/top", window="1h")[1]
    fed.writer.close()

    again = launch(alert_profile="default")  # the same database; nothing fed since
    after = again.get("/api/top", window="1h")[1]

    def counts(body: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (r["symbol"], r["signals"], r["alerts"], r["usd_max"], r["ratio_max"], r["spark"])
            for r in body["rows"]
        ]

    assert counts(after) == counts(before)
    assert sum(r["alerts"] for r in after["rows"]) > 0  # from the alert log


def test_a_stored_signal_from_2099_does_not_blank_the_board_after_a_restart(
    fed: Market, launch: Callable[..., Market]
) -> None:
    # an older version stored whatever time a junk frame carried
    before = fed.get("/api/top", window="1h")[1]
    fed.writer.close()
    fed.store.add([spike_signal("binance", 1, 4_070_908_800_000_000)])  # 2099-01-01

    after = launch(alert_profile="default").get("/api/top", window="1h")[1]

    assert [(r["symbol"], r["signals"]) for r in after["rows"]] == [
        (r["symbol"], r["signals"]) for r in before["rows"]
    ]
    assert after["now"].startswith("2024-08-09T00:0")


def test_signals_fed_after_start_up_move_the_board_live(
    launch: Callable[..., Market], market_frames: list[bytes]
) -> None:
    market = launch()
    half = len(market_frames) // 2
    market.feed(market_frames[:half])
    emitted = len(market.emitted)
    first = sum(r["signals"] for r in market.get("/api/top", window="1h")[1]["rows"])
    market.feed(market_frames[half:])
    second = sum(r["signals"] for r in market.get("/api/top", window="1h")[1]["rows"])

    assert first == emitted > 0
    assert second == len(market.emitted) > first


# -- /api/symbols ----------------------------------------------------------------------


def test_every_watched_symbol_has_its_state(fed: Market) -> None:
    status, body = fed.get("/api/symbols")

    assert status == 200, body
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert (body["count"], body["total"], body["offset"], body["next_offset"]) == (2, 2, 0, None)
    trades = {"BTCUSDT": BTC_TRADES, "ETHUSDT": ETH_TRADES}
    for row in body["symbols"]:
        symbol = row["symbol"]
        assert row["exchange"] == "binance"
        assert row["connection"] == "stopped"  # the engine is never started here
        assert row["trades"] == trades[symbol]
        assert row["signals"] == len([s for s in fed.emitted if s.symbol == symbol])
        assert row["last_price"] > 0
        assert (row["base"], row["quote"]) == (symbol[:3], "USDT")
        assert row["last_signal"]["symbol"] == symbol
        latest = fed.engine.latest_signal(symbol)
        assert latest is not None
        assert row["last_signal"]["id"] == latest.id
    btc = body["symbols"][0]
    assert btc["last_trade_time"] == LAST_TRADE_TIME
    assert btc["trades_per_s"] > 0  # BTCUSDT traded in the minute before its last trade


def test_symbols_are_searched_filtered_and_paged(fed: Market) -> None:
    assert [s["symbol"] for s in fed.get("/api/symbols", q="btc")[1]["symbols"]] == ["BTCUSDT"]
    assert fed.get("/api/symbols", quote="USDT")[1]["total"] == 2
    assert fed.get("/api/symbols", quote="ETH")[1]["total"] == 0
    assert fed.get("/api/symbols", state="stopped")[1]["total"] == 2
    assert fed.get("/api/symbols", state="connected")[1]["total"] == 0
    first = fed.get("/api/symbols", limit=1)[1]
    assert ([s["symbol"] for s in first["symbols"]], first["next_offset"]) == (["BTCUSDT"], 1)
    second = fed.get("/api/symbols", limit=1, offset=first["next_offset"])[1]
    assert ([s["symbol"] for s in second["symbols"]], second["next_offset"]) == (["ETHUSDT"], None)
    beyond = fed.get("/api/symbols", offset=5)[1]
    assert (beyond["count"], beyond["total"], beyond["next_offset"]) == (0, 2, None)


# -- bad requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "param"),
    [
        ("/api/top", {"window": "15m"}, "window"),
        ("/api/top", {"window": "5M"}, "window"),
        ("/api/top", {"by": "volume"}, "by"),
        ("/api/top", {"limit": "0"}, "limit"),
        ("/api/top", {"limit": "2001"}, "limit"),
        ("/api/top", {"q": "BTC-USDT"}, "q"),
        ("/api/top", {"exchange": "binance-usdm"}, "exchange"),
        ("/api/top", {"symbol": "BTCUSDT"}, "symbol"),
        ("/api/symbols", {"state": "up"}, "state"),
        ("/api/symbols", {"offset": "-1"}, "offset"),
        ("/api/symbols", {"limit": "1001"}, "limit"),
        ("/api/symbols", {"quote": "U"}, "quote"),
        ("/api/symbols", {"cursor": "abc"}, "cursor"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(
    launch: Callable[..., Market], path: str, query: dict[str, str], param: str
) -> None:
    status, body = launch().get(path, **query)

    assert status == 400
    assert body["param"] == param
    assert body["error"].startswith(f"{param}: ")


def test_an_alert_opened_again_after_a_crash_counts_once(fed: Market) -> None:
    # After a crash the trades since the last checkpoint are processed again: an alert
    # opened among them is opened again, with the same id.
    before = fed.get("/api/top", window="1h")[1]["rows"]
    opened = [e for e in fed.alerts if e.opened]
    assert opened

    fed.app.extensions["spikewatch.market"].on_alerts(opened)

    assert fed.get("/api/top", window="1h")[1]["rows"] == before
