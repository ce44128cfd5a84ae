"""The market view's API: ``GET /api/symbols`` (every watched symbol's state) and
``GET /api/top`` (the leaderboard: the most active symbols of the last 5 minutes or hour).

The board itself is pure (:mod:`spikewatch.core.leaderboard`); :class:`MarketBoard` feeds
it from the runtime's signals (a listener) and alerts (an alert sink), both called on the
ingest thread, and reads it from request threads, under one lock held for one event or
one symbol's row at a time (never for a whole ranking, so a read of 2,000 symbols does
not hold ingest up). At start-up it is seeded from the store (the last hour's signals)
and the alert log, so a restart does not blank the board.

The board's clock is exchange time: a read is made at the latest trade the runtime has
seen (or the latest signal, if later), never the wall clock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec
from flask import Blueprint, Flask, Response, current_app, request

from spikewatch.alerting.port import AlertLog
from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.core.leaderboard import BY, WINDOWS, Key, Leaderboard, Row, rank
from spikewatch.core.model import Signal, iso_utc
from spikewatch.core.orders import split_symbol
from spikewatch.status import EngineView
from spikewatch.store.base import SignalStore
from spikewatch.web import params
from spikewatch.web.api import served
from spikewatch.web.responses import json_response

log = logging.getLogger(__name__)

market = Blueprint("market", __name__)

_EXTENSION = "spikewatch.market"
#: Connection states a symbol can be in (``ClientStatus.state``).
STATES: tuple[str, ...] = ("starting", "connecting", "connected", "waiting", "stopped")
#: ``q``: a part of a symbol, letters and digits, any case.
SEARCH_PATTERN = r"^[A-Za-z0-9]{1,30}$"
#: ``quote``: a quote asset such as ``USDT``, any case.
QUOTE_PATTERN = r"^[A-Za-z0-9]{2,10}$"
_SEARCH = re.compile(SEARCH_PATTERN)
_QUOTE = re.compile(QUOTE_PATTERN)
#: /api/symbols page size: default and maximum; the largest offset taken.
DEFAULT_SYMBOLS, MAX_SYMBOLS, MAX_OFFSET = 100, 1000, 1_000_000
#: /api/top rows: default and maximum.
DEFAULT_TOP, MAX_TOP = 20, 2000
#: Signals read from the store to seed the board, at most (an hour of a very busy market).
MAX_SEED = 200_000
#: The window the trade rate of /api/symbols is measured over, seconds of exchange time.
RATE_WINDOW_S = 60
_HOUR_US = WINDOWS["1h"][0] * WINDOWS["1h"][1]


class SymbolState(msgspec.Struct, frozen=True):
    """One watched symbol in ``/api/symbols``."""

    exchange: str
    symbol: str
    base: str | None  # the base asset (volumes are in it); None when not known
    quote: str | None  # the quote asset (prices are in it); None when not known
    connection: str  # starting, connecting, connected, waiting or stopped
    last_price: float | None  # quote asset
    last_trade_time: str | None  # exchange time, ISO 8601
    trades: int  # trades processed since start
    trades_per_s: float  # over the last minute of exchange time (one-second bars)
    signals: int  # signals raised since start
    last_signal: Signal | None  # the latest signal, stored ones included


class SymbolList(msgspec.Struct, frozen=True):
    """One page of ``/api/symbols``, by symbol; ``next_offset`` is the next page's
    ``offset`` (null on the last page)."""

    symbols: list[SymbolState]
    count: int  # len(symbols)
    total: int  # symbols matching the filters, on every page
    offset: int
    next_offset: int | None


class TopRow(msgspec.Struct, frozen=True):
    """One symbol's activity in the window of ``/api/top``."""

    rank: int  # 1 for the most active
    exchange: str
    symbol: str
    base: str | None
    quote: str | None
    signals: int  # signals in the window
    alerts: int  # alerts opened in the window (by their first signal's time)
    usd_max: float | None  # the largest USD value of one signal in the window
    ratio_max: float | None  # the largest ratio (volume / baseline) in the window
    spark: list[int]  # signals per bucket, oldest first (see bucket_s)
    last_price: float | None  # quote asset
    last_signal: Signal | None  # the latest signal, possibly before the window


class TopList(msgspec.Struct, frozen=True):
    """``/api/top``: the most active symbols, ranked."""

    window: str  # 5m or 1h
    by: str  # signals, alerts, usd or ratio
    bucket_s: int  # seconds per spark point: 10 (5m) or 60 (1h)
    now: str | None  # the exchange time the board was read at (null: nothing seen yet)
    rows: list[TopRow]
    count: int  # len(rows)
    total: int  # symbols matching the filters


@runtime_checkable
class Feeds(Protocol):
    """What the board needs of a runtime to follow it live (the engine has both)."""

    def add_listener(self, listener: Callable[[Signal], None]) -> None: ...

    def add_alert_sink(self, sink: Callable[[Sequence[AlertEvent]], None]) -> None: ...


@runtime_checkable
class Quotes(Protocol):
    """Cheap per-symbol reads (the engine has them): a leaderboard of 2,000 symbols must
    not build the whole status for each request."""

    def symbols(self) -> tuple[str, ...]: ...

    def last_trade(self, symbol: str) -> tuple[float, int] | None: ...

    def latest_time_us(self) -> int | None: ...


class MarketBoard:
    """The leaderboard of one runtime's watched symbols, safe from any thread. The
    symbols watched may change while it runs (``--symbols ALL`` follows the listing):
    ``watched`` is asked each time."""

    def __init__(self, exchange: str, watched: Callable[[], Sequence[str]]) -> None:
        self._board = Leaderboard()
        self._lock = threading.Lock()
        self._exchange = exchange
        self._watched_now = watched
        self._seen: tuple[Sequence[str], list[Key]] | None = None
        # per (symbol, rule): the time of the latest alert counted. After a crash the
        # trades since the last checkpoint are processed again and may open an alert the
        # log already has (the same id and time); the alerts of one symbol and rule open
        # in time order, each after the cooldown of the one before, so one at or before
        # this time was counted. (It was a set of every alert id: 100,000 strings, about
        # 19 MB, with 2,000 symbols alerting for an hour.)
        self._counted: dict[tuple[str, str], int] = {}

    @property
    def keys(self) -> list[Key]:
        """The watched ``(exchange, symbol)`` keys, by symbol (sorted once per change)."""
        watched = self._watched_now()
        seen = self._seen
        if seen is None or seen[0] is not watched:
            seen = self._seen = (watched, sorted((self._exchange, s) for s in set(watched)))
        return seen[1]

    def on_signal(self, signal: Signal) -> None:
        """A new signal (the engine's listener: on the ingest thread, O(1))."""
        if signal.exchange == self._exchange:
            with self._lock:
                self._board.add_signal(signal)

    def on_alerts(self, events: Sequence[AlertEvent]) -> None:
        """A step's alert events (the engine's alert sink: on the ingest thread, O(1)
        each); an update of an open alert is not a new alert."""
        for event in events:
            if event.opened:
                self._add_alert(event.alert)

    def _add_alert(self, alert: Alert, seeding: bool = False) -> None:
        """Count ``alert`` once (``seeding``: from the alert log, which holds each once
        and is read newest first)."""
        if alert.exchange != self._exchange:
            return
        key = (alert.symbol, alert.rule)
        with self._lock:
            counted = self._counted.get(key)
            if counted is not None and alert.time_us <= counted and not seeding:
                return
            if counted is None or alert.time_us > counted:
                self._counted[key] = alert.time_us
            self._board.add_alert(alert)

    def seed(
        self, store: SignalStore, outbox: AlertLog | None, latest: Mapping[str, Signal]
    ) -> int:
        """Count the stored signals (and logged alerts) of the hour up to ``latest``,
        each exchange's latest signal; the number of signals read."""
        read = 0
        for exchange, last in latest.items():
            # up to the latest plausible signal, as the runtime judged it: a junk signal
            # stamped far in the future (an older version's) would empty every window
            since, until = last.time_us - _HOUR_US, last.time_us + 1
            after = None
            while read < MAX_SEED:
                page = store.page(
                    exchange=exchange, since_us=since, until_us=until, limit=1000, after=after
                )
                with self._lock:
                    for signal in page.signals:  # (ALL: the listing is not read yet)
                        if signal.exchange == self._exchange:
                            self._board.add_signal(signal)
                read += len(page.signals)
                after = page.next_cursor
                if after is None:
                    break
            if outbox is None:
                continue
            cursor = None
            for _ in range(100):  # at most 100,000 alerts
                alerts = outbox.page(
                    exchange=exchange, since_us=since, until_us=until, limit=1000, after=cursor
                )
                for alert in reversed(alerts.alerts):
                    self._add_alert(alert, seeding=True)
                cursor = alerts.next_cursor
                if cursor is None:
                    break
        return read

    def clock_us(self) -> int | None:
        """The latest exchange time of any event on the board."""
        return self._board.clock_us

    def rows(self, window: str, keys: Iterable[Key], now_us: int | None) -> list[Row]:
        """``keys``' rows in ``window`` (the lock is taken per row: ingest never waits
        for more than one)."""
        out = []
        for key in keys:
            with self._lock:
                out.append(self._board.row(key, window, now_us))
        return out


def install(app: Flask, engine: EngineView) -> MarketBoard:
    """Build the board of ``engine``'s watched symbols, seed it from the store and the
    alert log, then follow the engine's signals and alerts; register the routes."""
    exchange = engine.exchange.name
    watched = engine.symbols if isinstance(engine, Quotes) else lambda: engine.settings.symbols
    board = MarketBoard(exchange, watched)
    latest = {name: s for name in served(engine) if (s := engine.latest_signal(None, name))}
    try:
        board.seed(engine.store, engine.outbox, latest)
    except Exception:  # the board starts empty rather than the app not at all
        log.exception("seeding the market board from the store failed")
    # after the seed: the engine does not deliver again what it stored before a restart
    if isinstance(engine, Feeds):
        engine.add_listener(board.on_signal)
        engine.add_alert_sink(board.on_alerts)
    app.extensions[_EXTENSION] = board
    app.register_blueprint(market)
    return board


# -- the routes ------------------------------------------------------------------------


def _engine() -> EngineView:
    engine: EngineView = current_app.extensions["spikewatch.engine"]
    return engine


def _board() -> MarketBoard:
    board: MarketBoard = current_app.extensions[_EXTENSION]
    return board


def _choice(args: Mapping[str, str], name: str, options: Sequence[str], default: str) -> str:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if raw not in options:
        raise params.BadRequest(name, f"{raw[:40]!r} is not one of {', '.join(options)}")
    return raw


def _text(args: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str | None:
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    if not pattern.fullmatch(raw):
        raise params.BadRequest(name, f"{raw[:40]!r} is not {what}")
    return raw.upper()


def _assets(symbol: str) -> tuple[str | None, str | None]:
    parts = split_symbol(symbol)
    return parts if parts is not None else (None, None)


def _matching(
    keys: Iterable[Key], exchange: str | None, search: str | None, quote: str | None
) -> list[Key]:
    return [
        (ex, symbol)
        for ex, symbol in keys
        if (exchange is None or ex == exchange)
        and (search is None or search in symbol)
        and (quote is None or _assets(symbol)[1] == quote)
    ]


def _now_us(engine: EngineView, board: MarketBoard) -> int | None:
    """The board's read time: the latest trade of any watched symbol, or the latest
    event on the board if later (exchange time)."""
    latest = None
    if isinstance(engine, Quotes):
        latest = engine.latest_time_us()
    else:
        status = engine.status()
        times = [s.last_trade_time for s in status.symbols.values() if s.last_trade_time]
        if times:  # ISO 8601 of one format: the greatest string is the latest time
            moment = datetime.fromisoformat(max(times))
            latest = int(moment.timestamp()) * 1_000_000 + moment.microsecond
    clock = board.clock_us()
    if latest is None or (clock is not None and clock > latest):
        return clock
    return latest


def _rate(engine: EngineView, exchange: str, symbol: str, now_us: int | None) -> float:
    """Trades per second over the minute before ``now_us`` (exchange time)."""
    if now_us is None:
        return 0.0
    start = now_us // 1_000_000 - RATE_WINDOW_S
    bars = engine.bars(symbol, RATE_WINDOW_S + 1, exchange)
    return round(sum(b.trades for b in bars if b.time > start) / RATE_WINDOW_S, 2)


@market.get("/api/symbols")
def symbols() -> Response:
    """Every watched symbol's state, by symbol: ``q``, ``exchange``, ``quote``,
    ``state``, ``offset``, ``limit``."""
    args = request.args
    params.reject_unknown(args, ("q", "exchange", "quote", "state", "offset", "limit"))
    engine = _engine()
    board = _board()
    exchange = params.exchange(args, served(engine))
    search = _text(args, "q", _SEARCH, "a part of a symbol (letters and digits)")
    quote = _text(args, "quote", _QUOTE, "a quote asset (letters and digits, e.g. USDT)")
    wanted = _choice(args, "state", STATES, "")
    offset = params.integer(args, "offset", 0, 0, MAX_OFFSET)
    limit = params.integer(args, "limit", DEFAULT_SYMBOLS, 1, MAX_SYMBOLS)
    status = engine.status()
    keys = _matching(board.keys, exchange, search, quote)
    if wanted:
        keys = [
            k
            for k in keys
            if (s := status.symbols.get(k[1])) is not None and s.connection == wanted
        ]
    page = keys[offset : offset + limit]
    now = _now_us(engine, board)
    out = []
    for ex, symbol in page:
        s = status.symbols.get(symbol)
        base, quote_asset = _assets(symbol)
        out.append(
            SymbolState(
                exchange=ex,
                symbol=symbol,
                base=base,
                quote=quote_asset,
                connection=s.connection if s is not None else "stopped",
                last_price=s.last_price if s is not None else None,
                last_trade_time=s.last_trade_time if s is not None else None,
                trades=s.trades if s is not None else 0,
                trades_per_s=_rate(engine, ex, symbol, now),
                signals=s.signals if s is not None else 0,
                last_signal=engine.latest_signal(symbol, ex),
            )
        )
    end = offset + len(page)
    return json_response(
        SymbolList(out, len(out), len(keys), offset, end if end < len(keys) else None)
    )


@market.get("/api/top")
def top() -> Response:
    """The leaderboard: ``window`` (5m, 1h), ``by`` (signals, alerts, usd, ratio),
    ``limit``, ``q``, ``exchange``, ``quote``."""
    args = request.args
    params.reject_unknown(args, ("window", "by", "limit", "q", "exchange", "quote"))
    engine = _engine()
    board = _board()
    window = _choice(args, "window", tuple(WINDOWS), "5m")
    by = _choice(args, "by", BY, "signals")
    limit = params.integer(args, "limit", DEFAULT_TOP, 1, MAX_TOP)
    exchange = params.exchange(args, served(engine))
    search = _text(args, "q", _SEARCH, "a part of a symbol (letters and digits)")
    quote = _text(args, "quote", _QUOTE, "a quote asset (letters and digits, e.g. USDT)")
    now = _now_us(engine, board)
    keys = _matching(board.keys, exchange, search, quote)
    ranked = rank(board.rows(window, keys, now), by)
    shown = ranked[:limit]
    if isinstance(engine, Quotes):  # a price per row shown, not a status of every symbol
        prices = {r.symbol: (t[0] if (t := engine.last_trade(r.symbol)) else None) for r in shown}
    else:
        status = engine.status()
        prices = {
            r.symbol: (s.last_price if (s := status.symbols.get(r.symbol)) else None) for r in shown
        }
    rows = []
    for place, row in enumerate(shown, start=1):
        base, quote_asset = _assets(row.symbol)
        rows.append(
            TopRow(
                rank=place,
                exchange=row.exchange,
                symbol=row.symbol,
                base=base,
                quote=quote_asset,
                signals=row.signals,
                alerts=row.alerts,
                usd_max=row.usd_max,
                ratio_max=row.ratio_max,
                spark=row.spark,
                last_price=prices.get(row.symbol),
                last_signal=row.last_signal,
            )
        )
    return json_response(
        TopList(
            window=window,
            by=by,
            bucket_s=WINDOWS[window][0] // 1_000_000,
            now=iso_utc(now) if now is not None else None,
            rows=rows,
            count=len(rows),
            total=len(keys),
        )
    )
