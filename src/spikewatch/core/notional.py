"""``notional``: a taker order (or a single trade) whose value reaches a USD tier.

Whale orders are what traders act on; a sweep of 13 price levels in one millisecond is one
order, not 13 spikes. With ``unit = "order"`` the fills are folded first
(:class:`~spikewatch.core.orders.OrderAggregator`); with ``unit = "trade"`` each trade is
judged alone. The threshold is the lowest tier, raised on liquid pairs to ``relative``
times the median value of the symbol's last ``window`` orders (or trades), so one profile
fits BTCUSDT and a quiet small-cap pair alike. O(log window) per trade; exact state.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from operator import mul
from typing import Any

import msgspec

from spikewatch.core.decimal import SCALE, units_to_float
from spikewatch.core.detectors import DetectorParams
from spikewatch.core.model import NotionalSignal, Signal, Trade, TradeBatch, iso_utc
from spikewatch.core.orders import USD_STABLE, Order, OrderAggregator, UsdValue, split_symbol

DEFAULT_TIERS: tuple[float, ...] = (100_000.0, 250_000.0, 1_000_000.0)


class NotionalDetector:
    """Fires on an order (or trade) worth at least ``max(tiers[0], relative x median)``
    USD; the signal names the highest tier reached."""

    name = "notional"
    signal_type = "Notional"

    def __init__(
        self,
        tiers: Sequence[float] = DEFAULT_TIERS,
        *,
        unit: str = "order",
        relative: float = 0.0,
        window: int = 1000,
        usd: UsdValue | None = None,
        name: str | None = None,
    ) -> None:
        if not tiers or any(t <= 0 for t in tiers):
            raise ValueError("tiers must be positive USD values")
        if unit not in ("order", "trade"):
            raise ValueError(f"unit must be 'order' or 'trade', not {unit!r}")
        if relative < 0 or window < 1:
            raise ValueError("relative must be >= 0 and window >= 1")
        self.tiers = tuple(sorted(float(t) for t in tiers))
        self.unit = unit
        self.relative = float(relative)
        self.window = window
        self.usd = usd or UsdValue()
        self.name = base = name or self.name  # its config table's name, for alert rules
        tier_text = "-".join(f"{t:.0f}" if t.is_integer() else f"{t:g}" for t in self.tiers)
        self.key = f"{base}-{unit}-t{tier_text}" + (
            f"-r{self.relative:g}w{window}" if self.relative else ""
        )
        self._orders = OrderAggregator() if unit == "order" else None
        self._floors = _Floors(self._floor)
        self._recent: deque[int] = deque()  # quote values (1e-16 units), oldest first
        self._sorted: list[int] = []

    # -- the Detector protocol ---------------------------------------------------------

    def update(self, trade: Trade) -> Signal | None:
        """Feed the next trade; a signal when it (or the order it completed) qualifies."""
        if self._orders is None:
            if self.relative:
                return self._judge(_as_order(trade))
            value = trade.price * trade.qty
            floor = self._floors[trade.symbol]
            if floor is not None:
                if value < floor:
                    return None  # far below the lowest tier: nothing to judge (most trades)
            else:  # a moving rate: _judge's own decision, without making the order first
                usd = self.usd.of(trade.exchange, trade.symbol, value / (SCALE * SCALE))
                if usd is None or usd < self.tiers[0]:
                    return None
            return self._judge(_as_order(trade))
        done = self._orders.add(trade)
        if done is None:
            return None
        if not self.relative:
            floor = self._floors[done.symbol]
            if floor is not None and done.quote_value < floor:
                return None
        return self._judge(done)

    def _floor(self, symbol: str) -> int | None:
        """The lowest tier in 1e-16 quote units, for a USD-stable quote (its rate is 1
        for good); None for other quotes (their rate moves). Cached per symbol."""
        parts = split_symbol(symbol)
        if parts is None or parts[1] not in USD_STABLE:
            return None
        # a little under the tier: the exact decision stays _judge's (float USD values)
        return int(self.tiers[0] * (1 - 1e-9) * SCALE * SCALE)

    @property
    def batchable(self) -> bool:
        """Whether :meth:`update_batch` may be used: per trade and without a relative
        threshold, each signal is of the trade it fires on (an order's comes later)."""
        return self._orders is None and not self.relative

    def update_batch(self, batch: TradeBatch) -> list[Signal]:
        """:meth:`update` on each trade of ``batch`` (per-trade mode): the trades under
        the floor are passed over in one C-level pass, the others judged one by one."""
        floor = self._floors[batch.symbol] if self.batchable else None
        if floor is None:
            return [s for t in batch.trades() if (s := self.update(t)) is not None]
        out = []
        for i, value in enumerate(map(mul, batch.prices, batch.qtys)):
            if value >= floor:
                signal = self._judge(_as_order(batch.trade(i)))
                if signal is not None:
                    out.append(signal)
        return out

    def update_batch_placed(self, batch: TradeBatch) -> list[tuple[int, Signal]]:
        """:meth:`update` on each trade of ``batch`` (order mode), a run of fills at a time:
        each signal with the index of the trade it comes on (the one after its order)."""
        if self._orders is None or self.relative:
            placed = []
            for i, trade in enumerate(batch.trades()):
                signal = self.update(trade)
                if signal is not None:
                    placed.append((i, signal))
            return placed
        floor = self._floors[batch.symbol] or 0
        out = []
        for at, order in self._orders.add_batch(batch, floor):
            signal = self._judge(order)
            if signal is not None:
                out.append((at, signal))
        return out

    @property
    def pending(self) -> bool:
        """An order is open (a later flush may close it)."""
        return self._orders is not None and self._orders.open

    def flush(self, before_us: int) -> list[Signal]:
        """The open order, judged, if it is older than ``before_us`` (exchange time)."""
        if self._orders is None:
            return []
        done = self._orders.flush(before_us)
        if done is None:
            return []
        signal = self._judge(done)
        return [signal] if signal is not None else []

    def snapshot(self) -> dict[str, Any]:
        """The trailing values and the open order (JSON-safe)."""
        return {
            "key": self.key,
            "recent": list(self._recent),
            "order": self._orders.snapshot() if self._orders is not None else {},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`snapshot` (of the same parameters)."""
        if state.get("key") != self.key:
            raise ValueError(f"snapshot is for {state.get('key')!r}, not {self.key!r}")
        self._recent = deque(int(v) for v in state["recent"][-self.window :])
        self._sorted = sorted(self._recent)
        if self._orders is not None:
            self._orders.restore(state.get("order") or {})

    def reset(self) -> None:
        """Forget everything (trades were lost)."""
        self._recent.clear()
        self._sorted.clear()
        if self._orders is not None:
            self._orders.reset()

    @property
    def warmed_up(self) -> bool:
        """Fixed tiers need no history; a relative threshold needs a full window."""
        return not self.relative or len(self._recent) == self.window

    # -- judging -------------------------------------------------------------------------

    def _judge(self, order: Order) -> Signal | None:
        value = order.quote_value
        median = self._median()  # of the orders before this one: None until a full window
        self._remember(value)
        quote: float = value / (SCALE * SCALE)
        usd = self.usd.of(order.exchange, order.symbol, quote)
        if usd is None:
            return None
        floor = self.tiers[0]
        if self.relative:
            if median is None:
                return None  # warming up
            floor = max(floor, self.relative * median * usd / quote)
        if usd < floor:
            return None
        tier = max((t for t in self.tiers if t <= usd), default=self.tiers[0])
        return self._signal(order, usd, tier)

    def _median(self) -> float | None:
        values = self._sorted
        if not self.relative or len(values) < self.window:
            return None
        n = len(values)
        mid = n // 2
        middle = values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2
        quote: float = middle / (SCALE * SCALE)
        return quote

    def _remember(self, value: int) -> None:
        if not self.relative:
            return
        recent = self._recent
        recent.append(value)
        bisect.insort(self._sorted, value)
        if len(recent) > self.window:
            old = recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def _signal(self, order: Order, usd: float, tier: float) -> Signal:
        exchange, symbol = order.exchange, order.symbol
        return NotionalSignal(
            id=f"{exchange}:{symbol}:{self.key}:{order.first_id}",
            exchange=exchange,
            symbol=symbol,
            detector=self.key,
            trade_id=order.first_id,
            timestamp=iso_utc(order.time_us),
            time_us=order.time_us,
            price=units_to_float(order.vwap),
            volume=units_to_float(order.qty),
            quote_volume=order.quote_float,
            side=order.side.value,
            usd_value=usd,
            tier=tier,
            unit=self.unit,
            fills=order.fills,
            levels=order.levels,
            first_price=units_to_float(order.first_price),
            last_price=units_to_float(order.last_price),
            last_trade_id=order.last_id,
        )


def _as_order(trade: Trade) -> Order:
    """A single trade, judged as an order of one fill."""
    return Order(
        exchange=trade.exchange,
        symbol=trade.symbol,
        side=trade.side,
        time_us=trade.time_us,
        first_id=trade.trade_id,
        last_id=trade.trade_id,
        fills=1,
        qty=trade.qty,
        quote_value=trade.price * trade.qty,
        first_price=trade.price,
        last_price=trade.price,
        levels=1,
    )


class NotionalOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The keys of a ``kind = "notional"`` table."""

    tiers: tuple[float, ...] = DEFAULT_TIERS
    unit: str = "order"
    relative: float = 0.0
    median_of: int = 1000


def build(params: DetectorParams) -> NotionalDetector:
    """A notional detector from its ``[detectors.<name>]`` table."""
    options = msgspec.convert(params.options, NotionalOptions)
    return NotionalDetector(
        options.tiers,
        unit=options.unit,
        relative=options.relative,
        window=options.median_of,
        usd=params.usd,
        name=params.name,
    )


class _Floors(dict[str, "int | None"]):
    """Per symbol, the value below which a trade or order cannot reach the lowest tier
    (None: not known for good), computed on first use."""

    def __init__(self, compute: Callable[[str], int | None]) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, symbol: str) -> int | None:
        floor = self[symbol] = self._compute(symbol)
        return floor
