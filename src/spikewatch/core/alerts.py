"""Alert rules: from many signals to the few alerts a trader acts on.

A rule (TOML ``[[alerts]]``) names the detectors it listens to, the symbols, a minimum USD
value and a severity. Signals that match open an :class:`Alert`; further matching signals
of the same ``(exchange, symbol, rule)`` within ``cooldown_s`` of the last one are folded
into it (counted, their value added), so one event is one alert. Pure and driven by
exchange time: live and replay give the same alerts, with deterministic ids.

An alert's ``usd_total`` is the value of the distinct trades its signals cover: a big
trade flagged on its own and again inside the order it belongs to (the shipped ``whale``
rule listens to both) counts once. Trade and order signals name the trade ids they cover
(``trade_id`` to ``last_trade_id``); the alert keeps the recent ranges it has counted and
adds only what a new signal covers beyond them. A surge's value is its time bucket's, not
a range of ids: it is added as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from spikewatch.core.model import Signal, iso_utc
from spikewatch.core.orders import USD_STABLE, split_symbol

SEVERITIES = ("info", "warning", "critical")

#: Counted trade ranges an open alert remembers, at most (an order's fills flagged one by
#: one before the order itself: far more than any real order has fills over a tier).
MAX_PIECES = 256


class Piece(NamedTuple):
    """Trade ids ``first..last`` at exchange time ``time_us`` whose value (USD) an alert
    has counted."""

    first: int
    last: int
    usd: float
    time_us: int = 0


class AlertRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[alerts]]`` table."""

    name: str
    detectors: list[str]  # detector names (config table names) or keys
    symbols: list[str] = []  # empty: every symbol
    min_usd: float = 0.0
    severity: str = "warning"
    cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.name or not self.detectors:
            raise ValueError("an alert rule needs a name and at least one detector")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        if self.min_usd < 0 or self.cooldown_s < 0:
            raise ValueError("min_usd and cooldown_s must be >= 0")


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alert: the first signal that opened it and what was folded in since."""

    id: str  # rule:exchange:symbol:first signal's trade id (deterministic)
    rule: str
    severity: str
    exchange: str
    symbol: str
    side: str  # "buy", "sell" or "mixed"
    timestamp: str  # exchange time of the first signal, ISO 8601
    time_us: int
    last_time_us: int  # of the last signal folded in
    price: float  # of the first signal
    usd_value: float | None  # the first signal's USD value
    usd_total: float | None  # all signals folded in (None if one had no USD value)
    signals: int
    detectors: list[str]
    first_signal: str  # its id
    summary: str  # one line for a human


class AlertEvent(msgspec.Struct, frozen=True):
    """An alert opened (``opened``: notify) or updated (a signal folded in)."""

    alert: Alert
    opened: bool


def usd_of(signal: Signal) -> float | None:
    """A signal's USD value, where it has one (notional and surge signals carry it; a
    volume spike's quote value counts only for USD-stable quotes)."""
    value = getattr(signal, "usd_value", None)
    if value is not None:
        return float(value)
    parts = split_symbol(signal.symbol)
    if parts is not None and parts[1] in USD_STABLE:
        return float(signal.quote_volume)
    return None


def covered(signal: Signal) -> tuple[int, int] | None:
    """The trade ids a signal's value covers: one trade, or an order's fills; None for a
    surge (its value is a time bucket's)."""
    if getattr(signal, "bucket_s", None) is not None:
        return None
    return signal.trade_id, int(getattr(signal, "last_trade_id", signal.trade_id))


def count_new(pieces: list[Piece], span: tuple[int, int], usd: float, time_us: int = 0) -> float:
    """What ``usd``, the value of trades ``span`` at ``time_us``, adds to the ``pieces``
    counted so far (and record it there): a range already counted adds nothing; an order
    containing trades counted one by one adds its value less theirs.

    Only the pieces of the last two exchange times are kept: an order's fills share one
    time, and its signal comes with the symbol's next trade (a later time) at the latest,
    so a piece older than the two newest times can never be inside a signal to come."""
    first, last = span
    if any(p.first <= first and last <= p.last for p in pieces):
        return 0.0
    inside = [p for p in pieces if first <= p.first and p.last <= last]
    pieces[:] = [p for p in pieces if not (first <= p.first and p.last <= last)]
    pieces.append(Piece(first, last, usd, time_us))
    times = sorted({p.time_us for p in pieces}, reverse=True)
    if len(times) > 2:
        pieces[:] = [p for p in pieces if p.time_us >= times[1]]
    del pieces[:-MAX_PIECES]
    return max(usd - sum(p.usd for p in inside), 0.0)


class AlertRules:
    """The rules and the open alert per ``(exchange, symbol, rule)``."""

    def __init__(self, rules: Sequence[AlertRule], names: dict[str, str] | None = None) -> None:
        self.rules = tuple(rules)
        #: detector key -> the name of its config table (rules may name either)
        self.names = dict(names or {})
        self._open: dict[tuple[str, str, str], Alert] = {}
        #: per open alert: the trade ranges its usd_total has counted (see count_new)
        self._pieces: dict[tuple[str, str, str], list[Piece]] = {}
        #: per (exchange, symbol): the rules with an alert in ``_open``, in the order they
        #: came (a symbol's checkpoint asks for its own: with 2,000 symbols a scan of every
        #: open alert per symbol took seconds of each checkpoint round)
        self._rules_of: dict[tuple[str, str], list[str]] = {}

    def _matches(self, rule: AlertRule, signal: Signal, usd: float | None) -> bool:
        detector = signal.detector
        if detector not in rule.detectors and self.names.get(detector) not in rule.detectors:
            return False
        if rule.symbols and signal.symbol not in rule.symbols:
            return False
        return not rule.min_usd or (usd is not None and usd >= rule.min_usd)

    def feed(self, signals: Iterable[Signal]) -> list[AlertEvent]:
        """The alerts these signals (in order) open or update."""
        events: list[AlertEvent] = []
        for signal in signals:
            usd = usd_of(signal)
            for rule in self.rules:
                if self._matches(rule, signal, usd):
                    events.append(self._apply(rule, signal, usd))
        return events

    def _apply(self, rule: AlertRule, signal: Signal, usd: float | None) -> AlertEvent:
        key = (signal.exchange, signal.symbol, rule.name)
        current = self._open.get(key)
        cooldown_us = int(rule.cooldown_s * 1_000_000)
        span = covered(signal)
        if current is not None and signal.time_us - current.last_time_us <= cooldown_us:
            side = current.side if current.side == signal.side else "mixed"
            total = None
            if current.usd_total is not None and usd is not None:
                pieces = self._pieces.setdefault(key, [])
                added = usd if span is None else count_new(pieces, span, usd, signal.time_us)
                total = current.usd_total + added
            detectors = current.detectors
            if signal.detector not in detectors:
                detectors = [*detectors, signal.detector]
            folded = msgspec.structs.replace(
                current,
                side=side,
                last_time_us=signal.time_us,
                usd_total=total,
                signals=current.signals + 1,
                detectors=detectors,
                summary=_folded(current, current.signals + 1, total),
            )
            self._open[key] = folded
            return AlertEvent(folded, opened=False)
        alert = Alert(
            id=f"{rule.name}:{signal.exchange}:{signal.symbol}:{signal.trade_id}",
            rule=rule.name,
            severity=rule.severity,
            exchange=signal.exchange,
            symbol=signal.symbol,
            side=signal.side,
            timestamp=iso_utc(signal.time_us),
            time_us=signal.time_us,
            last_time_us=signal.time_us,
            price=signal.price,
            usd_value=usd,
            usd_total=usd,
            signals=1,
            detectors=[signal.detector],
            first_signal=signal.id,
            summary=_summary(rule, signal, usd, 1),
        )
        self._keep(key, alert)
        self._pieces[key] = (
            [Piece(*span, usd, signal.time_us)] if span is not None and usd is not None else []
        )
        return AlertEvent(alert, opened=True)

    def open_alerts(self, exchange: str, symbol: str) -> list[dict[str, Any]]:
        """The alerts of ``(exchange, symbol)`` whose cooldown may still run (JSON-safe),
        to keep in that symbol's checkpoint."""
        rules = self._rules_of.get((exchange, symbol), ())
        return [self._saved((exchange, symbol, rule)) for rule in rules]

    def reopen(self, alerts: Sequence[dict[str, Any]]) -> None:
        """Continue the cooldowns of :meth:`open_alerts` (rules no longer in force are
        left out)."""
        names = {rule.name for rule in self.rules}
        for raw in alerts:
            alert = msgspec.convert(raw, Alert)
            if alert.rule in names:
                self._load(alert, raw)

    def snapshot(self) -> dict[str, Any]:
        """The open alerts (their cooldowns run across a restart)."""
        return {"open": [self._saved(key) for key in self._open]}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`snapshot`."""
        self._open = {}
        self._pieces = {}
        self._rules_of = {}
        for raw in state.get("open", []):
            self._load(msgspec.convert(raw, Alert), raw)

    def _keep(self, key: tuple[str, str, str], alert: Alert) -> None:
        """``alert`` is the open alert of ``key`` (indexed by symbol when it is new)."""
        if key not in self._open:
            self._rules_of.setdefault(key[:2], []).append(key[2])
        self._open[key] = alert

    def _saved(self, key: tuple[str, str, str]) -> dict[str, Any]:
        """An open alert as JSON-safe builtins, with the trade ranges it has counted."""
        saved: dict[str, Any] = msgspec.to_builtins(self._open[key])
        saved["counted"] = [list(p) for p in self._pieces.get(key, [])]
        return saved

    def _load(self, alert: Alert, raw: dict[str, Any]) -> None:
        key = (alert.exchange, alert.symbol, alert.rule)
        self._keep(key, alert)
        # checkpoints of older versions have no "counted": their folds go on uncounted
        self._pieces[key] = [
            Piece(int(row[0]), int(row[1]), float(row[2]), int(row[3]) if len(row) > 3 else 0)
            for row in raw.get("counted", [])
        ]


def _money(usd: float | None) -> str:
    if usd is None:
        return "value unknown"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if usd >= size:
            return f"${usd / size:.2f}{unit}"
    return f"${usd:,.0f}"


def _folded(alert: Alert, count: int, total: float | None) -> str:
    """The first signal's line, then how many more were folded in and their sum."""
    head = alert.summary.partition(" (+")[0]
    worth = f", {_money(total)} in all" if total is not None else ""
    return f"{head} (+{count - 1} more{worth})"


def _summary(rule: AlertRule, signal: Signal, usd: float | None, count: int) -> str:
    more = f" (+{count - 1} more)" if count > 1 else ""
    return (
        f"{signal.symbol} {rule.name}: {signal.signal_type} {signal.side} "
        f"{_money(usd)} at {signal.price:,.8g} on {signal.exchange}{more}"
    )
