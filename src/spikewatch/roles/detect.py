"""``spikewatch detect``: partitions of the trade stream through the same kernel as the
embedded mode; signals to PostgreSQL and the signal stream.

For each partition it may serve, a worker takes the partition's **lease**
(:class:`~spikewatch.bus.lease.PartitionLease`), restores the partition's last
**snapshot** (kernel checkpoint and the stream sequence it covers), consumes from the
next sequence (:class:`~spikewatch.bus.consumer.PartitionConsumer`), and for each fetch:
feeds the kernel, flushes completed orders (the engine's order clock), writes the signals
and gap records to PostgreSQL (idempotent by the signals' deterministic ids), publishes
the signals (``Nats-Msg-Id`` = signal id), and only then returns, so the fetch is
acknowledged after its effects. Every ``snapshot_every`` seconds (and at a clean stop) it
saves a snapshot, after the signals before it were written.

**Sharing.** Workers announce themselves in the lease bucket (key ``w-<worker>``,
renewed like a lease) and each holds at most its fair share,
``ceil(partitions / workers)``: a worker that joins gets partitions handed over (the
holder of too many stops one a round, with a snapshot, and releases its lease); a worker
that dies has its leases and its ``w-`` key expire within the lease TTL (10 s), and the
others take its partitions on their next round (every second).

**Takeover, and what is muted.** A worker taking a partition replays from the snapshot's
sequence, which may be a little behind what the previous holder handled. Nothing is
muted in this design: the signals found again are the same signals (same ids), which the
store's insert keeps once and JetStream's duplicate window (600 s) drops. Replays are
bounded by the snapshot interval (seconds), far inside that window. (Muting by stream
sequence would not be safe: a completed order is flushed by the clock, so a replay may
find in an early fetch an order its predecessor only flushed later, or not yet.)

**Alerts** (:mod:`spikewatch.roles.alerts`): each fetch's alert events go into the
PostgreSQL outbox with its signals, before the ack; every worker delivers from that
outbox, each send claimed by one worker. **Where a partition without a snapshot starts**:
``detect_start`` (:meth:`DetectWorker._consumer_without_snapshot`). **Metrics**:
:mod:`spikewatch.roles.metrics` reads :meth:`DetectWorker.counters` and the rest.

A partition whose lease is lost (:class:`~spikewatch.bus.lease.LeaseLost`) stops at
once, without a snapshot; a partition whose work fails (PostgreSQL down) releases its
lease and is tried again after a pause; the other partitions go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from spikewatch.bus.alerts import AlertAnnouncer
from spikewatch.bus.connect import connect_bus, jetstream
from spikewatch.bus.consumer import PartitionConsumer
from spikewatch.bus.lease import LEASE_TTL_S, LeaseLost, PartitionLease, ensure_lease_bucket
from spikewatch.bus.names import BusNames, bus_names
from spikewatch.bus.signals import SignalPublisher, ensure_signal_stream
from spikewatch.bus.snapshot import (
    SnapshotStore,
    ensure_snapshot_bucket,
    kernel_snapshot,
    restore_kernel,
)
from spikewatch.bus.stream import ensure_trade_stream
from spikewatch.config import Settings, detect_start
from spikewatch.core.alerts import AlertEvent
from spikewatch.core.kernel import GapPolicy, Kernel
from spikewatch.core.model import GapRecord, Signal, TradeBatch
from spikewatch.core.state import LAG_COUNTED_US
from spikewatch.exchanges import EXCHANGES
from spikewatch.roles.alerts import DetectAlerts
from spikewatch.store import open_store
from spikewatch.store.base import SignalStore
from spikewatch.store.postgres import PostgresSignalStore
from spikewatch.store.retention import Retention
from spikewatch.wiring import build_exchange, build_kernel

log = logging.getLogger(__name__)

#: As the engine: an order whose first fill is this old (by the order clock) is complete.
ORDER_COMPLETE_US = 2_000_000
#: Seconds between snapshots of a partition.
SNAPSHOT_EVERY_S = 2.0
#: Seconds between a worker's rounds (leases to take, shares to hand over).
ROUND_S = 1.0
#: Seconds before a partition whose work failed is tried again.
RETRY_S = 2.0
REPORT_EVERY_S = 10.0
#: Seconds between reads of each held partition's pending messages (for /metrics).
PENDING_EVERY_S = 5.0


class PartitionCounters(msgspec.Struct, frozen=True):
    """One partition's work in this worker."""

    partition: int
    trades: int
    signals: int  # signals emitted (written and published)
    stored: int  # of them new to the store (the rest were there: a replay)
    last_seq: int
    takeovers: int  # times this worker took the partition


@dataclass
class _Held:
    partition: int
    lease: PartitionLease
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None
    trades: int = 0
    signals: int = 0
    stored: int = 0
    last_seq: int = 0
    consumer: PartitionConsumer | None = None
    pending: int | None = None  # the consumer's num_pending, last read
    snapshot_at: float = field(default_factory=time.monotonic)  # last saved (monotonic)


class PartitionState(msgspec.Struct, frozen=True):
    """A held partition, for /metrics: its consumer's pending messages (None: not read
    yet) and when its snapshot was last saved (monotonic seconds)."""

    pending: int | None
    snapshot_at: float


@dataclass
class _Totals:
    takeovers: dict[int, int] = field(default_factory=dict)
    done: dict[int, tuple[int, int, int]] = field(default_factory=dict)


def order_clock(kernel: Kernel) -> int:
    """Now, for judging whether an order is complete (µs), as the engine judges it: the
    wall clock on a live feed, the feed's own latest time on history."""
    now_us = time.time_ns() // 1000
    latest = kernel.latest_time_us()
    if latest is not None and now_us - latest > LAG_COUNTED_US:
        return latest
    return now_us


def detect_kernel(settings: Settings) -> Kernel:
    """The embedded mode's kernel (:func:`~spikewatch.wiring.build_kernel`, same detectors
    and alert rules) for trades from the stream: every venue known (their id guarantees),
    every symbol watched; a jump in ids (a gap the ingest could not fill) is recorded and
    the windows warm up again, as the embedded mode does with a gap given up."""
    venues = [build_exchange(settings, name) for name in sorted(EXCHANGES)]
    kernel = build_kernel(settings, venues=venues, gap_policy=GapPolicy.RESET, bars=False)
    kernel.reset_reason = "not in the trade stream (the ingest could not fetch them)"
    return kernel


class DetectWorker:
    """One detect process's partitions: build with the settings, :meth:`run` until stop."""

    def __init__(
        self,
        settings: Settings,
        partitions: Sequence[int],
        *,
        owner: str | None = None,
        snapshot_every: float = SNAPSHOT_EVERY_S,
        round_s: float = ROUND_S,
        lease_ttl: float = LEASE_TTL_S,
    ) -> None:
        self.settings = settings
        self.names: BusNames = bus_names(settings)
        self.partitions = list(partitions)
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.snapshot_every = snapshot_every
        self.round_s = round_s
        self.lease_ttl = lease_ttl
        self._held: dict[int, _Held] = {}
        self._totals = _Totals()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._leases: KeyValue | None = None
        self._snapshots: SnapshotStore | None = None
        self._signals: SignalPublisher | None = None
        self._store: SignalStore | None = None
        self.alerts: DetectAlerts | None = None
        self._announcer: AlertAnnouncer | None = None
        self._retention: Retention | None = None
        self._paused: dict[int, float] = {}  # partition -> monotonic time to try again
        self._renewals_done = 0  # lease renewals of partitions no longer held
        #: partitions stopped at once because their lease was lost
        self.leases_lost = 0
        self._next_pending = 0.0

    # -- reading -------------------------------------------------------------------------

    def held(self) -> list[int]:
        """The partitions this worker holds now."""
        return sorted(p for p, h in self._held.items() if h.task is not None and not h.task.done())

    def counters(self) -> list[PartitionCounters]:
        """Per partition this worker has held: what it did."""
        out = []
        for p in sorted(set(self._held) | set(self._totals.done)):
            trades, signals, stored = self._totals.done.get(p, (0, 0, 0))
            h = self._held.get(p)
            if h is not None:
                trades, signals, stored = trades + h.trades, signals + h.signals, stored + h.stored
            out.append(
                PartitionCounters(
                    partition=p,
                    trades=trades,
                    signals=signals,
                    stored=stored,
                    last_seq=h.last_seq if h is not None else 0,
                    takeovers=self._totals.takeovers.get(p, 0),
                )
            )
        return out

    def bus_connected(self) -> bool:
        """Whether the NATS connection is up now."""
        return self._nc is not None and self._nc.is_connected

    def lease_renewals(self) -> int:
        """Lease renewals that succeeded, all partitions, since start."""
        return self._renewals_done + sum(h.lease.renewals for h in list(self._held.values()))

    def partition_states(self) -> dict[int, PartitionState]:
        """The held partitions' lag and snapshot time (any thread: reads a copy)."""
        return {
            p: PartitionState(h.pending, h.snapshot_at)
            for p, h in dict(self._held).items()
            if h.task is not None and not h.task.done()
        }

    def problems(self) -> list[str]:
        """Why this worker is not healthy (empty: it is), for /healthz."""
        if self._nc is None:
            return ["not connected to NATS yet"]
        if not self._nc.is_connected:
            return [f"NATS connection lost ({self.settings.nats_url}); reconnecting"]
        return []

    async def _read_pending(self) -> None:
        """Every PENDING_EVERY_S, each held partition's pending messages (its lag)."""
        if time.monotonic() < self._next_pending:
            return
        self._next_pending = time.monotonic() + PENDING_EVERY_S
        for h in list(self._held.values()):
            consumer = h.consumer
            if consumer is None or h.task is None or h.task.done():
                continue
            with contextlib.suppress(Exception):  # (a partition just ending: next time)
                h.pending = await asyncio.wait_for(consumer.lag(), 2.0)

    # -- running -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to NATS and PostgreSQL and make what is missing (streams, buckets);
        BusUnavailable, StoreOpenError or PartitionMismatch when something is wrong."""
        settings, names = self.settings, self.names
        self._store = await asyncio.to_thread(open_store, settings.postgres)
        if isinstance(self._store, PostgresSignalStore):
            self.alerts = await asyncio.to_thread(DetectAlerts, settings, self._store)
            self.alerts.start()
        outbox = self.alerts.outbox if self.alerts is not None else None
        self._retention = Retention.of(settings.retention_days, self._store, [outbox])
        self._nc = await connect_bus(settings.nats_url, name=f"spikewatch-detect-{self.owner}")
        js = self._js = jetstream(self._nc)
        copies = self.settings.bus_replicas
        await ensure_trade_stream(js, names.trade_stream, names.trade_subjects, replicas=copies)
        await ensure_signal_stream(
            js, names.signal_stream, prefix=names.signal_prefix, replicas=copies
        )
        self._leases = await ensure_lease_bucket(
            js, names.lease_bucket, ttl=self.lease_ttl, replicas=copies
        )
        self._snapshots = SnapshotStore(
            await ensure_snapshot_bucket(js, names.snapshot_bucket, replicas=copies)
        )
        self._signals = SignalPublisher(js, prefix=names.signal_prefix, stream=names.signal_stream)
        self._announcer = AlertAnnouncer(self._nc, prefix=names.alert_prefix)
        # what start-up made (modules, clients, pools) lives as long as the process: out
        # of the collector's sight, so a full collection does not walk it on the hot path
        gc.freeze()

    async def close(self) -> None:
        """Close the connections (after :meth:`run`)."""
        if self.alerts is not None:
            await asyncio.to_thread(self.alerts.stop)
            self.alerts = None
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def run(self, stop: asyncio.Event) -> None:
        """Take, serve and share partitions until ``stop``; then stop each partition with a
        snapshot and release its lease."""
        assert self._leases is not None, "open() first"
        log.info(
            "detect %s: partitions %s of stream %s, signals to %s and %s.<exchange>.<symbol>",
            self.owner,
            _ranges(self.partitions),
            self.names.trade_stream,
            _safe_url(self.settings.postgres),
            self.names.signal_prefix,
        )
        next_report = time.monotonic() + REPORT_EVERY_S
        try:
            while not stop.is_set():
                try:
                    await self._round()
                    await self._read_pending()
                    await self._prune()
                except Exception as exc:  # the server away for a moment: next round
                    log.warning("detect round failed: %s: %s", type(exc).__name__, exc)
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + REPORT_EVERY_S
                    self._report()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.round_s)
        finally:
            for h in list(self._held.values()):
                h.stop.set()
            tasks = [h.task for h in self._held.values() if h.task is not None]
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._leases.delete(self._presence_key)
            self._report()

    async def _prune(self) -> None:
        """Retention (``retention_days``), when due: every worker runs it; PostgreSQL's
        prunes are idempotent and take turns (:mod:`spikewatch.store.retention`)."""
        if self._retention is not None and self._retention.due():
            await asyncio.to_thread(self._retention.run)

    @property
    def _presence_key(self) -> str:
        return f"w-{self.owner}"

    async def _round(self) -> None:
        """Announce this worker, count the workers, take free partitions up to a fair
        share, or hand one over when holding more."""
        kv = self._leases
        assert kv is not None
        await kv.put(self._presence_key, b"1")
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        workers = max(1, sum(1 for k in keys if k.startswith("w-")))
        fair = math.ceil(len(self.partitions) / workers)
        for p, h in list(self._held.items()):
            if h.task is not None and h.task.done():
                self._retire(p)
        held = self.held()
        if len(held) > fair:
            give = held[-1]
            log.info("partition %d handed over (%d workers, a share is %d)", give, workers, fair)
            self._held[give].stop.set()
            return
        free = [p for p in self._order() if p not in self._held]
        now = time.monotonic()
        for p in free:
            if len(self.held()) >= fair:
                break
            if self._paused.get(p, 0.0) > now:
                continue
            lease = PartitionLease(kv, p, self.owner, ttl=self.lease_ttl)
            if await lease.acquire():
                self._start(p, lease)

    def _order(self) -> list[int]:
        """This worker's partitions, starting at a place of its own (workers starting
        together try different ones first)."""
        ps = self.partitions
        start = int(self.owner.encode().hex(), 16) % len(ps) if ps else 0
        return ps[start:] + ps[:start]

    def _retire(self, partition: int) -> None:
        h = self._held.pop(partition)
        self._renewals_done += h.lease.renewals
        t = self._totals.done.get(partition, (0, 0, 0))
        self._totals.done[partition] = (t[0] + h.trades, t[1] + h.signals, t[2] + h.stored)
        if h.task is not None and not h.task.cancelled() and h.task.exception() is not None:
            self._paused[partition] = time.monotonic() + RETRY_S

    def _start(self, partition: int, lease: PartitionLease) -> None:
        stop = asyncio.Event()
        self._totals.takeovers[partition] = self._totals.takeovers.get(partition, 0) + 1
        held = _Held(partition, lease, stop)
        held.task = asyncio.create_task(self._serve(held), name=f"detect-p{partition}")
        self._held[partition] = held

    async def _serve(self, held: _Held) -> None:
        """Hold the partition: keep the lease beside the consumer; stop at once when the
        lease is lost."""
        p = held.partition
        release = asyncio.Event()  # set once the consumer has ended (after its snapshot)
        keeper = asyncio.create_task(held.lease.keep(release), name=f"lease-p{p}")
        worker = asyncio.create_task(self._consume(held), name=f"consume-p{p}")
        try:
            done, _ = await asyncio.wait({keeper, worker}, return_when=asyncio.FIRST_COMPLETED)
            if keeper in done:  # the lease is gone (taken, or not renewed in time)
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await worker
                exc = keeper.exception()
                self.leases_lost += 1
                log.warning("partition %d stopped at once: %s", p, exc or "lease ended")
                return
            release.set()  # the consumer ended (a stop, or a failure): release
            with contextlib.suppress(LeaseLost, Exception):
                await keeper
            exc = worker.exception()
            if exc is not None:
                log.error(
                    "partition %d failed (%s: %s); it is tried again",
                    p,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
                raise exc
        finally:
            for task in (keeper, worker):
                task.cancel()

    async def _consume(self, held: _Held) -> None:
        """Restore, consume and emit until ``held.stop``; a last snapshot at a clean end."""
        js, snapshots, names = self._js, self._snapshots, self.names
        assert js is not None
        assert snapshots is not None
        p = held.partition
        kernel = detect_kernel(self.settings)
        snap = await snapshots.load(p)
        saved_seq = 0
        if snap is not None:
            restored = restore_kernel(kernel, snap.data)
            saved_seq = snap.stream_seq
            log.info(
                "partition %d: from its snapshot at stream seq %d (%d symbols)",
                p,
                snap.stream_seq,
                len(restored),
            )
            consumer = PartitionConsumer(
                js, names.trade_stream, names.trade_subjects, p, start_seq=saved_seq + 1
            )
        else:
            consumer = await self._consumer_without_snapshot(p)
        await consumer.open()
        held.consumer = consumer
        next_snapshot = time.monotonic() + self.snapshot_every

        async def handle(batches: Sequence[TradeBatch], last_seq: int) -> None:
            nonlocal next_snapshot, saved_seq
            step = kernel.feed(batches)
            flushed = kernel.flush(order_clock(kernel) - ORDER_COMPLETE_US)
            signals = [*step.signals, *flushed.signals]
            for count, exc in step.failures:
                log.error("partition %d: %d trades failed; skipped", p, count, exc_info=exc)
            held.trades += sum(len(b) for b in batches)
            await self._emit(held, signals, step.lost, [*step.alerts, *flushed.alerts])
            held.last_seq = last_seq
            if time.monotonic() >= next_snapshot:
                await snapshots.save(p, last_seq, kernel_snapshot(kernel))
                saved_seq = last_seq
                held.snapshot_at = time.monotonic()
                next_snapshot = time.monotonic() + self.snapshot_every

        try:
            while not held.stop.is_set():
                if not await consumer.poll(handle):  # idle: orders completed by the clock
                    flushed = kernel.flush(order_clock(kernel) - ORDER_COMPLETE_US)
                    if flushed.signals:
                        await self._emit(held, flushed.signals, [], flushed.alerts)
            if consumer.last_seq > saved_seq:  # a clean stop: the next holder goes on here
                await snapshots.save(p, consumer.last_seq, kernel_snapshot(kernel))
        finally:
            with contextlib.suppress(Exception):
                await consumer.close()

    async def _consumer_without_snapshot(self, p: int) -> PartitionConsumer:
        """The consumer of a partition that has no snapshot, where ``detect_start`` says:
        the oldest trade kept, the stream's tail, or a time back (a fresh consumer each
        time: an existing one's position belongs to no kernel state this worker has)."""
        js, names, settings = self._js, self.names, self.settings
        assert js is not None
        start = detect_start(settings.detect_start)
        subjects = names.trade_subjects
        if start.kind == "earliest":
            log.info("partition %d: no snapshot, from the oldest trade the stream keeps", p)
            return PartitionConsumer(js, names.trade_stream, subjects, p, start_seq=1)
        if start.kind == "latest":
            info = await js.stream_info(names.trade_stream)
            seq = int(info.state.last_seq) + 1
            log.info(
                "partition %d: no snapshot, from the stream's tail (seq %d, %s): each "
                "symbol's first window (%d trades) warms up from live trades, and it "
                "signals only after that",
                p,
                seq,
                settings.detect_start,
                settings.window,
            )
            return PartitionConsumer(js, names.trade_stream, subjects, p, start_seq=seq)
        since = datetime.now(UTC) - timedelta(seconds=start.seconds)
        filter_subject = subjects.filter(p)
        for old in await js.consumers_info(names.trade_stream):
            if old.config.filter_subject == filter_subject:
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(names.trade_stream, old.name)
        log.info(
            "partition %d: no snapshot, from the trades stored since %s (%s): the windows "
            "warm up on them (a symbol with fewer than %d trades since then warms up on "
            "live ones too)",
            p,
            since.isoformat(timespec="seconds"),
            settings.detect_start,
            settings.window,
        )
        return PartitionConsumer(
            js,
            names.trade_stream,
            subjects,
            p,
            durable=f"detect-{p}-{secrets.token_hex(4)}",
            start_time=since,
        )

    async def _emit(
        self,
        held: _Held,
        signals: list[Signal],
        lost: list[GapRecord],
        alerts: Sequence[AlertEvent] = (),
    ) -> None:
        """Signals and gap records to the store, alert events to the outbox, then the
        signals to the stream (all before the caller acknowledges the fetch)."""
        store, publisher, outbox = self._store, self._signals, self.alerts
        assert store is not None
        assert publisher is not None
        if not signals and not lost and not alerts:
            return

        def write() -> int:
            for record in lost:
                store.add_gap(record)
            if not isinstance(store, PostgresSignalStore) or outbox is None or not alerts:
                added = store.add(signals, None) if signals else 0
                if alerts and outbox is not None:
                    outbox.add(alerts)
                return added
            # one transaction, one WAL flush, for the fetch's signals and alert events
            with store.transaction() as conn:
                added = store.add_in(conn, signals)
                new_alerts = outbox.add_in(conn, alerts)
            if alerts:
                outbox.committed(alerts, new_alerts)
            return added

        held.stored += await asyncio.to_thread(write)
        if signals:
            await publisher.publish(signals)
            held.signals += len(signals)
        await self._announce(alerts)

    async def _announce(self, alerts: Sequence[AlertEvent]) -> None:
        """The alert events just stored, on the bus for serve's live push (best effort:
        serve also reads the outbox; :mod:`spikewatch.bus.alerts`)."""
        if alerts and self.alerts is not None and self._announcer is not None:
            await self._announcer.publish(alerts)

    def _report(self) -> None:
        counters = self.counters()
        if counters:
            log.info(
                "detect %s: holds %s; %s",
                self.owner,
                _ranges(self.held()) or "nothing",
                ", ".join(
                    f"p{c.partition}: {c.trades:,} trades, {c.signals} signals ({c.stored} new)"
                    for c in counters
                ),
            )


def _ranges(partitions: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5``."""
    out: list[str] = []
    for p in sorted(partitions):
        if out and "-" in out[-1] and int(out[-1].split("-")[1]) == p - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        elif out and "-" not in out[-1] and int(out[-1]) == p - 1:
            out[-1] = f"{out[-1]}-{p}"
        else:
            out.append(str(p))
    return ",".join(out)


def _safe_url(url: str) -> str:
    """A database URL without its password, for the log."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
