"""The bus against the real NATS server with JetStream on 127.0.0.1:4222: recorded trades
through publisher -> stream -> partition consumers, dedup, leases, snapshots, resume.

Each test makes streams and buckets of its own (unique names and subject prefixes) and
deletes them at the end. Without a server these tests are skipped on a developer's machine
and FAIL under CI (env ``CI`` set), where the server is part of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from spikewatch.bus.consumer import Handler, PartitionConsumer
from spikewatch.bus.lease import LeaseLost, PartitionLease, ensure_lease_bucket
from spikewatch.bus.publisher import PublishError, TradePublisher
from spikewatch.bus.signals import SignalPublisher, ensure_signal_stream
from spikewatch.bus.snapshot import (
    SnapshotStore,
    ensure_snapshot_bucket,
    kernel_snapshot,
    restore_kernel,
)
from spikewatch.bus.stream import (
    PartitionMismatch,
    ensure_trade_stream,
    last_published_id,
    stream_partitions,
)
from spikewatch.bus.subjects import TradeSubjects
from spikewatch.core.kernel import GapPolicy
from spikewatch.core.model import Signal, Trade, TradeBatch, decode_signal
from spikewatch.replay.readers import read_batches, read_trades
from spikewatch.replay.runner import replay

from kernel_kit import make_kernel

HOST, PORT = "127.0.0.1", 4222
URL = f"nats://{HOST}:{PORT}"
BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
#: "eventually" in these tests: far longer than anything should take
PATIENCE_S = 30.0


@pytest.fixture(scope="module", autouse=True)
def _nats_answers() -> None:
    """The server is there and has JetStream on; otherwise skip, or fail under CI."""
    try:
        with socket.create_connection((HOST, PORT), timeout=3) as sock:
            sock.settimeout(3)
            info = sock.recv(4096)
        if not info.startswith(b"INFO ") or not json.loads(info[5:]).get("jetstream"):
            raise ConnectionError(f"not a NATS server with JetStream: {info[:80]!r}")
    except (OSError, ValueError) as exc:
        message = f"NATS with JetStream is not answering at {URL}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class Scratch:
    """One test's connection and the streams and buckets it made (deleted at the end)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.tag = uuid.uuid4().hex[:10]
        self.streams: list[str] = []
        self.buckets: list[str] = []

    def stream(self, what: str = "trades") -> tuple[str, TradeSubjects]:
        name = f"test-{what}-{self.tag}"
        self.streams.append(name)
        return name, TradeSubjects(4, prefix=f"t{self.tag}")

    def bucket(self, what: str) -> str:
        name = f"test-{what}-{self.tag}"
        self.buckets.append(name)
        return name


@contextlib.asynccontextmanager
async def scratch() -> AsyncIterator[Scratch]:
    nc = await nats.connect(URL, connect_timeout=5, allow_reconnect=False)
    made = Scratch(nc)
    try:
        yield made
    finally:
        for name in made.streams:
            with contextlib.suppress(NotFoundError):
                await made.js.delete_stream(name)
        for bucket in made.buckets:
            with contextlib.suppress(NotFoundError):
                await made.js.delete_key_value(bucket)
        await nc.close()


def run(body: Callable[[Scratch], Awaitable[None]]) -> None:
    async def main() -> None:
        async with scratch() as made:
            await asyncio.wait_for(body(made), PATIENCE_S * 2)

    asyncio.run(main())


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {PATIENCE_S} s: {what}")
        await asyncio.sleep(0.05)


async def drain(
    consumer: PartitionConsumer, handler: Handler | None = None
) -> list[tuple[int, TradeBatch]]:
    """Everything the consumer has to give now: (stream seq of the fetch, batch), each
    fetch also to ``handler``. Done when the server says nothing is pending (an empty
    fetch alone could be a slow server on a loaded machine)."""
    got: list[tuple[int, TradeBatch]] = []

    async def collect(batches: Sequence[TradeBatch], seq: int) -> None:
        got.extend((seq, b) for b in batches)
        if handler is not None:
            result = handler(batches, seq)
            if result is not None:
                await result

    async def done() -> bool:
        if await consumer.poll(collect):
            return False
        return await consumer.lag() == 0

    await eventually(done, f"partition {consumer.partition} drained")
    return got


def interleaved(paths: Sequence[Path], size: int) -> list[TradeBatch]:
    """The files' batches taken in turn, as a venue's reads of several symbols come."""
    streams = [list(read_batches([p], size=size)) for p in paths]
    out: list[TradeBatch] = []
    for i in range(max(len(s) for s in streams)):
        out.extend(s[i] for s in streams if i < len(s))
    return out


# -- the stream --------------------------------------------------------------------------


def test_the_stream_is_made_once_and_refuses_another_partition_count() -> None:
    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        first = await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        again = await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        assert first.config.subjects == again.config.subjects == [subjects.wildcard]
        assert await stream_partitions(made.js, name) == 4
        other = TradeSubjects(8, prefix=subjects.prefix)
        with pytest.raises(PartitionMismatch, match="4 partitions"):
            await ensure_trade_stream(made.js, name, other, max_age=600, max_bytes=1 << 26)
        longer = await ensure_trade_stream(made.js, name, subjects, max_age=900, max_bytes=1 << 26)
        assert longer.config.max_age == 900
        short = await ensure_trade_stream(made.js, name, subjects, max_age=60, max_bytes=1 << 26)
        assert (short.config.max_age, short.config.duplicate_window) == (60, 60)
        assert await stream_partitions(made.js, name) == 4

    run(body)


# -- publisher -> stream -> consumers ----------------------------------------------------


def test_recorded_trades_come_back_exactly_and_in_order_per_symbol(fixtures_dir: Path) -> None:
    paths = [fixtures_dir / BTC_CSV, fixtures_dir / ETH_CSV]
    expected: dict[str, list[Trade]] = defaultdict(list)
    for trade in read_trades(paths):
        expected[trade.symbol].append(trade)

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 28)
        publisher = TradePublisher(made.js, subjects, stream=name, max_batch=300)
        await publisher.start()
        for batch in interleaved(paths, 1000):
            await publisher.publish([batch])
        await publisher.close()
        counters = publisher.counters()
        assert counters.acked_trades == counters.trades == 19_904 + 14_515
        assert counters.failures == counters.duplicates == counters.pending == 0
        assert max(publisher.sizes) <= 300

        got: dict[str, list[Trade]] = defaultdict(list)
        partitions: dict[str, set[int]] = defaultdict(set)
        for part in range(subjects.partitions):
            consumer = PartitionConsumer(made.js, name, subjects, part, batch=16, max_wait=0.2)
            for _, batch in await drain(consumer):
                got[batch.symbol].extend(batch.trades())
                partitions[batch.symbol].add(part)
            assert not consumer.malformed
            await consumer.close(delete=True)
        assert got == expected
        assert partitions == {
            "BTCUSDT": {subjects.partition("binance", "BTCUSDT")},
            "ETHUSDT": {subjects.partition("binance", "ETHUSDT")},
        }

    run(body)


def test_signals_detected_from_the_bus_are_those_of_a_replay(fixtures_dir: Path) -> None:
    """The detect side is the same kernel: fed from the bus it finds what replay finds,
    and its signals go out on the signal stream once each."""
    path = fixtures_dir / BTC_CSV
    replayed: list[Signal] = []
    replay(read_trades([path]), make_kernel(GapPolicy.RESET), replayed.append)
    assert replayed  # (the recording has spikes to find)

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 28)
        publisher = TradePublisher(made.js, subjects, stream=name, max_batch=500)
        await publisher.start()
        for trade in read_trades([path]):  # one at a time, as a live venue gives them
            await publisher.publish([trade])
        await publisher.close()

        kernel = make_kernel(GapPolicy.RESET)
        signals: list[Signal] = []

        def handler(batches: Sequence[TradeBatch], seq: int) -> None:
            signals.extend(kernel.feed(batches).signals)

        part = subjects.partition("binance", "BTCUSDT")
        consumer = PartitionConsumer(made.js, name, subjects, part, max_wait=0.2)
        await drain(consumer, handler)
        signals.extend(kernel.end().signals)
        assert signals == replayed
        assert consumer.trades == 19_904

        # out on signals.<exchange>.<symbol>; found again (a redelivery), stored once
        out = made.stream("signals")[0]
        prefix = f"s{made.tag}"
        await ensure_signal_stream(made.js, out, prefix=prefix, max_age=600)
        signal_publisher = SignalPublisher(made.js, prefix=prefix, stream=out)
        await signal_publisher.publish(signals)
        await signal_publisher.publish(signals[: len(signals) // 2])
        assert signal_publisher.duplicates == len(signals) // 2
        assert (await made.js.stream_info(out)).state.messages == len(signals)
        reader = await made.js.pull_subscribe(f"{prefix}.binance.BTCUSDT", stream=out)
        msgs = await reader.fetch(len(signals), timeout=5)
        assert [decode_signal(m.data) for m in msgs] == signals

    run(body)


def test_a_batch_published_again_after_a_restart_is_stored_once(fixtures_dir: Path) -> None:
    trades = list(read_trades([fixtures_dir / BTC_CSV]))[:1200]

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        for run_no in range(2):  # the ingest, then the ingest restarted from the same trade
            # (no ticker: batches are cut at 500 and at the flush, the same both times)
            publisher = TradePublisher(made.js, subjects, stream=name, max_batch=500)
            await publisher.publish([TradeBatch.from_trades(trades)])
            await publisher.flush()
            counters = publisher.counters()
            assert counters.messages == 3
            assert counters.duplicates == (3 if run_no else 0)
        info = await made.js.stream_info(name)
        assert info.state.messages == 3
        # where the restarted ingest goes on from
        last = await last_published_id(made.js, name, subjects, "binance", "BTCUSDT")
        assert last == trades[-1].trade_id
        assert await last_published_id(made.js, name, subjects, "binance", "ETHUSDT") is None
        consumer = PartitionConsumer(
            made.js, name, subjects, subjects.partition("binance", "BTCUSDT"), max_wait=0.2
        )
        got = [t for _, batch in await drain(consumer) for t in batch.trades()]
        assert got == trades

    run(body)


def test_the_publisher_holds_the_caller_back_when_too_much_waits(fixtures_dir: Path) -> None:
    trades = list(read_trades([fixtures_dir / BTC_CSV]))

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        publisher = TradePublisher(
            made.js, subjects, stream=name, max_batch=100, max_pending=1000, max_in_flight=1
        )
        for start in range(0, len(trades), 250):
            await publisher.publish(trades[start : start + 250])
            assert publisher.counters().pending <= 1000
        await publisher.flush()
        counters = publisher.counters()
        assert counters.acked_trades == len(trades)
        assert (counters.pending, counters.in_flight) == (0, 0)
        assert max(publisher.sizes) == 100

    run(body)


def test_a_batch_that_cannot_be_stored_stops_the_publisher(fixtures_dir: Path) -> None:
    trades = list(read_trades([fixtures_dir / BTC_CSV]))[:10]

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        # JetStream refuses it: the subject's stream is not the one expected
        publisher = TradePublisher(made.js, subjects, stream=f"{name}-other")
        await publisher.publish(trades)
        with pytest.raises(PublishError, match="not stored"):
            await publisher.flush()
        with pytest.raises(PublishError):
            await publisher.publish(trades)
        assert publisher.counters().failures == 1
        assert (await made.js.stream_info(name)).state.messages == 0

    run(body)


def test_a_malformed_message_is_counted_and_skipped(fixtures_dir: Path) -> None:
    trades = list(read_trades([fixtures_dir / BTC_CSV]))[:100]

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        subject = subjects.subject("binance", "BTCUSDT")
        await made.js.publish(subject, b'{"e":"trade","not":"a batch"}')
        publisher = TradePublisher(made.js, subjects, stream=name)
        await publisher.publish(trades)
        await publisher.flush()
        await made.js.publish(subject, b"SWT\x01 truncated")
        consumer = PartitionConsumer(
            made.js, name, subjects, subjects.partition("binance", "BTCUSDT"), max_wait=0.2
        )
        got = [t for _, batch in await drain(consumer) for t in batch.trades()]
        assert got == trades
        assert consumer.malformed == {"not_a_batch": 1, "truncated": 1}
        assert consumer.last_seq == 3  # the last (malformed) one is acknowledged too

    run(body)


def test_a_consumer_resumes_from_a_stream_sequence(fixtures_dir: Path) -> None:
    trades = list(read_trades([fixtures_dir / BTC_CSV]))[:5000]

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        publisher = TradePublisher(made.js, subjects, stream=name, max_batch=250)
        await publisher.publish(trades)
        await publisher.flush()
        part = subjects.partition("binance", "BTCUSDT")

        # a worker handles the first fetch, snapshots at its sequence, then dies
        first = PartitionConsumer(made.js, name, subjects, part, batch=4, max_wait=0.2)
        seen: list[Trade] = []
        handled: list[int] = []

        def handler(batches: Sequence[TradeBatch], seq: int) -> None:
            seen.extend(t for b in batches for t in b.trades())
            handled.append(seq)

        assert await first.poll(handler) == 4
        snapshot_seq = first.last_seq
        assert handled == [snapshot_seq] == [4]
        assert seen == trades[:1000]
        await first.poll(handler)  # handled after the snapshot: lost with the worker
        assert handled == [4, 8]
        await first.close()

        # the worker that takes over starts after the snapshot's sequence
        second = PartitionConsumer(
            made.js, name, subjects, part, start_seq=snapshot_seq + 1, max_wait=0.2
        )
        rest = [t for _, batch in await drain(second) for t in batch.trades()]
        assert rest == trades[1000:]
        assert second.last_seq == 20

        # and a consumer bound again without a start goes on from what was acknowledged
        await second.close()
        third = PartitionConsumer(made.js, name, subjects, part, max_wait=0.2)
        assert await drain(third) == []
        await publisher.publish([trades[-1]])  # (a repeat: the kernel would drop it)
        await publisher.flush()
        assert [b.trades() for _, b in await drain(third)] == [[trades[-1]]]
        await third.close(delete=True)

    run(body)


def test_a_fetch_whose_handler_failed_comes_again_and_is_never_acked_by_a_later_one(
    fixtures_dir: Path,
) -> None:
    trades = list(read_trades([fixtures_dir / BTC_CSV]))[:2000]

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        publisher = TradePublisher(made.js, subjects, stream=name, max_batch=500)
        await publisher.publish(trades)
        await publisher.flush()
        part = subjects.partition("binance", "BTCUSDT")
        consumer = PartitionConsumer(made.js, name, subjects, part, batch=2, max_wait=0.2)

        def broken(batches: Sequence[TradeBatch], seq: int) -> None:
            raise OSError("the sink is gone")

        with pytest.raises(OSError, match="sink"):
            await consumer.poll(broken)
        with pytest.raises(RuntimeError, match="handler failed"):
            await consumer.poll(broken)
        assert consumer.last_seq == 0
        await consumer.close()
        # the recovering worker reads from its snapshot's sequence (here: the start)
        again = PartitionConsumer(made.js, name, subjects, part, start_seq=1, max_wait=0.2)
        assert [t for _, b in await drain(again) for t in b.trades()] == trades

    run(body)


def test_a_new_consumer_can_start_at_a_time_to_warm_up_on_recent_trades(
    fixtures_dir: Path,
) -> None:
    trades = list(read_trades([fixtures_dir / BTC_CSV]))[:1000]

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 26)
        publisher = TradePublisher(made.js, subjects, stream=name, max_batch=500)
        await publisher.publish(trades[:500])
        await publisher.flush()
        await asyncio.sleep(0.05)  # (so that the two halves have distinct store times)
        since = datetime.now(UTC)
        await asyncio.sleep(0.05)
        await publisher.publish(trades[500:])
        await publisher.flush()
        consumer = PartitionConsumer(
            made.js,
            name,
            subjects,
            subjects.partition("binance", "BTCUSDT"),
            start_time=since,
            max_wait=0.2,
        )
        assert [t for _, b in await drain(consumer) for t in b.trades()] == trades[500:]

    run(body)


# -- leases --------------------------------------------------------------------------------


def test_a_lease_has_one_holder_and_moves_when_the_holder_stops_renewing() -> None:
    async def body(made: Scratch) -> None:
        kv = await ensure_lease_bucket(made.js, made.bucket("leases"), ttl=1.0)
        alice = PartitionLease(kv, 3, "alice", ttl=1.0)
        bob = PartitionLease(kv, 3, "bob", ttl=1.0)
        assert await alice.acquire()
        assert not await bob.acquire()
        await alice.renew()
        assert not await bob.acquire()
        bob_4 = PartitionLease(kv, 4, "bob", ttl=1.0, renew_every=0.05)
        assert await bob_4.acquire()  # another partition: no conflict

        # alice stops renewing (a dead worker): bob eventually gets partition 3
        await eventually(bob.acquire, "bob takes the lease alice stopped renewing")
        with pytest.raises(LeaseLost):
            await alice.renew()
        assert not await alice.acquire()
        assert not alice.held

        # bob did not renew partition 4 either; when he starts keeping it, too late, he
        # learns of the loss at his first renewal
        carol = PartitionLease(kv, 4, "carol", ttl=1.0)
        await eventually(carol.acquire, "carol takes partition 4 from bob")
        with pytest.raises(LeaseLost, match="taken by another worker"):
            await bob_4.keep(asyncio.Event())

    run(body)


def test_a_kept_lease_is_not_taken_and_is_released_on_a_clean_stop() -> None:
    async def body(made: Scratch) -> None:
        # (a TTL 20 times the renewal period: a loaded machine's pauses do not expire it)
        kv = await ensure_lease_bucket(made.js, made.bucket("leases"), ttl=2.0)
        alice = PartitionLease(kv, 0, "alice", ttl=2.0, renew_every=0.1)
        bob = PartitionLease(kv, 0, "bob", ttl=2.0)
        assert await alice.acquire()
        stop = asyncio.Event()
        keeper = asyncio.create_task(alice.keep(stop))
        for _ in range(25):  # for longer than the TTL, renewed all along
            assert not await bob.acquire()
            await asyncio.sleep(0.1)
        assert alice.held
        stop.set()
        await keeper
        assert not alice.held
        assert await bob.acquire()  # released: at once, no TTL to wait for

    run(body)


def test_a_lease_bucket_with_another_ttl_is_refused() -> None:
    async def body(made: Scratch) -> None:
        bucket = made.bucket("leases")
        await ensure_lease_bucket(made.js, bucket, ttl=1.0)
        with pytest.raises(ValueError, match="TTL"):
            await ensure_lease_bucket(made.js, bucket, ttl=10.0)

    run(body)


# -- snapshots -----------------------------------------------------------------------------


def test_a_kernel_snapshot_round_trips_and_resumes_detection(fixtures_dir: Path) -> None:
    """Half the trades, a snapshot, a fresh kernel restored from it, the other half: the
    same signals as one kernel that saw everything."""
    trades = list(read_trades([fixtures_dir / BTC_CSV]))
    whole: list[Any] = []
    replay(trades, make_kernel(GapPolicy.RESET), whole.append)
    half = len(trades) // 2

    async def body(made: Scratch) -> None:
        store = SnapshotStore(await ensure_snapshot_bucket(made.js, made.bucket("snaps")))
        assert await store.load(5) is None
        first = make_kernel(GapPolicy.RESET)
        before = first.feed([TradeBatch.from_trades(trades[:half])]).signals
        data = kernel_snapshot(first)
        await store.save(5, 1234, data)
        loaded = await store.load(5)
        assert loaded is not None
        assert (loaded.partition, loaded.stream_seq, loaded.data) == (5, 1234, data)

        second = make_kernel(GapPolicy.RESET)
        assert restore_kernel(second, loaded.data) == [("binance", "BTCUSDT")]
        # (the last trade's time is restored into the guard, not into checkpoint()'s view)
        restored = second.checkpoint("binance", "BTCUSDT")
        saved = first.checkpoint("binance", "BTCUSDT")
        assert restored is not None
        assert saved is not None
        assert (restored[0], restored[2]) == (saved[0], saved[2])
        after = second.feed([TradeBatch.from_trades(trades[half:])]).signals
        after += second.end().signals
        assert before + after == whole

        await store.save(5, 2000, b"newer")  # replaced, not added
        newer = await store.load(5)
        assert newer is not None
        assert (newer.stream_seq, newer.data) == (2000, b"newer")

    run(body)


def test_a_partition_taken_over_from_a_snapshot_gives_the_same_signals(
    fixtures_dir: Path,
) -> None:
    """Worker A snapshots, handles more, dies; worker B restores the snapshot and reads
    from its sequence on. What A and B found together is what a replay finds, and what
    both found (after the snapshot, before A died) is the same signals, same ids: the
    signal stream and the store keep one of each."""
    trades = list(read_trades([fixtures_dir / BTC_CSV]))
    replayed: list[Signal] = []
    replay(trades, make_kernel(GapPolicy.RESET), replayed.append)

    async def body(made: Scratch) -> None:
        name, subjects = made.stream()
        await ensure_trade_stream(made.js, name, subjects, max_age=600, max_bytes=1 << 28)
        publisher = TradePublisher(made.js, subjects, stream=name, max_batch=500)
        await publisher.publish(trades)
        await publisher.flush()
        part = subjects.partition("binance", "BTCUSDT")
        store = SnapshotStore(await ensure_snapshot_bucket(made.js, made.bucket("snaps")))
        leases = await ensure_lease_bucket(made.js, made.bucket("leases"), ttl=1.0)

        # worker A: lease, 2 fetches, snapshot, 2 more fetches, dies (no release)
        lease_a = PartitionLease(leases, part, "worker-a", ttl=1.0)
        assert await lease_a.acquire()
        kernel_a = make_kernel(GapPolicy.RESET)
        found_a: list[Signal] = []

        def feed_a(batches: Sequence[TradeBatch], seq: int) -> None:
            found_a.extend(kernel_a.feed(batches).signals)

        consumer_a = PartitionConsumer(made.js, name, subjects, part, batch=8, max_wait=0.2)
        for _ in range(2):
            await consumer_a.poll(feed_a)
        await store.save(part, consumer_a.last_seq, kernel_snapshot(kernel_a))
        for _ in range(2):
            await consumer_a.poll(feed_a)
        await consumer_a.close()

        # worker B: the lease once A's has expired, the snapshot, the stream after it
        lease_b = PartitionLease(leases, part, "worker-b", ttl=1.0)
        await eventually(lease_b.acquire, "worker B gets the partition")
        snapshot = await store.load(part)
        assert snapshot is not None
        assert snapshot.stream_seq == 16
        kernel_b = make_kernel(GapPolicy.RESET)
        assert restore_kernel(kernel_b, snapshot.data) == [("binance", "BTCUSDT")]
        found_b: list[Signal] = []

        def feed_b(batches: Sequence[TradeBatch], seq: int) -> None:
            found_b.extend(kernel_b.feed(batches).signals)

        consumer_b = PartitionConsumer(
            made.js, name, subjects, part, start_seq=snapshot.stream_seq + 1, max_wait=0.2
        )
        await drain(consumer_b, feed_b)
        found_b.extend(kernel_b.end().signals)

        assert consumer_b.trades == len(trades) - 16 * 500
        by_id = {s.id: s for s in found_a}
        again = [s for s in found_b if s.id in by_id]
        assert again  # (A's last two fetches held signals, found again by B)
        assert all(by_id[s.id] == s for s in again)  # the same signal, not a near one
        stored = {s.id: s for s in [*found_a, *found_b]}  # an idempotent insert
        assert sorted(stored.values(), key=lambda s: (s.time_us, s.id)) == sorted(
            replayed, key=lambda s: (s.time_us, s.id)
        )

    run(body)


def test_a_cluster_is_given_as_a_list_of_its_nodes() -> None:
    """``nats_url`` may list a cluster's nodes: a node that is down (here a closed port)
    is passed over for the next one."""
    from spikewatch.bus.connect import connect_bus

    with socket.socket() as closed:
        closed.bind((HOST, 0))
        down = f"nats://{HOST}:{closed.getsockname()[1]}"

    async def go() -> bool:
        nc = await connect_bus(f"{down}, {URL}", wait_s=10)
        try:
            return bool(nc.is_connected)
        finally:
            await nc.close()

    assert asyncio.run(go())
