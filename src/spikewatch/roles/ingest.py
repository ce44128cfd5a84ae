"""``spikewatch ingest``: the exchange's trades, in order and without gaps, into the trade
stream.

It is the one-process engine (:class:`~spikewatch.engine.Engine`: the connection pool,
parsing, warm start, gap backfill over REST, catch-up after reconnects, the listing) with
a kernel that has no detectors: what its sequencers release, in order, after gaps were
filled, is exactly what the embedded mode's detectors would see, and that is what is
published (``Kernel(on_released=...)``). So ``detect`` never sees a gap or a repeat that
the embedded mode would not.

Threads: the engine's thread runs the kernel and hands each released run of trades to a
bounded :class:`Handoff`; this role's asyncio loop (the caller's) takes them and feeds the
:class:`~spikewatch.bus.publisher.TradePublisher`. When JetStream falls behind, the
publisher's buffer fills, then the hand-off's, then the engine thread waits: the ingest
slows down rather than filling memory.

Restart: the stream is the ingest's checkpoint. At start, for each symbol, the last trade
id the stream holds (:func:`~spikewatch.bus.stream.last_published_id`) is where the kernel
resumes (:meth:`Kernel.resume`): the first live trade shows the trades since as a gap,
and backfill fetches them, as after any reconnect. Batches re-sent after a crash carry the
same ``Nats-Msg-Id`` and are dropped by JetStream; a batch cut differently is dropped
by detect's kernel as repeats (by trade id).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

import msgspec
from nats.aio.client import Client

from spikewatch.bus.connect import connect_bus, jetstream
from spikewatch.bus.names import bus_names
from spikewatch.bus.publisher import TradePublisher
from spikewatch.bus.stream import ensure_trade_stream, last_published_id
from spikewatch.config import Settings
from spikewatch.core.kernel import GapPolicy, Kernel, Released
from spikewatch.core.model import Trade, TradeBatch
from spikewatch.engine import Engine
from spikewatch.exchanges.base import Exchange
from spikewatch.roles.metrics import PUBLISH_BUCKETS_S, Histogram
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.wiring import build_exchange

log = logging.getLogger(__name__)

#: Trades waiting in the hand-off at most, beyond the publisher's own buffer.
HANDOFF_LIMIT = 200_000
#: Seconds between the counter lines in the log.
REPORT_EVERY_S = 10.0


class Handoff:
    """Released trades from the engine's thread to the publishing loop, in order; bounded
    (:meth:`put` waits while ``limit`` trades are waiting, unless :meth:`close` was called)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = HANDOFF_LIMIT) -> None:
        self._loop = loop
        self._limit = limit
        self._items: deque[TradeBatch | Trade] = deque()
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False
        self.ready = asyncio.Event()
        #: times the engine thread waited for room
        self.waits = 0
        self.trades = 0

    def put(self, trades: Sequence[Trade] | TradeBatch) -> None:
        """Hand over released trades (the kernel's ``on_released``; the engine thread)."""
        n = len(trades)
        with self._cond:
            while self._count >= self._limit and not self._closed:
                self.waits += 1
                self._cond.wait(0.5)
            wake = not self._items
            if type(trades) is TradeBatch:
                self._items.append(trades)
            else:
                self._items.extend(trades)  # type: ignore[arg-type]
            self._count += n
            self.trades += n
        if wake:
            self._loop.call_soon_threadsafe(self.ready.set)

    def take(self) -> list[TradeBatch | Trade]:
        """Everything handed over so far (the loop's thread)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._count = 0
            self._cond.notify_all()
        return items

    def wake(self) -> None:
        """Wake the loop's :meth:`take` side (from any thread): the producer is done."""
        self._loop.call_soon_threadsafe(self.ready.set)

    def close(self) -> None:
        """Stop waiting for room (the publisher failed or the role stops)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class IngestCounters(msgspec.Struct, frozen=True):
    """What an ingest has done so far."""

    released: int  # trades the kernel released (handed over for publishing)
    published: int  # trades JetStream acknowledged (stored, or already stored)
    messages: int
    duplicates: int  # messages JetStream had already stored (a restart's re-sends)
    resumed: dict[str, int]  # symbol -> the stream's last trade id it went on from


def ingest_kernel(settings: Settings, exchange: Exchange, on_released: Released) -> Kernel:
    """The engine's kernel on the same terms as :func:`~spikewatch.wiring.build_kernel`
    (watch, gap limits, warm window) but without detectors, alert rules or bars: it only
    orders, de-duplicates and gap-fills, and hands the released trades on."""
    return Kernel(
        lambda exchange, symbol: (),
        venues=(exchange,),
        watch={exchange.name: settings.named_symbols},
        gap_policy=GapPolicy.RESET,  # (the engine switches to FETCH when its loop runs)
        max_backfill=settings.max_backfill,
        warm_window=settings.window,
        bars=False,
        on_released=on_released,
    )


class IngestRole:
    """One ingest process's work: build with the settings, :meth:`run` until ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = bus_names(settings)
        self.engine: Engine | None = None
        self.publisher: TradePublisher | None = None
        self.handoff: Handoff | None = None
        self.resumed: dict[str, int] = {}
        self._nc: Client | None = None
        #: a message's first send to JetStream's ack (for /metrics)
        self.publish_latency = Histogram(PUBLISH_BUCKETS_S)

    def bus_connected(self) -> bool:
        """Whether the NATS connection is up now."""
        return self._nc is not None and self._nc.is_connected

    def problems(self) -> list[str]:
        """Why this ingest is not healthy (empty: it is), for /healthz."""
        if self._nc is None or self.engine is None:
            return ["starting"]
        reasons = []
        if not self._nc.is_connected:
            reasons.append(f"NATS connection lost ({self.settings.nats_url}); reconnecting")
        state = self.engine.status().connection.state
        if state != "connected":
            reasons.append(f"exchange not connected (state: {state})")
        return reasons

    def counters(self) -> IngestCounters:
        """A copy of the counters."""
        pub = self.publisher.counters() if self.publisher is not None else None
        return IngestCounters(
            released=self.handoff.trades if self.handoff is not None else 0,
            published=pub.acked_trades if pub is not None else 0,
            messages=pub.messages if pub is not None else 0,
            duplicates=pub.duplicates if pub is not None else 0,
            resumed=dict(self.resumed),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish until ``stop`` is set, then flush everything released to the
        stream and close. Raises BusUnavailable, PartitionMismatch or PublishError."""
        settings = self.settings
        names = self.names
        nc = self._nc = await connect_bus(settings.nats_url, name="spikewatch-ingest")
        try:
            js = jetstream(nc)
            subjects = names.trade_subjects
            await ensure_trade_stream(
                js, names.trade_stream, subjects, replicas=self.settings.bus_replicas
            )
            publisher = self.publisher = TradePublisher(js, subjects, stream=names.trade_stream)
            publisher.on_ack = self.publish_latency.observe
            await publisher.start()
            handoff = self.handoff = Handoff(asyncio.get_running_loop())
            exchange = build_exchange(settings)
            kernel = ingest_kernel(settings, exchange, handoff.put)
            for symbol in await self._stored_symbols(js, exchange.name):
                last = await last_published_id(
                    js, names.trade_stream, subjects, exchange.name, symbol
                )
                if last is not None:
                    kernel.resume(exchange.name, symbol, last)
                    self.resumed[symbol] = last
                    log.info("%s continues after trade %d (the stream's last)", symbol, last)
            # the engine's store keeps nothing of the ingest's (its checkpoint is the stream)
            engine = self.engine = Engine(
                settings, SQLiteSignalStore(":memory:"), exchange=exchange, kernel=kernel
            )
            engine.start()
            gc.freeze()  # (start-up's objects out of the collector's sight, as in detect)
            log.info(
                "ingest: %s from %s into stream %s (%d partitions) at %s",
                settings.symbol_set().describe(),
                engine.url,
                names.trade_stream,
                subjects.partitions,
                settings.nats_url,
            )
            try:
                await self._pump(stop)
            finally:
                engine.stop(timeout=2.0)
                handoff.close()
                rest = handoff.take()
                if rest:
                    await publisher.publish(rest)
                await publisher.close()
                engine.store.close()
                log.info("ingest stopped: %s", self.counters())
        finally:
            await nc.close()

    async def _stored_symbols(self, js: object, exchange: str) -> list[str]:
        """The symbols to resume: the named ones, or (ALL) those the stream holds."""
        named = list(self.settings.named_symbols)
        if named:
            return named
        from nats.js import JetStreamContext

        assert isinstance(js, JetStreamContext)
        prefix = self.names.trade_subjects.prefix
        info = await js.stream_info(
            self.names.trade_stream, subjects_filter=f"{prefix}.*.{exchange}.*"
        )
        return sorted({s.rsplit(".", 1)[1] for s in (info.state.subjects or {})})

    async def _pump(self, stop: asyncio.Event) -> None:
        """Released trades into the publisher until ``stop``."""
        handoff, publisher = self.handoff, self.publisher
        assert handoff is not None
        assert publisher is not None
        stopping = asyncio.ensure_future(stop.wait())
        next_report = time.monotonic() + REPORT_EVERY_S
        try:
            while not stop.is_set():
                ready = asyncio.ensure_future(handoff.ready.wait())
                await asyncio.wait(
                    {ready, stopping}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                ready.cancel()
                handoff.ready.clear()
                items = handoff.take()
                if items:
                    await publisher.publish(items)  # (PublishError: stop, with the reason)
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + REPORT_EVERY_S
                    log.info("ingest: %s", self.counters())
        finally:
            stopping.cancel()
