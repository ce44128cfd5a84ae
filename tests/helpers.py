"""Helpers for tests that run the real app as a process: ports, HTTP, waiting."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spikewatch.core.alerts import Alert
from spikewatch.core.kernel import GapPolicy, Kernel
from spikewatch.core.model import Signal, Trade, TradeBatch

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> Any:
    """GET a JSON endpoint of the app on ``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.load(response)


def wait_until(check: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll ``check`` (connection errors count as not yet) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the app did not get there in time")
        time.sleep(0.05)


def start_app(
    port: int, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python app.py --port PORT ARGS...``, its log going to ``log``; no SPIKEWATCH_*
    variable of the caller leaks in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
    clean.update(env or {})
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--port", str(port), *args],
            env=clean,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


@contextlib.contextmanager
def served_engine(
    frames: list[bytes],
    db: Path,
    *,
    speed: float | None,
    threads: int = 8,
    connection_limit: int = 100,
    status_interval: float | None = None,
) -> Iterator[Served]:
    """The simulator playing ``frames`` (paused until a client connects), an engine (not
    started) against it, and the web app on waitress on a free port; all stopped at exit."""
    from spikewatch.config import load_settings
    from spikewatch.engine import Engine
    from spikewatch.ingest.backoff import Backoff
    from spikewatch.replay.simulator import Simulator, SimulatorThread
    from spikewatch.replay.tape import tape_from_frames
    from spikewatch.store.sqlite import SQLiteSignalStore
    from spikewatch.web.app import create_app

    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=speed))
    sim.start()
    settings = load_settings(
        {"ws_url": sim.ws_url, "rest_url": sim.rest_url, "db": str(db)}, env={}
    )
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.2))
    if status_interval is not None:
        engine.status_interval = status_interval
    app = create_app(settings, engine)
    try:
        with waitress_server(app, threads=threads, connection_limit=connection_limit) as server:
            try:
                yield Served(engine, sim, app, int(server.effective_port))
            finally:
                engine.stop()
    finally:
        sim.stop()
        store.close()


@contextlib.contextmanager
def waitress_server(app: Any, **options: Any) -> Iterator[Any]:
    """``app`` behind waitress on a free port of 127.0.0.1, its loop on a thread that is
    stopped and joined before the sockets close (closing them under a running loop made
    its select() fail with EBADF in whatever test ran next)."""
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, **options)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

    thread = threading.Thread(target=loop, name="waitress", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the waitress loop did not stop"
        server.task_dispatcher.shutdown()
        server.asyncore.close_all(server._map)  # the listener and every client channel


@dataclasses.dataclass
class Served:
    """What :func:`served_engine` runs."""

    engine: Any  # spikewatch.engine.Engine
    sim: Any  # spikewatch.replay.simulator.SimulatorThread
    app: Any  # the Flask app
    port: int


def detection(factory: Any) -> Kernel:
    """A kernel that only detects: every jump in trade ids counted, the windows kept (the
    ``continue`` gap policy), as the per-trade reference runs."""
    return Kernel(factory, gap_policy=GapPolicy.CONTINUE, bars=False)


def run(kernel: Kernel, item: Trade | TradeBatch) -> list[Signal]:
    """The signals of one trade or batch fed to ``kernel``."""
    return kernel.feed((item,)).signals


def stored_signals(engine: Any) -> list[Signal]:
    """Every signal ``engine`` stored, newest first (after its writer has caught up)."""
    assert engine.flush(10)
    out: list[Signal] = []
    page = engine.store.page(limit=1000)
    out.extend(page.signals)
    while page.next_cursor is not None:
        page = engine.store.page(limit=1000, after=page.next_cursor)
        out.extend(page.signals)
    return out


def caught_up(engine: Any, last_id: int, symbol: str = "BTCUSDT") -> Callable[[], bool]:
    """True once ``engine`` has processed ``symbol`` up to ``last_id`` with no gap open."""

    def done() -> bool:
        state = engine.status().symbols[symbol]
        return bool(state.last_trade_id == last_id and not state.backfilling)

    return done


def spike_signal(exchange: str, trade_id: int, time_us: int, symbol: str = "BTCUSDT") -> Signal:
    """A stored-looking volume spike of ``symbol`` on ``exchange`` (for store and stream
    tests)."""
    from spikewatch.core.model import VolumeSpikeSignal, iso_utc

    return VolumeSpikeSignal(
        id=f"{exchange}:{symbol}:volume_spike-w200-x10:{trade_id}",
        exchange=exchange,
        symbol=symbol,
        detector="volume_spike-w200-x10",
        trade_id=trade_id,
        timestamp=iso_utc(time_us),
        time_us=time_us,
        price=61_800.3,
        volume=2.0,
        quote_volume=123_600.6,
        side="sell",
        average_volume=0.1,
        ratio=20.0,
        window=200,
        threshold=10.0,
    )


#: Debian's Chromium, as the browser tests launch it: as root in a sandbox with no network
#: but loopback: no sandbox, no GPU, and none of the background connections Chromium
#: makes to Google (refused here, and noisy).
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

#: The real ETHUSDT trades of the BTCUSDT recording's minutes (data.binance.vision CSV).
ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"


def eth_frames(fixtures_dir: Path) -> list[tuple[int, bytes]]:
    """The ETHUSDT CSV's trades rebuilt as the combined-stream frames Binance streams,
    with their trade times (ms)."""
    timed: list[tuple[int, bytes]] = []
    with gzip.open(fixtures_dir / ETH_CSV, "rt", newline="") as handle:
        for trade_id, price, qty, _quote, time_ms, buyer_is_maker, _best in csv.reader(handle):
            data = {
                "e": "trade",
                "E": int(time_ms),
                "s": "ETHUSDT",
                "t": int(trade_id),
                "p": price,
                "q": qty,
                "T": int(time_ms),
                "m": buyer_is_maker == "True",
                "M": True,
            }
            frame = json.dumps({"stream": "ethusdt@trade", "data": data}, separators=(",", ":"))
            timed.append((int(time_ms), frame.encode()))
    return timed


def two_symbols(fixtures_dir: Path, btc_frames: list[bytes]) -> list[bytes]:
    """The BTCUSDT recording interleaved by trade time with the real ETHUSDT trades of the
    same minutes (stable: each symbol keeps its own order)."""
    timed = eth_frames(fixtures_dir)
    timed += [(json.loads(frame)["data"]["T"], frame) for frame in btc_frames]
    timed.sort(key=lambda item: item[0])
    return [frame for _, frame in timed]


def a_stored_alert(exchange: str, number: int, signals: int = 1) -> Alert:
    """An alert as a detect worker stores it (BTCUSDT volume spikes)."""
    time_us = 1_723_161_600_000_000 + number * 10_000_000
    return Alert(
        id=f"spikes:{exchange}:BTCUSDT:{1000 + number}",
        rule="spikes",
        severity="warning",
        exchange=exchange,
        symbol="BTCUSDT",
        side="buy",
        timestamp="2024-08-09T00:00:00.000Z",
        time_us=time_us,
        last_time_us=time_us + signals,
        price=61000.5,
        usd_value=122001.0,
        usd_total=122001.0 * signals,
        signals=signals,
        detectors=["volume_spike-w200-x10"],
        first_signal=f"{exchange}:BTCUSDT:volume_spike-w200-x10:{1000 + number}",
        summary=f"BTCUSDT spikes #{number}",
    )
