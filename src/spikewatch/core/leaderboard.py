"""The market board: per ``(exchange, symbol)`` activity in the last 5 minutes and the
last hour, for ranking hundreds to thousands of symbols.

Pure, like the rest of ``core/``: it is fed signals and alerts and read with a time, all
exchange times (µs since the epoch), never the wall clock, so a replay, the demo and a
live run that saw the same events show the same board.

Each symbol keeps two rings of time buckets, one per window (each ring holds the
window that ends with the symbol's latest event):

- ``5m``: 30 buckets of 10 s (the window moves on every 10 s, not in steps of a minute,
  and its spark line has 30 points rather than 5);
- ``1h``: 60 buckets of one minute.

A bucket holds the signals and alerts counted in it, and the largest USD value and the
largest ratio among its signals. An event touches one bucket per ring, after emptying
the buckets its ring moves past (at most the ring's size): O(1). A read leaves out the
buckets before its window and changes nothing. So nothing expires on a timer, a quiet
symbol costs nothing at all, and a symbol's memory is fixed (90 buckets, allocated with
its first event; a symbol never seen has no entry).

The spark line of a row is its signals per bucket over the window, oldest first (30
points for 5 minutes, 60 for the hour): the shape of the very counts the row ranks by, so
"12 signals" reads as "a burst in the last minute" or "steady all hour" at a glance. It
comes from the board's own buckets, so it is the same after a restart (the board is
seeded from the store) and in a replay. (Per-minute trade volume from the one-second bars
was the other candidate: it shows the market, not the spikes, is in base units that differ
per symbol, is not restored after a restart, and costs an hour of bars per row.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from spikewatch.core.alerts import Alert, usd_of
from spikewatch.core.model import Signal

__all__ = [
    "BY",
    "WINDOWS",
    "Key",
    "Leaderboard",
    "Row",
    "Window",
    "rank",
]

Key = tuple[str, str]  # (exchange, symbol)
Window = Literal["5m", "1h"]
By = Literal["signals", "alerts", "usd", "ratio"]
#: window name -> (bucket width in µs, buckets)
WINDOWS: dict[str, tuple[int, int]] = {
    "5m": (10_000_000, 30),
    "1h": (60_000_000, 60),
}
#: what a board can be ranked by
BY: tuple[str, ...] = ("signals", "alerts", "usd", "ratio")
_NONE = -1.0  # "no value" in the float buckets (USD values and ratios are >= 0)


class _Ring:
    """``size`` buckets of ``width`` µs: the window ``[head - size + 1, head]`` of bucket
    numbers, bucket ``b`` in slot ``b % size``."""

    __slots__ = ("alerts", "head", "ratio", "signals", "size", "usd", "width")

    def __init__(self, width: int, size: int) -> None:
        self.width = width
        self.size = size
        self.head = -1  # the newest bucket number held (-1: none yet)
        # lists, not arrays: their slices and items need no boxing (reads are 2x faster);
        # the same 8 bytes a bucket per field (the floats of maxima aside)
        self.signals = [0] * size
        self.alerts = [0] * size
        self.usd = [_NONE] * size
        self.ratio = [_NONE] * size

    def _slot(self, time_us: int) -> int | None:
        """The slot of the bucket of ``time_us``, the window moved on to it if it is
        newer than the head (the buckets moved past are emptied: at most ``size``); None
        for a bucket older than the window (outside the window of any later read)."""
        number = time_us // self.width
        head = self.head
        if number > head:
            size = self.size
            if head < 0 or number - head >= size:
                self.signals = [0] * size
                self.alerts = [0] * size
                self.usd = [_NONE] * size
                self.ratio = [_NONE] * size
            else:
                for gone in range(head + 1, number + 1):
                    slot = gone % size
                    self.signals[slot] = 0
                    self.alerts[slot] = 0
                    self.usd[slot] = _NONE
                    self.ratio[slot] = _NONE
            self.head = number
        elif number <= head - self.size:
            return None
        return number % self.size

    def add_signal(self, time_us: int, usd: float | None, ratio: float | None) -> None:
        slot = self._slot(time_us)
        if slot is None:
            return
        self.signals[slot] += 1
        if usd is not None and usd > self.usd[slot]:
            self.usd[slot] = usd
        if ratio is not None and ratio > self.ratio[slot]:
            self.ratio[slot] = ratio

    def add_alert(self, time_us: int) -> None:
        slot = self._slot(time_us)
        if slot is not None:
            self.alerts[slot] += 1

    def read(self, now_us: int) -> tuple[int, int, float, float, list[int]]:
        """Signals, alerts, largest USD value, largest ratio (``_NONE``: none) and the
        signals per bucket (oldest first) of the window ending with ``now_us``'s bucket,
        which is never before the head (reads are at or after the latest event). Reads
        change nothing: the buckets between the head and now are empty, those before the
        window are left out."""
        size = self.size
        shift = now_us // self.width - self.head  # buckets from the head to now, >= 0
        if self.head < 0 or shift >= size:
            return 0, 0, _NONE, _NONE, [0] * size
        first = (self.head + 1) % size  # the slot of the ring's oldest bucket
        # the ring's buckets oldest first, less the `shift` oldest (outside the window)
        keep = (first + shift) % size
        count = size - shift
        if keep + count <= size:
            part = slice(keep, keep + count)
            signals = self.signals[part]
            alerts = self.alerts[part]
            usd = self.usd[part]
            ratio = self.ratio[part]
        else:
            signals = self.signals[keep:] + self.signals[: keep + count - size]
            alerts = self.alerts[keep:] + self.alerts[: keep + count - size]
            usd = self.usd[keep:] + self.usd[: keep + count - size]
            ratio = self.ratio[keep:] + self.ratio[: keep + count - size]
        spark = signals + [0] * shift
        return sum(signals), sum(alerts), max(usd), max(ratio), spark


class _Entry:
    """One symbol: its rings, and its latest signal."""

    __slots__ = ("last", "rings")

    def __init__(self) -> None:
        self.rings = {name: _Ring(width, size) for name, (width, size) in WINDOWS.items()}
        self.last: Signal | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One symbol's activity in a window."""

    exchange: str
    symbol: str
    signals: int
    alerts: int  # alerts opened (by the time of their first signal)
    usd_max: float | None  # the largest USD value of one signal (None: no signal had one)
    ratio_max: float | None  # the largest ratio (volume spikes, surges; None: no such signal)
    spark: list[int]  # signals per bucket, oldest first (the newest bucket is the current one)
    last_signal: Signal | None  # the latest signal seen (possibly before the window)


def _rank(by: str, row: Row) -> tuple[float, ...]:
    usd = row.usd_max if row.usd_max is not None else _NONE
    ratio = row.ratio_max if row.ratio_max is not None else _NONE
    if by == "alerts":
        return (row.alerts, row.signals, usd)
    if by == "usd":
        return (usd, row.signals, row.alerts)
    if by == "ratio":
        return (ratio, row.signals, row.alerts)
    return (row.signals, row.alerts, usd)


class Leaderboard:
    """Per-symbol signal and alert activity over the last 5 minutes and hour."""

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}
        #: the latest exchange time of any event fed (µs); None before the first
        self.clock_us: int | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, key: Key, time_us: int) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        if self.clock_us is None or time_us > self.clock_us:
            self.clock_us = time_us
        return entry

    def add_signal(self, signal: Signal) -> None:
        """Count one signal (any order; one older than an hour before the symbol's
        latest event is outside every window and only counts for ``last_signal``)."""
        entry = self._entry((signal.exchange, signal.symbol), signal.time_us)
        usd = usd_of(signal)
        ratio = getattr(signal, "ratio", None)
        ratio = float(ratio) if isinstance(ratio, int | float) else None
        for ring in entry.rings.values():
            ring.add_signal(signal.time_us, usd, ratio)
        last = entry.last
        if last is None or (signal.time_us, signal.id) > (last.time_us, last.id):
            entry.last = signal

    def add_signals(self, signals: Iterable[Signal]) -> None:
        """:meth:`add_signal` each."""
        for signal in signals:
            self.add_signal(signal)

    def add_alert(self, alert: Alert) -> None:
        """Count one alert opened, at the time of its first signal (feed each alert once:
        an update of an open alert is not a new one)."""
        entry = self._entry((alert.exchange, alert.symbol), alert.time_us)
        for ring in entry.rings.values():
            ring.add_alert(alert.time_us)

    def keys(self) -> list[Key]:
        """Every symbol that has had an event."""
        return list(self._entries)

    def last_signal(self, key: Key) -> Signal | None:
        """The latest signal of ``key`` (by trade time), if any."""
        entry = self._entries.get(key)
        return entry.last if entry is not None else None

    def now(self, now_us: int | None = None) -> int:
        """The time a read is made at: ``now_us``, but never before the latest event
        (buckets before it may have been reused), and 0 for an empty board."""
        clock = self.clock_us if self.clock_us is not None else 0
        return clock if now_us is None else max(now_us, clock)

    def row(self, key: Key, window: str, now_us: int | None = None) -> Row:
        """``key``'s activity in ``window`` (``5m`` or ``1h``) ending at ``now_us``
        (default: the latest event); zeros for a symbol never seen."""
        _width, size = WINDOWS[window]
        entry = self._entries.get(key)
        if entry is None:
            return Row(key[0], key[1], 0, 0, None, None, [0] * size, None)
        signals, alerts, usd, ratio, spark = entry.rings[window].read(self.now(now_us))
        return Row(
            key[0],
            key[1],
            signals,
            alerts,
            usd if usd != _NONE else None,
            ratio if ratio != _NONE else None,
            spark,
            entry.last,
        )

    def top(
        self,
        window: str,
        by: str = "signals",
        now_us: int | None = None,
        keys: Iterable[Key] | None = None,
    ) -> list[Row]:
        """Rows of ``keys`` (default: every symbol seen), the most active first by ``by``
        (then by symbol): the whole ranking; the caller pages it."""
        now = self.now(now_us)
        return rank(
            [self.row(key, window, now) for key in (self.keys() if keys is None else keys)], by
        )


def rank(rows: Iterable[Row], by: str = "signals") -> list[Row]:
    """``rows``, the most active first by ``by`` (``signals``, ``alerts``, ``usd`` or
    ``ratio``; ties by the others, then by symbol and exchange)."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    ordered = sorted(rows, key=lambda r: (r.symbol, r.exchange))
    ordered.sort(key=lambda r: _rank(by, r), reverse=True)
    return ordered
