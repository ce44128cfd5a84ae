"""``spikewatch ingest`` and ``spikewatch detect`` (the real command line, as processes)
against the simulator playing real recorded trades, the real NATS JetStream server and the
real PostgreSQL: the signals stored are exactly those of the embedded mode on the same
trades, whatever the micro-batches, and across a detect restart.

Without the servers these tests skip on a developer's machine and FAIL under CI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames

from helpers import free_port, wait_until
from roles_kit import deployment, embedded_ids, last_trade_id, stop

FRAMES = 4000


def test_ingest_and_detect_store_exactly_the_embedded_modes_signals(
    btc_frames: list[bytes], tmp_path: Path
) -> None:
    frames = btc_frames[:FRAMES]
    expected = embedded_ids(frames)
    assert len(expected) > 20  # the recording has spikes, whales and orders in it
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=None))
    sim.start()
    try:
        with deployment(tmp_path, partitions=4) as dep:
            detect = dep.start("detect")
            ingest = dep.start(
                "ingest", "--symbols", "BTCUSDT", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url
            )
            try:
                wait_until(lambda: set(dep.stored()) >= expected, timeout=60)
            except BaseException:
                print(dep.logs())
                raise
            time.sleep(1.0)  # anything extra would have come by now
            stored = dep.stored()
            assert len(stored) == len(set(stored))
            assert set(stored) == expected
            assert stop(ingest) == 0
            assert stop(detect) == 0
    finally:
        sim.stop()


def test_a_detect_restart_mid_stream_changes_no_signal(
    btc_frames: list[bytes], tmp_path: Path
) -> None:
    """detect stopped (SIGTERM: a snapshot, the lease released) while trades flow, and
    started again: it goes on from its snapshot, and the record is the unbroken one."""
    frames = btc_frames[: FRAMES * 2]
    expected = embedded_ids(frames)
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=60))
    sim.start()
    try:
        with deployment(tmp_path, partitions=4) as dep:
            detect = dep.start("detect")
            ingest = dep.start(
                "ingest", "--symbols", "BTCUSDT", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url
            )
            try:
                wait_until(lambda: len(dep.stored()) >= 10, timeout=60)
                assert stop(detect) == 0
                partway = set(dep.stored())
                assert partway < expected  # stopped mid-stream
                detect = dep.start("detect", log="detect2.log")
                wait_until(lambda: set(dep.stored()) >= expected, timeout=60)
            except BaseException:
                print(dep.logs())
                raise
            time.sleep(1.0)
            stored = dep.stored()
            assert len(stored) == len(set(stored))
            assert set(stored) == expected
            assert "from its snapshot" in (tmp_path / "detect2.log").read_text()
            assert stop(ingest) == 0
            assert stop(detect) == 0
    finally:
        sim.stop()
    assert last_trade_id(frames) > 0


def test_the_kernel_hands_on_exactly_the_trades_it_releases_in_order(
    btc_frames: list[bytes],
) -> None:
    """What ingest publishes (``Kernel(on_released=...)``): every trade once, in id
    order, a gap's trades only once fetched, repeats never; a kernel without detectors."""
    from spikewatch.core.kernel import GapPolicy, Kernel
    from spikewatch.core.model import Trade, TradeBatch
    from spikewatch.exchanges.binance import BinanceSpot

    released: list[int] = []

    def collect(trades: Sequence[Trade] | TradeBatch) -> None:
        if isinstance(trades, TradeBatch):
            released.extend(trades.trade_ids)
        else:
            released.extend(t.trade_id for t in trades)

    venue = BinanceSpot()
    kernel = Kernel(
        lambda e, s: (), venues=(venue,), gap_policy=GapPolicy.FETCH, on_released=collect
    )
    frames = btc_frames[:3000]
    holed = frames[:1000] + frames[1200:2000] + frames[1900:]  # a hole, then repeats
    step = kernel.feed_frames("binance", holed[:1000])
    step = kernel.feed_frames("binance", holed[1000:1300])
    (gap,) = step.fetch
    missing = [
        t for t in venue.parse_batch(frames[1000:1200]).trade_list() if gap.first_id <= t.trade_id
    ]
    assert kernel.fill("binance", "BTCUSDT", missing).closed
    kernel.feed_frames("binance", holed[1300:])
    first = venue.parse_batch(frames[:1]).trade_list()[0].trade_id
    assert released == list(range(first, first + 3000))


def test_bad_input_or_a_missing_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """What a user mistypes, or a server that is not there, says what and where in one
    line, exit status 2 (no traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
    nowhere = f"nats://127.0.0.1:{free_port()}"
    cases = [
        (["detect"], "give --postgres"),
        (["detect", "--postgres", "postgresql://u@h/db", "--partitions", "3-9"], "--partitions"),
        (["ingest", "--bus-partitions", "0"], "bus_partitions"),
        (["detect", "--postgres", "postgresql://postgres@127.0.0.1:1/x"], "127.0.0.1:1"),
        (
            [
                "ingest",
                "--symbols",
                "BTCUSDT",
                "--nats-url",
                nowhere,
                "--rest-url",
                "http://127.0.0.1:1",
            ],
            nowhere,
        ),
    ]
    for args, named in cases:
        done = subprocess.run(
            [sys.executable, "-m", "spikewatch", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("spikewatch: "), (args, lines)
        assert named in lines[0], (args, lines)
