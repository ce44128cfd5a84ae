"""The live engine end to end: real WebSocket connections to a local exchange that plays
real recorded Binance trades, with drops, malformed frames and shutdown notices."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from spikewatch.config import Settings, load_settings
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.replay.simulator import FRAGMENTS, Faults, Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore

from reference import reference_spikes

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def run_engine(tmp_path: Path) -> Iterator[Callable[..., tuple[Engine, SimulatorThread]]]:
    started: list[tuple[Engine, SimulatorThread, SQLiteSignalStore]] = []

    def start(
        frames: list[bytes],
        faults: Faults | None = None,
        speed: float | None = None,
        **flags: object,
    ) -> tuple[Engine, SimulatorThread]:
        tape = tape_from_frames(frames)
        sim = SimulatorThread(Simulator(tape, faults=faults, speed=speed))
        sim.start()
        settings: Settings = load_settings(
            {
                "ws_url": sim.ws_url,
                "rest_url": sim.rest_url,
                "db": str(tmp_path / "signals.db"),
                **flags,
            },
            env={},
        )
        store = SQLiteSignalStore(settings.db)
        engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.2))
        engine.start()
        started.append((engine, sim, store))
        return engine, sim

    yield start
    for engine, sim, store in started:
        engine.stop()
        sim.stop()
        store.close()


def stored_ids(engine: Engine) -> list[tuple[str, int]]:
    """Every stored signal's (symbol, trade id), oldest first."""
    page = engine.store.page(limit=1000)
    return sorted(((s.symbol, s.trade_id) for s in page.signals), key=lambda x: x[1])


def test_live_engine_reports_exactly_the_spikes_of_the_recording(
    run_engine: Callable[..., tuple[Engine, SimulatorThread]], btc_frames: list[bytes]
) -> None:
    engine, _ = run_engine(btc_frames)
    wait_for(lambda: engine.status().symbols["BTCUSDT"].trades == len(btc_frames))
    assert engine.flush(10)
    expected = reference_spikes(btc_frames)
    assert len(expected) > 100  # the recording has real spikes in it
    assert stored_ids(engine) == expected
    last = engine.latest_signal()
    assert last is not None
    assert (last.symbol, last.trade_id) == expected[-1]


def test_paced_play_sends_bursts_in_one_write_and_loses_nothing(
    run_engine: Callable[..., tuple[Engine, SimulatorThread]], btc_frames: list[bytes]
) -> None:
    # paced (11 minutes of trading in about a second): trades of the same moment leave
    # in one write, as an exchange sends a burst; the engine reads them in big reads
    engine, sim = run_engine(btc_frames, speed=650.0)
    wait_for(lambda: engine.status().symbols["BTCUSDT"].trades == len(btc_frames))
    assert engine.flush(10)
    assert stored_ids(engine) == reference_spikes(btc_frames)
    stats = sim.simulator.stats()
    assert stats.frames_sent == len(btc_frames)
    status = engine.status()
    assert status.frames == len(btc_frames)
    assert status.malformed_frames == {}
    assert status.symbols["BTCUSDT"].gaps == 0


def test_dropped_connections_lose_and_double_no_trade(
    run_engine: Callable[..., tuple[Engine, SimulatorThread]], btc_frames: list[bytes]
) -> None:
    # the server cuts the connection every 1,500 frames and re-sends 20 old frames to
    # each new connection: every trade must be processed exactly once
    engine, _ = run_engine(btc_frames, Faults(drop_every=1500, resend_on_connect=20))
    wait_for(lambda: engine.status().symbols["BTCUSDT"].trades == len(btc_frames))
    assert engine.flush(10)
    status = engine.status()
    assert status.connection.reconnects == len(btc_frames) // 1500
    assert status.symbols["BTCUSDT"].duplicates_dropped > 0
    assert status.symbols["BTCUSDT"].gaps == 0
    assert stored_ids(engine) == reference_spikes(btc_frames)


def test_malformed_frames_are_counted_and_skipped(
    run_engine: Callable[..., tuple[Engine, SimulatorThread]], btc_frames: list[bytes]
) -> None:
    frames = btc_frames[:3000]
    engine, sim = run_engine(frames, Faults(malformed_every=100))
    wait_for(lambda: engine.status().symbols["BTCUSDT"].trades == len(frames))
    assert engine.flush(10)
    status = engine.status()
    assert sum(status.malformed_frames.values()) == sim.stats().malformed_sent == 30
    assert set(status.malformed_frames) >= {"not_json", "bad_schema", "bad_value"}
    assert status.connection.reconnects == 0
    assert stored_ids(engine) == reference_spikes(frames)


def test_simulator_sends_every_nth_trade_in_fragments(btc_frames: list[bytes]) -> None:
    sim = SimulatorThread(
        Simulator(tape_from_frames(btc_frames[:30]), faults=Faults(fragment_every=7))
    )
    sim.start()
    try:
        with connect(f"{sim.ws_url}/stream?streams=btcusdt@trade") as ws:
            messages = [list(ws.recv_streaming()) for _ in range(30)]
    finally:
        sim.stop()
    # websockets ends a fragmented message with an empty frame: count the pieces
    pieces = [len([p for p in m if p]) for m in messages]
    assert pieces == [FRAGMENTS if n % 7 == 0 else 1 for n in range(1, 31)]
    texts = [[p for p in m if isinstance(p, str)] for m in messages]
    assert texts == messages  # text messages, fragments included
    assert ["".join(t).encode() for t in texts] == btc_frames[:30]


def test_fragmented_messages_are_put_back_together(
    run_engine: Callable[..., tuple[Engine, SimulatorThread]], btc_frames: list[bytes]
) -> None:
    # every 7th trade comes as one text message cut into three pieces, each in its own
    # WebSocket frame (a first one, then continuations): legal, and each must count as
    # the one trade it is, whatever reads its frames arrive in
    engine, sim = run_engine(btc_frames, Faults(fragment_every=7))
    wait_for(lambda: engine.status().symbols["BTCUSDT"].trades == len(btc_frames))
    assert engine.flush(10)
    status = engine.status()
    assert sim.stats().fragmented_sent == len(btc_frames) // 7
    assert status.malformed_frames == {}
    assert status.frames == len(btc_frames)
    assert status.connection.reconnects == 0
    assert status.symbols["BTCUSDT"].gaps == 0
    assert stored_ids(engine) == reference_spikes(btc_frames)


def test_server_shutdown_notice_rotates_without_a_gap(
    run_engine: Callable[..., tuple[Engine, SimulatorThread]], btc_frames: list[bytes]
) -> None:
    # played at 100x the recorded pace (about 2 s), so trades keep flowing while the
    # client opens its new connection and retires the old one
    frames = btc_frames[:6000]
    engine, _ = run_engine(frames, Faults(shutdown_after=2000, shutdown_grace=0.3), speed=100)
    wait_for(lambda: engine.status().symbols["BTCUSDT"].trades == len(frames))
    assert engine.flush(10)
    status = engine.status()
    assert status.connection.rotations >= 1
    assert status.connection.reconnects == 0
    assert status.symbols["BTCUSDT"].gaps == 0
    assert stored_ids(engine) == reference_spikes(frames)


def test_engine_keeps_retrying_while_the_exchange_is_unreachable(tmp_path: Path) -> None:
    settings = load_settings(
        {"ws_url": "ws://127.0.0.1:9", "rest_url": "http://127.0.0.1:9", "db": ":memory:"},
        env={},
    )
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store, backoff=Backoff(first=0.02, cap=0.05))
    engine.start()
    try:
        wait_for(lambda: engine.status().connection.failed_attempts >= 3, timeout=10)
        status = engine.status()
        assert status.running
        assert status.connection.state in ("connecting", "waiting")
        assert status.connection.last_error is not None
    finally:
        engine.stop()
        store.close()


def test_engine_cannot_be_started_twice() -> None:
    settings = load_settings(
        {"ws_url": "ws://127.0.0.1:9", "rest_url": "http://127.0.0.1:9", "db": ":memory:"},
        env={},
    )
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.1))
    engine.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            engine.start()
    finally:
        engine.stop()
        store.close()


def test_connection_is_rotated_before_it_gets_old_without_a_gap(
    run_engine: Callable[..., tuple[Engine, SimulatorThread]], btc_frames: list[bytes]
) -> None:
    # Binance cuts connections at 24 h; here the age limit is 1 s and the tape plays
    # at 100x for about 3 s, so the client rotates mid-stream
    frames = btc_frames[:9000]
    engine, _ = run_engine(frames, speed=100, rotate_after=1)
    wait_for(lambda: engine.status().symbols["BTCUSDT"].trades == len(frames))
    assert engine.flush(10)
    status = engine.status()
    assert status.connection.rotations >= 1
    assert status.connection.reconnects == 0
    assert status.symbols["BTCUSDT"].gaps == 0
    assert stored_ids(engine) == reference_spikes(frames)
