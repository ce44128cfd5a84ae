"""``kill -9`` during heavy ingest: the database stays consistent, no acknowledged signal is
lost, and after a restart the record is exactly what an unbroken run gives."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames

from helpers import free_port, get, start_app, wait_until
from reference import reference_spikes

pytestmark = pytest.mark.slow


def start_crashable(
    port: int, sim: SimulatorThread, db: Path, log: Path
) -> subprocess.Popen[bytes]:
    """The app against ``sim``, checkpointing every 0.2 s."""
    return start_app(
        port,
        log,
        "--ws-url",
        sim.ws_url,
        "--rest-url",
        sim.rest_url,
        "--db",
        str(db),
        env={"SPIKEWATCH_CHECKPOINT_INTERVAL": "0.2"},
    )


def stored_rows(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
        assert check == "ok"
        rows = conn.execute("SELECT id, trade_id FROM signals").fetchall()
    return [(row[0], int(row[1])) for row in rows]


def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(
    btc_frames: list[bytes], tmp_path: Path
) -> None:
    frames = btc_frames[:12000]
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=40))
    sim.start()
    db, log = tmp_path / "crash.db", tmp_path / "app.log"
    try:
        port = free_port()
        app = start_crashable(port, sim, db, log)
        try:
            # heavy ingest under way, signals written
            wait_until(lambda: get(port, "/api/status")["store"]["written"] >= 40)
            before = get(port, "/api/status")["store"]["written"]
        finally:
            app.send_signal(signal.SIGKILL)
            app.wait(10)
        assert app.returncode == -signal.SIGKILL
        survived = stored_rows(db)  # consistent after the kill
        assert len(survived) >= before  # everything acknowledged as written is there
        assert len({sid for sid, _ in survived}) == len(survived)

        port = free_port()
        app = start_crashable(port, sim, db, log)
        try:
            restarted_exactly(port, frames)
        finally:
            app.send_signal(signal.SIGTERM)
            app.wait(10)
        rows = stored_rows(db)
        ids = [sid for sid, _ in rows]
        assert len(set(ids)) == len(ids)  # no duplicate
        spikes = sorted(t for sid, t in rows if ":volume_spike-" in sid)  # (and the profile's)
        assert spikes == [t for _, t in reference_spikes(frames)]
    finally:
        sim.stop()


def test_sigkill_before_the_first_checkpoint_then_restart_skips_nothing(
    btc_frames: list[bytes], tmp_path: Path
) -> None:
    """The first checkpoint is taken within a second of the first trades, whatever the
    interval; a database without one (a run killed before it, as older versions could
    be) continues from its last stored signal: the missed trades are fetched, no gap
    record, and the record is exactly the unbroken run's."""
    frames = btc_frames[:12000]
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=40))
    sim.start()
    db, log = tmp_path / "early.db", tmp_path / "app.log"
    hourly = {"SPIKEWATCH_CHECKPOINT_INTERVAL": "3600"}
    args = ("--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--db", str(db))
    try:
        port = free_port()
        app = start_app(port, log, *args, env=hourly)
        try:
            wait_until(lambda: get(port, "/api/status")["store"]["written"] >= 20)
            wait_until(lambda: checkpoints(db) == 1)  # long before the hour is up
        finally:
            app.send_signal(signal.SIGKILL)
            app.wait(10)
        with sqlite3.connect(db) as conn:  # as if killed before that first checkpoint
            conn.execute("DELETE FROM checkpoints")
        assert stored_rows(db)

        port = free_port()
        app = start_app(port, log, *args, env=hourly)
        try:
            restarted_exactly(port, frames)
        finally:
            app.send_signal(signal.SIGTERM)
            app.wait(10)
        rows = stored_rows(db)
        spikes = sorted(t for sid, t in rows if ":volume_spike-" in sid)  # (and the profile's)
        assert spikes == [t for _, t in reference_spikes(frames)]
        assert len({sid for sid, _ in rows}) == len(rows)
    finally:
        sim.stop()


def restarted_exactly(port: int, frames: list[bytes]) -> None:
    """The restarted app caught up with the last frame, from a checkpoint (or what
    stands for one), with no gap recorded, and wrote everything."""
    last_id = int(frames[-1].split(b'"t":', 1)[1].split(b",", 1)[0])

    def caught_up() -> bool:
        symbol = get(port, "/api/status")["symbols"]["BTCUSDT"]
        return bool(symbol["last_trade_id"] == last_id and not symbol["backfilling"])

    wait_until(caught_up)
    status = get(port, "/api/status")
    assert status["restored_from_checkpoint"] == ["BTCUSDT"]
    assert status["symbols"]["BTCUSDT"]["gap_records"] == 0
    wait_until(lambda: get(port, "/api/status")["store"]["queued"] == 0)


def checkpoints(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0])
