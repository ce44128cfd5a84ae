"""The engine: ingest -> parse -> pipeline -> sinks, on one background thread.

One thread runs an asyncio loop with the WebSocket client. Frames are parsed and run
through the pipeline on that loop, under one lock that the web threads also take to read
counters; signals go to the latest-signal map, the store writer and any listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable

import msgspec

from spikewatch.config import Settings
from spikewatch.core.bars import Bar, BarSeries
from spikewatch.core.decimal import units_to_float
from spikewatch.core.model import Signal, Trade, iso_utc
from spikewatch.exchanges import EXCHANGES, Control, Exchange, MalformedFrame
from spikewatch.hub import Event, Hub, HubStats
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.client import ClientStatus, StreamClient
from spikewatch.ingest.ratelog import RateLimitedLog
from spikewatch.ingest.recorder import FrameRecorder
from spikewatch.store.base import SignalStore
from spikewatch.store.writer import StoreWriter, WriterStats
from spikewatch.wiring import build_pipeline

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

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


#: Upper bounds (ms) of the ingest-lag histogram: local receive time minus exchange time.
LAG_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class LagHistogram(msgspec.Struct, frozen=True):
    """Counts of trades by ingest lag, per bucket of :data:`LAG_BUCKETS_MS` plus +Inf."""

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
        self.hub = Hub()
        self.status_interval = 1.0  # seconds between live "status" events
        self._seq = store.max_seq()  # delivery numbers continue across restarts
        self._by_detector: dict[str, int] = {}
        self._bars: dict[str, BarSeries] = {s: BarSeries() for s in settings.symbols}
        self._lag_counts: dict[str, list[int]] = {
            s: [0] * (len(LAG_BUCKETS_MS) + 1) for s in settings.symbols
        }
        self._lag_sum: dict[str, float] = dict.fromkeys(settings.symbols, 0.0)
        self._rate_mark: tuple[float, dict[str, int]] = (time.monotonic(), {})
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

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the ingest thread; a second call raises (never two engines)."""
        with self._lock:
            if self._started:
                raise RuntimeError("the engine was already started")
            self._started = True
        self._writer = StoreWriter(self.store, maxsize=self.settings.store_queue)
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
        if self._writer is not None:
            self._writer.flush(max(0.1, deadline - time.monotonic()))
            self._writer.close(max(0.1, deadline - time.monotonic()))
        if self._recorder is not None:
            self._recorder.close()
        self._stopped.set()

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
            self.handle_frame,
            rotate_after=self.settings.rotate_after,
            backoff=self._backoff,
            stable_after=self._stable_after,
        )
        ready.set()
        ticker = asyncio.create_task(self._publish_status())
        try:
            await self._client.run()
        finally:
            ticker.cancel()

    async def _publish_status(self) -> None:
        """Every ``status_interval``: a ``status`` event for live-stream clients."""
        while True:
            await asyncio.sleep(self.status_interval)
            try:
                self.hub.publish(Event("status", _encode(self.live_status())))
            except Exception:
                log.exception("publishing the live status failed")

    # -- the hot path ----------------------------------------------------------------

    def handle_frame(self, frame: bytes, recv_ns: int = 0) -> bool:
        """Parse one frame and run its trade through the pipeline; True on a shutdown notice."""
        if self._recorder is not None:
            self._recorder.write(frame, recv_ns)
        try:
            item = self.exchange.parse(frame)
        except MalformedFrame as exc:
            self._count_malformed(exc.kind, str(exc), frame)
            return False
        except Exception as exc:  # a parser bug must cost one frame, never the stream
            self._count_malformed("parser_error", f"{type(exc).__name__}: {exc}", frame)
            return False
        if type(item) is Trade:
            if item.symbol not in self._symbols:
                with self._lock:
                    self._frames += 1
                    self._ignored += 1
                return False
            lag_ms = (recv_ns // 1000 - item.time_us) / 1000 if recv_ns else None
            with self._lock:
                self._frames += 1
                signals = self._pipeline.process(item)
                self._bars[item.symbol].update(item)
                if lag_ms is not None:
                    counts = self._lag_counts[item.symbol]
                    counts[bisect_left(LAG_BUCKETS_MS, lag_ms)] += 1
                    self._lag_sum[item.symbol] += lag_ms
                for signal in signals:
                    self._remember(signal)
            for signal in signals:
                self._emit(signal)
            return False
        with self._lock:
            self._frames += 1
            if item is Control.IGNORED:
                self._ignored += 1
        return item is Control.SHUTDOWN

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

    def _emit(self, signal: Signal) -> None:
        log.info(
            "%s %s %s: %s @ %s, %.1fx the window mean",
            signal.signal_type,
            signal.symbol,
            signal.side,
            signal.volume,
            signal.price,
            signal.ratio,
        )
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._by_detector[signal.detector] = self._by_detector.get(signal.detector, 0) + 1
        if self._writer is not None:
            self._writer.put(signal, seq)
        self.hub.publish(Event.signal(signal, seq))
        for listener in tuple(self._listeners):
            try:
                listener(signal)
            except Exception:
                log.exception("a signal listener failed")

    # -- read side (any thread) ------------------------------------------------------

    def add_listener(self, listener: SignalListener) -> None:
        """Call ``listener(signal)`` on the ingest thread for every new signal (keep it quick)."""
        with self._lock:
            self._listeners.append(listener)

    def latest_signal(self, symbol: str | None = None) -> Signal | None:
        """The latest signal (by trade time) of ``symbol``, or of all symbols."""
        with self._lock:
            return self._latest_any if symbol is None else self._latest.get(symbol)

    def status(self) -> EngineStatus:
        """A consistent snapshot of every counter."""
        client = self._client
        connection = client.status if client is not None else ClientStatus(url=self.url)
        running = self._started and not self._stopped.is_set()
        with self._lock:
            stats = {s.symbol: s for s in self._pipeline.stats()}
            malformed = dict(self._malformed)
            frames, ignored = self._frames, self._ignored
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
                duplicates_dropped=s.duplicates if s else 0,
                gaps=s.gaps if s else 0,
                missing_trades=s.missing_trades if s else 0,
                reconnects=connection.reconnects,
                malformed_frames=malformed_total,
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
