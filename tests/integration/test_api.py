"""The JSON API over a real engine, a real SQLite file and the real recorded Binance trades.

Every test builds spikewatch the way ``spikewatch run`` does (settings -> store -> engine
-> app) on a fresh database under ``tmp_path``, then replays frames from the recording
through ``Engine.handle_frame``, the same call the WebSocket client makes for each frame.
The engine is never started, so nothing touches the network.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from flask import Flask
from flask.testing import FlaskClient

from spikewatch.config import Settings, load_settings
from spikewatch.core.model import GapRecord, Signal
from spikewatch.engine import Engine
from spikewatch.exchanges.binance import BinanceUsdm
from spikewatch.replay.readers import read_trades
from spikewatch.store import Cursor, SQLiteSignalStore, StoreWriter
from spikewatch.web import create_app

from helpers import two_symbols, waitress_server

#: What the recorded BTCUSDT frames (conftest.py's ``btc_frames``, from
#: tests/fixtures/binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz)
#: hold, and what the default detector (window 200, 10x) finds in them.
RECORDED_FRAMES = 19_904
RECORDED_SIGNALS = 467
FIRST_TRADE_ID = 3_735_683_259
LAST_TRADE_ID = 3_735_703_162
LAST_TRADE_TIME = "2024-08-09T00:05:05.800Z"
#: The recording crosses midnight UTC.
MIDNIGHT_ISO = "2024-08-09T00:00:00Z"
MIDNIGHT_MS = 1_723_161_600_000
ETH_TRADES = 14_515
#: The USD-M futures BTCUSDT trades of tests/fixtures/binance-usdm-BTCUSDT-trades-
#: 2024-08-08T2354Z_2400Z.csv.gz (a data.binance.vision file), and their signals.
FUTURES_CSV = "binance-usdm-BTCUSDT-trades-2024-08-08T2354Z_2400Z.csv.gz"
FUTURES_TRADES = 21_313
FUTURES_SIGNALS = 316
SPOT, FUTURES = "binance", "binance-usdm"
AWAITING = {"status": "Awaiting first signal..."}


@pytest.fixture
def frames(btc_frames: list[bytes]) -> list[bytes]:
    """Every frame of the recording, byte for byte as Binance sent it."""
    assert len(btc_frames) == RECORDED_FRAMES
    return btc_frames


@pytest.fixture(scope="module")
def two_symbol_frames(fixtures_dir: Path, btc_frames: list[bytes]) -> list[bytes]:
    """The BTCUSDT recording interleaved by trade time with the real ETHUSDT trades of the
    same ten minutes (kept as a data.binance.vision CSV, rebuilt as the stream frames
    Binance sends for them)."""
    frames = two_symbols(fixtures_dir, btc_frames)
    assert len(frames) == ETH_TRADES + len(btc_frames)
    return frames


@pytest.fixture(scope="module")
def futures_frames(fixtures_dir: Path) -> list[bytes]:
    """The real futures trades of the same minutes as the spot recording, as the ``@trade``
    events Binance USD-M futures streams for them."""
    usdm = BinanceUsdm()
    codec = usdm.simulator_codec()
    trades = list(read_trades([fixtures_dir / FUTURES_CSV], exchange=usdm))
    assert len(trades) == FUTURES_TRADES
    return [codec.trade_frame(t) for t in trades]


@dataclass
class Spikewatch:
    """One spikewatch process: its settings, store, engine and web app."""

    settings: Settings
    store: SQLiteSignalStore
    engine: Engine
    writer: StoreWriter
    app: Flask
    client: FlaskClient
    emitted: list[Signal]
    stopped: bool = False

    def feed(self, frames: Iterable[bytes]) -> None:
        """Hand frames to the engine as the WebSocket client would; wait for the store."""
        for frame in frames:
            self.engine.handle_frame(frame)
        assert self.writer.flush(timeout=10)

    def get(self, path: str, **query: str | int) -> tuple[int, Any]:
        """GET ``path`` with ``query``; the status and the decoded JSON body."""
        response = self.client.get(path, query_string=query)
        assert response.mimetype == "application/json"
        return response.status_code, response.get_json()

    def stop(self) -> None:
        """Shut down as the process would: write what is pending, close the database."""
        if not self.stopped:
            self.stopped = True
            self.writer.close()
            self.store.close()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Spikewatch]]:
    """Start spikewatch on this test's database file; call again to "restart" on it."""
    launched: list[Spikewatch] = []

    def launch(symbols: str = "BTCUSDT,ETHUSDT", exchange: str = "binance") -> Spikewatch:
        settings = load_settings(
            {"db": str(tmp_path / "spikewatch.db"), "symbols": symbols, "exchange": exchange},
            env={},
        )
        store = SQLiteSignalStore(settings.db)
        engine = Engine(settings, store)
        # Engine.start() creates the engine's own StoreWriter, but it also connects to
        # Binance. A StoreWriter fed by a listener is the same write path, offline.
        writer = StoreWriter(store, maxsize=settings.store_queue)
        emitted: list[Signal] = []
        engine.add_listener(emitted.append)
        engine.add_listener(writer.put)
        app = create_app(settings, engine)
        app.config["TESTING"] = True
        service = Spikewatch(settings, store, engine, writer, app, app.test_client(), emitted)
        launched.append(service)
        return service

    yield launch
    for service in launched:
        service.stop()


@pytest.fixture
def spikewatch(launch: Callable[..., Spikewatch]) -> Spikewatch:
    return launch()


@pytest.fixture
def replayed(spikewatch: Spikewatch, frames: list[bytes]) -> Spikewatch:
    """Spikewatch after the whole recording went through it."""
    spikewatch.feed(frames)
    assert len(spikewatch.emitted) == RECORDED_SIGNALS
    return spikewatch


def as_json(value: object) -> Any:
    """A signal (or any struct the API sends) as the API's JSON decodes."""
    return json.loads(msgspec.json.encode(value))


def newest_first(signals: Iterable[Signal]) -> list[str]:
    return [s.id for s in sorted(signals, key=lambda s: (s.time_us, s.id), reverse=True)]


def ms(signal: Signal) -> int:
    return signal.time_us // 1000


def walk(service: Spikewatch, **query: str | int) -> list[list[str]]:
    """Follow ``next_cursor`` through /api/signals; the ids on each page."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        args = dict(query) if cursor is None else {**query, "cursor": cursor}
        status, body = service.get("/api/signals", **args)
        assert status == 200, body
        assert body["count"] == len(body["signals"])
        pages.append([s["id"] for s in body["signals"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= 1000, "paging does not terminate"


# -- /api/get_signal -----------------------------------------------------------------


def test_get_signal_awaits_the_first_spike(spikewatch: Spikewatch, frames: list[bytes]) -> None:
    assert spikewatch.get("/api/get_signal") == (200, AWAITING)

    # The first 200 trades only fill the window: nothing can fire yet.
    spikewatch.feed(frames[:200])
    assert spikewatch.emitted == []
    assert spikewatch.get("/api/get_signal") == (200, AWAITING)


def test_get_signal_after_the_recording_is_the_last_spike(replayed: Spikewatch) -> None:
    status, body = replayed.get("/api/get_signal")

    assert status == 200
    assert body == as_json(replayed.emitted[-1])
    assert body["signal_type"] == "VolumeSpike"
    assert body["symbol"] == "BTCUSDT"
    assert body["trade_id"] == 3_735_703_084
    assert body["timestamp"] == "2024-08-09T00:05:04.127Z"
    assert datetime.fromisoformat(body["timestamp"]).tzinfo == UTC
    assert body["price"] == 61_607.98
    assert body["volume"] == 0.27
    assert body["volume"] > 10 * body["average_volume"]


def test_get_signal_of_one_symbol_accepts_any_case(replayed: Spikewatch) -> None:
    last = as_json(replayed.emitted[-1])

    assert replayed.get("/api/get_signal", symbol="btcusdt") == (200, last)
    assert replayed.get("/api/get_signal", symbol="BTCUSDT") == (200, last)
    # ETHUSDT is watched, but the recording holds only BTCUSDT trades.
    assert replayed.get("/api/get_signal", symbol="ethusdt") == (200, AWAITING)


def test_get_signal_rejects_a_bad_symbol_and_unknown_parameters(replayed: Spikewatch) -> None:
    status, body = replayed.get("/api/get_signal", symbol="bad!")
    assert status == 400
    assert body["param"] == "symbol"
    assert "not a symbol" in body["error"]

    status, body = replayed.get("/api/get_signal", limt=5)
    assert status == 400
    assert body["param"] == "limt"
    assert "unknown parameter" in body["error"]


def test_after_a_restart_get_signal_serves_the_latest_stored_spike(
    launch: Callable[..., Spikewatch], frames: list[bytes]
) -> None:
    before = launch()
    before.feed(frames)
    last = as_json(before.emitted[-1])
    before.stop()

    after = launch()  # a new store, engine and app on the same file; no trade seen yet

    assert after.get("/api/get_signal") == (200, last)
    assert after.get("/api/get_signal", symbol="BTCUSDT") == (200, last)
    assert after.get("/api/get_signal", symbol="ETHUSDT") == (200, AWAITING)
    status, body = after.get("/api/status")
    assert status == 200
    assert body["symbols"]["BTCUSDT"]["trades"] == 0
    pages = walk(after, limit=1000)
    assert pages[0] == newest_first(before.emitted)


def test_two_symbols_at_once_are_told_apart(
    spikewatch: Spikewatch, two_symbol_frames: list[bytes]
) -> None:
    spikewatch.feed(two_symbol_frames)
    btc = [s for s in spikewatch.emitted if s.symbol == "BTCUSDT"]
    eth = [s for s in spikewatch.emitted if s.symbol == "ETHUSDT"]
    assert len(btc) == RECORDED_SIGNALS  # ETH trades in between change nothing for BTC
    assert eth

    latest = max(spikewatch.emitted, key=lambda s: (s.time_us, s.id))
    assert spikewatch.get("/api/get_signal") == (200, as_json(latest))
    assert spikewatch.get("/api/get_signal", symbol="btcusdt") == (200, as_json(btc[-1]))
    assert spikewatch.get("/api/get_signal", symbol="ethusdt") == (200, as_json(eth[-1]))

    assert walk(spikewatch, symbol="ethusdt", limit=1000) == [newest_first(eth)]
    assert walk(spikewatch, limit=1000) == [newest_first(spikewatch.emitted)]

    _, body = spikewatch.get("/api/status")
    assert body["frames"] == RECORDED_FRAMES + ETH_TRADES
    assert body["symbols"]["BTCUSDT"]["trades"] == RECORDED_FRAMES
    assert body["symbols"]["BTCUSDT"]["signals"] == RECORDED_SIGNALS
    assert body["symbols"]["ETHUSDT"]["trades"] == ETH_TRADES
    assert body["symbols"]["ETHUSDT"]["signals"] == len(eth)
    assert body["symbols"]["ETHUSDT"]["gaps"] == 0


def test_after_a_restart_watching_other_symbols_old_spikes_are_still_served(
    launch: Callable[..., Spikewatch], two_symbol_frames: list[bytes]
) -> None:
    before = launch("BTCUSDT,ETHUSDT")
    before.feed(two_symbol_frames)
    latest = {
        symbol: as_json([s for s in before.emitted if s.symbol == symbol][-1])
        for symbol in ("BTCUSDT", "ETHUSDT")
    }
    before.stop()

    after = launch("SOLUSDT")  # watches neither symbol now

    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert after.get("/api/get_signal", symbol=symbol.lower()) == (200, latest[symbol])
    assert after.get("/api/get_signal", symbol="solusdt") == (200, AWAITING)


# -- /api/signals --------------------------------------------------------------------


def test_signals_are_listed_newest_first(replayed: Spikewatch) -> None:
    expected = newest_first(replayed.emitted)

    status, body = replayed.get("/api/signals")
    assert status == 200
    assert body["count"] == 100  # the default page size
    assert [s["id"] for s in body["signals"]] == expected[:100]
    assert body["signals"][0] == as_json(replayed.emitted[-1])
    assert body["next_cursor"] is not None

    status, body = replayed.get("/api/signals", limit=1000)
    assert status == 200
    assert body["count"] == RECORDED_SIGNALS
    assert [s["id"] for s in body["signals"]] == expected
    assert body["next_cursor"] is None


def test_signals_limit(replayed: Spikewatch) -> None:
    status, body = replayed.get("/api/signals", limit=5)

    assert status == 200
    assert body["count"] == 5
    assert [s["id"] for s in body["signals"]] == newest_first(replayed.emitted)[:5]


def test_signals_of_one_symbol(replayed: Spikewatch) -> None:
    status, body = replayed.get("/api/signals", symbol="ethusdt")
    assert (status, body) == (200, {"signals": [], "count": 0, "next_cursor": None})

    status, body = replayed.get("/api/signals", symbol="btcusdt", limit=1000)
    assert status == 200
    assert body["count"] == RECORDED_SIGNALS


@pytest.mark.parametrize(
    "midnight",
    [MIDNIGHT_ISO, str(MIDNIGHT_MS), "2024-08-09T02:00:00+02:00", "2024-08-09T00:00:00"],
    ids=["iso-z", "epoch-ms", "iso-offset", "iso-naive-is-utc"],
)
def test_signals_since_and_until_split_the_recording_at_midnight(
    replayed: Spikewatch, midnight: str
) -> None:
    before = [s for s in replayed.emitted if s.time_us < MIDNIGHT_MS * 1000]
    after = [s for s in replayed.emitted if s.time_us >= MIDNIGHT_MS * 1000]
    assert before
    assert after

    status, body = replayed.get("/api/signals", since=midnight, limit=1000)
    assert status == 200
    assert [s["id"] for s in body["signals"]] == newest_first(after)

    status, body = replayed.get("/api/signals", until=midnight, limit=1000)
    assert status == 200
    assert [s["id"] for s in body["signals"]] == newest_first(before)


@pytest.mark.parametrize("form", ["iso", "epoch-ms"])
def test_signals_since_is_inclusive_and_until_exclusive(replayed: Spikewatch, form: str) -> None:
    first, last = replayed.emitted[100], replayed.emitted[200]
    since = first.timestamp if form == "iso" else str(ms(first))
    until = last.timestamp if form == "iso" else str(ms(last))

    status, body = replayed.get("/api/signals", since=since, until=until, limit=1000)

    assert status == 200
    expected = [s for s in replayed.emitted if first.time_us <= s.time_us < last.time_us]
    assert [s["id"] for s in body["signals"]] == newest_first(expected)
    ids = {s["id"] for s in body["signals"]}
    assert first.id in ids
    assert last.id not in ids


@pytest.mark.parametrize("limit", [7, 50, 466, 467])
def test_walking_next_cursor_returns_every_signal_once(replayed: Spikewatch, limit: int) -> None:
    pages = walk(replayed, limit=limit)

    walked = [signal_id for page in pages for signal_id in page]
    assert walked == newest_first(replayed.emitted)
    assert len(set(walked)) == RECORDED_SIGNALS
    assert all(len(page) == limit for page in pages[:-1])
    assert len(pages) == -(-RECORDED_SIGNALS // limit)


@pytest.mark.parametrize("limit", [7, 100])
def test_pages_across_a_restart_join_memory_and_store_seamlessly(
    launch: Callable[..., Spikewatch], frames: list[bytes], limit: int
) -> None:
    # recent pages come from memory, older history from the store: after a restart the
    # signals from before it are in the store only, the new ones in both
    first = launch()
    first.feed(frames[: len(frames) // 2])
    before = list(first.emitted)
    first.stop()
    second = launch()
    second.feed(frames[len(frames) // 2 :])
    assert before
    assert second.emitted
    walked = [signal_id for page in walk(second, limit=limit) for signal_id in page]
    assert walked == newest_first(before + second.emitted)
    btc = [signal_id for page in walk(second, symbol="BTCUSDT", limit=limit) for signal_id in page]
    assert btc == newest_first(s for s in before + second.emitted if s.symbol == "BTCUSDT")


def test_walking_next_cursor_keeps_the_filters(replayed: Spikewatch) -> None:
    pages = walk(replayed, symbol="btcusdt", since=MIDNIGHT_ISO, limit=9)

    walked = [signal_id for page in pages for signal_id in page]
    assert walked == newest_first(s for s in replayed.emitted if s.time_us >= MIDNIGHT_MS * 1000)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "5000"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"since": "notatime"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "1999-12-31T23:59:59Z"}, "since"),
        ({"since": "2024-08-09T00:05:00Z", "until": "2024-08-09T00:00:00Z"}, "until"),
        ({"since": str(MIDNIGHT_MS), "until": MIDNIGHT_ISO}, "until"),
        ({"cursor": "garbage"}, "cursor"),
        ({"symbol": "bad!"}, "symbol"),
        ({"limt": "5"}, "limt"),
    ],
    ids=[
        "limit-0",
        "limit-5000",
        "limit-abc",
        "since-notatime",
        "until-notatime",
        "since-before-2000",
        "until-before-since",
        "until-equals-since",
        "cursor-garbage",
        "symbol-bad",
        "unknown-param",
    ],
)
def test_signals_rejects_bad_parameters_with_a_json_400(
    replayed: Spikewatch, query: dict[str, str], param: str
) -> None:
    status, body = replayed.get("/api/signals", **query)

    assert status == 400
    assert body["param"] == param
    assert body["error"].startswith(f"{param}: ")


def test_a_tampered_cursor_is_a_bad_request_not_a_server_error(replayed: Spikewatch) -> None:
    # Well-formed base64 JSON of the right shape, but a time no signal can have.
    forged = Cursor(2**63, "binance:BTCUSDT:x").encode()

    status, body = replayed.get("/api/signals", cursor=forged)

    assert status == 400, body
    assert body["param"] == "cursor"


def test_a_time_written_in_non_ascii_digits_is_a_bad_request_not_a_server_error(
    replayed: Spikewatch,
) -> None:
    # "²" (superscript two) is a digit to str.isdigit() but not to int().
    status, body = replayed.get("/api/signals", since="1723161600000²")

    assert status == 400, body
    assert body["param"] == "since"


# -- (exchange, symbol) is the key ----------------------------------------------------


def error(exchange: str, served: str) -> dict[str, str]:
    return {"error": f"exchange: {exchange} is not served here ({served})", "param": "exchange"}


def test_btcusdt_spot_and_btcusdt_futures_in_one_database_never_merge(
    launch: Callable[..., Spikewatch], frames: list[bytes], futures_frames: list[bytes]
) -> None:
    spot = launch("BTCUSDT")
    spot.feed(frames)
    spot_signals = list(spot.emitted)
    spot.stop()
    futures = launch("BTCUSDT", FUTURES)  # a futures run on the same database file
    futures.feed(futures_frames)
    futures_signals = list(futures.emitted)
    assert len(futures_signals) == FUTURES_SIGNALS
    assert futures.store.count("BTCUSDT") == RECORDED_SIGNALS + FUTURES_SIGNALS
    # the spot recording goes on 5 minutes longer: its latest spike is the newer one
    assert spot_signals[-1].time_us > futures_signals[-1].time_us

    # the futures server lists futures signals only, asked by name or by default
    for query in ({"exchange": FUTURES}, {"exchange": "Binance-USDM"}, {}):
        pages = walk(futures, symbol="BTCUSDT", limit=100, **query)
        assert [i for page in pages for i in page] == newest_first(futures_signals)
    status, body = futures.get("/api/signals", exchange=FUTURES, limit=1000)
    assert status == 200
    assert {s["exchange"] for s in body["signals"]} == {FUTURES}
    assert futures.get("/api/get_signal") == (200, as_json(futures_signals[-1]))
    assert futures.get("/api/get_signal", symbol="btcusdt", exchange=FUTURES) == (
        200,
        as_json(futures_signals[-1]),
    )
    # it does not serve the spot signals of its database
    for path in ("/api/get_signal", "/api/signals", "/api/bars", "/api/gaps"):
        assert futures.get(path, exchange=SPOT) == (400, error(SPOT, FUTURES)), path
    futures.stop()

    # started again on that database, each serves its own exchange's latest signal
    futures = launch("BTCUSDT", FUTURES)
    assert futures.engine.latest_signal() == futures_signals[-1]
    assert futures.engine.latest_signal("BTCUSDT") == futures_signals[-1]
    assert futures.get("/api/get_signal") == (200, as_json(futures_signals[-1]))
    futures.stop()
    spot = launch("BTCUSDT")
    assert spot.get("/api/get_signal", exchange=SPOT) == (200, as_json(spot_signals[-1]))
    pages = walk(spot, exchange=SPOT, limit=1000)
    assert pages == [newest_first(spot_signals)]
    assert spot.get("/api/signals", exchange=FUTURES) == (400, error(FUTURES, SPOT))


def test_a_spot_engine_started_on_newer_futures_signals_serves_its_own_latest(
    launch: Callable[..., Spikewatch], frames: list[bytes], futures_frames: list[bytes]
) -> None:
    spot = launch("BTCUSDT")
    spot.feed(frames[:8000])
    spot_latest = spot.emitted[-1]
    spot.stop()
    futures = launch("BTCUSDT", FUTURES)
    futures.feed(futures_frames)
    assert futures.emitted[-1].time_us > spot_latest.time_us  # newer, same symbol
    futures.stop()

    spot = launch("BTCUSDT")

    assert spot.engine.latest_signal() == spot_latest
    assert spot.get("/api/get_signal") == (200, as_json(spot_latest))
    assert spot.get("/api/get_signal", symbol="BTCUSDT") == (200, as_json(spot_latest))
    _, body = spot.get("/api/signals", limit=1)
    assert body["signals"] == [as_json(spot_latest)]


def test_bars_and_gaps_are_of_the_exchange_served(
    launch: Callable[..., Spikewatch], futures_frames: list[bytes]
) -> None:
    futures = launch("BTCUSDT", FUTURES)
    futures.feed(futures_frames[:2000])
    gaps = {
        exchange: GapRecord(
            exchange=exchange,
            symbol="BTCUSDT",
            first_id=first,
            last_id=first + 9,
            missing=10,
            time_us=MIDNIGHT_MS * 1000,
            timestamp=MIDNIGHT_ISO,
            reason="REST down",
        )
        for exchange, first in ((SPOT, 3_735_690_000), (FUTURES, 5_266_590_000))
    }
    for record in gaps.values():
        futures.store.add_gap(record)

    status, body = futures.get("/api/bars", exchange=FUTURES, limit=5)
    assert status == 200
    assert (body["exchange"], body["symbol"]) == (FUTURES, "BTCUSDT")
    assert body["bars"] == as_json(futures.engine.bars("BTCUSDT", 5))
    _, default = futures.get("/api/bars", limit=5)
    assert default == body
    assert futures.get("/api/gaps") == (200, {"gaps": [as_json(gaps[FUTURES])], "count": 1})


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/api/get_signal", "binance usdm"),
        ("/api/signals", "-binance"),
        ("/api/bars", "bïnance"),
        ("/api/gaps", "x" * 41),
    ],
)
def test_a_malformed_exchange_is_a_400_naming_it(
    spikewatch: Spikewatch, path: str, value: str
) -> None:
    status, body = spikewatch.get(path, exchange=value)

    assert status == 400
    assert body["param"] == "exchange"
    assert "is not an exchange name" in body["error"]


# -- /api/status ---------------------------------------------------------------------


def test_status_counts_the_trades_and_signals_of_the_recording(replayed: Spikewatch) -> None:
    status, body = replayed.get("/api/status")

    assert status == 200
    assert body["running"] is False
    assert body["frames"] == RECORDED_FRAMES
    assert body["malformed_frames"] == {}
    btc = body["symbols"]["BTCUSDT"]
    assert btc["trades"] == RECORDED_FRAMES
    assert btc["signals"] == RECORDED_SIGNALS
    assert btc["warmed_up"] is True
    assert btc["last_trade_id"] == LAST_TRADE_ID
    assert btc["last_trade_time"] == LAST_TRADE_TIME
    assert (btc["gaps"], btc["missing_trades"], btc["duplicates_dropped"]) == (0, 0, 0)
    eth = body["symbols"]["ETHUSDT"]
    assert (eth["trades"], eth["signals"], eth["last_trade_id"]) == (0, 0, None)


def test_replaying_trades_already_seen_raises_no_new_signal(
    replayed: Spikewatch, frames: list[bytes]
) -> None:
    replayed.feed(frames[-1000:])  # the overlap a reconnect can bring

    assert len(replayed.emitted) == RECORDED_SIGNALS
    assert replayed.store.count() == RECORDED_SIGNALS
    _, body = replayed.get("/api/status")
    btc = body["symbols"]["BTCUSDT"]
    assert (btc["trades"], btc["duplicates_dropped"]) == (RECORDED_FRAMES, 1000)
    assert btc["signals"] == RECORDED_SIGNALS


def test_malformed_frames_are_counted_by_kind_and_later_trades_still_count(
    spikewatch: Spikewatch, frames: list[bytes]
) -> None:
    good = frames[:1000]
    # A copy of trade 500 with a zero price: rejected, and the real trade 500 still counts.
    zero_price = json.loads(frames[500])
    zero_price["data"]["p"] = "0.00000000"
    malformed = [
        b"not json",
        b'{"stream":"btcusdt@trade","data":{"e":"trade"}}',
        json.dumps(zero_price).encode(),
    ]

    spikewatch.feed([*good[:500], *malformed, *good[500:]])

    status, body = spikewatch.get("/api/status")
    assert status == 200
    assert body["malformed_frames"] == {"not_json": 1, "bad_schema": 1, "bad_value": 1}
    assert body["frames"] == 1000 + 3
    btc = body["symbols"]["BTCUSDT"]
    assert btc["trades"] == 1000
    assert btc["last_trade_id"] == FIRST_TRADE_ID + 999
    assert btc["gaps"] == 0
    assert btc["signals"] == len(spikewatch.emitted) > 0
    last_ms = json.loads(good[-1])["data"]["T"]
    assert btc["last_trade_time"].endswith("Z")
    assert datetime.fromisoformat(btc["last_trade_time"]) == datetime.fromtimestamp(
        last_ms // 1000, tz=UTC
    ) + timedelta(milliseconds=last_ms % 1000)


def test_status_rejects_parameters(spikewatch: Spikewatch) -> None:
    status, body = spikewatch.get("/api/status", verbose=1)

    assert status == 400
    assert body["param"] == "verbose"


# -- liveness and errors -------------------------------------------------------------


def test_healthz(spikewatch: Spikewatch) -> None:
    assert spikewatch.get("/healthz") == (200, {"status": "ok"})


def test_unknown_route_is_a_json_404(spikewatch: Spikewatch) -> None:
    status, body = spikewatch.get("/api/get_signals")

    assert status == 404
    assert isinstance(body["error"], str)
    assert body["error"]


# -- a real socket -------------------------------------------------------------------


@pytest.fixture
def served(replayed: Spikewatch) -> Iterator[str]:
    """The app behind waitress on 127.0.0.1; yields its base URL."""
    with waitress_server(replayed.app, threads=2) as server:
        yield f"http://127.0.0.1:{server.effective_port}"


def test_get_signal_over_a_real_socket(served: str, replayed: Spikewatch) -> None:
    with urllib.request.urlopen(f"{served}/api/get_signal", timeout=10) as response:
        status = response.status
        content_type = response.headers["Content-Type"]
        body = json.loads(response.read())

    assert status == 200
    assert content_type == "application/json"
    assert body == as_json(replayed.emitted[-1])


# -- symbols the server does not watch, and the wording of errors ------------------------


def test_get_signal_of_a_symbol_neither_watched_nor_stored_is_a_400_naming_the_watched(
    replayed: Spikewatch,
) -> None:
    status, body = replayed.get("/api/get_signal", symbol="foousdt")

    assert status == 400
    assert body == {
        "error": "symbol: FOOUSDT is not watched on binance (watched: BTCUSDT, ETHUSDT)",
        "param": "symbol",
    }
    # a watched symbol without a signal yet still awaits its first one
    assert replayed.get("/api/get_signal", symbol="ethusdt") == (200, AWAITING)


def test_live_stream_of_a_symbol_not_watched_is_a_400_before_it_opens(
    replayed: Spikewatch,
) -> None:
    response = replayed.client.get("/api/stream", query_string={"symbol": "FOOUSDT"})

    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "error": "symbol: FOOUSDT is not watched on binance (watched: BTCUSDT, ETHUSDT)",
        "param": "symbol",
    }
    assert replayed.engine.hub.stats().clients == 0


def test_a_too_long_symbol_is_told_its_length_not_its_letters(replayed: Spikewatch) -> None:
    status, body = replayed.get("/api/get_signal", symbol="B" * 31)

    assert status == 400
    assert (
        body["error"]
        == f"symbol: '{'B' * 31}' is 31 characters long; a symbol has 2 to 30 (e.g. BTCUSDT)"
    )
    assert "letters" not in body["error"]


def doubled_word(message: str) -> str | None:
    """The first word written twice in a row ("cursor: cursor is ..."), if any."""
    words = [w.strip(":;,.()'\"").lower() for w in message.split()]
    for first, second in itertools.pairwise(words):
        if first and first == second:
            return first
    return None


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/get_signal", {"symbol": "bad!"}),
        ("/api/get_signal", {"symbol": "FOOUSDT"}),
        ("/api/get_signal", {"symbol": "X"}),
        ("/api/get_signal", {"exchange": "binance-usdm"}),
        ("/api/get_signal", {"exchange": "bad exchange"}),
        ("/api/signals", {"cursor": "garbage"}),
        ("/api/signals", {"cursor": "!!"}),
        ("/api/signals", {"limit": "abc"}),
        ("/api/signals", {"limit": "0"}),
        ("/api/signals", {"since": "yesterday"}),
        ("/api/signals", {"since": "1999-12-31T23:59:59Z"}),
        ("/api/signals", {"since": "2024-08-09T00:05:00Z", "until": "2024-08-09T00:00:00Z"}),
        ("/api/signals", {"limt": "5"}),
        ("/api/bars", {"symbol": "SOLUSDT"}),
        ("/api/bars", {"limit": "-1"}),
        ("/api/gaps", {"until": "x"}),
        ("/api/status", {"verbose": "1"}),
        ("/api/stream", {"symbol": "SOLUSDT"}),
        ("/api/stream", {"last_event_id": "abc"}),
    ],
)
def test_no_error_message_repeats_a_word(
    replayed: Spikewatch, path: str, query: dict[str, str]
) -> None:
    response = replayed.client.get(path, query_string=query)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert doubled_word(error) is None, error


def test_a_limit_that_is_not_a_number_says_it_must_be_a_whole_number(
    replayed: Spikewatch,
) -> None:
    status, body = replayed.get("/api/signals", limit="abc")

    assert status == 400
    assert body["error"] == "limit: 'abc' is not a whole number"
