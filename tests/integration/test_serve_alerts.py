"""``spikewatch serve`` shows the alerts detect workers raise: ``/api/alerts`` read from
the PostgreSQL outbox answers exactly as the embedded mode's API does on the same trades
(pages, filters, errors), ``/api/status`` names the rules, and the live stream pushes each
alert's opening and folds once, announced on the bus or, when a message is lost, read
from the outbox. Real NATS and PostgreSQL, the roles as the real command line; without
the servers these tests skip on a developer's machine and FAIL under CI."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import psycopg
import pytest
from flask.testing import FlaskClient

from spikewatch.alerting.outbox import Outbox
from spikewatch.alerting.pg_outbox import PostgresOutbox
from spikewatch.bus.alerts import alert_subject
from spikewatch.config import Settings, load_settings
from spikewatch.core.alerts import AlertEvent
from spikewatch.engine import Engine
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store import SQLiteSignalStore
from spikewatch.store.base import Cursor
from spikewatch.store.postgres import PostgresSignalStore
from spikewatch.web import create_app

from helpers import a_stored_alert, wait_until
from roles_kit import NATS_URL, Deployment, deployment, start_serve, stop

pytestmark = pytest.mark.slow

PATIENCE_S = 90.0
#: volume spikes as alerts, 5 s apart (tens of them, some folding several spikes); the
#: profile off, so the alerts do not depend on when open orders are completed
CONFIG = (
    'alert_profile = "off"\n\n[[alerts]]\nname = "spikes"\ndetectors = ["volume_spike"]\n'
    "cooldown_s = 5\n"
)


def embedded(settings: Settings, frames: list[bytes]) -> tuple[FlaskClient, list[AlertEvent]]:
    """The embedded mode's app on these frames (an engine handed them as its WebSocket
    client would), and every alert event it raised."""
    engine = Engine(settings, SQLiteSignalStore(settings.db))
    events: list[AlertEvent] = []
    engine.add_alert_sink(events.extend)
    for frame in frames:
        engine.handle_frame(frame)
    app = create_app(settings, engine)
    app.config["TESTING"] = True
    return app.test_client(), events


def get(port: int, path: str) -> tuple[int, Any]:
    """Any status and its JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


class AlertStream:
    """A live-stream client on its own thread: every ``alert`` event, in order."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE_S)
        self.conn.request("GET", "/api/stream", headers={"Accept": "text/event-stream"})
        self.sock = self.conn.sock  # (let go of by the connection once the response is read)
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(PATIENCE_S)

    def _read(self) -> None:
        kind, data = "", b""
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            for raw in self.response:
                line = raw.rstrip(b"\r\n")
                if line.startswith(b": spikewatch live stream"):
                    self.opened.set()
                elif line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: "):
                    data = line[6:]
                elif not line:
                    if kind == "alert":
                        with self._lock:
                            self.events.append(json.loads(data))
                    kind, data = "", b""

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self.response.close()
        self.conn.close()


@contextlib.contextmanager
def alert_stream(port: int) -> Iterator[AlertStream]:
    client = AlertStream(port)
    try:
        yield client
    finally:
        client.close()


#: what both APIs are asked (each page followed by its cursor where it has one)
QUERIES = (
    "/api/alerts?limit=1000",
    "/api/alerts",
    "/api/alerts?limit=7",
    "/api/alerts?rule=spikes&symbol=btcusdt&limit=5",
    "/api/alerts?exchange=BINANCE&since=2024-08-08&until=2100-01-01&limit=3",
    # errors: 400 with a JSON message naming the parameter
    "/api/alerts?limit=0",
    "/api/alerts?rule=nope",
    "/api/alerts?cursor=xyz",
    "/api/alerts?exchange=binance-usdm",
    "/api/alerts?since=2024-08-09&until=2024-08-08",
    "/api/alerts?limt=5",
)


def test_serve_answers_the_alert_log_as_the_embedded_mode_and_pushes_each_alert_once(
    btc_frames: list[bytes], tmp_path: Path
) -> None:
    frames = btc_frames[:6000]
    config = tmp_path / "alerts.toml"
    config.write_text(CONFIG)
    settings = load_settings({"db": str(tmp_path / "embedded.db")}, env={}, config_path=config)
    app, events = embedded(settings, frames)
    final = {e.alert.id: e.alert for e in events}
    assert len(final) >= 8
    assert any(a.signals > 1 for a in final.values())  # folds, pushed as updates
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=None))
    sim.start()
    try:
        with deployment(tmp_path, partitions=2) as dep:
            _, port = start_serve(dep, "--config", str(config))
            try:
                with alert_stream(port) as live:
                    dep.start("detect", "--config", str(config))
                    feed = ["--symbols", "BTCUSDT", "--ws-url", sim.ws_url]
                    dep.start("ingest", *feed, "--rest-url", sim.rest_url)

                    def caught_up() -> bool:
                        _, page = get(port, "/api/alerts?limit=1000")
                        return {a["id"]: a["signals"] for a in page["alerts"]} == {
                            i: a.signals for i, a in final.items()
                        }

                    wait_until(caught_up, PATIENCE_S)
                    wait_until(lambda: len(live.received()) >= len(events), PATIENCE_S)
                    pushed = live.received()
                for query in QUERIES:
                    pages = 0
                    while query and pages < 20:
                        want = app.get(query)
                        status, body = get(port, query)
                        assert (status, body) == (want.status_code, want.get_json()), query
                        cursor = body.get("next_cursor")
                        query = f"{query.split('&cursor=')[0]}&cursor={cursor}" if cursor else ""
                        pages += 1
                _, status = get(port, "/api/status")
                assert status["alerts"]["rules"] == ["spikes"]
                assert status["alerts"]["opened"] == len(final)
            except BaseException:
                print(dep.logs())
                raise
    finally:
        sim.stop()
    # the live stream: every alert event the embedded mode raised, once, in its order
    # per alert (the opening, then each fold), whatever the bus repeated
    want_events = [msgspec.to_builtins(e) for e in events]
    for alert_id in final:
        mine = [e for e in pushed if e["alert"]["id"] == alert_id]
        assert mine == [e for e in want_events if e["alert"]["id"] == alert_id]
    assert len(pushed) == len(events)


async def announce(dep: Deployment, events: list[AlertEvent]) -> None:
    nc = await nats.connect(NATS_URL, connect_timeout=5, allow_reconnect=False)
    try:
        for event in events:
            a = event.alert
            await nc.publish(
                alert_subject(a.exchange, a.symbol, dep.names.alert_prefix),
                msgspec.json.encode(event),
            )
        await nc.flush()
    finally:
        await nc.close()


def test_an_alert_announced_again_is_pushed_once_and_one_never_announced_is_pushed_too(
    tmp_path: Path,
) -> None:
    config = tmp_path / "alerts.toml"
    config.write_text(CONFIG)
    with deployment(tmp_path, partitions=1) as dep:
        store = PostgresSignalStore(dep.postgres)
        try:
            outbox = PostgresOutbox(store.connection, ())
            proc, port = start_serve(dep, "--config", str(config))
            with alert_stream(port) as live:
                first = AlertEvent(a_stored_alert("binance", 1), opened=True)
                fold = AlertEvent(a_stored_alert("binance", 1, signals=3), opened=False)
                other = AlertEvent(a_stored_alert("binance-usdm", 2), opened=True)
                outbox.add([first, other])
                # announced twice (a worker that took the partition over replays it),
                # and the other exchange's is not this serve's
                asyncio.run(announce(dep, [first, first, other]))
                wait_until(lambda: live.received(), PATIENCE_S)
                # a fold stored but never announced (its message lost): read from the log
                outbox.add([fold])
                wait_until(lambda: len(live.received()) >= 2, PATIENCE_S)
                asyncio.run(announce(dep, [fold, first]))  # late repeats
                # a later alert's announcement comes after both: nothing else came between
                late = AlertEvent(a_stored_alert("binance", 3), opened=True)
                outbox.add([late])
                asyncio.run(announce(dep, [late]))
                wait_until(lambda: len(live.received()) >= 3, PATIENCE_S)
                got = live.received()
            assert got == [msgspec.to_builtins(e) for e in (first, fold, late)]
            _, status = get(port, "/api/status")
            assert status["alerts"] == {"rules": ["spikes"], "opened": 2, "delivery": None}
            # and the log itself, newest first, this exchange's only
            _, page = get(port, "/api/alerts")
            assert [a["id"] for a in page["alerts"]] == [late.alert.id, first.alert.id]
            assert page["alerts"][1]["signals"] == 3
            assert stop(proc) == 0
        finally:
            store.close()


def test_the_postgresql_alert_log_pages_exactly_as_the_sqlite_one(tmp_path: Path) -> None:
    """The same alerts in both outboxes: every page, filter and cursor answers the same."""
    with deployment(tmp_path, partitions=1) as dep:
        store = PostgresSignalStore(dep.postgres)
        sqlite = Outbox(tmp_path / "alerts.db", ["hook", "phone"])
        try:
            pg = PostgresOutbox(store.connection, ["hook", "phone"])
            alerts = [
                a_stored_alert(ex, n) for n in range(40) for ex in ("binance", "binance-usdm")
            ]
            events = [AlertEvent(a, opened=True) for a in alerts]
            events.append(AlertEvent(a_stored_alert("binance", 5, signals=4), opened=False))
            for box in (sqlite, pg):
                box.add(events)
                box.mark_sent("hook", [alerts[0].id, alerts[3].id], "m1")
                box.mark_failed("phone", [alerts[3].id], "down", max_attempts=1, delay=float)
            queries: list[dict[str, Any]] = [
                {},
                {"limit": 7},
                {"exchange": "binance", "limit": 9},
                {"exchange": "binance-usdm", "symbol": "BTCUSDT", "rule": "spikes"},
                {"since_us": alerts[10].time_us, "until_us": alerts[30].time_us, "limit": 4},
                {"rule": "nope"},
                {"after": Cursor(alerts[20].time_us, alerts[20].id), "limit": 5},
            ]
            for query in queries:
                after = query.pop("after", None)
                for _ in range(30):
                    want = sqlite.page(**query, after=after)
                    got = pg.page(**query, after=after)
                    assert got == want, query
                    after = want.next_cursor
                    if after is None:
                        break
            assert pg.page(limit=1000).deliveries[alerts[3].id] == {"hook": "sent", "phone": "dead"}
        finally:
            sqlite.close()
            store.close()
            with psycopg.connect(dep.postgres) as conn:
                conn.execute("SELECT 1")
