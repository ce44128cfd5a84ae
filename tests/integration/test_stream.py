"""``/api/stream`` over real sockets: the production server, the live engine and the
simulator playing real recorded trades."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spikewatch.core.model import Signal
from spikewatch.engine import Engine
from spikewatch.replay.simulator import SimulatorThread
from spikewatch.store.sqlite import SQLiteSignalStore

from helpers import served_engine, spike_signal

pytestmark = pytest.mark.slow


@dataclass
class Live:
    engine: Engine
    sim: SimulatorThread
    port: int


@dataclass
class SseEvent:
    kind: str
    id: int | None
    data: Any


def read_events(
    port: int, path: str = "/api/stream", headers: dict[str, str] | None = None
) -> Generator[SseEvent, None, None]:
    """Connect and yield events as they arrive (comments skipped)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    kind, ident = "message", None
    data: list[bytes] = []
    try:
        while True:
            line = response.fp.readline()
            if not line:
                return
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    yield SseEvent(kind, ident, json.loads(b"\n".join(data)))
                kind, ident, data = "message", None, []
            elif line.startswith(b"event: "):
                kind = line[7:].decode()
            elif line.startswith(b"id: "):
                ident = int(line[4:])
            elif line.startswith(b"data: "):
                data.append(line[6:])
    finally:
        conn.close()


@pytest.fixture
def live(tmp_path: Path, btc_frames: list[bytes]) -> Iterator[Live]:
    """The simulator (paused until the engine connects), the engine, the web server."""
    with served_engine(
        btc_frames[:8000],
        tmp_path / "s.db",
        speed=40,
        threads=250,
        connection_limit=500,
        status_interval=0.2,
    ) as served:
        yield Live(served.engine, served.sim, served.port)


def test_stream_pushes_each_signal_as_it_happens_and_status_every_interval(live: Live) -> None:
    stream = read_events(live.port)
    live.engine.start()
    signals: list[SseEvent] = []
    statuses: list[SseEvent] = []
    for event in stream:
        if event.kind == "signal":
            signals.append(event)
        elif event.kind == "status":  # (a totals event follows each)
            statuses.append(event)
        if len(signals) == 10:
            break
    stream.close()
    # each arrived while the response was still open: nothing waited in a buffer
    stored = live.engine.store
    assert live.engine.flush(5)
    by_seq = dict(stored.after_seq(0))
    for event in signals:
        assert event.id is not None
        assert msgspec_dict(by_seq[event.id]) == event.data
    assert [e.id for e in signals] == sorted(e.id for e in signals if e.id is not None)
    assert statuses, "status events come every interval"
    status = statuses[-1].data[0]
    assert status["symbol"] == "BTCUSDT"
    assert status["connection"] == "connected"
    assert status["bar"]["close"] > 0


def msgspec_dict(signal: Any) -> dict[str, Any]:
    import msgspec

    decoded: dict[str, Any] = json.loads(msgspec.json.encode(signal))
    return decoded


def test_a_client_resuming_with_last_event_id_gets_exactly_what_it_missed(live: Live) -> None:
    first = read_events(live.port)
    live.engine.start()
    seen = []
    for event in first:
        if event.kind == "signal":
            seen.append(event)
            if len(seen) == 5:
                break
    first.close()  # disconnected while signals go on
    missed_from = seen[-1].id
    assert isinstance(missed_from, int)
    deadline = time.monotonic() + 30
    while live.engine.last_seq() < missed_from + 3:  # some signals come while it is away
        assert time.monotonic() < deadline, "no signal came while the client was away"
        time.sleep(0.01)
    resumed = read_events(live.port, headers={"Last-Event-ID": str(seen[-1].id)})
    rest = []
    for event in resumed:
        if event.kind == "signal":
            rest.append(event)
            if len(rest) == 10:
                break
    resumed.close()
    ids = [e.id for e in seen + rest]
    assert ids == list(range(1, 16))  # no gap, no repeat
    assert live.engine.flush(5)
    stored = {seq: msgspec_dict(s) for seq, s in live.engine.store.after_seq(0)}
    for event in seen + rest:
        assert stored[event.id] == event.data  # type: ignore[index]


def test_a_bad_last_event_id_is_a_400(live: Live) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    conn.request("GET", "/api/stream", headers={"Last-Event-ID": "abc"})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 400
    assert body["param"] == "Last-Event-ID"


def test_two_hundred_clients_each_get_every_signal(live: Live) -> None:
    clients = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", live.port), timeout=30)
        sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        clients.append(sock)
    deadline = time.monotonic() + 30
    while live.engine.hub.stats().clients < 200:
        assert time.monotonic() < deadline, "clients did not all subscribe"
        time.sleep(0.05)
    live.engine.start()
    wanted = 5
    received = [b""] * len(clients)
    done = [False] * len(clients)
    while not all(done):
        assert time.monotonic() < deadline, f"{done.count(False)} clients short"
        for i, sock in enumerate(clients):
            if done[i]:
                continue
            sock.settimeout(0.01)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            received[i] += chunk
            done[i] = received[i].count(b"event: signal\n") >= wanted
    for sock in clients:
        sock.close()
    firsts = {r.split(b"event: signal\n", 1)[1].split(b"\n\n", 1)[0] for r in received}
    assert len(firsts) == 1  # everyone got the same first signal
    assert live.engine.hub.stats().dropped_slow == 0


def futures_signal(n: int) -> Signal:
    """A stored BTCUSDT spike of binance-usdm (delivery number ``n`` once stored in order)."""
    return spike_signal("binance-usdm", 5_266_583_935 + n, 1_723_161_300_000_000 + n * 1000)


def test_a_spot_stream_resumes_and_goes_on_without_the_futures_signals_of_its_database(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    db = tmp_path / "shared.db"
    store = SQLiteSignalStore(db)
    store.add([futures_signal(n) for n in range(5)])  # delivery numbers 1..5
    store.close()
    with served_engine(btc_frames[:8000], db, speed=40, status_interval=0.2) as served:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        conn.request("GET", "/api/stream?exchange=binance-usdm")
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (
            400,
            {"error": "exchange: binance-usdm is not served here (binance)", "param": "exchange"},
        )
        conn.close()

        served.engine.start()
        for path in ("/api/stream?exchange=binance&last_event_id=0", "/api/stream?last_event_id=0"):
            stream = read_events(served.port, path)
            signals = []
            for event in stream:
                if event.kind == "signal":
                    signals.append(event)
                    if len(signals) == 5:
                        break
            stream.close()
            # the resume from 0 skips the futures signals 1..5, live or replayed from the store
            assert [e.id for e in signals] == [6, 7, 8, 9, 10], path
            assert {e.data["exchange"] for e in signals} == {"binance"}
