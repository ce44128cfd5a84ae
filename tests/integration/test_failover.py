"""Failover of the distributed roles, by SIGKILL (the real command line, as processes,
against the simulator, NATS JetStream and PostgreSQL): a detect worker killed mid-run has
its partitions taken by the other within the lease TTL; an ingest killed mid-run and
started again goes on from what the stream holds. Either way every signal the embedded
mode finds is stored exactly once, and published once.

Without the servers these tests skip on a developer's machine and FAIL under CI."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from spikewatch.replay.readers import read_trades
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import TapeEntry, merge_by_time, tape_from_frames, tape_from_trades

from helpers import wait_until
from roles_kit import (
    deployment,
    embedded_ids,
    signal_messages,
    stop,
    stream_trade_ids,
)

pytestmark = pytest.mark.slow

ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
#: the issue's bound: the lease TTL (6 s), a round (1 s) and slack for a loaded machine
TAKEOVER_S = 10.0


def two_symbols(btc_frames: list[bytes], fixtures_dir: Path) -> tuple[list[TapeEntry], set[str]]:
    """BTCUSDT's recorded frames and ETHUSDT's recorded trades of the same minutes, as one
    tape; and the embedded mode's signal ids on them."""
    frames = btc_frames[:12000]
    btc = tape_from_frames(frames)
    until_ms = btc[-1].time_ms
    eth = [t for t in read_trades([fixtures_dir / ETH_CSV]) if t.time_us // 1000 <= until_ms]
    return merge_by_time([btc, tape_from_trades(eth)]), embedded_ids(frames, eth)


def test_sigkill_of_a_detect_worker_moves_its_partitions_and_loses_nothing(
    btc_frames: list[bytes], fixtures_dir: Path, tmp_path: Path
) -> None:
    tape, expected = two_symbols(btc_frames, fixtures_dir)
    sim = SimulatorThread(Simulator(tape, speed=40))
    sim.start()
    try:
        with deployment(tmp_path, partitions=2) as dep:
            workers = [dep.start("detect", log=f"detect{i}.log") for i in (1, 2)]
            try:
                # they share: one partition each
                wait_until(lambda: len(set(dep.lease_owners().values())) == 2, timeout=30)
                ingest = dep.start(
                    "ingest",
                    "--symbols",
                    "BTCUSDT,ETHUSDT",
                    "--ws-url",
                    sim.ws_url,
                    "--rest-url",
                    sim.rest_url,
                )
                wait_until(lambda: len(dep.stored()) >= 10, timeout=60)
                owners = dep.lease_owners()
                pids = {w.pid: w for w in workers}
                btc = dep.names.trade_subjects.partition("binance", "BTCUSDT")
                victim = pids[int(owners[btc].split("-")[-2])]  # BTCUSDT's holder
                survivor = next(w for w in workers if w is not victim)
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                killed = time.monotonic()
                partway = set(dep.stored())
                assert partway < expected  # killed mid-stream

                def taken_over() -> bool:
                    now = dep.lease_owners()
                    return len(now) == 2 and all(
                        int(o.split("-")[-2]) == survivor.pid for o in now.values()
                    )

                wait_until(taken_over, timeout=TAKEOVER_S + 10)
                assert time.monotonic() - killed < TAKEOVER_S
                wait_until(lambda: set(dep.stored()) >= expected, timeout=60)
            except BaseException:
                print(dep.logs())
                raise
            time.sleep(1.0)
            stored = dep.stored()
            assert len(stored) == len(set(stored))
            assert set(stored) == expected
            assert signal_messages(dep) == len(expected)  # published once each
            assert stop(ingest) == 0
            assert stop(survivor) == 0
    finally:
        sim.stop()


def test_sigkill_of_ingest_then_restart_loses_and_doubles_nothing(
    btc_frames: list[bytes], fixtures_dir: Path, tmp_path: Path
) -> None:
    tape, expected = two_symbols(btc_frames, fixtures_dir)
    sim = SimulatorThread(Simulator(tape, speed=40))
    sim.start()
    args = ("--symbols", "BTCUSDT,ETHUSDT", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url)
    try:
        with deployment(tmp_path, partitions=2) as dep:
            detect = dep.start("detect")
            ingest = dep.start("ingest", *args)
            try:
                wait_until(lambda: len(dep.stored()) >= 10, timeout=60)
                ingest.send_signal(signal.SIGKILL)
                ingest.wait(10)
                time.sleep(1.0)  # the exchange goes on meanwhile: a gap to fetch
                ingest = dep.start("ingest", *args, log="ingest2.log")
                wait_until(lambda: set(dep.stored()) >= expected, timeout=60)
            except BaseException:
                print(dep.logs())
                raise
            time.sleep(1.0)
            stored = dep.stored()
            assert len(stored) == len(set(stored))
            assert set(stored) == expected
            assert signal_messages(dep) == len(expected)
            assert "continues after trade" in (tmp_path / "ingest2.log").read_text()
            held = stream_trade_ids(dep)
            for symbol, ids in held.items():  # every trade once, in order, no hole
                assert ids == list(range(ids[0], ids[0] + len(ids))), symbol
            assert stop(ingest) == 0
            assert stop(detect) == 0
    finally:
        sim.stop()
