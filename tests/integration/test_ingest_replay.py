"""``spikewatch ingest --replay FILE...`` (the real command line, a process) against the
real NATS JetStream server and PostgreSQL: the stream holds exactly the trades of the
files, once even when loaded twice, and ``spikewatch detect`` on them stores the signals
``spikewatch replay`` finds on the same files.

Without the servers these tests skip on a developer's machine and FAIL under CI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from nats.js.errors import NotFoundError

from spikewatch.bus.codec import decode_batch
from spikewatch.config import Settings, resolve_profile
from spikewatch.core.kernel import GapPolicy
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.readers import read_batches
from spikewatch.wiring import build_kernel

from helpers import wait_until
from roles_kit import ORDER_COMPLETE_US, Deployment, deployment, stop

BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"

Row = tuple[int, int, int, int, int]


def file_rows(paths: list[Path]) -> dict[str, list[Row]]:
    """Per symbol, the trades ``spikewatch replay`` reads from ``paths``, in order."""
    rows: dict[str, list[Row]] = defaultdict(list)
    for b in read_batches(paths):
        rows[b.symbol].extend(
            zip(b.trade_ids, b.prices, b.qtys, b.times_us, b.buyer_is_maker, strict=True)
        )
    return rows


def stream_rows(dep: Deployment) -> tuple[dict[str, list[Row]], int]:
    """Per symbol, the trades the trade stream holds, in stream order; and its messages."""

    async def read(js: object) -> tuple[dict[str, list[Row]], int]:
        name = dep.names.trade_stream
        info = await js.stream_info(name)  # type: ignore[attr-defined]
        rows: dict[str, list[Row]] = defaultdict(list)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(name, seq)  # type: ignore[attr-defined]
            b = decode_batch(msg.data)
            rows[b.symbol].extend(
                zip(b.trade_ids, b.prices, b.qtys, b.times_us, b.buyer_is_maker, strict=True)
            )
        return rows, int(info.state.messages)

    return dep.query(read)  # type: ignore[return-value]


def messages(dep: Deployment) -> int:
    """Messages the trade stream holds (0 before it is made)."""

    async def read(js: object) -> int:
        try:
            info = await js.stream_info(dep.names.trade_stream)  # type: ignore[attr-defined]
        except NotFoundError:
            return 0
        return int(info.state.messages)

    return dep.query(read)  # type: ignore[return-value]


def load(dep: Deployment, *files: Path) -> tuple[int, str]:
    """``spikewatch ingest --replay FILES``: its exit status and its summary line."""
    done = subprocess.run(
        [sys.executable, "-m", "spikewatch", "ingest", *dep.common(), "--replay", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stderr


def test_ingest_replay_publishes_exactly_the_files_trades_once(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    files = [fixtures_dir / BTC_CSV, fixtures_dir / ETH_CSV]
    expected = file_rows(files)
    with deployment(tmp_path, partitions=4) as dep:
        status, said = load(dep, *files)
        assert status == 0, said
        assert "published 34,419 trades of 2 symbol(s) from 2 file(s)" in said
        held, messages = stream_rows(dep)
        assert held == expected  # every trade, every value, in order, once
        assert sum(map(len, held.values())) == 34_419

        # loaded again: the stream already holds all of it, nothing is published twice
        status, said = load(dep, *files)
        assert status == 0, said
        assert "published 0 trades" in said
        assert "34,419 skipped (already in the stream)" in said
        assert stream_rows(dep) == (held, messages)


def test_a_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with deployment(tmp_path, partitions=4) as dep:
        status, said = load(dep, tmp_path / "nowhere.csv.gz")
    assert status == 2
    assert said.startswith("spikewatch: ")
    assert "nowhere.csv.gz" in said
    assert len(said.strip().splitlines()) == 1


def test_detect_on_a_replayed_day_stores_the_signals_of_spikewatch_replay(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """The parity of the distributed mode with ``spikewatch replay``: the same files give
    the same signal ids. (detect judges an order complete by the feed's clock, as live
    does, so the orders replay completes only at the end of its files, when no later
    trade came, stay open in detect: the test names them.)"""
    files = [fixtures_dir / BTC_CSV, fixtures_dir / ETH_CSV]
    out = tmp_path / "replayed.jsonl"
    replay = [sys.executable, "-m", "spikewatch", "replay", *map(str, files)]
    subprocess.run(
        # (detect resolves the alert profile "auto" as live does: on)
        [*replay, "--out", str(out), "--alert-profile", "default"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    replayed = {json.loads(line)["id"] for line in out.read_text().splitlines()}
    assert len(replayed) > 20
    with deployment(tmp_path, partitions=4) as dep:
        # per partition, what detect's kernel finds, and what only the end of the files
        # completes
        settings = resolve_profile(Settings(), live=True)
        by_partition: dict[int, list[Path]] = defaultdict(list)
        for path, symbol in zip(files, ("BTCUSDT", "ETHUSDT"), strict=True):
            by_partition[dep.names.trade_subjects.partition("binance", symbol)].append(path)
        expected: set[str] = set()
        at_end: set[str] = set()
        for paths in by_partition.values():
            kernel = build_kernel(settings, venues=(BinanceSpot(),), gap_policy=GapPolicy.RESET)
            found = [s.id for s in kernel.feed(list(read_batches(paths))).signals]
            latest = kernel.latest_time_us()
            assert latest is not None
            found += [s.id for s in kernel.flush(latest - ORDER_COMPLETE_US).signals]
            expected |= set(found)
            at_end |= {s.id for s in kernel.end().signals}
        assert replayed == expected | at_end
        assert len(at_end) <= 2

        status, said = load(dep, *files)
        assert status == 0, said
        detect = dep.start("detect")
        try:
            wait_until(lambda: set(dep.stored()) >= expected, timeout=60)
        except BaseException:
            print(dep.logs())
            raise
        time.sleep(1.0)  # anything extra would have come by now
        stored = dep.stored()
        assert len(stored) == len(set(stored))
        assert set(stored) == expected
        assert stop(detect) == 0


def test_a_load_stopped_half_way_goes_on_where_it_stopped(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """SIGTERM mid-load: a clean stop (what was read is stored); loaded again, the trades
    the stream holds are skipped and the rest published: every trade once, in order."""
    day = fixtures_dir / "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"
    expected = file_rows([day])
    total = sum(map(len, expected.values()))
    with deployment(tmp_path, partitions=4) as dep:
        first = subprocess.Popen(
            [sys.executable, "-m", "spikewatch", "ingest", *dep.common(), "--replay", str(day)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: messages(dep) > 0, timeout=60)
            first.terminate()
            _, said = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        assert first.returncode == 0, said
        # (on a quick machine the load may end before the SIGTERM: then the second load
        # finds everything stored, and the checks below hold the same)
        partway = sum(map(len, stream_rows(dep)[0].values()))
        assert partway > 0

        status, said = load(dep, day)
        assert status == 0, said
        assert f"{partway:,} skipped (already in the stream)" in said
        assert f"published {total - partway:,} trades" in said
        assert stream_rows(dep)[0] == expected
