"""Where ``spikewatch detect`` starts a partition that has no snapshot (``detect_start``):
at the stream's tail, or a time back, instead of replaying all the stream keeps. The real
command line as a process, the real NATS JetStream and PostgreSQL; trades published with
the bus's own publisher, as ingest publishes them.

Without the servers these tests skip on a developer's machine and FAIL under CI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nats
import pytest

from spikewatch.bus.publisher import TradePublisher
from spikewatch.bus.stream import ensure_trade_stream
from spikewatch.core.model import Trade, TradeBatch
from spikewatch.replay.readers import read_trades

from helpers import wait_until
from roles_kit import NATS_URL, Deployment, deployment, embedded_ids, stop

pytestmark = pytest.mark.slow

BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
#: trades in each half: the first published before detect starts, the second after
HALF = 5000


def _halves(fixtures_dir: Path) -> tuple[list[Trade], list[Trade]]:
    trades = []
    for trade in read_trades([fixtures_dir / BTC_CSV]):
        trades.append(trade)
        if len(trades) == 2 * HALF:
            break
    return trades[:HALF], trades[HALF:]


def publish(dep: Deployment, trades: Sequence[Trade]) -> None:
    """Publish ``trades`` to the deployment's trade stream (made if missing), as ingest
    does, and wait until JetStream has stored them."""

    async def main() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=5, allow_reconnect=False)
        try:
            js = nc.jetstream()
            names = dep.names
            await ensure_trade_stream(js, names.trade_stream, names.trade_subjects)
            publisher = TradePublisher(js, names.trade_subjects, stream=names.trade_stream)
            await publisher.start()
            for start in range(0, len(trades), 500):
                await publisher.publish([TradeBatch.from_trades(trades[start : start + 500])])
            await publisher.flush()
            await publisher.close()
        finally:
            await nc.close()

    asyncio.run(main())


def _log(tmp: Path, name: str = "detect.log") -> str:
    path = tmp / name
    return path.read_text(errors="replace") if path.exists() else ""


def test_from_the_tail_a_fresh_partition_signals_only_on_trades_after_it_started(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    old, new = _halves(fixtures_dir)
    expected = embedded_ids(trades=new)  # a kernel that first sees the second half
    before = embedded_ids(trades=old)
    assert before  # the first half has signals of its own, which must not be stored
    with deployment(tmp_path, partitions=4) as dep:
        publish(dep, old)
        detect = dep.start("detect", "--detect-start", "snapshot-or-latest")
        part = dep.names.trade_subjects.partition("binance", "BTCUSDT")
        try:
            wait_until(
                lambda: f"partition {part}: no snapshot, from the stream's tail" in _log(tmp_path),
                timeout=60,
            )
            publish(dep, new)
            wait_until(lambda: set(dep.stored()) >= expected, timeout=60)
        except BaseException:
            print(dep.logs())
            raise
        time.sleep(1.0)  # anything extra would have come by now
        stored = dep.stored()
        assert len(stored) == len(set(stored))
        assert set(stored) == expected
        assert not set(stored) & before
        assert "warms up from live trades" in _log(tmp_path)
        assert stop(detect) == 0
        # a snapshot now exists: a restart goes on from it, not from the tail
        detect = dep.start("detect", "--detect-start", "snapshot-or-latest", log="detect2.log")
        wait_until(lambda: f"partition {part}: from its snapshot" in _log(tmp_path, "detect2.log"))
        assert stop(detect) == 0


def test_a_time_back_replays_only_the_trades_stored_since_then(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    old, new = _halves(fixtures_dir)
    expected = embedded_ids(trades=new)
    before = embedded_ids(trades=old)
    assert before
    with deployment(tmp_path, partitions=4) as dep:
        publish(dep, old)
        time.sleep(10.0)  # the first half is stored 10 s before the second
        publish(dep, new)
        # 6 s back reaches the second half, not the first (detect starts within 4 s)
        detect = dep.start("detect", "--detect-start", "snapshot-or-6s")
        part = dep.names.trade_subjects.partition("binance", "BTCUSDT")
        try:
            wait_until(lambda: set(dep.stored()) >= expected, timeout=60)
        except BaseException:
            print(dep.logs())
            raise
        time.sleep(1.0)
        stored = dep.stored()
        assert len(stored) == len(set(stored))
        assert set(stored) == expected
        assert not set(stored) & before
        assert f"partition {part}: no snapshot, from the trades stored since" in _log(tmp_path)
        assert stop(detect) == 0


@pytest.mark.parametrize("value", ["15m", "snapshot-or-", "snapshot-or-0m", "latest"])
def test_a_bad_detect_start_is_one_line_naming_the_key(value: str) -> None:
    args = ["detect", "--postgres", "postgresql://u@h/db", "--detect-start", value]
    proc = subprocess.run(
        [sys.executable, "-m", "spikewatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "detect_start" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
