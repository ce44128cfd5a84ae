"""Time bars (OHLCV) per symbol, built from trades by their own exchange time."""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from itertools import islice
from operator import le

import msgspec

from spikewatch.core.decimal import SCALE
from spikewatch.core.model import Trade, TradeBatch


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

    def __init__(self, start: int, price: int, qty: int) -> None:
        self.start = start
        self.open = self.high = self.low = self.close = price
        self.volume = qty
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

    __slots__ = ("_cols", "_open", "interval", "keep")

    def __init__(self, interval: int = 1, keep: int = 3600) -> None:
        if interval < 1 or keep < 1:
            raise ValueError("interval and keep must be >= 1")
        self.interval = interval
        self.keep = keep
        # closed bars as int64 columns (start, open, high, low, close, volume, trades):
        # 56 bytes a bar, where a Bar of Python floats takes about 230 (2,000 symbols
        # with an hour of bars each must fit a small process)
        self._cols: tuple[array[int], ...] | None = None
        self._open: _Open | None = None

    def _close(self, bar: _Open) -> None:
        """Keep the closed ``bar`` (the oldest let go beyond ``keep``, a batch at a time)."""
        cols = self._cols
        if cols is None:
            cols = self._cols = tuple(array("q") for _ in range(7))
        for col, value in zip(
            cols,
            (bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades),
            strict=True,
        ):
            col.append(value)
        extra = len(cols[0]) - self.keep
        if extra >= max(1, self.keep // 8):
            for col in cols:
                del col[:extra]

    def _closed(self, limit: int | None = None) -> list[Bar]:
        """The last ``limit`` closed bars (all kept: None), oldest first."""
        cols = self._cols
        if cols is None or limit == 0:
            return []
        count = (
            min(len(cols[0]), self.keep) if limit is None else min(len(cols[0]), self.keep, limit)
        )
        start = len(cols[0]) - count
        return [
            Bar(t, o / SCALE, h / SCALE, lo / SCALE, c / SCALE, v / SCALE, n)
            for t, o, h, lo, c, v, n in zip(*(col[start:] for col in cols), strict=True)
        ]

    def update(self, trade: Trade) -> None:
        """Add one trade."""
        start = trade.time_us // 1_000_000 // self.interval * self.interval
        bar = self._open
        if bar is None or start > bar.start:
            if bar is not None:
                self._close(bar)
            self._open = _Open(start, trade.price, trade.qty)
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

    def update_many(self, trades: Iterable[Trade]) -> None:
        """:meth:`update` on each of ``trades``, in order (a market's short runs)."""
        interval = self.interval
        bar = self._open
        for trade in trades:
            start = trade.time_us // 1_000_000 // interval * interval
            price = trade.price
            if bar is None or start > bar.start:
                if bar is not None:
                    self._close(bar)
                bar = self._open = _Open(start, price, trade.qty)
                continue
            if start == bar.start:
                if price > bar.high:
                    bar.high = price
                elif price < bar.low:
                    bar.low = price
                bar.close = price
            bar.volume += trade.qty
            bar.trades += 1

    def update_batch(self, batch: TradeBatch) -> None:
        """Add a batch of trades: the same as :meth:`update` on each, in order, but a
        bar's share of a time-ordered batch is folded in at once (max, min, sum)."""
        times, prices, qtys = batch.times_us, batch.prices, batch.qtys
        if not all(map(le, times, islice(times, 1, None))):  # out of time order: one by one
            for trade in batch.trades():
                self.update(trade)
            return
        interval = self.interval
        i, n = 0, len(times)
        while i < n:
            start = times[i] // 1_000_000 // interval * interval
            j = bisect_left(times, (start + interval) * 1_000_000, i)  # the next bar's first
            segment, volume = prices[i:j], sum(qtys[i:j])
            bar = self._open
            if bar is None or start > bar.start:
                if bar is not None:
                    self._close(bar)
                bar = self._open = _Open(start, segment[0], 0)
                bar.trades = 0
            if start == bar.start:
                bar.high = max(bar.high, max(segment))
                bar.low = min(bar.low, min(segment))
                bar.close = segment[-1]
            bar.volume += volume  # a late trade (start before the bar's) adds volume only
            bar.trades += j - i
            i = j

    def bars(self, limit: int | None = None) -> list[Bar]:
        """Closed bars and the forming one, oldest first (at most ``limit``)."""
        forming = self._open is not None
        out = self._closed(None if not limit else max(limit - forming, 0))
        if self._open is not None:
            out.append(self._open.freeze())
        return out[-limit:] if limit else out

    def last(self) -> Bar | None:
        """The forming bar, if any."""
        return self._open.freeze() if self._open is not None else None
