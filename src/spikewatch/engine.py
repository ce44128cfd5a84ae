"""The live runtime: a thin shell of I/O around the pure kernel, on one background thread.

It owns the thread and its asyncio loop, the frame source (the reconnecting WebSocket
client), the REST executor for warm start and gap backfill, and the fan-out of what each
kernel step produced to the sinks (store writer, live-push hub, recent signals, listeners,
frame recorder). Every decision about trades (order, repeats, gaps, windows, signals, bars,
counters) is the kernel's (:mod:`spikewatch.core.kernel`), which replay drives too.

The kernel is only touched under one lock: by the ingest thread for each step, and by
readers for a status snapshot. The snapshot is immutable and rebuilt only when a step has
happened since the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine, Sequence
from functools import partial

import msgspec

from spikewatch.alerting.outbox import Outbox
from spikewatch.alerting.pipeline import AlertPipeline
from spikewatch.config import Settings
from spikewatch.core.alerts import AlertEvent
from spikewatch.core.bars import Bar
from spikewatch.core.decimal import units_to_float
from spikewatch.core.kernel import LAG_BUCKETS_MS, GapPolicy, Kernel, LagHistogram, Step
from spikewatch.core.model import GapRecord, Signal, iso_utc
from spikewatch.core.sequencer import MAX_AHEAD_US
from spikewatch.core.state import LAG_COUNTED_US
from spikewatch.exchanges.base import Exchange
from spikewatch.hub import Event, Hub
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.client import ClientStatus
from spikewatch.ingest.listing import Listing, unknown_message
from spikewatch.ingest.pool import ConnectionPool
from spikewatch.ingest.ratelog import RateLimitedLog
from spikewatch.ingest.recorder import FrameRecorder, RecorderSink
from spikewatch.ingest.rest import RestClient
from spikewatch.recovery import WARM_BEFORE_CONNECT, Recovery
from spikewatch.sinks import Overflow, SinkWorker
from spikewatch.status import (
    WRITE_BUCKETS_MS,
    EngineStatus,
    LiveSymbol,
    LiveTotals,
    SymbolStatus,
)
from spikewatch.store.base import SignalStore
from spikewatch.store.recent import RecentSignals
from spikewatch.store.retention import Retention
from spikewatch.store.spikes import latest_spike
from spikewatch.store.writer import StoreWriter, WriterStats
from spikewatch.wiring import build_exchange, build_kernel

__all__ = [
    "LAG_BUCKETS_MS",
    "RECENT_SIGNALS",
    "WRITE_BUCKETS_MS",
    "Engine",
    "EngineStatus",
    "LagHistogram",
    "LiveSymbol",
    "SymbolStatus",
]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


def _hand_over() -> None:
    """Let the threads that just got signals (live-stream writers) run now, before the
    rest of a burst: the CPU goes to them without waiting for the GIL's switch interval."""
    os.sched_yield()


#: An order whose first fill is this old (exchange time against the local clock) has all
#: its fills: the fills of one taker order reach the stream within milliseconds.
ORDER_COMPLETE_US = 2_000_000

#: Signals kept in memory for history pages (about 2 MB of JSON).
RECENT_SIGNALS = 5000
#: Frames waiting for the recorder's gzip writes, at most (then frames are not recorded,
#: and counted as dropped: recording must never hold up detection).
RECORDER_QUEUE = 100_000
#: Symbols every live ``status`` event describes, at most; beyond, those that traded
LIVE_ALL = 50

SignalListener = Callable[[Signal], None]


class Engine(Recovery):
    """Owns the ingest thread, the kernel and the sinks; start once, stop once."""

    def __init__(
        self,
        settings: Settings,
        store: SignalStore,
        *,
        exchange: Exchange | None = None,
        backoff: Backoff | None = None,
        stable_after: float = 10.0,
        rest: RestClient | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.exchange: Exchange = exchange or build_exchange(settings)
        #: what --symbols names (named symbols, or ALL resolved from the listing)
        self.symbol_set = settings.symbol_set()
        # the symbols watched now, in order (ALL: none until the listing is read); changed
        # on the loop's thread only, replaced whole (readers take the reference)
        self._symbols: tuple[str, ...] = settings.named_symbols
        # the first connection's URL (named symbols), or the base URL (ALL)
        self.url = (
            self.exchange.stream_url(
                settings.ws_url, self._symbols[: settings.streams_per_connection]
            )
            if self._symbols
            else settings.ws_url
        )
        # Until the ingest loop runs (frames fed by hand, as tests do), a gap cannot be
        # fetched: it is recorded at once; the loop switches the policy to FETCH.
        # (``kernel``: one built by the caller on the same terms, e.g. the ingest role's,
        # without detectors)
        self.kernel: Kernel = kernel or build_kernel(
            settings,
            venues=(self.exchange,),
            watch={self.exchange.name: self._symbols},
            gap_policy=GapPolicy.RESET,
        )
        self.kernel.reset_reason = "no REST access in this mode"
        self._backoff = backoff or Backoff(first=1.0, cap=settings.reconnect_max_delay)
        self._stable_after = stable_after
        # The kernel's lock: the ingest thread holds it for each step, readers for a
        # snapshot. Nothing else in the engine shares mutable state across threads.
        self._lock = threading.Lock()
        self._listeners: tuple[SignalListener, ...] = ()
        self.hub = Hub()
        rules = self.kernel.rules
        #: alerts: stored, delivered and pushed (None without alert rules)
        self._alerts = AlertPipeline(settings, rules, self.hub) if rules is not None else None
        #: every alert and its deliveries (None without alert rules)
        self.outbox: Outbox | None = self._alerts.outbox if self._alerts is not None else None
        self._ratelog = RateLimitedLog(log)
        # the latest signal per (exchange, symbol), and over all of them
        self._latest: dict[tuple[str, str], Signal] = {}
        self._latest_any: Signal | None = None
        self._latest_any_json: bytes | None = None  # its encoding, for the web fast path
        self.status_interval = 1.0  # seconds between live "status" events
        self._seq = store.max_seq()  # delivery numbers continue across restarts
        # After a restart from a checkpoint, the trades after it are processed again and
        # raise the signals already stored: those are not delivered a second time.
        self._delivered_upto = store.last_trade_ids(self.exchange.name)
        self._by_detector: dict[str, int] = {}
        self._write_lock = threading.Lock()  # the writer thread's histogram only
        self._write_counts = [0] * (len(WRITE_BUCKETS_MS) + 1)
        self._write_sum_ms = 0.0
        self._rate_mark: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self.rest = rest or RestClient(
            settings.rest_url, weight_limit=self.exchange.capabilities.rest_weight_limit
        )
        self._recent_gaps: list[GapRecord] = []
        self._watchdog: dict[str, int] = {}
        self._last_recv: dict[str, float] = {}  # monotonic seconds of the last live trade
        self._interval: dict[str, float] = {}  # smoothed seconds between live trades
        self._tasks: set[asyncio.Task[None]] = set()
        # symbols whose connection came back while a gap of theirs was being fetched: the
        # trades missed at that drop are looked for once the gap is closed
        self._catch_up_later: set[str] = set()
        # per symbol: (last trade id, trades) at its last checkpoint
        self._saved_upto: dict[str, tuple[int, int]] = {}
        self._restored = self._restore_checkpoints()
        self._checkpointed = set(self._restored)  # symbols with a checkpoint to go on from
        self._pool: ConnectionPool | None = None
        #: the exchange's listing: makes ALL definite, and follows listings and delistings
        self.listing = Listing(
            self.exchange,
            self.rest,
            self.symbol_set,
            interval=settings.symbols_refresh_s,
            on_change=self._on_listing,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = threading.Event()
        self._writer: StoreWriter | None = None
        self._recorder: SinkWorker[tuple[bytes, int]] | None = None
        # The latest stored signals of this engine's own exchange only: a database shared
        # with a run on another venue must not make its signal this engine's latest.
        # A signal stamped far in the future (a junk frame stored by an older version)
        # must not stay the latest for good: only plausible times are looked at.
        name = self.exchange.name
        plausible = time.time_ns() // 1000 + MAX_AHEAD_US
        for symbol in [*self._symbols, None]:
            spike = latest_spike(store, exchange=name, symbol=symbol, until_us=plausible)
            if spike is not None:
                self._remember(spike)
        # The floor is the newest stored signal of any exchange: at or below it, pages
        # come from the store (a lower one would do for this exchange; this one is also
        # right for a page over every exchange).
        any_stored = store.latest()
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
            self.store,
            maxsize=self.settings.store_queue,
            on_written=self._record_write,
            retention=Retention.of(self.settings.retention_days, self.store, [self.outbox]),
        )
        if self._alerts is not None:
            self._alerts.start()
        if self.settings.record_dir:
            symbols = "-".join(self._symbols).lower() if self._symbols else "all"
            recorder = FrameRecorder(
                self.settings.record_dir, prefix=f"{self.exchange.name}-{symbols}"
            )
            self._recorder = SinkWorker(
                "recorder",
                RecorderSink(recorder),
                maxsize=RECORDER_QUEUE,
                overflow=Overflow.DROP_NEWEST,
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
        loop, pool = self._loop, self._pool
        if loop is not None and pool is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(pool.stop)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.save_checkpoints()
        if self._writer is not None:
            self._writer.flush(max(0.1, deadline - time.monotonic()))
            self._writer.close(max(0.1, deadline - time.monotonic()))
        if self._recorder is not None:
            self._recorder.close(max(0.1, deadline - time.monotonic()))
        if self._alerts is not None:
            self._alerts.stop(max(0.1, deadline - time.monotonic()))
        self._stopped.set()

    def request_reconnect(self) -> bool:
        """Ask for fresh connections, without a gap (any thread); False when the engine is
        not running."""
        loop, pool = self._loop, self._pool
        if loop is None or pool is None or loop.is_closed() or self._stopped.is_set():
            return False
        try:
            loop.call_soon_threadsafe(pool.rotate)
        except RuntimeError:  # the loop closed in between: the engine has just stopped
            return False
        return True

    def refresh_listing(self, timeout: float = 30.0) -> bool:
        """Read the exchange's listing now and follow it (any thread; it is also read
        every ``symbols_refresh_s``); False when the engine is not running or the read
        did not finish within ``timeout``."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopped.is_set():
            return False
        try:
            done = asyncio.run_coroutine_threadsafe(self.listing.refresh(), loop)
        except RuntimeError:
            return False
        try:
            done.result(timeout)
        except Exception:
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
        with self._lock:  # from now on gaps can be fetched, on this loop
            self.kernel.gap_policy = GapPolicy.FETCH
        given = [self._backoff]  # the first connection takes the engine's own backoff

        def backoff() -> Backoff:
            return given.pop() if given else Backoff(self._backoff.first, self._backoff.cap)

        pool = self._pool = ConnectionPool(
            self.exchange,
            self.settings.ws_url,
            self.handle_frames,
            per_connection=self.settings.streams_per_connection,
            on_connect=self._on_connect,
            backoff=backoff,
            rotate_after=self.settings.rotate_after,
            stable_after=self._stable_after,
        )
        ready.set()
        ticker = asyncio.create_task(self._publish_status())
        refresher: asyncio.Task[None] | None = None
        try:
            await self._first_listing()
            symbols = self._symbols
            pool.add(symbols)
            if len(symbols) <= WARM_BEFORE_CONNECT:
                await self._warm_start(symbols)
            else:  # the windows of many symbols fill while they stream (busy ones warm
                # themselves from the stream before their look-up's turn comes)
                self._spawn(self._warm_start(symbols))
            if self.exchange.listing() is not None:
                refresher = asyncio.create_task(self.listing.run())
            await pool.run()
        finally:
            ticker.cancel()
            if refresher is not None:
                refresher.cancel()
            for task in list(self._tasks):
                task.cancel()

    async def _first_listing(self) -> None:
        """Read the listing before connecting: ALL becomes the symbols it names (read
        again until it can be: nothing is watched meanwhile); named symbols are checked
        (the command line already refused unknown ones when it could read the listing)."""
        listing = self.listing
        if self.exchange.listing() is None or not self.symbol_set.is_all:
            return  # named symbols: checked by the command line; the refresh follows them
        delay = 1.0
        while True:
            pairs = await listing.read()
            if pairs is not None:
                resolved = self.symbol_set.resolve(pairs)
                if resolved.unknown:
                    log.error("%s", unknown_message(self.exchange.name, resolved.unknown, pairs))
                added, _ = listing.apply(resolved)
                if self.symbol_set.is_all:
                    self._watch(added)
                    log.info(
                        "%s: %d symbols watched on %s",
                        self.symbol_set.describe(),
                        len(self._symbols),
                        self.exchange.name,
                    )
                return
            if not self.symbol_set.is_all:
                return  # named symbols: stream them; the listing is read again later
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def _watch(self, symbols: Sequence[str]) -> None:
        """Detect on ``symbols`` too (on the loop's thread)."""
        if not symbols:
            return
        with self._lock:
            self.kernel.watch(self.exchange.name, symbols)
        self._symbols = (*self._symbols, *symbols)

    def _on_listing(self, added: Sequence[str], removed: Sequence[str]) -> None:
        """A new listing (on the loop's thread): new pairs are watched and subscribed (on
        connections with room), delisted ones checkpointed, unsubscribed and let go; no
        other symbol's connection is touched."""
        pool = self._pool
        if removed:
            self.save_checkpoints()
            gone = set(removed)
            self._symbols = tuple(s for s in self._symbols if s not in gone)
            if pool is not None:
                pool.remove(removed)
            with self._lock:
                self.kernel.unwatch(self.exchange.name, removed)
            for symbol in removed:
                self._last_recv.pop(symbol, None)
                self._interval.pop(symbol, None)
        if added:
            self._watch(added)
            if pool is not None:
                pool.add(added)
            self._spawn(self._warm_start(added))

    async def _publish_status(self) -> None:
        """Every ``status_interval``: a ``status`` event for live-stream clients, the
        watchdog, and (every ``checkpoint_interval``) a checkpoint."""
        next_checkpoint = time.monotonic() + self.settings.checkpoint_interval
        while True:
            await asyncio.sleep(self.status_interval)
            try:
                symbols, totals = self.live_status()
                self.hub.publish(Event("status", _encode(symbols)))
                self.hub.publish(Event("totals", _encode(totals)))
                self._check_silence()
                # a quiet pair's last order is complete once it is 2 s old
                self._step(partial(self.kernel.flush, self._order_clock() - ORDER_COMPLETE_US))
                if time.monotonic() >= next_checkpoint or self._first_checkpoint_due():
                    next_checkpoint = time.monotonic() + self.settings.checkpoint_interval
                    self.save_checkpoints()
            except Exception:
                log.exception("the periodic status task failed")

    def _order_clock(self) -> int:
        """Now, for judging whether an order is complete (µs): the wall clock on a live
        feed; the feed's own latest exchange time when it serves history (a simulator, the
        demo), so a replayed order is cut where the recording says, not by the machine's
        pace."""
        now_us = time.time_ns() // 1000
        with self._lock:
            latest = self.kernel.latest_time_us()
        if latest is not None and now_us - latest > LAG_COUNTED_US:
            return latest
        return now_us

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` on the loop as a tracked task (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the hot path ----------------------------------------------------------------

    def handle_frame(self, frame: bytes, recv_ns: int = 0) -> bool:
        """One frame: a read of one; True on a shutdown notice."""
        return self.handle_frames((frame,), recv_ns)

    def handle_frames(self, frames: Sequence[bytes], recv_ns: int = 0) -> bool:
        """The frames of one network read, in order: one kernel step, then its results
        go out. True when one of them was a shutdown notice (the client rotates)."""
        recorder = self._recorder
        if recorder is not None:
            for frame in frames:
                recorder.put((frame, recv_ns))
        kernel = self.kernel
        with self._lock:
            try:
                step = kernel.feed_frames(self.exchange.name, frames, recv_ns)
            except Exception:  # a bug must cost this read, never the stream
                log.exception("processing a read of %d frames failed", len(frames))
                return False
            quiet = not (step.signals or step.lost or step.fetch or step.failures)
            if quiet:  # nothing to send first: bars and lag histograms now
                kernel.settle()
        for kind, detail, frame in step.malformed:
            self._ratelog.warning(kind, f"skipped a malformed frame ({detail}): {frame[:120]!r}")
        if step.arrived:
            self._note_arrival(step.arrived)
        if not quiet:
            self._act(step)
            with self._lock:  # bars and lag histograms: after the signals have gone out
                kernel.settle()
        return step.shutdown

    def _act(self, step: Step) -> None:
        """Send a step's results out: signals to the sinks, lost trades recorded, gaps
        handed to backfill."""
        for count, exc in step.failures:
            log.error("processing %d trades failed; they are skipped", count, exc_info=exc)
        if not step.lost:  # the usual case
            for signal in step.signals:
                self._emit(signal)
            if step.alerts and self._alerts is not None:
                self._alerts.handle(step.alerts)
            if step.signals:
                _hand_over()
            for gap in step.fetch:
                self._start_backfill(gap)
            return
        done = 0
        for record, at in zip(step.lost, step.lost_at, strict=True):
            for signal in step.signals[done:at]:  # in the order they happened
                self._emit(signal)
            done = at
            self._store_gap(record)
        for signal in step.signals[done:]:
            self._emit(signal)
        if step.alerts and self._alerts is not None:
            self._alerts.handle(step.alerts)
        if step.signals:
            _hand_over()
        for gap in step.fetch:
            self._start_backfill(gap)

    def add_alert_sink(self, sink: Callable[[Sequence[AlertEvent]], None]) -> None:
        """Also hand each step's alert events to ``sink`` (called on the ingest thread:
        it must only queue them); nothing without alert rules."""
        if self._alerts is not None:
            self._alerts.add_sink(sink)

    def _step(self, work: Callable[[], Step]) -> Step:
        """Run one kernel call under the lock and act on its result."""
        with self._lock:
            step = work()
        self._act(step)
        with self._lock:
            self.kernel.settle()
        return step

    def _note_arrival(self, keys: set[tuple[str, str]]) -> None:
        now = time.monotonic()
        last_recv, interval = self._last_recv, self._interval  # (a market: 20-100 a read)
        for _, symbol in keys:
            last = last_recv.get(symbol)
            last_recv[symbol] = now
            if last is not None:
                usual = interval.get(symbol)
                gap = now - last
                interval[symbol] = gap if usual is None else usual + 0.02 * (gap - usual)

    # -- fan-out ---------------------------------------------------------------------

    def _remember(self, signal: Signal) -> None:
        if not signal.spike:
            return  # an order event or a surge: /api/get_signal serves spikes only
        key = (signal.exchange, signal.symbol)
        current = self._latest.get(key)
        if current is None or (signal.time_us, signal.id) >= (current.time_us, current.id):
            self._latest[key] = signal
        best = self._latest_any
        if best is None or (signal.time_us, signal.id) >= (best.time_us, best.id):
            self._latest_any = signal
            self._latest_any_json = _encode(signal)

    def _emit(self, signal: Signal) -> None:
        upto = self._delivered_upto.get((signal.symbol, signal.detector))
        if upto is not None and signal.trade_id <= upto:
            self._remember(signal)
            return  # stored and delivered before the restart
        self._deliver(signal)

    def _deliver(self, signal: Signal) -> None:
        self._remember(signal)
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
        for listener in self._listeners:
            try:
                listener(signal)
            except Exception:
                log.exception("a signal listener failed")
        log.debug(  # last; at DEBUG: the command line logs a summary every 10 s instead
            "%s %s %s %s: %s @ %s (%s)",
            signal.signal_type,
            signal.exchange,
            signal.symbol,
            signal.side,
            signal.volume,
            signal.price,
            signal.detector,
        )

    # -- read side (any thread) ------------------------------------------------------

    def add_listener(self, listener: SignalListener) -> None:
        """Call ``listener(signal)`` on the ingest thread for every new signal (keep it quick)."""
        self._listeners = (*self._listeners, listener)

    def last_seq(self) -> int:
        """The delivery number of the latest signal emitted."""
        return self._seq  # one reference read of an int

    def latest_signal_json(self) -> bytes | None:
        """The latest signal over all symbols, already encoded as the API sends it."""
        return self._latest_any_json  # one reference read: an immutable bytes object

    def latest_signal(
        self, symbol: str | None = None, exchange: str | None = None
    ) -> Signal | None:
        """The latest signal (by trade time) of ``symbol``, or of all symbols, on
        ``exchange`` (default: this engine's)."""
        if exchange is not None and exchange != self.exchange.name:
            return None  # this engine serves one exchange
        if symbol is not None:
            return self._latest.get((self.exchange.name, symbol))
        return self._latest_any

    def _running(self) -> bool:
        thread = self._thread
        return (
            self._started
            and not self._stopped.is_set()
            and thread is not None
            and thread.is_alive()
        )

    def status(self) -> EngineStatus:
        """An immutable snapshot of every counter (rebuilt only after a kernel step)."""
        pool = self._pool
        connection = pool.summary() if pool is not None else ClientStatus(url=self.url)
        running = self._running()
        name = self.exchange.name
        with self._lock:
            kernel_counters = self.kernel.counters()
            stats = {s.symbol: s for s in self.kernel.stats() if s.exchange == name}
        malformed = kernel_counters.malformed
        if connection.oversized_frames:
            malformed["frame_too_large"] = connection.oversized_frames
        malformed_total = sum(malformed.values())
        symbols = {}
        for symbol in self._symbols:
            s = stats.get(symbol)
            own = (pool.client_status(symbol) if pool is not None else None) or connection
            symbols[symbol] = SymbolStatus(
                exchange=name,
                symbol=symbol,
                connection=own.state if running else "stopped",
                trades=s.trades if s else 0,
                signals=s.signals if s else 0,
                warmed_up=s.warmed_up if s else False,
                last_trade_id=s.last_trade_id if s else None,
                last_trade_time=iso_utc(s.last_trade_time_us)
                if s and s.last_trade_time_us is not None
                else None,
                last_price=units_to_float(s.last_price) if s and s.last_price is not None else None,
                duplicates_dropped=s.duplicates if s else 0,
                gaps=s.gaps if s else 0,
                missing_trades=s.missing_trades if s else 0,
                reconnects=own.reconnects,
                malformed_frames=malformed_total,
                backfilling=s.backfilling if s else False,
                backfills=s.backfills if s else 0,
                backfilled_trades=s.backfilled_trades if s else 0,
                gap_records=s.gap_records if s else 0,
                watchdog_resubscribes=self._watchdog.get(symbol, 0),
            )
        writer = self._writer
        sinks = [writer.sink_stats()] if writer is not None else []
        if self._recorder is not None:
            sinks.append(self._recorder.stats())
        return EngineStatus(
            running=running,
            exchange=name,
            url=self.url,
            connection=connection,
            connections=pool.statuses() if pool is not None else [],
            listing=self.listing.status,
            frames=kernel_counters.frames,
            malformed_frames=malformed,
            ignored_frames=kernel_counters.ignored,
            symbols=symbols,
            store=writer.stats() if writer is not None else WriterStats(0, 0, 0, 0, 0, None),
            signals_by_detector=dict(self._by_detector),
            stream=self.hub.stats(),
            rest=self.rest.stats(),
            recent_gaps=list(self._recent_gaps),
            restored_from_checkpoint=list(self._restored),
            sinks=sinks,
            alerts=self._alerts.status() if self._alerts is not None else None,
        )

    def last_trade(self, symbol: str) -> tuple[float, int] | None:
        """The last trade's price (quote asset) and exchange time (µs) of ``symbol``."""
        state = self.kernel.find(self.exchange.name, symbol)
        last = state.last if state is not None else None  # one reference read
        return (units_to_float(last.price), last.time_us) if last is not None else None

    def latest_time_us(self) -> int | None:
        """The latest exchange time of any trade processed (µs)."""
        with self._lock:
            return self.kernel.latest_time_us()

    def symbols(self) -> tuple[str, ...]:
        """The symbols watched now, in order (ALL: as the exchange's listing has them)."""
        return self._symbols  # one reference read: an immutable tuple

    def ready(self) -> bool:
        """Connected, every symbol's window is full (detection is live), and the store
        takes writes."""
        status = self.status()
        return (
            status.running
            and status.connection.state == "connected"
            and all(s.warmed_up for s in status.symbols.values())
            and status.store.healthy
        )

    def bars(self, symbol: str, limit: int | None = None, exchange: str | None = None) -> list[Bar]:
        """Recent one-second bars of ``symbol`` on ``exchange`` (default: this engine's),
        oldest first; empty for an unknown one."""
        with self._lock:
            return self.kernel.bars(exchange or self.exchange.name, symbol, limit)

    def lag_histograms(self) -> dict[str, LagHistogram]:
        """Ingest lag (receive time minus exchange time) per symbol."""
        name = self.exchange.name
        with self._lock:
            self.kernel.settle()
            return {
                s.symbol: LagHistogram(list(s.lag_counts), s.lag_sum)
                for s in self.kernel.states()
                if s.exchange == name
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

    def live_status(self) -> tuple[list[LiveSymbol], LiveTotals]:
        """Per symbol: price, trade rate since the last call, latest bar. With more than
        :data:`LIVE_ALL` symbols, only those that traded since the last call (the rest did
        not change: a quiet symbol costs the live stream nothing). And the totals over
        every watched symbol, summed in the same pass (no second walk of 2,000 states)."""
        now = time.monotonic()
        then, before = self._rate_mark
        name = self.exchange.name
        pool, running = self._pool, self._running()
        symbols = self._symbols
        every = len(symbols) <= LIVE_ALL
        out = []
        counts = {}
        total = traded = signals = 0
        with self._lock:
            for symbol in symbols:
                state = self.kernel.find(name, symbol)
                trades = state.trades if state is not None else 0
                counts[symbol] = trades
                if state is None:
                    continue
                total += trades
                traded += trades - before.get(symbol, 0)
                signals += state.signals
                if not (every or trades != before.get(symbol)):
                    continue
                bars = self.kernel.bars(name, symbol, 1)
                out.append((symbol, state, state.last, bars[-1] if bars else None))
        self._rate_mark = (now, counts)
        elapsed = max(now - then, 1e-9)
        link = pool.summary().state if pool is not None else "starting"
        totals = LiveTotals(
            exchange=name,
            symbols=len(symbols),
            connection=link if running else "stopped",
            trades=total,
            trades_per_s=round(traded / elapsed, 2),
            signals=signals,
        )
        return [
            LiveSymbol(
                symbol=symbol,
                connection=(pool.state_of(symbol) if pool is not None else "starting")
                if running
                else "stopped",
                last_price=units_to_float(last.price) if last is not None else None,
                trades=state.trades,
                trades_per_s=round((state.trades - before.get(symbol, 0)) / elapsed, 2),
                signals=state.signals,
                bar=bar,
                exchange=name,
            )
            for symbol, state, last, bar in out
        ], totals
