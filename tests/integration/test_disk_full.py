"""A full disk under a running engine: the real recording played by the simulator, the
app behind waitress, a live-stream client on a real socket, and SQLite that cannot grow.

How the disk fills up, for real and without root: SQLite's ``PRAGMA max_page_count``
(set by :meth:`SQLiteSignalStore.limit_pages` on the writer's own connection) makes every
write that needs one more page fail with SQLITE_FULL, "database or disk is full": the
very error, from the very code path, that a full file system gives. (A small tmpfs or a
loop mount needs root; RLIMIT_FSIZE makes SQLite report an I/O error, not a full disk.)
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web.app import create_app

from helpers import wait_until, waitress_server

pytestmark = pytest.mark.slow

#: Signals waiting for the writer, at most: small, so the queue fills while the disk is full.
QUEUE = 20


class LiveClient:
    """An ``/api/stream`` client on its own thread, counting the signal events it gets."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", "/api/stream")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.signals = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line == b"event: signal\n":
                    self.signals += 1
        except OSError:
            pass  # the server ended the stream

    def close(self) -> None:
        self.conn.close()
        self.thread.join(10)


@dataclass
class Running:
    engine: Engine
    store: SQLiteSignalStore
    sim: SimulatorThread
    port: int
    live: LiveClient

    def get(self, path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
            return response.status, body if path == "/metrics" else json.loads(body)
        finally:
            conn.close()

    def metric(self, name: str) -> float:
        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        raise AssertionError(f"no metric {name}")

    def signals_raised(self) -> int:
        return sum(self.engine.status().signals_by_detector.values())


@pytest.fixture
def full_disk(tmp_path: Path, btc_frames: list[bytes]) -> Iterator[Running]:
    """spikewatch on a database that cannot grow by a single page; not started yet."""
    sim = SimulatorThread(Simulator(tape_from_frames(btc_frames), speed=200))
    sim.start()
    settings = load_settings(
        {
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "db": str(tmp_path / "full.db"),
            "store_queue": QUEUE,
        },
        env={},
    )
    store = SQLiteSignalStore(settings.db)
    store.limit_pages(store.page_count())  # the disk is full from now on
    engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.2))
    app = create_app(settings, engine)
    try:
        with waitress_server(app, threads=8) as server:
            live = LiveClient(int(server.effective_port))
            try:
                yield Running(engine, store, sim, int(server.effective_port), live)
            finally:
                engine.stop()
                live.close()
    finally:
        sim.stop()
        store.close()


def sink_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "spikewatch.sinks" and r.levelno >= level]


def test_a_full_disk_is_reported_while_detection_and_the_live_stream_go_on(
    full_disk: Running, btc_frames: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    running = full_disk
    running.engine.start()

    # Detection goes on to the end of the recording: ingest never waits on the full disk.
    wait_until(lambda: running.engine.status().symbols["BTCUSDT"].trades == len(btc_frames))
    raised = running.signals_raised()
    assert raised > QUEUE
    # and every signal reached the live client
    wait_until(lambda: running.live.signals == raised)
    # the writer kept retrying meanwhile
    wait_until(lambda: running.engine.status().store.failures >= 3)

    status, body = running.get("/api/status")
    assert status == 200
    store = body["store"]
    assert store["healthy"] is False
    assert store["failing_since"].endswith("Z")
    assert store["last_error"] == "OperationalError: database or disk is full"
    assert store["queued"] <= QUEUE  # nothing unbounded in memory
    assert store["dropped"] > 0
    assert running.store.count() == store["written"] < raised

    status, body = running.get("/readyz")
    assert status == 503
    assert body["reasons"] == [
        f"store writes failing since {store['failing_since']}: "
        "OperationalError: database or disk is full"
    ]

    assert running.metric("spikewatch_store_healthy") == 0
    assert running.metric("spikewatch_store_failing_since_seconds") > 1.7e9
    assert running.metric("spikewatch_store_dropped_total") == store["dropped"]

    # One line when writes began to fail, one when the queue filled: no traceback, and
    # none of the retries repeated it.
    loud = sink_logs(caplog, logging.WARNING)
    assert sorted(r.levelname for r in loud) == ["ERROR", "WARNING"], [r.getMessage() for r in loud]
    (failing,) = [r.getMessage() for r in loud if r.levelno == logging.ERROR]
    assert "database or disk is full" in failing
    assert "retrying" in failing
    assert all(r.exc_info is None for r in loud)

    # The disk has room again: the queued signals are written, and it says so once.
    stored_while_full = running.store.count()
    running.store.limit_pages(None)
    wait_until(lambda: running.engine.status().store.healthy)
    wait_until(lambda: running.get("/readyz")[0] == 200)
    assert running.metric("spikewatch_store_healthy") == 1
    assert running.metric("spikewatch_store_failing_since_seconds") == 0
    _, body = running.get("/api/status")
    assert (body["store"]["failing_since"], body["store"]["last_error"]) == (None, None)
    assert running.engine.flush(10)
    assert running.store.count() > stored_while_full
    loud = sink_logs(caplog, logging.WARNING)
    assert len(loud) == 3
    assert "works again" in loud[-1].getMessage()
