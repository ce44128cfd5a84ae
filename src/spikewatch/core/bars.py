"""Time bars (OHLCV) per symbol, built from trades by their own exchange time."""

from __future__ import annotations

from collections import deque

import msgspec

from spikewatch.core.decimal import SCALE
from spikewatch.core.model import Trade


class Bar(msgspec.Struct, frozen=True):
    """One interval of one symbol's trades. Prices in quote asset, volume in base asset."""

    time: int  # start of the interval, seconds since the Unix epoch
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int


class _Open:
    __slots__ = ("close", "high", "low", "open", "start", "trades", "volume")

    def __init__(self, start: int, trade: Trade) -> None:
        self.start = start
        self.open = self.high = self.low = self.close = trade.price
        self.volume = trade.qty
        self.trades = 1

    def freeze(self) -> Bar:
        return Bar(
            self.start,
            self.open / SCALE,
            self.high / SCALE,
            self.low / SCALE,
            self.close / SCALE,
            self.volume / SCALE,
            self.trades,
        )


class BarSeries:
    """The last ``keep`` bars of ``interval`` seconds of one symbol, and the one forming.

    A trade older than the forming bar (late or backfilled) is folded into the forming
    bar's volume only, so bars never go back in time.
    """

    __slots__ = ("_bars", "_open", "interval", "keep")

    def __init__(self, interval: int = 1, keep: int = 3600) -> None:
        if interval < 1 or keep < 1:
            raise ValueError("interval and keep must be >= 1")
        self.interval = interval
        self.keep = keep
        self._bars: deque[Bar] = deque(maxlen=keep)
        self._open: _Open | None = None

    def update(self, trade: Trade) -> None:
        """Add one trade."""
        start = trade.time_us // 1_000_000 // self.interval * self.interval
        bar = self._open
        if bar is None or start > bar.start:
            if bar is not None:
                self._bars.append(bar.freeze())
            self._open = _Open(start, trade)
            return
        price = trade.price
        if start == bar.start:
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            bar.close = price
        bar.volume += trade.qty
        bar.trades += 1

    def bars(self, limit: int | None = None) -> list[Bar]:
        """Closed bars and the forming one, oldest first (at most ``limit``)."""
        out = list(self._bars)
        if self._open is not None:
            out.append(self._open.freeze())
        return out[-limit:] if limit else out

    def last(self) -> Bar | None:
        """The forming bar, if any."""
        return self._open.freeze() if self._open is not None else None
