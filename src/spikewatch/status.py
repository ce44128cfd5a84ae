"""What the web layer may see of a runtime: immutable status snapshots, and
:class:`EngineView`, the small read-only protocol it depends on (never the engine class).

Any runtime (the live engine today, a message-bus consumer next) that offers this view can
be served by ``create_app``.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from spikewatch.alerting.port import AlertLog
from spikewatch.alerting.worker import DeliveryStats
from spikewatch.config import Settings
from spikewatch.core.bars import Bar
from spikewatch.core.kernel import LAG_BUCKETS_MS, LagHistogram
from spikewatch.core.model import GapRecord, Signal
from spikewatch.hub import Hub, HubStats
from spikewatch.ingest.client import ClientStatus
from spikewatch.ingest.listing import ListingStatus
from spikewatch.ingest.pool import ConnectionStatus
from spikewatch.ingest.rest import RestStats
from spikewatch.sinks import SinkStats
from spikewatch.store.base import SignalStore
from spikewatch.store.recent import RecentSignals
from spikewatch.store.writer import WriterStats

__all__ = [
    "LAG_BUCKETS_MS",
    "WRITE_BUCKETS_MS",
    "AlertStatus",
    "EngineStatus",
    "EngineView",
    "LagHistogram",
    "LiveSymbol",
    "LiveTotals",
    "ServeStatus",
    "ServedExchange",
    "SymbolStatus",
]


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
    sinks: list[SinkStats] = []
    alerts: AlertStatus | None = None  # None: no alert rules configured
    #: every connection (``connection`` sums them up), with the symbols each carries
    connections: list[ConnectionStatus] = []
    #: the exchange's listing: the symbol set, reads, listings and delistings followed
    listing: ListingStatus | None = None
    #: ``spikewatch serve`` only (None elsewhere): its live push, fed from the store
    serve: ServeStatus | None = None


class ServeStatus(msgspec.Struct, frozen=True):
    """What ``/api/status`` says of a ``spikewatch serve`` process: it detects nothing;
    it serves the shared PostgreSQL store and pushes what the store gains, woken by the
    bus (docs/DISTRIBUTED.md, "serve")."""

    bus_url: str  # the NATS server (no password)
    bus_subjects: str  # what it listens on, e.g. spikewatch-signals.binance.*
    bus_connected: bool
    bus_reconnects: int  # connections to NATS made again after one was lost
    bus_messages: int  # signal messages heard on the bus since start
    bus_malformed: int  # messages that were not a signal (skipped)
    #: messages of a signal pushed already (read from the store before its message
    #: came, or published again)
    bus_already_pushed: int
    pushed: int  # signals pushed to live clients since start (read from the store)
    pushed_seq: int  # the delivery number of the last signal pushed
    store_seq: int  # the highest delivery number stored, at the last read
    store_reads: int  # reads of new rows from the store
    store_ok: bool  # the last read of the store succeeded
    store_error: str | None  # why the last read failed, while it fails
    waiting: int  # signals heard on the bus and not (yet) in the store
    unmatched: int  # heard on the bus, never found in the store within the wait


class AlertStatus(msgspec.Struct, frozen=True):
    """What ``/api/status`` says about alerts."""

    rules: list[str]  # the alert rules in force, by name
    opened: int  # alerts opened since start
    delivery: DeliveryStats | None  # None until the engine starts


#: Upper bounds (ms) of the store's batch-write latency histogram.
WRITE_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class LiveSymbol(msgspec.Struct, frozen=True):
    """One symbol in the periodic ``status`` event of the live stream."""

    symbol: str
    connection: str
    last_price: float | None
    trades: int
    trades_per_s: float
    signals: int
    bar: Bar | None
    exchange: str = ""


class LiveTotals(msgspec.Struct, frozen=True):
    """The periodic ``totals`` event of the live stream: the runtime's exchange as a whole,
    over every watched symbol (a ``status`` event beyond 50 symbols lists only those that
    traded, so a client cannot sum these from it)."""

    exchange: str
    symbols: int  # watched now
    #: the connections as one: "connected" when all are, else the worst one's state
    connection: str
    trades: int  # processed since start, over the symbols watched now (as /api/status)
    trades_per_s: float  # since the previous event
    signals: int  # raised since start, over the symbols watched now


class ServedExchange(Protocol):
    """All the web layer needs of the exchange a runtime serves: its name."""

    @property
    def name(self) -> str:
        """The name in settings, signals, the store and the API, e.g. ``binance-usdm``."""
        ...


class EngineView(Protocol):
    """What the web layer reads of a runtime; every method is safe from any thread.

    ``(exchange, symbol)`` is the key: a symbol alone (``BTCUSDT``) names a series only
    together with an exchange, and an ``exchange`` of None means the runtime's own.
    """

    settings: Settings
    store: SignalStore
    hub: Hub
    recent: RecentSignals

    @property
    def outbox(self) -> AlertLog | None:
        """The alert log (the delivery outbox: every alert, its deliveries); None when no
        alert rules are configured."""
        ...

    @property
    def exchange(self) -> ServedExchange:
        """The exchange this runtime serves (its signals, bars and status)."""
        ...

    def status(self) -> EngineStatus:
        """An immutable snapshot of every counter."""
        ...

    def symbols(self) -> tuple[str, ...]:
        """The symbols watched now (``--symbols ALL``: as the listing has them)."""
        ...

    def ready(self) -> bool:
        """Connected, and every symbol's window is full."""
        ...

    def latest_signal(
        self, symbol: str | None = None, exchange: str | None = None
    ) -> Signal | None:
        """The latest signal (by trade time) of ``symbol``, or of all symbols, on
        ``exchange`` (None: the runtime's own); None for an exchange it does not serve."""
        ...

    def latest_signal_json(self) -> bytes | None:
        """The latest signal over all symbols of the runtime's exchange, encoded as the
        API sends it."""
        ...

    def bars(self, symbol: str, limit: int | None = None, exchange: str | None = None) -> list[Bar]:
        """Recent one-second bars of ``symbol`` on ``exchange`` (None: the runtime's own),
        oldest first."""
        ...

    def lag_histograms(self) -> dict[str, LagHistogram]:
        """Ingest lag per symbol of the runtime's exchange."""
        ...

    def write_latency(self) -> LagHistogram:
        """Store batch-write latency since start."""
        ...

    def last_seq(self) -> int:
        """The delivery number of the latest signal."""
        ...

    def signals_after(self, seq: int, limit: int = 1000) -> list[tuple[int, Signal]]:
        """Signals delivered after number ``seq``."""
        ...

    def request_reconnect(self) -> bool:
        """Ask for a fresh exchange connection; False when not running."""
        ...
