"""Never miss a trade: gaps found and filled over REST, explicit gap records when they
cannot be, warm start, checkpoints, the watchdog — all on the simulator over real sockets,
with real recorded trades."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.rest import RestClient
from spikewatch.replay.simulator import Faults, Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore

from helpers import caught_up, stored_signals, wait_until
from reference import reference_spikes

pytestmark = pytest.mark.slow

Start = Callable[..., tuple[Engine, SimulatorThread]]


def fast_rest(url: str, attempts: int = 4) -> RestClient:
    """A REST client with short retry delays (the defaults wait seconds)."""
    return RestClient(url, attempts=attempts, backoff=lambda: Backoff(first=0.02, cap=0.05))


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    running: list[tuple[Engine, SimulatorThread | None, SQLiteSignalStore]] = []

    def run(
        frames: list[bytes] | None = None,
        *,
        sim: SimulatorThread | None = None,
        faults: Faults | None = None,
        speed: float | None = 60,
        rest_attempts: int = 4,
        db: Path | None = None,
        **flags: object,
    ) -> tuple[Engine, SimulatorThread]:
        if sim is None:
            assert frames is not None
            sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=speed, faults=faults))
            sim.start()
            owned: SimulatorThread | None = sim
        else:
            owned = None
        settings = load_settings(
            {
                "ws_url": sim.ws_url,
                "rest_url": sim.rest_url,
                "db": str(db or tmp_path / "signals.db"),
                **flags,
            },
            env={},
        )
        store = SQLiteSignalStore(settings.db)
        engine = Engine(
            settings,
            store,
            backoff=Backoff(first=0.02, cap=0.05),
            rest=fast_rest(settings.rest_url, rest_attempts),
        )
        engine.start()
        running.append((engine, owned, store))
        return engine, sim

    yield run
    for engine, sim, store in running:
        engine.stop()
        if sim is not None:
            sim.stop()
        store.close()


def stored(engine: Engine) -> list[tuple[str, int]]:
    return sorted((s.symbol, s.trade_id) for s in stored_signals(engine))


def all_processed(engine: Engine, frames: list[bytes]) -> Callable[[], bool]:
    return caught_up(engine, trade_id(frames[-1]))


def test_a_hundred_dropped_connections_lose_nothing_and_signals_match_an_unbroken_run(
    start: Start, btc_frames: list[bytes]
) -> None:
    # played at 60x the recorded pace: every 60 frames the server cuts the connection,
    # and the trades played while the client reconnects are missed by the stream
    engine, sim = start(btc_frames, faults=Faults(drop_every=60))
    wait_until(all_processed(engine, btc_frames))
    assert stored(engine) == sorted(reference_spikes(btc_frames))
    status = engine.status()
    symbol = status.symbols["BTCUSDT"]
    drops = sim.stats().drops
    assert drops >= 100
    assert status.connection.reconnects == drops
    assert symbol.backfills > 0  # trades really were missed, and fetched
    assert symbol.backfilled_trades > 0
    assert symbol.gap_records == 0
    assert symbol.trades == len(btc_frames)


def test_frames_too_large_cost_a_reconnect_and_nothing_else(
    start: Start, btc_frames: list[bytes]
) -> None:
    frames = btc_frames[:6000]
    engine, _ = start(frames, faults=Faults(huge_every=1500))
    wait_until(all_processed(engine, frames))
    status = engine.status()
    assert status.malformed_frames.get("frame_too_large", 0) >= 3
    assert status.symbols["BTCUSDT"].gap_records == 0
    assert stored(engine) == sorted(reference_spikes(frames))


def test_rest_errors_during_backfill_are_retried(start: Start, btc_frames: list[bytes]) -> None:
    frames = btc_frames[:6000]
    # historicalTrades answers 500, 429 (rate limited), 500 and 503 before it works
    faults = Faults(drop_every=1000, rest_failures=(500, 429, 500, 503))
    engine, _ = start(frames, faults=faults, rest_attempts=6)
    wait_until(all_processed(engine, frames))
    status = engine.status()
    assert status.rest.retries >= 3
    assert status.rest.rate_limited >= 1
    assert status.symbols["BTCUSDT"].gap_records == 0
    assert stored(engine) == sorted(reference_spikes(frames))


def test_a_gap_that_cannot_be_filled_is_recorded_and_the_window_warms_up_again(
    start: Start, btc_frames: list[bytes]
) -> None:
    frames = btc_frames[:8000]
    engine, _ = start(
        frames, faults=Faults(drop_every=4000, rest_failures=(500,) * 50), rest_attempts=2
    )
    wait_until(all_processed(engine, frames))
    status = engine.status()
    symbol = status.symbols["BTCUSDT"]
    assert symbol.gap_records >= 1
    gaps = engine.store.gaps(symbol="BTCUSDT")
    assert gaps
    assert gaps == status.recent_gaps[: len(gaps)]
    gap = gaps[-1]
    assert gap.missing == gap.last_id - gap.first_id + 1 > 0
    # the reference, told which trades never arrived: after a gap the window starts afresh
    lost = {i for g in gaps for i in range(g.first_id, g.last_id + 1)}
    kept = [f for f in frames if trade_id(f) not in lost]
    segments = split_at(kept, sorted(g.first_id for g in gaps))
    expected = sorted(s for seg in segments for s in reference_spikes(seg))
    assert stored(engine) == expected


def trade_id(frame: bytes) -> int:
    return int(frame.split(b'"t":', 1)[1].split(b",", 1)[0])


def split_at(frames: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    """Split before the first frame above each cut id."""
    out: list[list[bytes]] = [[]]
    pending = list(cuts)
    for frame in frames:
        if pending and trade_id(frame) > pending[0]:
            pending.pop(0)
            out.append([])
        out[-1].append(frame)
    return out


def test_warm_start_fills_the_window_so_the_first_live_trades_can_fire(
    start: Start, btc_frames: list[bytes], tmp_path: Path
) -> None:
    # the exchange has been trading for a while before spikewatch starts
    sim = SimulatorThread(Simulator(tape_from_frames(btc_frames[:3000]), speed=None))
    sim.start()
    try:
        # a first client has the exchange play 3,000 trades
        first, _ = start(sim=sim, db=tmp_path / "first.db")
        wait_until(lambda: first.status().symbols["BTCUSDT"].trades == 3000)
        first.stop()
        # a second spikewatch starts later, against the same exchange: it warms up from
        # the 200 most recent trades over REST and is ready at once
        second, _ = start(sim=sim, db=tmp_path / "second.db")
        wait_until(lambda: second.status().symbols["BTCUSDT"].warmed_up, timeout=20)
        assert second.status().symbols["BTCUSDT"].trades == 200
        assert second.status().rest.calls >= 1
    finally:
        sim.stop()


def test_a_restart_continues_from_the_checkpoint_with_the_same_signals(
    start: Start, btc_frames: list[bytes], tmp_path: Path
) -> None:
    frames = btc_frames[:9000]
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=60))
    sim.start()
    try:
        db = tmp_path / "restart.db"
        first, _ = start(sim=sim, db=db, checkpoint_interval=0.2)
        wait_until(lambda: first.status().symbols["BTCUSDT"].trades > 3000)
        first.stop()  # a restart mid-stream: trades go on meanwhile
        played = sim.stats().played
        wait_until(lambda: sim.stats().played >= played + 100)  # missed while it was down
        second, _ = start(sim=sim, db=db)
        assert second.status().restored_from_checkpoint == ["BTCUSDT"]
        wait_until(all_processed(second, frames))
        symbol = second.status().symbols["BTCUSDT"]
        assert symbol.backfills >= 1
        assert symbol.gap_records == 0
        assert stored(second) == sorted(reference_spikes(frames))
    finally:
        sim.stop()


def test_a_silent_connection_is_resubscribed_by_the_watchdog(
    start: Start, btc_frames: list[bytes]
) -> None:
    frames = btc_frames[:4000]
    # the server goes quiet after 1,500 frames but keeps the connection open
    engine, _ = start(frames, faults=Faults(stall_after=1500), watchdog_silence=1)
    wait_until(all_processed(engine, frames))
    symbol = engine.status().symbols["BTCUSDT"]
    assert symbol.watchdog_resubscribes >= 1
    assert symbol.gap_records == 0
    assert stored(engine) == sorted(reference_spikes(frames))
