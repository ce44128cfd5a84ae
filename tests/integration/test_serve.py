"""``spikewatch serve`` as it runs: real CLI processes over one real PostgreSQL schema,
their live push woken by the real NATS server, fed as a detect worker feeds them (each
batch of signals inserted into the store and published on the bus).

The signals are real: the kernel's findings on the recorded BTCUSDT frames. Each test has
a fresh schema and a ``bus_prefix`` of its own, so tests (and other deployments) on the
same servers never see each other's signals. Without the servers these tests skip on a
developer's machine and FAIL under CI (env ``CI`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import hypothesis
import nats
import psycopg
import pytest
import schemathesis
from jsonschema import Draft202012Validator
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from spikewatch.bus.names import BusNames
from spikewatch.bus.signals import SignalPublisher, ensure_signal_stream
from spikewatch.config import load_settings
from spikewatch.core.kernel import GapPolicy
from spikewatch.core.model import Signal
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.postgres import PostgresSignalStore, redact_url
from spikewatch.web.openapi import build_document
from spikewatch.wiring import build_exchange, build_kernel

from helpers import ROOT, free_port, wait_until
from roles_kit import deployment as roles_deployment
from roles_kit import embedded_ids

POSTGRES_URL = os.environ.get(
    "SPIKEWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
NATS_HOST, NATS_PORT = "127.0.0.1", 4222
NATS_URL = f"nats://{NATS_HOST}:{NATS_PORT}"
#: "eventually": far longer than anything should take
PATIENCE_S = 60.0

pytestmark = pytest.mark.slow  # processes and real servers: seconds of real time


# -- the servers -------------------------------------------------------------------------


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module", autouse=True)
def _servers_answer() -> None:
    """PostgreSQL and NATS with JetStream answer; otherwise skip, or fail under CI."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL at {redact_url(POSTGRES_URL)} is not answering: {exc}")
    try:
        with socket.create_connection((NATS_HOST, NATS_PORT), timeout=3) as sock:
            sock.settimeout(3)
            info = sock.recv(4096)
        if not info.startswith(b"INFO ") or not json.loads(info[5:]).get("jetstream"):
            raise ConnectionError(f"not a NATS server with JetStream: {info[:80]!r}")
    except (OSError, ValueError) as exc:
        _unavailable(f"NATS with JetStream is not answering at {NATS_URL}: {exc}")


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-c search_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@dataclass
class Deployment:
    """One test's schema, bus prefix, store (the detect worker's side) and serves."""

    url: str  # the schema's PostgreSQL URL
    prefix: str  # bus_prefix
    store: PostgresSignalStore
    log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def serve(self, *args: str, nats_url: str = NATS_URL) -> int:
        """Start ``spikewatch serve`` on a free port; its port once it is ready."""
        proc, port = start_serve(self.url, self.prefix, self.log, *args, nats_url=nats_url)
        self.procs.append(proc)
        return port

    def feed(self, signals: Sequence[Signal], *, publish_first: bool = False) -> None:
        """As a detect worker does: insert the signals, then publish them (or the other
        way round: a worker whose store write lags its publish)."""
        if publish_first:
            asyncio.run(publish(self.prefix, signals))
            self.store.add(signals)
        else:
            self.store.add(signals)
            asyncio.run(publish(self.prefix, signals))


def start_serve(
    url: str, prefix: str, log: Path, *args: str, nats_url: str = NATS_URL
) -> tuple[subprocess.Popen[bytes], int]:
    """``spikewatch serve`` on a free port, once it is ready: the process and its port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
    command = [sys.executable, "-m", "spikewatch", "serve", "--postgres", url]
    command += ["--nats-url", nats_url, "--bus-prefix", prefix]
    command += ["--port", str(port), "--web-threads", "32", *args]
    with log.open("ab") as sink:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {log.read_text()}")
        return bool(get(port, "/readyz")["status"] == "ready")

    try:
        wait_until(ready, PATIENCE_S)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, port


async def publish(prefix: str, signals: Sequence[Signal]) -> None:
    nc = await nats.connect(NATS_URL, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()
        names = BusNames(prefix, 1)  # as a detect worker names them
        await ensure_signal_stream(js, names.signal_stream, prefix=names.signal_prefix)
        publisher = SignalPublisher(js, prefix=names.signal_prefix, stream=names.signal_stream)
        await publisher.publish(signals)
    finally:
        await nc.close()


async def _drop_stream(name: str) -> None:
    nc = await nats.connect(NATS_URL, connect_timeout=5, allow_reconnect=False)
    try:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    schema = f"sw_serve_{secrets.token_hex(5)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_search_path(POSTGRES_URL, schema)
    store = PostgresSignalStore(url)
    made = Deployment(url, f"t{secrets.token_hex(5)}", store, tmp_path / "serve.log")
    try:
        yield made
    finally:
        for proc in made.procs:
            proc.terminate()
        for proc in made.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        store.close()
        asyncio.run(_drop_stream(BusNames(made.prefix, 1).signal_stream))
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="module")
def recorded_signals(btc_frames: list[bytes]) -> list[Signal]:
    """The signals of the recorded BTCUSDT frames, as a detect worker finds them (the
    shipped alert profile on: spikes, and a few order events that are not spikes)."""
    settings = load_settings({"alert_profile": "default"}, env={})
    kernel = build_kernel(
        settings,
        venues=(build_exchange(settings),),
        watch={"binance": ("BTCUSDT",)},
        gap_policy=GapPolicy.CONTINUE,
        bars=False,
        alerts=False,
    )
    found: list[Signal] = []
    for start in range(0, len(btc_frames), 500):
        found += kernel.feed_frames("binance", btc_frames[start : start + 500]).signals
    assert len(found) > 300
    assert any(s.spike for s in found)
    assert any(not s.spike for s in found)
    return found


# -- HTTP and SSE clients -----------------------------------------------------------------


def request(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    """Any status and its JSON body."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


def get(port: int, path: str) -> Any:
    """GET a JSON endpoint (an error status raises, which wait_until counts as not yet)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.load(response)


def all_signals(port: int) -> list[dict[str, Any]]:
    """Every signal of /api/signals, page by page, newest first."""
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = get(port, f"/api/signals?limit=100&cursor={cursor}")
        out += page["signals"]
        if page["next_cursor"] is None:
            return out
        cursor = page["next_cursor"]


class SSEClient:
    """A live-stream client on its own thread: every ``signal`` event (id and data) in
    the order it came."""

    def __init__(self, port: int, last_event_id: int | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE_S)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", "/api/stream", headers=headers)
        self.sock = self.conn.sock  # (the connection lets go of it once the response is read)
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.statuses = 0
        self._lock = threading.Lock()
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(PATIENCE_S), "the stream did not open"

    def _read(self) -> None:
        kind, event_id, data = "", None, b""
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            for raw in self.response:
                line = raw.rstrip(b"\r\n")
                if line.startswith(b": spikewatch live stream"):
                    self.opened.set()  # attached to the hub: what comes next is ours
                elif line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"id: "):
                    event_id = int(line[4:])
                elif line.startswith(b"data: "):
                    data = line[6:]
                elif not line:
                    with self._lock:
                        if kind == "signal" and event_id is not None:
                            self.events.append((event_id, json.loads(data)))
                        elif kind == "status":
                            self.statuses += 1
                    kind, event_id, data = "", None, b""

    def received(self) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return list(self.events)

    def wait_for(self, count: int) -> list[tuple[int, dict[str, Any]]]:
        """The events once ``count`` have come (fails the test if they do not)."""
        wait_until(lambda: len(self.received()) >= count, PATIENCE_S)
        return self.received()

    def close(self) -> None:
        """Hang up: the reader sees the end of the stream, then the socket is closed."""
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        assert not self._thread.is_alive()
        self.response.close()
        self.conn.close()


@contextlib.contextmanager
def sse(port: int, last_event_id: int | None = None) -> Iterator[SSEClient]:
    client = SSEClient(port, last_event_id)
    try:
        yield client
    finally:
        client.close()


def stored(store: PostgresSignalStore) -> list[tuple[int, str]]:
    """(delivery number, signal id) of every stored signal, in delivery order."""
    return [(seq, s.id) for seq, s in store.after_seq(0, 100_000)]


def batches(signals: Sequence[Signal], size: int) -> list[Sequence[Signal]]:
    return [signals[i : i + size] for i in range(0, len(signals), size)]


def heard(port: int, messages: int) -> Callable[[], dict[str, Any] | None]:
    """For wait_until: the status once serve on ``port`` has heard ``messages``."""

    def check() -> dict[str, Any] | None:
        status: dict[str, Any] = get(port, "/api/status")
        return status if status["serve"]["bus_messages"] == messages else None

    return check


def latest_spike(signals: Sequence[Signal]) -> Signal:
    return max((s for s in signals if s.spike), key=lambda s: (s.time_us, s.id))


# -- the tests ----------------------------------------------------------------------------


def test_two_serves_push_every_signal_once_in_order_and_serve_the_history(
    deployment: Deployment, recorded_signals: list[Signal]
) -> None:
    ports = [deployment.serve(), deployment.serve()]
    with sse(ports[0]) as first, sse(ports[1]) as second:
        # batches as detect workers write them; one in three published before it is stored
        for n, batch in enumerate(batches(recorded_signals, 37)):
            deployment.feed(batch, publish_first=n % 3 == 1)
        want = stored(deployment.store)
        assert [signal_id for _, signal_id in want] == [s.id for s in recorded_signals]
        for client in (first, second):
            got = client.wait_for(len(want))
            # each signal exactly once, in delivery order, with the store's numbers
            assert [(seq, body["id"]) for seq, body in got] == want
        wait_until(lambda: first.statuses > 0 and second.statuses > 0)  # every second
    newest = latest_spike(recorded_signals)
    for port in ports:
        history = all_signals(port)
        assert sorted(s["id"] for s in history) == sorted(s.id for s in recorded_signals)
        spike = get(port, "/api/get_signal")
        assert spike["signal_type"] == "VolumeSpike"
        assert spike["id"] == newest.id
        assert get(port, "/api/get_signal?symbol=BTCUSDT")["id"] == newest.id
        status = get(port, "/api/status")
        assert status["running"] is True
        assert status["connection"]["state"] == "connected"
        assert status["serve"]["pushed"] == len(want)
        assert status["serve"]["pushed_seq"] == want[-1][0]
        assert status["serve"]["bus_connected"] is True
        assert status["serve"]["store_ok"] is True
        # (a message may come after its signal was read from the store and pushed)
        status = wait_until(heard(port, len(want)))
        assert status["serve"]["waiting"] == 0
        assert status["serve"]["unmatched"] == 0
        assert sum(status["signals_by_detector"].values()) == len(want)
        assert status["symbols"]["BTCUSDT"]["signals"] == len(want)
        assert get(port, "/healthz") == {"status": "ok"}
        assert get(port, "/readyz") == {"status": "ready"}


def test_a_client_moved_to_another_serve_resumes_after_its_last_event_once(
    deployment: Deployment, recorded_signals: list[Signal]
) -> None:
    first_port, second_port = deployment.serve(), deployment.serve()
    parts = batches(recorded_signals, len(recorded_signals) // 3 + 1)
    assert len(parts) == 3
    with sse(first_port) as client:
        deployment.feed(parts[0])
        seen = client.wait_for(len(parts[0]))
    last_id = seen[-1][0]
    # while the client is away (its load balancer sends it to the other serve)
    for batch in batches(parts[1], 25):
        deployment.feed(batch)
    with sse(second_port, last_event_id=last_id) as resumed:
        missed = resumed.wait_for(len(parts[1]))
        deployment.feed(parts[2][:60])
        deployment.feed(parts[2][60:], publish_first=True)
        got = resumed.wait_for(len(parts[1]) + len(parts[2]))
    assert missed[: len(parts[1])] == got[: len(parts[1])]
    want = [(seq, signal_id) for seq, signal_id in stored(deployment.store) if seq > last_id]
    assert [(seq, body["id"]) for seq, body in got] == want
    assert [body["id"] for _, body in got] == [s.id for s in [*parts[1], *parts[2]]]


def test_a_signal_published_again_is_pushed_once(
    deployment: Deployment, recorded_signals: list[Signal]
) -> None:
    port = deployment.serve()
    batch, later = recorded_signals[:20], recorded_signals[20:30]
    with sse(port) as client:
        deployment.feed(batch)
        client.wait_for(len(batch))
        # a detect worker that took a partition over finds the same signals again
        deployment.feed(batch)
        deployment.feed(later)
        got = client.wait_for(len(batch) + len(later))
    assert [body["id"] for _, body in got] == [s.id for s in [*batch, *later]]
    status = wait_until(heard(port, 2 * len(batch) + len(later)))["serve"]
    assert status["pushed"] == len(batch) + len(later)
    # (each of the second round at least; a first message may come after its row was read)
    assert status["bus_already_pushed"] >= len(batch)


def test_the_history_stored_before_start_is_served_and_bars_are_empty(
    deployment: Deployment, recorded_signals: list[Signal]
) -> None:
    deployment.store.add(recorded_signals)  # stored while no serve ran
    port = deployment.serve()
    assert len(all_signals(port)) == len(recorded_signals)
    assert get(port, "/api/get_signal")["id"] == latest_spike(recorded_signals).id
    bars = get(port, "/api/bars?symbol=BTCUSDT")
    assert bars["bars"] == []
    code, body = request(port, "/api/reconnect", method="POST")
    assert code == 409
    assert "no exchange connection" in body["error"]
    # a client resuming from before this process started gets what it missed
    with sse(port, last_event_id=100) as client:
        got = client.wait_for(len(recorded_signals) - 100)
    assert [body["id"] for _, body in got] == [s.id for s in recorded_signals[100:]]


def test_serve_answers_as_its_openapi_document_says(
    deployment: Deployment, recorded_signals: list[Signal]
) -> None:
    deployment.store.add(recorded_signals[:200])
    port = deployment.serve()
    deployment.feed(recorded_signals[200:])
    wait_until(lambda: get(port, "/api/status")["serve"]["pushed"] == len(recorded_signals) - 200)
    spec = get(port, "/api/openapi.json")
    for path, query in (
        ("/api/get_signal", ""),
        ("/api/signals", "?limit=5"),
        ("/api/bars", "?symbol=BTCUSDT"),
        ("/api/gaps", ""),
        ("/api/status", ""),
        ("/api/symbols", ""),
        ("/api/top", "?window=1h"),
        ("/api/alerts", ""),
        ("/healthz", ""),
        ("/readyz", ""),
    ):
        code, body = request(port, path + query)
        assert code == 200, (path, body)
        validator(spec, response_schema(spec, path, "get", code)).validate(body)
    code, body = request(port, "/api/reconnect", method="POST")
    validator(spec, response_schema(spec, "/api/reconnect", "post", code)).validate(body)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert "spikewatch_sse_events" in metrics


class Proxy:
    """A TCP relay to the NATS server that can be cut (every connection closed, new ones
    refused) and restored on the same port: NATS lost and back, as serve sees it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            socks, self._socks = self._socks, []
        for sock in [*socks, *([listener] if listener is not None else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            server = socket.create_connection(self.upstream, timeout=5)
            server.settimeout(None)
            with self._lock:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)


def test_with_nats_lost_history_is_served_the_push_goes_on_and_status_says_so(
    deployment: Deployment, recorded_signals: list[Signal]
) -> None:
    proxy = Proxy((NATS_HOST, NATS_PORT))
    try:
        port = deployment.serve(nats_url=proxy.url)
        first, during, after = recorded_signals[:40], recorded_signals[40:80], recorded_signals[80:]
        with sse(port) as client:
            deployment.feed(first)
            client.wait_for(len(first))
            proxy.cut()
            wait_until(lambda: get(port, "/api/status")["serve"]["bus_connected"] is False)
            code, body = request(port, "/readyz")
            assert code == 503
            assert any("NATS" in reason for reason in body["reasons"])
            status = get(port, "/api/status")
            assert status["connection"]["state"] != "connected"
            assert len(all_signals(port)) == len(first)  # history still served
            # published while serve cannot hear it: the store has it, and the poll finds it
            deployment.feed(during)
            client.wait_for(len(first) + len(during))
            proxy.restore()
            wait_until(lambda: get(port, "/readyz")["status"] == "ready")
            status = get(port, "/api/status")
            assert status["serve"]["bus_connected"] is True
            assert status["serve"]["bus_reconnects"] >= 1
            deployment.feed(after)
            got = client.wait_for(len(recorded_signals))
        assert [body["id"] for _, body in got] == [s.id for s in recorded_signals]
        assert [seq for seq, _ in got] == [seq for seq, _ in stored(deployment.store)]
    finally:
        proxy.cut()


def test_with_postgresql_lost_the_push_waits_and_goes_on_from_where_it_was(
    deployment: Deployment, recorded_signals: list[Signal]
) -> None:
    parts = urlsplit(deployment.url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        relayed = urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}"))
        port = deployment.serve("--postgres", relayed)
        first, during, after = recorded_signals[:40], recorded_signals[40:80], recorded_signals[80:]
        with sse(port) as client:
            deployment.feed(first)
            client.wait_for(len(first))
            proxy.cut()
            deployment.feed(during)  # the detect worker still reaches the database

            def not_ready() -> bool:
                code, body = request(port, "/readyz")
                return code == 503 and any("PostgreSQL" in r for r in body["reasons"])

            wait_until(not_ready, PATIENCE_S)
            status = get(port, "/api/status")
            assert status["serve"]["store_ok"] is False
            assert status["store"]["healthy"] is False
            proxy.restore()
            wait_until(lambda: get(port, "/readyz")["status"] == "ready", PATIENCE_S)
            deployment.feed(after)
            got = client.wait_for(len(recorded_signals))
        assert [body["id"] for _, body in got] == [s.id for s in recorded_signals]
        assert [seq for seq, _ in got] == [seq for seq, _ in stored(deployment.store)]
    finally:
        proxy.cut()


def test_serve_pushes_what_ingest_and_detect_find_in_real_trades(
    btc_frames: list[bytes], tmp_path: Path
) -> None:
    """The whole distributed mode as processes: the simulator playing the recorded
    trades, ingest, detect and serve on one bus prefix and schema. Each signal detect
    stores reaches the live client once, in the store's order."""
    frames = btc_frames[:4000]
    expected = embedded_ids(frames)
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=None))
    sim.start()
    try:
        with roles_deployment(tmp_path, partitions=2) as dep:
            proc, port = start_serve(dep.postgres, dep.prefix, tmp_path / "serve.log")
            dep.procs.append(proc)
            with sse(port) as client:
                dep.start("detect")
                feed = ["--symbols", "BTCUSDT", "--ws-url", sim.ws_url]
                dep.start("ingest", *feed, "--rest-url", sim.rest_url)
                wait_until(lambda: set(dep.stored()) >= expected, PATIENCE_S)
                got = client.wait_for(len(expected))
            store = PostgresSignalStore(dep.postgres)
            try:
                order = stored(store)
            finally:
                store.close()
    finally:
        sim.stop()
    assert {body["id"] for _, body in got} == expected
    assert [(seq, body["id"]) for seq, body in got] == order


def test_serve_refuses_to_start_without_its_servers_in_one_line(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
        return subprocess.run(
            [sys.executable, "-m", "spikewatch", "serve", "--port", str(free_port()), *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    missing = serve()
    assert missing.returncode == 2
    assert "--postgres" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    no_db = serve("--postgres", closed)
    assert no_db.returncode == 2
    assert closed in no_db.stderr
    assert len(no_db.stderr.strip().splitlines()) == 1

    nowhere = f"nats://127.0.0.1:{free_port()}"
    no_bus = serve("--postgres", POSTGRES_URL, "--nats-url", nowhere)
    assert no_bus.returncode == 2
    assert nowhere in no_bus.stderr
    assert len(no_bus.stderr.strip().splitlines()) == 1


# -- the OpenAPI document -------------------------------------------------------------------


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for ``schema``, its refs resolved in ``spec``."""
    rooted = {**schema, "components": spec["components"]}
    Draft202012Validator.check_schema(rooted)
    return Draft202012Validator(rooted, format_checker=Draft202012Validator.FORMAT_CHECKER)


def response_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The JSON schema of ``method path``'s ``status`` response."""
    response = spec["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


# -- schemathesis against a serve process ---------------------------------------------------


@pytest.fixture(scope="module")
def serve_url(
    tmp_path_factory: pytest.TempPathFactory, recorded_signals: list[Signal]
) -> Iterator[str]:
    """One serve process over a schema holding the recorded signals; its base URL."""
    schema = f"sw_serve_{secrets.token_hex(5)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_search_path(POSTGRES_URL, schema)
    store = PostgresSignalStore(url)
    proc = None
    try:
        store.add(recorded_signals)
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        proc, port = start_serve(url, f"t{secrets.token_hex(5)}", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# the document as the app builds it (see test_openapi.py: why not from the live URL)
fuzzed = schemathesis.openapi.from_dict(json.loads(json.dumps(build_document()))).exclude(
    path=["/api/stream"]  # the live stream never ends
)


@fuzzed.parametrize()
@hypothesis.settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_schemathesis_finds_no_server_error_in_serve(
    case: schemathesis.Case[Any], serve_url: str
) -> None:
    checks = [
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
        unsupported_method,
        not_a_server_error,  # serve is ready here: not even /readyz may be a 5xx
    ]
    case.call_and_validate(base_url=serve_url, timeout=10, checks=checks)
