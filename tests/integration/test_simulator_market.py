"""The simulator as a whole market, over real sockets on 127.0.0.1: thousands of symbols
re-labelled from real recordings, exchangeInfo listing them, symbols listed and delisted
while it runs, and Binance's connection and request-weight limits enforced as Binance
enforces them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from spikewatch.core.model import Trade
from spikewatch.exchanges.binance import BinanceSpot, BinanceUsdm
from spikewatch.replay.market import MarketTape, Source, market_tape, sources_of_tape
from spikewatch.replay.readers import read_trades
from spikewatch.replay.simulator import Faults, Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames

from helpers import ROOT, free_port

ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
USDM_CSV = "binance-usdm-BTCUSDT-trades-2024-08-08T2354Z_first-300-rows.csv.gz"
QUOTES = ("USDT", "BTC", "FDUSD")

spot = BinanceSpot()


@pytest.fixture(scope="module")
def sources(btc_frames: list[bytes], fixtures_dir: Path) -> list[Source]:
    """Three real recordings: spot BTCUSDT frames, spot ETHUSDT trades, USD-M BTCUSDT."""
    eth = read_trades([fixtures_dir / ETH_CSV], symbol="ETHUSDT")
    usdm = read_trades([fixtures_dir / USDM_CSV], symbol="BTCUSDT")
    return [*sources_of_tape(tape_from_frames(btc_frames)), Source.of(eth), Source.of(usdm)]


def serve(
    tape: MarketTape, *, faults: Faults | None = None, loop: bool = False, usdm: bool = False
) -> Iterator[SimulatorThread]:
    """A simulator of ``tape`` playing as fast as its clients read, until exit."""
    codec = (BinanceUsdm() if usdm else spot).simulator_codec()
    sim = SimulatorThread(Simulator(tape, codec=codec, speed=None, faults=faults, loop=loop))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], object]:
    """Status, headers and JSON body of a request (an error status is returned)."""
    data = b"" if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def open_ws(url: str) -> ClientConnection:
    """A client that reads all it is sent (a playing simulator never waits for it) and
    does not wait long for the close handshake."""
    return connect(url, max_queue=None, close_timeout=1)


def info_of(sim: SimulatorThread) -> dict[str, dict[str, object]]:
    """exchangeInfo's symbols by name."""
    status, _, body = request(f"{sim.rest_url}/api/v3/exchangeInfo")
    assert status == 200
    assert isinstance(body, dict)
    return {row["symbol"]: row for row in body["symbols"]}


def receive(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` events of a combined stream."""
    return [json.loads(ws.recv(timeout=10))["data"] for _ in range(count)]


def closed_by_server(ws: ClientConnection) -> ConnectionClosed:
    """Read until the server closes the connection; what it closed it with."""
    try:
        for _ in range(100_000):
            ws.recv(timeout=10)
    except ConnectionClosed as exc:
        return exc
    pytest.fail("the server did not close the connection")


# -- the market tape --------------------------------------------------------------------


def test_a_2000_symbol_market_is_built_lazily_and_the_same_every_time(
    sources: list[Source],
) -> None:
    tracemalloc.start()
    market = market_tape(sources, 2000, QUOTES, seed=7)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # nothing is made up front: a listing per symbol over the three shared recordings
    assert peak < 5_000_000
    assert len(market.sources) == 3
    symbols = market.symbols
    assert len(set(symbols)) == 2000
    assert all(re.fullmatch(r"[A-Z]{3}[0-9](USDT|BTC|FDUSD)", s) for s in symbols)
    quotes = Counter(listing.quote for listing in market.listings)
    assert set(quotes) == set(QUOTES)
    assert quotes["USDT"] > quotes["BTC"]  # the first quote gets about half
    assert len(market) == sum(len(market.sources[x.source]) for x in market.listings)

    again = market_tape(sources, 2000, QUOTES, seed=7)
    assert again.listings == market.listings
    first = [entry.payload for entry, _ in islice(market.entries(), 5000)]
    assert first == [entry.payload for entry, _ in islice(again.entries(), 5000)]
    other = market_tape(sources, 2000, QUOTES, seed=8)
    assert other.listings != market.listings


def test_each_symbol_plays_its_recording_from_its_own_phase_with_its_own_ids(
    sources: list[Source],
) -> None:
    market = market_tape(sources[:1], 4, QUOTES, seed=1)
    source = market.sources[0]
    played: dict[str, list[Trade]] = {}
    times = []
    for entry, trade in market.entries():
        assert trade is not None
        assert spot.parse(entry.payload) == trade  # the frame says what the trade is
        played.setdefault(trade.symbol, []).append(trade)
        times.append(entry.time_ms)
    assert times == sorted(times)  # interleaved in time order
    assert len({market.by_symbol[s].phase for s in played}) == 4  # no two start alike
    for symbol, trades in played.items():
        listing = market.by_symbol[symbol]
        assert len(trades) == len(source)  # one pass over the recording
        ids = [t.trade_id for t in trades]
        assert ids == list(range(listing.first_id, listing.first_id + len(source)))
        assert trades[0].time_us == market.start_us  # every symbol starts together
        # row by row the recording, from the phase on, wrapping round to its start
        rows = [*range(listing.phase, len(source)), *range(listing.phase)]
        scale = 10**listing.price_exp
        for trade, row in zip(trades[:50], rows[:50], strict=True):
            recorded = source.prices[row]
            expected = recorded * scale if scale >= 1 else max(recorded * scale, 1)
            assert trade.price == int(expected) or trade.price == recorded // round(1 / scale)
            assert (trade.side.value == "sell") == bool(source.sells[row])
        wrapped = trades[len(source) - listing.phase] if listing.phase else None
        if wrapped is not None:  # the wrap moves time on by the span: still increasing
            assert wrapped.time_us > trades[len(source) - listing.phase - 1].time_us


# -- exchangeInfo -----------------------------------------------------------------------


def test_exchange_info_lists_every_symbol_with_its_assets_and_binances_limits(
    sources: list[Source],
) -> None:
    market = market_tape(sources, 2000, QUOTES)
    for sim in serve(market):
        status, headers, body = request(f"{sim.rest_url}/api/v3/exchangeInfo")
    assert status == 200
    assert headers["X-MBX-USED-WEIGHT-1M"] == "20"  # exchangeInfo weighs 20 on spot
    assert isinstance(body, dict)
    assert body["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    }
    rows = body["symbols"]
    assert sorted(r["symbol"] for r in rows) == sorted(market.symbols)
    assert all(r["status"] == "TRADING" for r in rows)
    assert all(r["baseAsset"] + r["quoteAsset"] == r["symbol"] for r in rows)
    usdt = [r["symbol"] for r in rows if r["quoteAsset"] == "USDT"]  # what ALL:USDT selects
    assert sorted(usdt) == sorted(x.symbol for x in market.listings if x.quote == "USDT")
    assert 0 < len(usdt) < 2000


# -- listing and delisting while running ---------------------------------------------------


def test_listing_and_delisting_over_the_control_routes_change_exchange_info_and_frames(
    sources: list[Source],
) -> None:
    market = market_tape(sources[:2], 4, ("USDT",))
    gone, kept = market.symbols[1], market.symbols[0]
    streams = [s.lower() + "@trade" for s in [*market.symbols, "NEWUSDT", "MARKUSDT"]]
    for sim in serve(market, loop=True):
        with open_ws(f"{sim.ws_url}/stream?streams={'/'.join(streams)}") as ws:
            assert {e["s"] for e in receive(ws, 200)} <= set(market.symbols)

            status, _, row = request(f"{sim.rest_url}/sim/list?symbol=NEWUSDT&like={kept}", "POST")
            assert status == 200
            assert row == {**info_of(sim)["NEWUSDT"], "status": "TRADING"}
            assert (
                info_of(sim)["NEWUSDT"]["baseAsset"],
                info_of(sim)["NEWUSDT"]["quoteAsset"],
            ) == (
                "NEW",
                "USDT",
            )
            new = [e for e in receive(ws, 3000) if e["s"] == "NEWUSDT"]
            assert new  # it trades, ids of its own, one after another
            ids = [e["t"] for e in new]
            assert ids == list(range(ids[0], ids[0] + len(ids)))

            status, _, row = request(f"{sim.rest_url}/sim/delist?symbol={gone}", "POST")
            assert status == 200
            assert isinstance(row, dict)
            assert row["status"] == "BREAK"
            assert info_of(sim)[gone]["status"] == "BREAK"  # still listed, as Binance does
            # a symbol listed after the delisting marks where frames made after it begin
            sim.list_symbol("MARKUSDT", kept)
            events = receive(ws, 5000)
            after = events[next(i for i, e in enumerate(events) if e["s"] == "MARKUSDT") :]
            assert {e["s"] for e in after} == {*market.symbols, "NEWUSDT", "MARKUSDT"} - {gone}

            status, _, row = request(f"{sim.rest_url}/sim/halt?symbol=NEWUSDT", "POST")
            assert isinstance(row, dict)
            assert (status, row["status"]) == (200, "HALT")
            stats = sim.stats()
        assert stats.trading == 4  # 4 + NEW + MARK, less the delisted and the halted
    # what the routes refuse
    for sim in serve(market):
        assert request(f"{sim.rest_url}/sim/delist?symbol=NOPEUSDT", "POST")[0] == 400
        assert request(f"{sim.rest_url}/sim/list?symbol={kept}", "POST")[0] == 400  # trading
        assert request(f"{sim.rest_url}/sim/list?symbol=NEWUSDT")[0] == 405
        assert request(f"{sim.rest_url}/sim/list", "POST")[0] == 400


def test_a_symbol_listed_again_goes_on_with_its_ids(sources: list[Source]) -> None:
    market = market_tape(sources[:1], 2, ("USDT",))
    symbol = market.symbols[0]
    stream = f"{symbol.lower()}@trade"
    for sim in serve(market, loop=True):
        with open_ws(f"{sim.ws_url}/stream?streams={stream}") as ws:
            receive(ws, 100)
            sim.delist(symbol)
            sim.list_symbol(symbol)  # like its own recording
            assert info_of(sim)[symbol]["status"] == "TRADING"
            ids = [e["t"] for e in receive(ws, 3000)]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no gap, no repeat


# -- connection limits ----------------------------------------------------------------------


def test_a_connection_asking_for_more_streams_than_allowed_is_disconnected(
    sources: list[Source],
) -> None:
    market = market_tape(sources, 30, QUOTES)
    names = [s.lower() + "@trade" for s in market.symbols]
    for sim in serve(market, faults=Faults(max_streams=10)):
        # ten are fine
        with open_ws(f"{sim.ws_url}/stream?streams={'/'.join(names[:10])}") as ws:
            assert receive(ws, 5)
        # eleven in the URL: closed at once
        with open_ws(f"{sim.ws_url}/stream?streams={'/'.join(names[:11])}") as ws:
            closed = closed_by_server(ws)
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "Too many streams")
        # subscribing past ten: the same
        with open_ws(f"{sim.ws_url}/ws") as ws:
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": names[:8], "id": 1}))
            assert json.loads(ws.recv(timeout=10)) == {"result": None, "id": 1}
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": names[8:11], "id": 2}))
            closed = closed_by_server(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1008
        assert sim.stats().too_many_streams == 2


def test_a_client_sending_six_messages_in_a_second_is_dropped(sources: list[Source]) -> None:
    market = market_tape(sources, 3, QUOTES)
    for sim in serve(market):  # spot's own limit: 5 incoming messages a second
        with open_ws(f"{sim.ws_url}/ws") as ws:
            for n in range(3):
                ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))
            ws.pong(b"")  # pings and pongs count too
            ws.ping(b"1")
            ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 5}))
            closed = closed_by_server(ws)
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "Too many requests")
        assert sim.stats().limit_disconnects == 1


def test_futures_allow_ten_messages_a_second(sources: list[Source]) -> None:
    market = market_tape(sources, 3, ("USDT",))
    for sim in serve(market, usdm=True):
        with open_ws(f"{sim.ws_url}/public/ws") as ws:
            for n in range(10):
                ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))
            assert [json.loads(ws.recv(timeout=10))["id"] for _ in range(10)] == list(range(10))
            ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 10}))
            closed = closed_by_server(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1008
        assert sim.stats().limit_disconnects == 1


def test_connection_attempts_past_the_limit_are_refused(sources: list[Source]) -> None:
    market = market_tape(sources, 3, QUOTES)
    url_of = f"/stream?streams={market.symbols[0].lower()}@trade"
    for sim in serve(market, faults=Faults(max_connects_per_5min=3)):
        for _ in range(3):
            with open_ws(sim.ws_url + url_of) as ws:
                assert receive(ws, 1)
        with pytest.raises(InvalidStatus) as refused:
            open_ws(sim.ws_url + url_of)
        assert refused.value.response.status_code == 429
        assert sim.stats().refused_connections == 1
        assert sim.stats().connections == 3
        # REST is not a connection attempt
        assert request(f"{sim.rest_url}/api/v3/ping")[0] == 200


# -- REST request weight -------------------------------------------------------------------


def test_the_weight_header_counts_each_endpoints_real_weight(sources: list[Source]) -> None:
    market = market_tape(sources, 3, QUOTES)
    symbol = market.symbols[0]
    spot_calls = [
        ("/api/v3/ping", 1),
        ("/api/v3/time", 2),
        ("/api/v3/exchangeInfo", 22),
        (f"/api/v3/trades?symbol={symbol}", 47),
        (f"/api/v3/historicalTrades?symbol={symbol}&fromId=1", 72),
    ]
    for sim in serve(market):
        for path, used in spot_calls:
            status, headers, _ = request(sim.rest_url + path)
            assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, str(used))
    futures_calls = [
        ("/fapi/v1/ping", 1),
        ("/fapi/v1/exchangeInfo", 2),
        (f"/fapi/v1/trades?symbol={symbol}", 7),
        (f"/fapi/v1/historicalTrades?symbol={symbol}&fromId=1", 27),
    ]
    for sim in serve(market, usdm=True):
        for path, used in futures_calls:
            status, headers, body = request(sim.rest_url + path, headers={"X-MBX-APIKEY": "k"})
            assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, str(used))
            if path.endswith("exchangeInfo"):
                assert isinstance(body, dict)
                assert body["rateLimits"][0]["limit"] == 2400


def test_past_the_weight_limit_comes_a_429_and_then_a_ban_for_not_backing_off(
    sources: list[Source],
) -> None:
    market = market_tape(sources, 3, QUOTES)
    trades = f"/api/v3/trades?symbol={market.symbols[0]}"
    for sim in serve(market, faults=Faults(max_weight_per_min=60)):
        assert request(sim.rest_url + trades)[0] == 200  # 25
        assert request(sim.rest_url + trades)[0] == 200  # 50
        status, headers, body = request(sim.rest_url + trades)  # 75 > 60: refused
        assert status == 429
        assert headers["X-MBX-USED-WEIGHT-1M"] == "50"  # not charged
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert isinstance(body, dict)
        assert body["code"] == -1003
        assert "current limit is 60 request weight per 1 MINUTE" in body["msg"]
        # not waiting as asked: 429 again, twice, then the IP is banned (418)
        assert [request(sim.rest_url + "/api/v3/ping")[0] for _ in range(2)] == [429, 429]
        status, headers, body = request(sim.rest_url + "/api/v3/ping")
        assert status == 418
        assert headers["Retry-After"] == "120"  # Binance's shortest ban: 2 minutes
        assert isinstance(body, dict)
        assert "IP banned until" in body["msg"]
        assert request(sim.rest_url + "/api/v3/time")[0] == 418
        stats = sim.stats()
        assert (stats.rate_limited, stats.banned) == (3, 2)
        assert stats.rest_calls == 7


# -- the command line ---------------------------------------------------------------------


@pytest.mark.slow
def test_simulate_market_serves_a_market_of_the_quotes_asked_for(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "simulate.log"
    args = ["simulate", "--market", "50", "--quotes", "USDT,BTC", "--speed", "max"]
    args += ["--port", str(port), str(fixtures_dir / ETH_CSV), str(fixtures_dir / USDM_CSV)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")},
        )
    try:
        deadline = time.monotonic() + 30
        while "use:" not in log.read_text(encoding="utf-8"):
            assert process.poll() is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.05)
        assert "--symbols ALL" in log.read_text(encoding="utf-8")
        status, _, body = request(f"http://127.0.0.1:{port}/api/v3/exchangeInfo")
    finally:
        process.terminate()
        assert process.wait(10) == 0
    assert status == 200
    assert isinstance(body, dict)
    rows = body["symbols"]
    assert len(rows) == 50
    assert {r["quoteAsset"] for r in rows} == {"USDT", "BTC"}


def test_a_recorded_symbol_halted_and_listed_again_goes_on_with_its_ids(
    btc_frames: list[bytes],
) -> None:
    tape = tape_from_frames(btc_frames[:2000])
    sim = SimulatorThread(Simulator(tape, speed=None, loop=True))
    sim.start()
    try:
        with open_ws(f"{sim.ws_url}/stream?streams=btcusdt@trade") as ws:
            receive(ws, 100)
            status, _, row = request(f"{sim.rest_url}/sim/halt?symbol=BTCUSDT", "POST")
            assert isinstance(row, dict)
            assert (status, row["status"], row["quoteAsset"]) == (200, "HALT", "USDT")
            assert request(f"{sim.rest_url}/sim/list?symbol=BTCUSDT", "POST")[0] == 200
            events = receive(ws, 4000)
    finally:
        sim.stop()
    ids = [e["t"] for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # the recording, then its copy
    assert {e["s"] for e in events} == {"BTCUSDT"}
