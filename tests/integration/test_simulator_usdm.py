"""The simulator speaking Binance USD-M futures over real sockets on 127.0.0.1: the routed
stream paths, futures frames, and ``/fapi/v1`` REST (``historicalTrades`` with its key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from spikewatch.core.model import Trade
from spikewatch.exchanges.binance import BinanceUsdm
from spikewatch.replay.simulator import Faults, Simulator, SimulatorThread
from spikewatch.replay.tape import TapeEntry, tape_from_frames

FRAMES = "binance-usdm-BTCUSDT-trade-combined.hftbacktest-2024-08-08T2354Z_first-300.jsonl"
CSV = "binance-usdm-BTCUSDT-trades-2024-08-08T2354Z_first-300-rows.csv.gz"
ROOT = Path(__file__).resolve().parents[2]
HEAD = b'{"stream":"btcusdt@trade","data":'

usdm = BinanceUsdm()


@pytest.fixture
def frames(fixtures_dir: Path) -> list[bytes]:
    """300 recorded BTCUSDT futures ``@trade`` frames, combined form, byte-exact."""
    return [line for line in (fixtures_dir / FRAMES).read_bytes().splitlines() if line]


def serve(
    tape: list[TapeEntry], *, loop: bool = False, faults: Faults | None = None
) -> Iterator[SimulatorThread]:
    """A futures simulator of ``tape``, playing as fast as its client reads, until exit."""
    codec = usdm.simulator_codec()
    sim = SimulatorThread(Simulator(tape, codec=codec, speed=None, loop=loop, faults=faults))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def sim(frames: list[bytes]) -> Iterator[SimulatorThread]:
    """The simulator playing the futures recording as fast as its client reads."""
    yield from serve(tape_from_frames(frames))


def receive(ws: ClientConnection, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        message = ws.recv(timeout=5)
        out.append(message.encode() if isinstance(message, str) else message)
    return out


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, object]:
    """Status and JSON body of a GET (an error status is returned, not raised)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def trades_of(frames: list[bytes]) -> list[Trade]:
    return BinanceUsdm().parse_batch(frames).trade_list()


# -- streams ------------------------------------------------------------------------------


def test_the_adapters_routed_stream_url_gets_the_recorded_frames(
    sim: SimulatorThread, frames: list[bytes]
) -> None:
    with connect(usdm.stream_url(sim.ws_url, ["BTCUSDT"]), max_queue=None) as ws:
        assert receive(ws, 300) == frames


def test_raw_route_gets_the_recorded_events(sim: SimulatorThread, frames: list[bytes]) -> None:
    with connect(f"{sim.ws_url}/public/ws/btcusdt@trade", max_queue=None) as ws:
        events = receive(ws, 10)
    assert events == [f[len(HEAD) : -1] for f in frames[:10]]


def test_subscribe_on_the_route_is_acknowledged_then_trades_flow(
    sim: SimulatorThread, frames: list[bytes]
) -> None:
    with connect(f"{sim.ws_url}/public/ws", max_queue=None) as ws:
        ws.send(usdm.subscribe(["BTCUSDT"], 1))
        reply, *events = receive(ws, 4)
    assert json.loads(reply) == {"result": None, "id": 1}
    assert events == [f[len(HEAD) : -1] for f in frames[:3]]


@pytest.mark.parametrize("path", ["/ws/btcusdt@trade", "/stream?streams=btcusdt@trade"])
def test_unrouted_paths_are_refused(sim: SimulatorThread, path: str) -> None:
    # fstream serves @trade under /public only; spot's paths are no futures endpoint
    with connect(f"{sim.ws_url}{path}") as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1008


def test_trades_from_a_csv_are_served_as_futures_events(fixtures_dir: Path) -> None:
    from spikewatch.replay.readers import read_trades
    from spikewatch.replay.tape import tape_from_trades

    trades = list(read_trades([fixtures_dir / CSV], symbol="BTCUSDT"))
    tape = tape_from_trades(trades, usdm.simulator_codec().trade_frame)
    for sim in serve(tape):
        with connect(usdm.stream_url(sim.ws_url, ["BTCUSDT"]), max_queue=None) as ws:
            served = receive(ws, len(trades))
    events = [json.loads(f)["data"] for f in served]
    assert all(e["X"] == "MARKET" and "M" not in e for e in events)
    assert [t.trade_id for t in trades_of(served)] == [t.trade_id for t in trades]
    assert [(t.price, t.qty, t.time_us, t.side) for t in trades_of(served)] == [
        (t.price, t.qty, t.time_us, t.side) for t in trades
    ]


def test_looping_writes_later_laps_as_futures_events(frames: list[bytes]) -> None:
    for sim in serve(tape_from_frames(frames[:50]), loop=True):
        # an endless tape at full speed: leave without waiting for the close handshake
        url = usdm.stream_url(sim.ws_url, ["BTCUSDT"])
        with connect(url, max_queue=None, close_timeout=0.2) as ws:
            served = receive(ws, 120)
    assert served[:50] == frames[:50]
    assert all(b'"X":"MARKET"' in f and b'"M"' not in f for f in served[50:])
    ids = [t.trade_id for t in trades_of(served)]
    assert ids == list(range(ids[0], ids[0] + 120))


def test_a_recorded_liquidation_fill_is_streamed_but_not_in_rest(frames: list[bytes]) -> None:
    fill = json.loads(frames[2])
    fill["data"]["X"] = "INSURANCE_FUND"
    recording = [*frames[:2], json.dumps(fill, separators=(",", ":")).encode(), *frames[3:10]]
    for sim in serve(tape_from_frames(recording)):
        with connect(usdm.stream_url(sim.ws_url, ["BTCUSDT"]), max_queue=None) as ws:
            assert receive(ws, 10) == recording
        status, rows = get(f"{sim.rest_url}/fapi/v1/trades?symbol=BTCUSDT&limit=20")
    assert status == 200
    assert isinstance(rows, list)
    assert [r["id"] for r in rows] == [
        json.loads(f)["data"]["t"] for f in recording if f != recording[2]
    ]


def test_a_shutdown_fault_closes_without_a_notice_futures_do_not_send(
    frames: list[bytes],
) -> None:
    faults = Faults(shutdown_after=5, shutdown_grace=0.1)
    for sim in serve(tape_from_frames(frames), faults=faults):
        with connect(usdm.stream_url(sim.ws_url, ["BTCUSDT"]), max_queue=None) as ws:
            assert receive(ws, 5) == frames[:5]
            with pytest.raises(ConnectionClosed):
                receive(ws, 300)


# -- REST ---------------------------------------------------------------------------------


def read_all(sim: SimulatorThread, frames: list[bytes]) -> None:
    """Let the whole recording play (REST serves the trades played so far)."""
    with connect(usdm.stream_url(sim.ws_url, ["BTCUSDT"]), max_queue=None) as ws:
        assert receive(ws, len(frames)) == frames


def test_recent_trades_are_served_in_the_futures_shape(
    sim: SimulatorThread, frames: list[bytes]
) -> None:
    read_all(sim, frames)
    request = usdm.recent_trades("BTCUSDT", 5)
    status, rows = get(sim.rest_url + request.path)
    assert status == 200
    assert isinstance(rows, list)
    assert all("isBestMatch" not in row for row in rows)
    assert {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker"} <= set(rows[0])
    body = json.dumps(rows).encode()
    assert usdm.parse_rest_trades(body, "BTCUSDT") == trades_of(frames)[-5:]


def test_historical_trades_without_the_api_key_are_refused(
    sim: SimulatorThread, frames: list[bytes]
) -> None:
    read_all(sim, frames)
    first = json.loads(frames[0])["data"]["t"]
    status, body = get(f"{sim.rest_url}/fapi/v1/historicalTrades?symbol=BTCUSDT&fromId={first}")
    assert status == 401
    assert body == {"code": -2014, "msg": "API-key format invalid."}


def test_historical_trades_with_the_api_key_start_at_the_id(
    sim: SimulatorThread, frames: list[bytes]
) -> None:
    read_all(sim, frames)
    first = json.loads(frames[100])["data"]["t"]
    request = BinanceUsdm(api_key="test-key").trades_from_id("BTCUSDT", first, 50)
    assert request is not None
    status, rows = get(sim.rest_url + request.path, dict(request.headers))
    assert status == 200
    body = json.dumps(rows).encode()
    assert usdm.parse_rest_trades(body, "BTCUSDT") == trades_of(frames)[100:150]


def test_time_ping_and_exchange_info_answer_on_the_fapi_paths(sim: SimulatorThread) -> None:
    assert get(f"{sim.rest_url}/fapi/v1/ping") == (200, {})
    status, now = get(f"{sim.rest_url}/fapi/v1/time")
    assert status == 200
    assert isinstance(now, dict)
    assert abs(now["serverTime"] - time.time() * 1000) < 60_000
    status, info = get(f"{sim.rest_url}/fapi/v1/exchangeInfo")
    assert status == 200
    assert isinstance(info, dict)
    assert info["rateLimits"][0]["limit"] == 2400
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT"]
    assert get(f"{sim.rest_url}/api/v3/trades?symbol=BTCUSDT")[0] == 404


# -- the command line ---------------------------------------------------------------------


@pytest.mark.slow
def test_simulate_command_serves_futures_from_a_trades_csv(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = tmp_path / "simulate.log"
    args = ["simulate", "--exchange", "binance-usdm", str(fixtures_dir / CSV)]
    args += ["--symbol", "BTCUSDT", "--port", str(port), "--speed", "max"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")},
        )
    try:
        url = usdm.stream_url(f"ws://127.0.0.1:{port}", ["BTCUSDT"])
        deadline = time.monotonic() + 30
        while "streams:" not in log.read_text(encoding="utf-8"):
            assert process.poll() is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.05)
        assert url in log.read_text(encoding="utf-8")
        with connect(url, max_queue=None) as ws:
            served = receive(ws, 300)
        status, rows = get(f"http://127.0.0.1:{port}/fapi/v1/trades?symbol=BTCUSDT&limit=3")
    finally:
        process.terminate()
        assert process.wait(10) == 0
    assert all(json.loads(f)["data"]["X"] == "MARKET" for f in served)
    assert [t.trade_id for t in trades_of(served)] == list(range(5266583935, 5266584235))
    assert status == 200
    assert isinstance(rows, list)
    assert [r["id"] for r in rows] == [5266584232, 5266584233, 5266584234]
