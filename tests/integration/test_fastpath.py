"""The WSGI fast path for ``GET /api/get_signal`` answers exactly as the Flask route does."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path
from typing import Any

from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web.app import create_app
from spikewatch.web.fastpath import quick_requests
from spikewatch.web.server import create_server


def test_fast_path_sends_the_bytes_the_flask_route_sends(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    settings = load_settings({"db": str(tmp_path / "s.db")}, env={})
    store = SQLiteSignalStore(settings.db)
    try:
        engine = Engine(settings, store)
        client = create_app(settings, engine).test_client()
        before = client.get("/api/get_signal")
        assert before.get_json() == {"status": "Awaiting first signal..."}  # falls through
        for frame in btc_frames[:5000]:
            engine.handle_frame(frame)
        assert engine.latest_signal_json() is not None
        fast = client.get("/api/get_signal")  # no query string: the fast path
        routed = client.get("/api/get_signal?symbol=BTCUSDT")  # the Flask route
        assert fast.status_code == routed.status_code == 200
        assert fast.data == routed.data
        assert fast.headers["Content-Type"] == routed.headers["Content-Type"]
        assert fast.get_json()["trade_id"] == engine.latest_signal().trade_id  # type: ignore[union-attr]
        assert client.post("/api/get_signal").status_code == 405  # other methods: Flask
    finally:
        store.close()


def _exchange(port: int, raw: bytes, replies: int) -> list[bytes]:
    """Send ``raw`` (one or more pipelined requests) and read ``replies`` responses."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        answers: list[bytes] = []
        while len(answers) < replies:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {len(answers)} replies"
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
            while len(data) < length:
                data += sock.recv(65536)
            body, data = data[:length], data[length:]
            answers.append(head.split(b"\r\n", 1)[0] + b"\n" + body)
        return answers


def test_the_server_loop_answers_the_latest_signal_as_a_request_thread_would(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    settings = load_settings({"db": str(tmp_path / "s.db")}, env={})
    store = SQLiteSignalStore(settings.db)
    threads: list[str] = []
    try:
        engine = Engine(settings, store)
        app = create_app(settings, engine)
        inner = app.wsgi_app

        def recording(environ: dict[str, Any], start_response: Any) -> Any:
            threads.append(threading.current_thread().name)  # who answered
            return inner(environ, start_response)

        server = create_server(recording, "127.0.0.1", 0, 2, quick=quick_requests(app))
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                server.asyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

        loop_thread = threading.Thread(target=loop, name="the-loop", daemon=True)
        loop_thread.start()
        try:
            port = int(server.effective_port)
            get = b"GET /api/get_signal HTTP/1.1\r\nHost: x\r\n\r\n"
            # no signal yet: the awaiting status comes from Flask, on a request thread
            (awaiting,) = _exchange(port, get, 1)
            assert awaiting.endswith(b'{"status":"Awaiting first signal..."}')
            assert threads[-1] != "the-loop"
            for frame in btc_frames[:5000]:
                engine.handle_frame(frame)
            latest = engine.latest_signal_json()
            assert latest is not None
            threads.clear()
            # three pipelined requests: the first on the loop, the others after it in
            # order (the connection then has a request in progress: a request thread)
            routed = b"GET /api/get_signal?symbol=BTCUSDT HTTP/1.1\r\nHost: x\r\n\r\n"
            answers = _exchange(port, get + routed + get, 3)
            assert [a.split(b"\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 3
            assert [a.split(b"\n", 1)[1] for a in answers] == [latest] * 3
            assert threads[0] == "the-loop"
            # alone on its connection, and HTTP/1.0 closing after it: on the loop
            (again,) = _exchange(port, b"GET /api/get_signal HTTP/1.0\r\n\r\n", 1)
            assert again == b"HTTP/1.0 200 OK\n" + latest
            assert threads[-1] == "the-loop"
        finally:
            stop.set()
            loop_thread.join(10)
            server.task_dispatcher.shutdown()
            server.asyncore.close_all(server._map)
    finally:
        store.close()
