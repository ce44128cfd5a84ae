"""``surge``: a burst of volume in time that no single-trade rule sees.

Volume is bucketed by exchange time (``bucket_s``: 60 for minutes, 1 for seconds). A
bucket surges when its volume so far reaches ``factor`` times the median volume of the
``baseline`` buckets with trades before it: the signature of a pump on a small-cap pair
(a minute's volume 20 to 1,000 times the usual minute) and of a liquidation cascade on a
major. It fires once per bucket, on the trade that crosses, so an alert can go out within
the minute. Exact (integer units, ``factor`` as a ratio of integers); the median is
recomputed only when a bucket ends, so a trade costs O(1).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from decimal import Decimal
from itertools import accumulate, groupby
from operator import mul
from typing import Any

import msgspec

from spikewatch.core.decimal import SCALE, units_to_float
from spikewatch.core.detectors import DetectorParams
from spikewatch.core.model import Signal, SurgeSignal, Trade, TradeBatch, iso_utc
from spikewatch.core.orders import UsdValue


class SurgeDetector:
    """Fires when a bucket's volume reaches ``factor`` x the median of the ``baseline``
    buckets with trades before it (and, if set, ``min_usd`` in value)."""

    name = "surge"
    signal_type = "Surge"

    def __init__(
        self,
        *,
        bucket_s: int = 60,
        baseline: int = 60,
        factor: Decimal | int | str = 5,
        min_usd: float = 0.0,
        usd: UsdValue | None = None,
        name: str | None = None,
    ) -> None:
        factor = Decimal(factor)
        if bucket_s < 1 or baseline < 1:
            raise ValueError("bucket_s and baseline must be >= 1")
        if not factor.is_finite() or factor <= 0:
            raise ValueError(f"factor must be a positive number, got {factor}")
        self.bucket_s = bucket_s
        self.baseline = baseline
        self.factor = factor
        self.min_usd = float(min_usd)
        self.usd = usd or UsdValue()
        self.name = name or self.name  # its config table's name, for alert rules
        self._num, self._den = factor.as_integer_ratio()
        self.key = (
            f"{name or self.name}-b{bucket_s}s-n{baseline}-x{format(factor.normalize(), 'f')}"
        )
        if self.min_usd:
            self.key += f"-usd{self.min_usd:g}"
        self._bucket_us = bucket_s * 1_000_000
        self._bucket = -1  # index of the current bucket (exchange time // bucket)
        self._volume = 0  # base units in it so far
        self._value = 0  # price x qty in it so far (1e-16 quote units)
        self._trades = 0
        self._fired = False
        self._partial = False  # trades of the current bucket were lost
        self._history: deque[int] = deque()  # volumes of earlier buckets with trades
        self._sorted: list[int] = []
        self._median = 0  # x2 (the sum of the two middle values when even), 0: not warm

    def update(self, trade: Trade) -> Signal | None:
        """Feed the next trade; a signal when it makes its bucket surge."""
        bucket = trade.time_us // self._bucket_us
        if bucket != self._bucket:
            if bucket < self._bucket:
                return None  # a late trade in an older bucket (never with in-order ids)
            self._close()
            self._bucket = bucket
        self._volume += trade.qty
        self._value += trade.price * trade.qty
        self._trades += 1
        if self._fired or not self._median:
            return None
        # volume >= factor x median  <=>  volume * den * 2 >= num * (2 x median)
        if self._volume * self._den * 2 < self._num * self._median:
            return None
        value: float = self._value / (SCALE * SCALE)
        usd = self.usd.of(trade.exchange, trade.symbol, value)
        if self.min_usd and (usd is None or usd < self.min_usd):
            return None
        self._fired = True
        return self._signal(trade, usd)

    def update_batch(self, batch: TradeBatch) -> list[Signal]:
        """:meth:`update` on each of the batch's trades, a bucket at a time: sums and the
        crossing point come from C-level loops (``accumulate``, ``bisect``), not a call
        per trade. The same signals and state, exactly."""
        if self.min_usd:  # a crossing below min_usd does not fire: judged trade by trade
            return [s for t in batch.trades() if (s := self.update(t)) is not None]
        bucket_us = self._bucket_us
        times, qtys, prices = batch.times_us, batch.qtys, batch.prices
        out: list[Signal] = []
        start = 0
        for bucket, run in groupby(t // bucket_us for t in times):
            end = start + sum(1 for _ in run)
            if bucket != self._bucket:
                if bucket < self._bucket:
                    start = end
                    continue  # late trades of an older bucket (never with in-order ids)
                self._close()
                self._bucket = bucket
            crossing = self._crossing(qtys, start, end) if not self._fired else None
            if crossing is not None:  # the bucket's state up to that trade, then the signal
                self._add(qtys, prices, start, crossing + 1)
                value: float = self._value / (SCALE * SCALE)
                trade = batch.trade(crossing)
                self._fired = True
                out.append(self._signal(trade, self.usd.of(trade.exchange, trade.symbol, value)))
                self._add(qtys, prices, crossing + 1, end)
            else:
                self._add(qtys, prices, start, end)
            start = end
        return out

    def _crossing(self, qtys: Sequence[int], start: int, end: int) -> int | None:
        """The index of the trade in ``start:end`` whose volume makes the current bucket
        reach ``factor`` x the median (None: none does, or no baseline yet)."""
        if not self._median:
            return None
        # volume * den * 2 >= num * twice_median  <=>  volume >= ceil(num * tm / (2 den))
        need = -(-self._num * self._median // (2 * self._den)) - self._volume
        if need <= 0:
            return start
        running = list(accumulate(qtys[start:end]))
        at = bisect.bisect_left(running, need)
        return start + at if at < len(running) else None

    def _add(self, qtys: Sequence[int], prices: Sequence[int], start: int, end: int) -> None:
        if end <= start:
            return
        part = qtys[start:end]
        self._volume += sum(part)
        self._value += sum(map(mul, prices[start:end], part))
        self._trades += end - start

    def _close(self) -> None:
        """The current bucket ended: its volume joins the baseline (unless trades of it
        were lost)."""
        if self._trades and not self._partial:
            volume = self._volume
            self._history.append(volume)
            bisect.insort(self._sorted, volume)
            if len(self._history) > self.baseline:
                old = self._history.popleft()
                del self._sorted[bisect.bisect_left(self._sorted, old)]
            self._median = self._twice_median()
        self._volume = self._value = self._trades = 0
        self._fired = False
        self._partial = False

    def _twice_median(self) -> int:
        values = self._sorted
        n = len(values)
        if n < self.baseline:
            return 0
        mid = n // 2
        return 2 * values[mid] if n % 2 else values[mid - 1] + values[mid]

    def _signal(self, trade: Trade, usd: float | None) -> Signal:
        exchange, symbol = trade.exchange, trade.symbol
        baseline = self._median / 2
        start_us = self._bucket * self._bucket_us
        return SurgeSignal(
            id=f"{exchange}:{symbol}:{self.key}:{trade.trade_id}",
            exchange=exchange,
            symbol=symbol,
            detector=self.key,
            trade_id=trade.trade_id,
            timestamp=iso_utc(trade.time_us),
            time_us=trade.time_us,
            price=units_to_float(trade.price),
            volume=units_to_float(self._volume),
            quote_volume=self._value / (SCALE * SCALE),
            side=trade.side.value,
            bucket_s=self.bucket_s,
            bucket_start=iso_utc(start_us),
            baseline=baseline / SCALE,
            ratio=self._volume / baseline,
            factor=float(self.factor),
            trades_in_bucket=self._trades,
            usd_value=usd,
        )

    @property
    def warmed_up(self) -> bool:
        """A full baseline of buckets has been seen."""
        return bool(self._median)

    def snapshot(self) -> dict[str, Any]:
        """The baseline and the current bucket (JSON-safe)."""
        return {
            "key": self.key,
            "history": list(self._history),
            "bucket": self._bucket,
            "volume": self._volume,
            "value": self._value,
            "trades": self._trades,
            "fired": self._fired,
            "partial": self._partial,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`snapshot` (of the same parameters)."""
        if state.get("key") != self.key:
            raise ValueError(f"snapshot is for {state.get('key')!r}, not {self.key!r}")
        self._history = deque(int(v) for v in state["history"][-self.baseline :])
        self._sorted = sorted(self._history)
        self._median = self._twice_median()
        self._bucket = int(state["bucket"])
        self._volume = int(state["volume"])
        self._value = int(state["value"])
        self._trades = int(state["trades"])
        self._fired = bool(state["fired"])
        self._partial = bool(state.get("partial", False))

    def reset(self) -> None:
        """Trades were lost: the current bucket's count is short (which can hide a surge,
        never fake one), so it is left out of the baseline; the baseline of earlier
        buckets stays valid."""
        self._volume = self._value = self._trades = 0
        self._partial = True


class SurgeOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The keys of a ``kind = "surge"`` table."""

    bucket_s: int = 60
    baseline: int = 60
    factor: Decimal = Decimal(5)
    min_usd: float = 0.0


def build(params: DetectorParams) -> SurgeDetector:
    """A surge detector from its ``[detectors.<name>]`` table."""
    options = msgspec.convert(params.options, SurgeOptions)
    return SurgeDetector(
        bucket_s=options.bucket_s,
        baseline=options.baseline,
        factor=options.factor,
        min_usd=options.min_usd,
        usd=params.usd,
        name=params.name,
    )
