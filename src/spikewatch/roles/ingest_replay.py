"""``spikewatch ingest --replay FILE...``: recorded or historical trades into the trade
stream, as fast as the bus takes them, then exit.

What a user loads this way is a past day (or a recording) for the detect workers to
work through: the same files, read by the same reader as ``spikewatch replay``
(:func:`~spikewatch.replay.readers.read_batches`: formats, symbols from file names, bad
rows counted), published by the same :class:`~spikewatch.bus.publisher.TradePublisher`
as the live ingest. The files' trades go into the stream as they are; detect's kernel
orders, de-duplicates and treats a jump in ids as a gap (``RESET``), as ``spikewatch
replay`` does with its default ``--on-gap reset``, so the signals are those of
``spikewatch replay`` on the same files (``tests/integration/test_ingest_replay.py``).

It also measures the bus at its capacity: a WebSocket feed in one process cannot offer
200,000 trades/s, files can (``bench/bench_roles.py``).

The stream is the checkpoint here too: for each symbol, trades with an id at or below
the last one the stream holds are skipped (counted), so loading the same files twice
publishes them once, and a load stopped half-way goes on where it stopped.

Threads: a reader thread parses the files and hands batches over through the live
ingest's bounded :class:`~spikewatch.roles.ingest.Handoff`; the caller's loop publishes
them. Gzip and the CSV parser's bulk work release the GIL, so reading and publishing
overlap on two cores.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
from nats.js import JetStreamContext

from spikewatch.bus.connect import connect_bus, jetstream
from spikewatch.bus.names import bus_names
from spikewatch.bus.publisher import TradePublisher
from spikewatch.bus.stream import ensure_trade_stream, last_published_id
from spikewatch.config import Settings
from spikewatch.core.model import Trade, TradeBatch
from spikewatch.replay.readers import ReadStats, read_batches
from spikewatch.roles.ingest import Handoff
from spikewatch.wiring import build_exchange

log = logging.getLogger(__name__)

#: Trades a read batch holds at most (the publisher cuts messages of 500 from them).
READ_BATCH = 8192


class ReplayCounters(msgspec.Struct, frozen=True):
    """What a replay into the stream did."""

    files: int
    read: int  # trades read from the files (of the symbols kept)
    published: int  # trades JetStream acknowledged
    skipped: int  # trades at or below the stream's last id of their symbol
    other: int  # trades of symbols not asked for (--symbols)
    bad_rows: int
    messages: int
    duplicates: int  # messages JetStream had stored already (same Nats-Msg-Id)
    symbols: tuple[str, ...]
    seconds: float  # from the first read to the last acknowledgement


class ReplayIngest:
    """Publish the trades of ``paths`` (see the module docstring): build, :meth:`run`."""

    def __init__(
        self,
        settings: Settings,
        paths: Sequence[str | Path],
        *,
        fmt: str | None = None,
        symbol: str | None = None,
        symbols: frozenset[str] | None = None,
    ) -> None:
        self.settings = settings
        self.names = bus_names(settings)
        self.paths = list(paths)
        self.symbols = symbols
        self.stats = ReadStats()
        self.exchange = build_exchange(settings)
        # planned now: a missing file or a bad --format is a ValueError/OSError before
        # anything connects (read_batches checks its plan when called, reads when iterated)
        self._batches: Iterator[TradeBatch] = read_batches(
            self.paths, fmt=fmt, symbol=symbol, stats=self.stats, exchange=self.exchange
        )
        self.publisher: TradePublisher | None = None
        self._last: dict[str, int | None] = {}  # symbol -> the stream's last id at start
        self._read = self._skipped = self._other = 0
        self._seen: set[str] = set()
        self._error: BaseException | None = None
        self._done = False
        self._stopping = False
        self._seconds = 0.0

    def counters(self) -> ReplayCounters:
        """A copy of the counters."""
        pub = self.publisher.counters() if self.publisher is not None else None
        return ReplayCounters(
            files=self.stats.files,
            read=self._read,
            published=pub.acked_trades if pub is not None else 0,
            skipped=self._skipped,
            other=self._other,
            bad_rows=sum(self.stats.bad_rows.values()),
            messages=pub.messages if pub is not None else 0,
            duplicates=pub.duplicates if pub is not None else 0,
            symbols=tuple(sorted(self._seen)),
            seconds=self._seconds,
        )

    async def run(self, stop: asyncio.Event) -> ReplayCounters:
        """Publish every trade of the files (or until ``stop``), wait until all of it is
        stored, and return the counters. Raises BusUnavailable, PartitionMismatch,
        PublishError, or the reader's ValueError/OSError (a file that cannot be read)."""
        settings, names = self.settings, self.names
        nc = await connect_bus(settings.nats_url, name="spikewatch-ingest-replay")
        try:
            js = jetstream(nc)
            await ensure_trade_stream(
                js, names.trade_stream, names.trade_subjects, replicas=settings.bus_replicas
            )
            publisher = self.publisher = TradePublisher(
                js, names.trade_subjects, stream=names.trade_stream
            )
            await publisher.start()
            handoff = Handoff(asyncio.get_running_loop())
            reader = threading.Thread(
                target=self._read_files, args=(handoff,), name="ingest-replay-reader", daemon=True
            )
            started = time.perf_counter()
            reader.start()
            try:
                await self._pump(js, handoff, stop)
            finally:
                self._stopping = True
                handoff.close()
                await asyncio.to_thread(reader.join)
            await publisher.close()
            self._seconds = time.perf_counter() - started
        finally:
            await nc.close()
        if self._error is not None:
            raise self._error
        return self.counters()

    def _read_files(self, handoff: Handoff) -> None:
        """The reader thread: the files' batches into ``handoff``, in order."""
        try:
            for batch in self._batches:
                if self._stopping:
                    break
                if self.symbols is not None and batch.symbol not in self.symbols:
                    self._other += len(batch)
                    continue
                self._read += len(batch)
                handoff.put(batch)
        except BaseException as exc:  # a file that cannot be read: reported by run()
            self._error = exc
        finally:
            self._done = True
            handoff.wake()

    async def _pump(self, js: JetStreamContext, handoff: Handoff, stop: asyncio.Event) -> None:
        """Read batches into the publisher until the reader is done (or ``stop``)."""
        publisher = self.publisher
        assert publisher is not None
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():  # (SIGTERM: what was taken is flushed, then exit)
                done = self._done  # (read before taking: nothing can come after it)
                items = handoff.take()
                if items:
                    await publisher.publish(await self._new(js, items))
                elif done:
                    return
                else:
                    ready = asyncio.ensure_future(handoff.ready.wait())
                    await asyncio.wait(
                        {ready, stopping}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                    )
                    ready.cancel()
                    handoff.ready.clear()
        finally:
            stopping.cancel()

    async def _new(
        self, js: JetStreamContext, items: Sequence[TradeBatch | Trade]
    ) -> list[TradeBatch | Trade]:
        """The trades of ``items`` after the stream's last id of their symbol."""
        out: list[TradeBatch | Trade] = []
        exchange = self.exchange.name
        for item in items:
            assert type(item) is TradeBatch
            symbol = item.symbol
            if symbol not in self._seen:
                self._seen.add(symbol)
                last = await last_published_id(
                    js, self.names.trade_stream, self.names.trade_subjects, exchange, symbol
                )
                self._last[symbol] = last
                if last is not None:
                    log.info(
                        "%s: the stream holds trades up to %d; older ones skipped", symbol, last
                    )
            last = self._last[symbol]
            if last is not None and item.trade_ids[0] <= last:
                ids = item.trade_ids
                keep = next((i for i, t in enumerate(ids) if t > last), len(ids))
                self._skipped += keep
                if keep == len(ids):
                    continue
                item = item.slice(keep, len(ids))
            out.append(item)
        return out
