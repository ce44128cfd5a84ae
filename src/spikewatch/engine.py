"""The engine: ingest -> parse -> pipeline -> sinks, on one background thread.

One thread runs an asyncio loop with the WebSocket client. Frames are parsed and run
through the pipeline on that loop, under one lock that the web threads also take to read
counters; signals go to the latest-signal map, the store writer and any listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from itertools import islice
from operator import le

import msgspec

from spikewatch.config import Settings
from spikewatch.core.bars import Bar, BarSeries
from spikewatch.core.decimal import units_to_float
from spikewatch.core.model import Signal, Trade, TradeBatch, iso_utc
from spikewatch.core.pipeline import increasing as _increasing
from spikewatch.core.sequencer import Gap, Sequencer
from spikewatch.exchanges import EXCHANGES, Control, Exchange, MalformedFrame
from spikewatch.exchanges.binance import TRADES_WEIGHT
from spikewatch.hub import Event, Hub, HubStats
from spikewatch.ingest.backfill import fetch_range, fetch_recent
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.client import ClientStatus, StreamClient
from spikewatch.ingest.ratelog import RateLimitedLog
from spikewatch.ingest.recorder import FrameRecorder
from spikewatch.ingest.rest import RestClient, RestError, RestStats
from spikewatch.store.base import Checkpoint, GapRecord, SignalStore
from spikewatch.store.recent import RecentSignals
from spikewatch.store.writer import StoreWriter, WriterStats
from spikewatch.wiring import build_pipeline

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


def _hand_over() -> None:
    """Let the threads that just got signals (live-stream writers) run now, before the
    rest of a burst: the CPU goes to them without waiting for the GIL's switch interval."""
    os.sched_yield()


#: Signals kept in memory for history pages (about 2 MB of JSON).
RECENT_SIGNALS = 5000

#: Reads of at least this many frames take the batch paths (fixed costs per call make
#: them slower than frame by frame on a handful of frames).
BATCH_FROM = 32

SignalListener = Callable[[Signal], None]


class SymbolStatus(msgspec.Struct, frozen=True):
    """What ``/api/status`` says about one symbol."""

    exchange: str
    symbol: str
    connection: str
    trades: int
    signals: int
    warmed_up: bool
    last_trade_id: int | None
    last_trade_time: str | None
    last_price: float | None
    duplicates_dropped: int
    gaps: int
    missing_trades: int
    reconnects: int
    malformed_frames: int
    backfilling: bool  # a gap is being fetched; live trades are held meanwhile
    backfills: int  # gaps filled over REST
    backfilled_trades: int
    gap_records: int  # gaps that could not be filled (detectors warmed up again)
    watchdog_resubscribes: int


class EngineStatus(msgspec.Struct, frozen=True):
    """What ``/api/status`` says about the engine as a whole."""

    running: bool
    exchange: str
    url: str
    connection: ClientStatus
    frames: int
    malformed_frames: dict[str, int]
    ignored_frames: int
    symbols: dict[str, SymbolStatus]
    store: WriterStats
    signals_by_detector: dict[str, int]
    stream: HubStats
    rest: RestStats
    recent_gaps: list[GapRecord]
    restored_from_checkpoint: list[str]


#: Upper bounds (ms) of the ingest-lag histogram: local receive time minus exchange time.
LAG_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: Upper bounds (ms) of the store's batch-write latency histogram.
WRITE_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class LagHistogram(msgspec.Struct, frozen=True):
    """Counts by latency (ms), per bucket of :data:`LAG_BUCKETS_MS` (ingest lag) or
    :data:`WRITE_BUCKETS_MS` (store writes), plus +Inf."""

    counts: list[int]  # not cumulative; the last entry is above the last bound
    sum_ms: float


class LiveSymbol(msgspec.Struct, frozen=True):
    """One symbol in the periodic ``status`` event of the live stream."""

    symbol: str
    connection: str
    last_price: float | None
    trades: int
    trades_per_s: float
    signals: int
    bar: Bar | None


class Engine:
    """Owns the ingest thread, the pipeline and the store writer; start once, stop once."""

    def __init__(
        self,
        settings: Settings,
        store: SignalStore,
        *,
        exchange: Exchange | None = None,
        backoff: Backoff | None = None,
        stable_after: float = 10.0,
        rest: RestClient | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.exchange: Exchange = exchange or EXCHANGES[settings.exchange]()
        self.url = self.exchange.stream_url(settings.ws_url, settings.symbols)
        self._symbols = frozenset(settings.symbols)
        self._pipeline = build_pipeline(settings)
        self._backoff = backoff or Backoff(first=1.0, cap=settings.reconnect_max_delay)
        self._stable_after = stable_after
        self._lock = threading.Lock()
        self._listeners: list[SignalListener] = []
        self._frames = 0
        self._ignored = 0
        self._malformed: dict[str, int] = {}
        self._ratelog = RateLimitedLog(log)
        self._latest: dict[str, Signal] = {}
        self._latest_any: Signal | None = None
        self._latest_any_json: bytes | None = None  # its encoding, for the web fast path
        self.hub = Hub()
        self.status_interval = 1.0  # seconds between live "status" events
        self._seq = store.max_seq()  # delivery numbers continue across restarts
        # After a restart from a checkpoint, the trades after it are processed again and
        # raise the signals already stored: those are not delivered a second time.
        self._delivered_upto = store.last_trade_ids(self.exchange.name)
        self._by_detector: dict[str, int] = {}
        self._bars: dict[str, BarSeries] = {s: BarSeries() for s in settings.symbols}
        self._lag_counts: dict[str, list[int]] = {
            s: [0] * (len(LAG_BUCKETS_MS) + 1) for s in settings.symbols
        }
        self._lag_sum: dict[str, float] = dict.fromkeys(settings.symbols, 0.0)
        # its own lock: the writer thread must never wait on the ingest lock (that thread
        # may hold it while waiting for room in the writer's queue)
        self._write_lock = threading.Lock()
        self._write_counts = [0] * (len(WRITE_BUCKETS_MS) + 1)
        self._write_sum_ms = 0.0
        self._rate_mark: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self.rest = rest or RestClient(settings.rest_url)
        self._sequencers = {s: Sequencer() for s in settings.symbols}
        self._backfills = dict.fromkeys(settings.symbols, 0)
        self._backfilled = dict.fromkeys(settings.symbols, 0)
        self._gap_records = dict.fromkeys(settings.symbols, 0)
        self._recent_gaps: list[GapRecord] = []
        self._watchdog = dict.fromkeys(settings.symbols, 0)
        self._last_recv: dict[str, float] = {}  # monotonic seconds of the last live trade
        self._interval: dict[str, float] = {}  # smoothed seconds between live trades
        self._tasks: set[asyncio.Task[None]] = set()
        self._restored = self._restore_checkpoints()
        self._client: StreamClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = threading.Event()
        self._writer: StoreWriter | None = None
        self._recorder = (
            FrameRecorder(
                settings.record_dir,
                prefix=f"{self.exchange.name}-{'-'.join(settings.symbols).lower()}",
            )
            if settings.record_dir
            else None
        )
        for symbol in settings.symbols:
            stored = store.latest(symbol)
            if stored is not None:
                self._remember(stored)
        any_stored = store.latest()
        if any_stored is not None:
            self._remember(any_stored)
        #: the latest signals in memory, for history pages (those before start-up are in
        #: the store only)
        self.recent = RecentSignals(
            RECENT_SIGNALS,
            floor=(any_stored.time_us, any_stored.id) if any_stored is not None else None,
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the ingest thread; a second call raises (never two engines)."""
        with self._lock:
            if self._started:
                raise RuntimeError("the engine was already started")
            self._started = True
        self._writer = StoreWriter(
            self.store, maxsize=self.settings.store_queue, on_written=self._record_write
        )
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="spikewatch-engine", daemon=True
        )
        self._thread.start()
        ready.wait(5)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop ingest, flush pending signals to the store; returns within ``timeout``."""
        deadline = time.monotonic() + timeout
        self.hub.close()
        loop, client = self._loop, self._client
        if loop is not None and client is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(client.stop)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.save_checkpoints()
        if self._writer is not None:
            self._writer.flush(max(0.1, deadline - time.monotonic()))
            self._writer.close(max(0.1, deadline - time.monotonic()))
        if self._recorder is not None:
            self._recorder.close()
        self._stopped.set()

    def request_reconnect(self) -> bool:
        """Ask for a fresh connection (any thread); False when the engine is not running."""
        loop, client = self._loop, self._client
        if loop is None or client is None or loop.is_closed() or self._stopped.is_set():
            return False
        try:
            loop.call_soon_threadsafe(client.request_rotation)
        except RuntimeError:  # the loop closed in between: the engine has just stopped
            return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every signal raised so far is in the store."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def _thread_main(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except Exception:
            log.exception("the ingest loop failed")

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = StreamClient(
            self.url,
            self.handle_frames,
            rotate_after=self.settings.rotate_after,
            backoff=self._backoff,
            stable_after=self._stable_after,
            on_connect=self._on_connect,
        )
        ready.set()
        ticker = asyncio.create_task(self._publish_status())
        try:
            await self._warm_start()
            await self._client.run()
        finally:
            ticker.cancel()
            for task in list(self._tasks):
                task.cancel()

    async def _publish_status(self) -> None:
        """Every ``status_interval``: a ``status`` event for live-stream clients, the
        watchdog, and (every ``checkpoint_interval``) a checkpoint."""
        next_checkpoint = time.monotonic() + self.settings.checkpoint_interval
        while True:
            await asyncio.sleep(self.status_interval)
            try:
                self.hub.publish(Event("status", _encode(self.live_status())))
                self._check_silence()
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + self.settings.checkpoint_interval
                    self.save_checkpoints()
            except Exception:
                log.exception("the periodic status task failed")

    # -- recovery: warm start, gaps, checkpoints, watchdog ---------------------------

    def _restore_checkpoints(self) -> list[str]:
        """Continue each symbol from its stored checkpoint (same detectors only)."""
        restored = []
        for symbol, cp in self.store.checkpoints(self.exchange.name).items():
            if symbol not in self._sequencers:
                continue
            if self._pipeline.restore(self.exchange.name, symbol, cp.last_id, cp.detectors):
                self._sequencers[symbol].last_id = cp.last_id
                restored.append(symbol)
                log.info("%s continues from its checkpoint at trade %d", symbol, cp.last_id)
        return restored

    def save_checkpoints(self) -> None:
        """Queue a checkpoint of every symbol, written after the signals before it."""
        if self._writer is None:
            return
        with self._lock:
            points = []
            for symbol in self.settings.symbols:
                state = self._pipeline.checkpoint(self.exchange.name, symbol)
                if state is not None:
                    points.append(
                        Checkpoint(
                            exchange=self.exchange.name,
                            symbol=symbol,
                            last_id=state[0],
                            detectors=state[1],
                            saved_at=time.time(),
                        )
                    )
        if points:
            self._writer.put_job(lambda store: store.save_checkpoints(points))

    async def _warm_start(self) -> None:
        """Fill each fresh symbol's window from recent trades, so detection works from the
        first live trade; without REST the window fills from the stream instead."""
        need = self.settings.window
        for symbol in self.settings.symbols:
            if symbol in self._restored or need == 0:
                continue
            try:
                trades = await fetch_recent(self.rest, self.exchange, symbol, need)
            except Exception as exc:  # REST down or broken: warm up from the stream instead
                log.warning(
                    "warm start of %s skipped (%s); warming up from the stream", symbol, exc
                )
                continue
            with self._lock:
                ready: list[Trade] = []
                for trade in trades:
                    ready.extend(self._sequencers[symbol].offer(trade)[0])
            self._process(ready)
            log.info("%s warmed up from %d recent trades", symbol, len(trades))

    def _on_connect(self, reconnect: bool) -> None:
        """After a lost connection, look for trades missed at its end: without this, a
        quiet symbol's gap would only show with its next trade."""
        if not reconnect:
            return
        loop = asyncio.get_running_loop()
        for symbol, sequencer in self._sequencers.items():
            if sequencer.last_id >= 0 and sequencer.gap is None:
                task = loop.create_task(self._catch_up(symbol))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, symbol: str) -> None:
        """Offer the trades after the last one seen, as if they had come live."""
        sequencer = self._sequencers[symbol]
        try:
            body = await self.rest.get(
                self.exchange.historical_trades_path(symbol, sequencer.last_id + 1, 1000),
                TRADES_WEIGHT,
            )
            trades = self.exchange.parse_rest_trades(body, symbol)
        except Exception as exc:  # only an optimisation: the next live trade shows any gap
            log.info("catch-up of %s after a reconnect skipped: %s", symbol, exc)
            return
        ready: list[Trade] = []
        opened: Gap | None = None
        with self._lock:
            for trade in trades:
                got, opened = sequencer.offer(trade)
                ready.extend(got)
                if opened is not None:  # the page itself jumped: fetch the hole like any gap
                    break
            self._backfilled[symbol] += len(ready)
        self._process(ready)
        if opened is not None:
            self._start_backfill(opened)

    def _start_backfill(self, gap: Gap) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (frames fed by hand): nothing can be fetched
            self._abandon(gap, "no REST access in this mode")
            return
        task = loop.create_task(self._backfill(gap))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _backfill(self, gap: Gap) -> None:
        """Fetch a gap over REST and release the held live trades after it, in order."""
        symbol = gap.symbol
        sequencer = self._sequencers[symbol]
        first = gap.first_id
        if gap.size > max(self.settings.max_backfill, self.settings.window):
            # too many to fetch: keep the trades just before the live ones for a warm start
            first = gap.last_id - self.settings.window + 1
            with self._lock:
                record = self._record_gap(gap, gap.first_id, first - 1, "larger than max_backfill")
                self._pipeline.reset(self.exchange.name, symbol)
                sequencer.skip_to(first)
            self._store_gap(record)
        log.info(
            "fetching %d missed %s trades (%d..%d)",
            gap.last_id - first + 1,
            symbol,
            first,
            gap.last_id,
        )

        def on_page(page: list[Trade]) -> bool:
            with self._lock:
                ready, closed = sequencer.fill(page)
                self._backfilled[symbol] += len(page)
            self._process(ready)
            return closed

        try:
            await fetch_range(self.rest, self.exchange, symbol, first, gap.last_id, on_page)
        except Exception as exc:  # whatever failed, the gap must not stay open unattended
            log.warning("could not fill the %s gap %d..%d: %s", symbol, first, gap.last_id, exc)
            reason = str(exc) if isinstance(exc, RestError) else f"{type(exc).__name__}: {exc}"
            self._abandon(gap, reason)
            return
        with self._lock:
            self._backfills[symbol] += 1
            again = sequencer.gap
        if again is not None:  # the held trades had a gap of their own
            self._start_backfill(again)

    def _abandon(self, gap: Gap, reason: str) -> None:
        """Give a gap up: record it, warm the detectors up again, release held trades."""
        sequencer = self._sequencers[gap.symbol]
        with self._lock:
            first = sequencer.last_id + 1
            held = sequencer.give_up()
            record = self._record_gap(gap, first, gap.last_id, reason)
            self._pipeline.reset(self.exchange.name, gap.symbol)
            again = sequencer.gap
        self._store_gap(record)
        self._process(held)
        if again is not None:
            self._start_backfill(again)

    def _record_gap(self, gap: Gap, first_id: int, last_id: int, reason: str) -> GapRecord | None:
        """Under the lock: count a gap record for ids ``first_id..last_id`` (None if empty);
        :meth:`_store_gap` it after the lock is released."""
        if last_id < first_id:
            return None
        record = GapRecord(
            exchange=gap.exchange,
            symbol=gap.symbol,
            first_id=first_id,
            last_id=last_id,
            missing=last_id - first_id + 1,
            time_us=gap.time_us,
            timestamp=iso_utc(gap.time_us),
            reason=reason,
        )
        self._gap_records[gap.symbol] += 1
        self._recent_gaps = [record, *self._recent_gaps[:19]]
        log.warning(
            "gap in %s: %d trades (%d..%d) lost: %s",
            gap.symbol,
            record.missing,
            first_id,
            last_id,
            reason,
        )
        return record

    def _store_gap(self, record: GapRecord | None) -> None:
        """Write a gap record (through the writer, in order) and push it to live clients."""
        if record is None:
            return
        if self._writer is not None:
            self._writer.put_job(lambda store: store.add_gap(record))
        else:
            self.store.add_gap(record)
        self.hub.publish(Event("gap", _encode(record), symbol=record.symbol))

    def _check_silence(self) -> None:
        """Resubscribe when a symbol has been silent far longer than its usual interval."""
        client = self._client
        if client is None or client.status.state != "connected":
            return
        now = time.monotonic()
        for symbol, last in list(self._last_recv.items()):
            usual = self._interval.get(symbol, self.settings.watchdog_silence)
            limit = min(max(self.settings.watchdog_silence, 50 * usual), 3600.0)
            if now - last > limit:
                log.warning(
                    "%s silent for %.0fs (usually a trade every %.2fs): resubscribing",
                    symbol,
                    now - last,
                    usual,
                )
                self._watchdog[symbol] += 1
                for other in self._last_recv:
                    self._last_recv[other] = now
                client.request_rotation()
                return

    # -- the hot path ----------------------------------------------------------------

    def handle_frame(self, frame: bytes, recv_ns: int = 0) -> bool:
        """Parse one frame and run its trade through the pipeline; True on a shutdown notice."""
        return self.handle_frames((frame,), recv_ns)

    def handle_frames(self, frames: Sequence[bytes], recv_ns: int = 0) -> bool:
        """Parse frames that arrived together (one network read) and run their trades
        through the pipeline in order; True when one of them was a shutdown notice.

        Exactly what :meth:`handle_frame` on each of them would do. In the usual case (all
        of them trades, following on from the last ones) they go through the batch
        paths: one decoding call for all, the detectors over columns."""
        recorder = self._recorder
        if recorder is not None:
            try:
                for frame in frames:
                    recorder.write(frame, recv_ns)
            except OSError as exc:  # a full disk must not stop detection
                self._ratelog.warning("recorder", f"recording a frame failed: {exc}")
        if len(frames) >= BATCH_FROM:
            try:
                parsed = self.exchange.parse_batch(frames)
            except Exception:  # a parser bug: the frame-by-frame path reports each frame
                parsed = None
            if parsed is not None and not parsed.errors and not parsed.controls:
                self._handle_batches(parsed.batches, recv_ns)
                return False
        return self._handle_each(frames, recv_ns)

    def _handle_batches(self, batches: list[TradeBatch], recv_ns: int) -> None:
        """Trades parsed in bulk: counted, then sequenced and processed in order."""
        tracked: list[TradeBatch | Trade] = []
        with self._lock:
            for batch in batches:
                n = len(batch)
                self._frames += n
                if batch.symbol not in self._symbols:
                    self._ignored += n
                    continue
                tracked.append(batch)
        for symbol in {batch.symbol for batch in batches} & self._symbols:
            self._note_arrival(symbol)
        self._run_in_order(tracked)
        if recv_ns:  # metrics after the signals have gone out
            with self._lock:
                for batch in batches:
                    if batch.symbol in self._symbols:
                        self._count_lag(batch.symbol, recv_ns, batch.times_us)

    def _run_in_order(self, units: list[TradeBatch | Trade]) -> None:
        """Offer trades (or runs of them) to their sequencers in order and process what
        is released. A run that follows on from the last trade goes through the batch
        path whole; any other run, trade by trade. At a gap, what came before it is
        processed and the gap handed to backfill before anything after it is offered:
        without an event loop the gap is given up at once, and the trades after it must
        then come in the order frame-by-frame handling gives them."""
        i = 0
        while i < len(units):
            work: list[TradeBatch | list[Trade]] = []
            gap: Gap | None = None
            with self._lock:
                while i < len(units) and gap is None:
                    unit = units[i]
                    i += 1
                    if type(unit) is Trade:
                        released, gap = self._sequencers[unit.symbol].offer(unit)
                        if released:
                            work.append(released)
                        continue
                    assert isinstance(unit, TradeBatch)
                    ids = unit.trade_ids
                    sequencer = self._sequencers[unit.symbol]
                    if _increasing(ids) and sequencer.accept_run(ids[0], ids[-1], len(ids)):
                        work.append(unit)
                    else:
                        units[i:i] = unit.trades()  # its trades one by one, from here
            for item in work:
                try:
                    if isinstance(item, list):
                        self._process(item)
                    else:
                        self._process_batch(item)
                except Exception:  # a bug must cost these trades, never the rest of the read
                    log.exception("processing %d trades failed; they are skipped", len(item))
            if gap is not None:
                self._start_backfill(gap)

    def _count_lag(self, symbol: str, recv_ns: int, times_us: Sequence[int]) -> None:
        """Add the receive lag of trades to the symbol's histogram (under the lock)."""
        recv_us = recv_ns // 1000
        counts = self._lag_counts[symbol]
        total = 0
        i, n = 0, len(times_us)
        ordered = all(map(le, times_us, islice(times_us, 1, None)))
        while i < n:  # trades of a burst share their time: one bucket lookup per time
            time_us = times_us[i]
            j = bisect_right(times_us, time_us, i) if ordered else i + 1
            lag_us = recv_us - time_us
            total += lag_us * (j - i)
            counts[bisect_left(LAG_BUCKETS_MS, lag_us / 1000)] += j - i
            i = j
        self._lag_sum[symbol] += total / 1000

    def _handle_each(self, frames: Sequence[bytes], recv_ns: int) -> bool:
        """Frames one by one: each malformed one counted and logged, controls noted."""
        parse = self.exchange.parse
        items: list[Trade | Control] = []
        for frame in frames:
            try:
                items.append(parse(frame))
            except MalformedFrame as exc:
                self._count_malformed(exc.kind, str(exc), frame)
            except Exception as exc:  # a parser bug must cost one frame, never the stream
                self._count_malformed("parser_error", f"{type(exc).__name__}: {exc}", frame)
        if not items:
            return False
        trades: list[TradeBatch | Trade] = []
        shutdown = False
        recv_us = recv_ns // 1000
        with self._lock:
            self._frames += len(items)
            for item in items:
                if type(item) is not Trade:
                    if item is Control.IGNORED:
                        self._ignored += 1
                    shutdown = shutdown or item is Control.SHUTDOWN
                    continue
                symbol = item.symbol
                if symbol not in self._symbols:
                    self._ignored += 1
                    continue
                if recv_ns:
                    lag_ms = (recv_us - item.time_us) / 1000
                    self._lag_counts[symbol][bisect_left(LAG_BUCKETS_MS, lag_ms)] += 1
                    self._lag_sum[symbol] += lag_ms
                trades.append(item)
        for symbol in {trade.symbol for trade in trades}:
            self._note_arrival(symbol)
        self._run_in_order(trades)
        return shutdown

    def _process_batch(self, batch: TradeBatch) -> None:
        """Run a batch of one symbol's in-order trades through the pipeline; emit what
        they raise."""
        with self._lock:
            found = self._pipeline.process_batch(batch)
            for signal in found:
                self._remember(signal)
        for signal in found:
            self._emit(signal)
        if found:
            _hand_over()
        with self._lock:  # the chart's bars after the signals: they are not waited for
            self._bars[batch.symbol].update_batch(batch)

    def _process(self, trades: list[Trade]) -> None:
        """Run in-order trades through the pipeline; emit what they raise."""
        found: list[Signal] = []
        with self._lock:
            for trade in trades:
                signals = self._pipeline.process(trade)
                self._bars[trade.symbol].update(trade)
                for signal in signals:
                    self._remember(signal)
                    found.append(signal)
        for signal in found:
            self._emit(signal)
        if found:
            _hand_over()

    def _note_arrival(self, symbol: str) -> None:
        now = time.monotonic()
        last = self._last_recv.get(symbol)
        self._last_recv[symbol] = now
        if last is not None:
            usual = self._interval.get(symbol)
            gap = now - last
            self._interval[symbol] = gap if usual is None else usual + 0.02 * (gap - usual)

    def _count_malformed(self, kind: str, reason: str, frame: bytes) -> None:
        with self._lock:
            self._frames += 1
            self._malformed[kind] = self._malformed.get(kind, 0) + 1
        self._ratelog.warning(kind, f"skipped a malformed frame ({reason}): {frame[:120]!r}")

    def _remember(self, signal: Signal) -> None:
        current = self._latest.get(signal.symbol)
        if current is None or (signal.time_us, signal.id) >= (current.time_us, current.id):
            self._latest[signal.symbol] = signal
        best = self._latest_any
        if best is None or (signal.time_us, signal.id) >= (best.time_us, best.id):
            self._latest_any = signal
            self._latest_any_json = _encode(signal)

    def _emit(self, signal: Signal) -> None:
        upto = self._delivered_upto.get((signal.symbol, signal.detector))
        if upto is not None and signal.trade_id <= upto:
            return  # stored and delivered before the restart
        self._deliver(signal)

    def _deliver(self, signal: Signal) -> None:
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._by_detector[signal.detector] = self._by_detector.get(signal.detector, 0) + 1
        # queued for the store before it is published: a live client that subscribes in
        # between finds it in the store (it is not in its queue)
        if self._writer is not None:
            self._writer.put(signal, seq)
        payload = _encode(signal)
        self.hub.publish(Event.signal(signal, seq, payload))
        self.recent.add(signal, payload)
        for listener in tuple(self._listeners):
            try:
                listener(signal)
            except Exception:
                log.exception("a signal listener failed")
        log.info(  # last: a log line costs more than the rest
            "%s %s %s: %s @ %s, %.1fx the window mean",
            signal.signal_type,
            signal.symbol,
            signal.side,
            signal.volume,
            signal.price,
            signal.ratio,
        )

    # -- read side (any thread) ------------------------------------------------------

    def add_listener(self, listener: SignalListener) -> None:
        """Call ``listener(signal)`` on the ingest thread for every new signal (keep it quick)."""
        with self._lock:
            self._listeners.append(listener)

    def last_seq(self) -> int:
        """The delivery number of the latest signal emitted."""
        with self._lock:
            return self._seq

    def latest_signal_json(self) -> bytes | None:
        """The latest signal over all symbols, already encoded as the API sends it."""
        return self._latest_any_json  # one reference read: an immutable bytes object

    def latest_signal(self, symbol: str | None = None) -> Signal | None:
        """The latest signal (by trade time) of ``symbol``, or of all symbols."""
        with self._lock:
            return self._latest_any if symbol is None else self._latest.get(symbol)

    def status(self) -> EngineStatus:
        """A consistent snapshot of every counter."""
        client = self._client
        connection = client.status if client is not None else ClientStatus(url=self.url)
        thread = self._thread
        running = (
            self._started
            and not self._stopped.is_set()
            and thread is not None
            and thread.is_alive()
        )
        with self._lock:
            stats = {s.symbol: s for s in self._pipeline.stats()}
            malformed = dict(self._malformed)
            if connection.oversized_frames:
                malformed["frame_too_large"] = connection.oversized_frames
            frames, ignored = self._frames, self._ignored
            gaps_open = {s: q.gap is not None for s, q in self._sequencers.items()}
            dup_live = {s: q.duplicates for s, q in self._sequencers.items()}
            backfills, backfilled = dict(self._backfills), dict(self._backfilled)
            gap_records, watchdog = dict(self._gap_records), dict(self._watchdog)
            recent_gaps = list(self._recent_gaps)
        malformed_total = sum(malformed.values())
        symbols = {}
        for symbol in self.settings.symbols:
            s = stats.get(symbol)
            symbols[symbol] = SymbolStatus(
                exchange=self.exchange.name,
                symbol=symbol,
                connection=connection.state if running else "stopped",
                trades=s.trades if s else 0,
                signals=s.signals if s else 0,
                warmed_up=s.warmed_up if s else False,
                last_trade_id=s.last_trade_id if s else None,
                last_trade_time=iso_utc(s.last_trade_time_us)
                if s and s.last_trade_time_us is not None
                else None,
                last_price=units_to_float(s.last_price) if s and s.last_price is not None else None,
                duplicates_dropped=(s.duplicates if s else 0) + dup_live.get(symbol, 0),
                gaps=s.gaps if s else 0,
                missing_trades=s.missing_trades if s else 0,
                reconnects=connection.reconnects,
                malformed_frames=malformed_total,
                backfilling=gaps_open.get(symbol, False),
                backfills=backfills.get(symbol, 0),
                backfilled_trades=backfilled.get(symbol, 0),
                gap_records=gap_records.get(symbol, 0),
                watchdog_resubscribes=watchdog.get(symbol, 0),
            )
        writer_stats = (
            self._writer.stats() if self._writer is not None else WriterStats(0, 0, 0, 0, 0, None)
        )
        with self._lock:
            by_detector = dict(self._by_detector)
        return EngineStatus(
            running=running,
            exchange=self.exchange.name,
            url=self.url,
            connection=connection,
            frames=frames,
            malformed_frames=malformed,
            ignored_frames=ignored,
            symbols=symbols,
            store=writer_stats,
            signals_by_detector=by_detector,
            stream=self.hub.stats(),
            rest=self.rest.stats(),
            recent_gaps=recent_gaps,
            restored_from_checkpoint=list(self._restored),
        )

    def ready(self) -> bool:
        """Connected, and every symbol's window is full (detection is live)."""
        status = self.status()
        return (
            status.running
            and status.connection.state == "connected"
            and all(s.warmed_up for s in status.symbols.values())
        )

    def bars(self, symbol: str, limit: int | None = None) -> list[Bar]:
        """Recent one-second bars of ``symbol`` (oldest first); empty for an unknown one."""
        with self._lock:
            series = self._bars.get(symbol)
            return series.bars(limit) if series is not None else []

    def lag_histograms(self) -> dict[str, LagHistogram]:
        """Ingest lag (receive time minus exchange time) per symbol."""
        with self._lock:
            return {
                symbol: LagHistogram(list(counts), self._lag_sum[symbol])
                for symbol, counts in self._lag_counts.items()
            }

    def write_latency(self) -> LagHistogram:
        """Latency of the store writer's batch writes (ms), since start."""
        with self._write_lock:
            return LagHistogram(list(self._write_counts), self._write_sum_ms)

    def _record_write(self, elapsed_s: float) -> None:
        """The writer's ``on_written`` callback (on its thread): one batch took ``elapsed_s``."""
        elapsed_ms = elapsed_s * 1000
        with self._write_lock:
            self._write_counts[bisect_left(WRITE_BUCKETS_MS, elapsed_ms)] += 1
            self._write_sum_ms += elapsed_ms

    def signals_after(self, seq: int, limit: int = 1000) -> list[tuple[int, Signal]]:
        """Signals delivered after number ``seq`` (for resuming live-stream clients)."""
        self.flush(2.0)
        return self.store.after_seq(seq, limit)

    def live_status(self) -> list[LiveSymbol]:
        """Per symbol: price, trade rate since the last call, latest bar."""
        status = self.status()
        now = time.monotonic()
        with self._lock:
            then, before = self._rate_mark
            self._rate_mark = (now, {s: v.trades for s, v in status.symbols.items()})
            bars = {s: series.last() for s, series in self._bars.items()}
        elapsed = max(now - then, 1e-9)
        return [
            LiveSymbol(
                symbol=s.symbol,
                connection=s.connection,
                last_price=s.last_price,
                trades=s.trades,
                trades_per_s=round((s.trades - before.get(s.symbol, 0)) / elapsed, 2),
                signals=s.signals,
                bar=bars.get(s.symbol),
            )
            for s in status.symbols.values()
        ]
