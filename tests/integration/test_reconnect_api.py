"""``POST /api/reconnect``: an operator's fresh connection, gap-free like a rotation, and
only for those allowed to ask (loopback, or the bearer token)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web import create_app

from helpers import wait_until
from reference import reference_spikes

pytestmark = pytest.mark.slow


def engine_for(tmp_path: Path, sim: SimulatorThread | None, **flags: object) -> Engine:
    urls = {"ws_url": sim.ws_url, "rest_url": sim.rest_url} if sim else {}
    settings = load_settings({**urls, "db": str(tmp_path / "signals.db"), **flags}, env={})
    return Engine(settings, SQLiteSignalStore(settings.db), backoff=Backoff(first=0.05, cap=0.2))


def test_reconnect_opens_a_fresh_connection_and_loses_no_trade(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    # paced: the recording plays over about 3 s, so the reconnect lands mid-stream
    sim = SimulatorThread(Simulator(tape_from_frames(btc_frames), speed=220.0))
    sim.start()
    engine = engine_for(tmp_path, sim)
    client = create_app(engine.settings, engine).test_client()
    engine.start()
    try:
        wait_until(lambda: engine.status().symbols["BTCUSDT"].trades > 2_000)
        reply = client.post("/api/reconnect")
        assert reply.status_code == 202
        assert reply.get_json() == {"status": "reconnecting"}
        wait_until(lambda: engine.status().connection.rotations == 1)
        wait_until(lambda: engine.status().symbols["BTCUSDT"].trades == len(btc_frames))
        assert engine.flush(10)
        status = engine.status()
        assert status.connection.connections == 2  # the first and its successor
        assert status.connection.reconnects == 0  # nothing was lost: a rotation
        assert status.symbols["BTCUSDT"].gaps == 0
        page = engine.store.page(limit=1000)
        got = sorted((s.symbol, s.trade_id) for s in page.signals)
        assert got == reference_spikes(btc_frames)
    finally:
        engine.stop()
        sim.stop()


def test_reconnect_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, None, api_token="s3cret-token-value")
    client = create_app(engine.settings, engine).test_client()
    assert client.post("/api/reconnect").status_code == 401
    wrong = {"Authorization": "Bearer not-it"}
    assert client.post("/api/reconnect", headers=wrong).status_code == 401
    right = {"Authorization": "Bearer s3cret-token-value"}
    reply = client.post("/api/reconnect", headers=right)
    # allowed, but this engine was never started: nothing to reconnect
    assert reply.status_code == 409
    assert "not running" in reply.get_json()["error"]


def test_reconnect_off_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, None, host="0.0.0.0")
    reply = create_app(engine.settings, engine).test_client().post("/api/reconnect")
    assert reply.status_code == 403
    assert "api_token" in reply.get_json()["error"]


def test_reconnect_after_the_engine_stopped_is_a_conflict_not_a_crash(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    sim = SimulatorThread(Simulator(tape_from_frames(btc_frames[:500])))
    sim.start()
    engine = engine_for(tmp_path, sim)
    client = create_app(engine.settings, engine).test_client()
    engine.start()
    wait_until(lambda: engine.status().symbols["BTCUSDT"].trades == 500)
    engine.stop()
    sim.stop()
    for _ in range(3):  # racing the loop's close must not raise either
        assert client.post("/api/reconnect").status_code == 409
        time.sleep(0.01)
