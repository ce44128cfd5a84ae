"""The web layer under clients that misbehave, over real sockets on 127.0.0.1: live-stream
clients that never read, floods of idle connections, cross-site requests."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spikewatch.config import load_settings
from spikewatch.core.model import Signal
from spikewatch.engine import Engine
from spikewatch.hub import Event
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web.app import create_app
from spikewatch.web.server import ServeError, create_server

from helpers import get, served_engine, spike_signal, wait_until

pytestmark = pytest.mark.slow


def open_stream(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A connection that asks for /api/stream (and may never read it)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


class Reader(threading.Thread):
    """Reads a live stream as fast as it comes, collecting each event's data."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", "/api/stream")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.data: list[bytes] = []
        self.ended = False

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while line := self.response.fp.readline():
                if line.startswith(b"data: "):
                    self.data.append(line[6:].rstrip(b"\n"))
        self.ended = True


def left_to_read(sock: socket.socket) -> int:
    """Bytes ``sock`` still receives until the server's close (waits for it)."""
    sock.settimeout(10)
    total = 0
    with contextlib.suppress(ConnectionResetError):
        while data := sock.recv(1 << 20):
            total += len(data)
    return total


def test_stream_clients_that_never_read_are_disconnected_and_the_others_keep_up(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    with served_engine(
        btc_frames[:10], tmp_path / "s.db", speed=None, threads=64, connection_limit=200
    ) as served:
        hub = served.engine.hub
        # 40 clients ask for the stream and never read a byte (a small receive buffer:
        # the operating system holds less for them, so they fall behind sooner)
        stuck = [open_stream(served.port, rcvbuf=4096) for _ in range(40)]
        reader = Reader(served.port)
        reader.start()
        wait_until(lambda: hub.stats().clients == 41, timeout=30)
        # big events, as the engine publishes them (the engine itself is not started):
        # 7 MB in all, far more than the socket buffers of a client hold
        events = 120
        for n in range(events):
            hub.publish(Event("status", b'{"n":%d,"pad":"%s"}' % (n, b"x" * 60_000)))
            if n % 4 == 3:  # the reader keeps up, as a client on a fast network does
                wait_until(lambda n=n: len(reader.data) > n, timeout=30)  # type: ignore[misc]

        stats = wait_until(lambda: (s := hub.stats()).dropped_slow == 40 and s, timeout=30)
        assert stats.clients == 1  # the reader
        assert get(served.port, "/api/status")["stream"]["dropped_slow"] == 40
        # the reader got every event, in order, and was never held up by the others
        assert [json.loads(d)["n"] for d in reader.data] == list(range(events))
        assert not reader.ended
        # each stuck client's connection was closed by the server, and what it held for
        # it thrown away (megabytes were waiting): at most what the client's own
        # receive buffer held is left for it to read
        for sock in stuck:
            assert left_to_read(sock) < 256 * 1024
            sock.close()
        reader.conn.close()


@contextlib.contextmanager
def production_server(app: Any, **options: Any) -> Iterator[int]:
    """``app`` on spikewatch's production server (``web/server.py``) on a free port of
    127.0.0.1; its loop on a thread, stopped and joined before the sockets close."""
    server = create_server(app, "127.0.0.1", 0, options.pop("threads", 8), **options)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

    thread = threading.Thread(target=loop, name="waitress", daemon=True)
    thread.start()
    try:
        yield int(server.effective_port)
    finally:
        app.extensions["spikewatch.engine"].hub.close()  # live streams end first
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the server loop did not stop"
        server.task_dispatcher.shutdown()
        server.asyncore.close_all(server._map)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    """The web app around an engine that is not started (no exchange needed)."""
    settings = load_settings({"db": str(tmp_path / "s.db")}, env={})
    store = SQLiteSignalStore(settings.db)
    try:
        yield create_app(settings, Engine(settings, store))
    finally:
        store.close()


def spot_signal(n: int) -> Signal:
    """A stored BTCUSDT spike of binance (delivery number ``n`` once stored in order)."""
    return spike_signal("binance", 5_266_583_935 + n, 1_723_161_300_000_000 + n * 1000)


def test_a_client_that_stops_reading_its_replay_is_disconnected_and_its_thread_freed(
    tmp_path: Path,
) -> None:
    settings = load_settings({"db": str(tmp_path / "s.db")}, env={})
    store = SQLiteSignalStore(settings.db)
    store.add([spot_signal(n) for n in range(20_000)])  # about 10 MB to resume
    engine = Engine(settings, store)
    engine.hub.stall_s = 1.0  # a client that takes nothing for a second has stalled
    try:
        # one request thread: while the replay holds it, nothing else is answered
        with production_server(create_app(settings, engine), threads=1) as port:
            resuming = socket.socket()
            resuming.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            resuming.connect(("127.0.0.1", port))
            resuming.sendall(
                b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: 0\r\n\r\n"
            )
            wait_until(lambda: engine.hub.stats().dropped_slow == 1, timeout=30)
            assert get(port, "/healthz") == {"status": "ok"}  # the thread is free again
            assert engine.hub.stats().clients == 0
            assert left_to_read(resuming) < 256 * 1024
            resuming.close()
    finally:
        store.close()


def test_a_flood_of_idle_connections_leaves_the_api_answering(app: Any) -> None:
    with production_server(app, connection_limit=64) as port:
        # four times the connection limit, each connected and never sending a byte
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(256)]
        try:
            for _ in range(5):
                assert get(port, "/healthz") == {"status": "ok"}
                assert get(port, "/api/status")["connection"]["state"]
        finally:
            for sock in idle:
                sock.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout_and_a_stream_is_not(
    app: Any,
) -> None:
    with production_server(app, idle_timeout=1, cleanup_interval=1) as port:
        stream = Reader(port)
        stream.start()
        idle = socket.create_connection(("127.0.0.1", port))
        try:
            assert left_to_read(idle) == 0  # closed by the server, about a second later
            engine = app.extensions["spikewatch.engine"]
            engine.hub.publish(Event("status", b'{"still":"there"}'))
            wait_until(lambda: b'{"still":"there"}' in stream.data, timeout=10)
            assert not stream.ended
        finally:
            idle.close()
            stream.conn.close()


def post(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.headers
    finally:
        conn.close()


def test_a_host_name_that_does_not_resolve_is_a_one_line_error(app: Any) -> None:
    with pytest.raises(ServeError) as refused:
        create_server(app, "no-such-host.invalid", 0, 1)
    assert (
        str(refused.value)
        == "cannot listen on host 'no-such-host.invalid': no such host or address"
    )


def test_a_cross_site_post_cannot_make_the_server_reconnect(app: Any) -> None:
    with production_server(app) as port:
        here = f"127.0.0.1:{port}"
        refused = [
            # DNS rebinding: a foreign name pointed at 127.0.0.1
            {"Host": f"evil.example:{port}"},
            {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
            # a form on another site posting to this one
            {"Host": here, "Origin": "http://evil.example"},
            {"Host": here, "Origin": "null"},  # sandboxed frames, some redirects
            {"Host": here, "Origin": f"http://127.0.0.1:{port + 1}"},  # another local site
            {"Host": here, "Sec-Fetch-Site": "cross-site"},
        ]
        for headers in refused:
            status, body, sent = post(port, "/api/reconnect", headers)
            assert status == 403, headers
            assert body["error"].startswith("refused"), headers
            assert sent["Content-Type"] == "application/json"
            assert sent["X-Content-Type-Options"] == "nosniff"
        allowed = [
            {"Host": here},  # curl, scripts: no Origin
            {"Host": here, "Origin": f"http://{here}"},  # the dashboard itself
            {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
        ]
        for headers in allowed:
            status, body, _ = post(port, "/api/reconnect", headers)
            # let through; the engine was never started, so there is nothing to reconnect
            assert (status, body) == (409, {"error": "the engine is not running"}), headers


def test_json_answers_say_nosniff_and_the_page_files_carry_the_page_policy(app: Any) -> None:
    client = app.test_client()
    for path in ("/api/status", "/api/get_signal", "/healthz", "/api/signals?limit=x"):
        response = client.get(path)
        assert response.headers["Content-Type"] == "application/json", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
    page = client.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    for path in ("/assets/index.html", "/assets/app.js", "/assets/favicon.svg"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Content-Security-Policy"] == policy, path
        response.close()
    page.close()


def test_the_fast_path_says_nosniff_too(tmp_path: Path, btc_frames: list[bytes]) -> None:
    settings = load_settings({"db": str(tmp_path / "s.db")}, env={})
    store = SQLiteSignalStore(settings.db)
    try:
        engine = Engine(settings, store)
        for frame in btc_frames[:5000]:
            engine.handle_frame(frame)
        assert engine.latest_signal_json() is not None  # answered by the fast path
        response = create_app(settings, engine).test_client().get("/api/get_signal")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        store.close()
