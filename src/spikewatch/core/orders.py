"""Taker orders out of the trade stream, and what they are worth in USD.

A market order that sweeps the book reaches Binance's trade stream as consecutive trades
with the same exchange time and the same taker side (the stream carries no order id): one
per price level and maker order. :class:`OrderAggregator` folds such runs back into one
:class:`Order` (fills, quantity, value, first/last/VWAP price, levels swept). An order is
complete when the symbol's next trade does not belong to it, or, live, when
:meth:`OrderAggregator.flush` finds it old enough (all fills of one order reach the
stream within milliseconds); either way its content is the same, so live and replay
agree. Pure: exchange times only, exact integer units.

:class:`UsdValue` turns quote-asset values into USD: 1:1 for USD-stable quotes, else a
configured rate or the live price of ``<quote>USDT`` from the same feed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from itertools import pairwise
from operator import mul, ne
from typing import Any

import msgspec

from spikewatch.core import accel
from spikewatch.core.decimal import SCALE
from spikewatch.core.model import Side, Trade, TradeBatch

#: Quote assets worth one US dollar (stablecoins and USD itself).
USD_STABLE: frozenset[str] = frozenset(
    {"USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "USD", "USDE", "PYUSD"}
)
#: Quote assets a symbol may end with, longest first (Binance spot and futures).
QUOTES: tuple[str, ...] = tuple(
    sorted(
        USD_STABLE
        | {"BTC", "ETH", "BNB", "TRY", "EUR", "BRL", "JPY", "GBP", "AUD", "XRP", "DOGE", "SOL"},
        key=len,
        reverse=True,
    )
)


@functools.lru_cache(maxsize=4096)
def split_symbol(symbol: str) -> tuple[str, str] | None:
    """``("BTC", "USDT")`` for ``BTCUSDT``; None when no known quote asset ends it."""
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return None


class UsdValue:
    """USD per unit of a quote asset: stable quotes 1:1, ``rates`` (asset -> USD) as
    configured, else the last price of ``<asset>USDT`` on the same exchange, which
    ``last_price(exchange, symbol)`` returns in 1e-8 units (None while unknown)."""

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        last_price: Callable[[str, str], int | None] | None = None,
    ) -> None:
        self.rates = {k.upper(): float(v) for k, v in (rates or {}).items()}
        self.last_price = last_price

    def rate(self, exchange: str, quote: str) -> float | None:
        """USD for one unit of ``quote`` (None: not known yet)."""
        if quote in USD_STABLE:
            return 1.0
        fixed = self.rates.get(quote)
        if fixed is not None:
            return fixed
        if self.last_price is not None:
            price = self.last_price(exchange, quote + "USDT")
            if price is not None:
                per_unit: float = price / SCALE
                return per_unit
        return None

    def of(self, exchange: str, symbol: str, quote_value: float) -> float | None:
        """A value in ``symbol``'s quote asset, in USD (None: no rate known)."""
        parts = split_symbol(symbol)
        if parts is None:
            return None
        rate = self.rate(exchange, parts[1])
        return None if rate is None else quote_value * rate


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """One taker order, folded from its fills."""

    exchange: str
    symbol: str
    side: Side
    time_us: int
    first_id: int
    last_id: int
    fills: int
    qty: int  # 1e-8 units of the base asset
    quote_value: int  # sum of price x qty, in 1e-16 units of the quote asset
    first_price: int  # 1e-8 units
    last_price: int
    levels: int  # distinct prices swept

    @property
    def vwap(self) -> int:
        """The volume-weighted average price, 1e-8 units (rounded down)."""
        return self.quote_value // self.qty if self.qty else self.first_price

    @property
    def quote_float(self) -> float:
        """The order's value in the quote asset."""
        value: float = self.quote_value / (SCALE * SCALE)
        return value


_SIDES = (Side.BUY, Side.SELL)  # by buyer_is_maker: 1 means the taker sold


class OrderAggregator:
    """One symbol's open order: :meth:`add` each trade in order; it returns the order
    that trade completed (the previous one), if any."""

    __slots__ = ("_first", "_last", "_levels", "_n", "_qty", "_value")

    def __init__(self) -> None:
        self._first: Trade | None = None
        self._last: Trade | None = None
        self._n = 0
        self._qty = 0
        self._value = 0
        self._levels = 0

    def add(self, trade: Trade) -> Order | None:
        """Fold ``trade`` into the open order, or close it and open the next."""
        first = self._first
        done = None
        if first is not None:
            if trade.time_us == first.time_us and trade.side is first.side:
                last = self._last
                assert last is not None
                self._n += 1
                self._qty += trade.qty
                self._value += trade.price * trade.qty
                if trade.price != last.price:
                    self._levels += 1
                self._last = trade
                return None
            done = self._close()
        self._first = self._last = trade
        self._n = 1
        self._qty = trade.qty
        self._value = trade.price * trade.qty
        self._levels = 1
        return done

    def add_batch(self, batch: TradeBatch, floor: int = 0) -> list[tuple[int, Order]]:
        """:meth:`add` on each trade of ``batch``, a run of fills at a time: the orders
        completed, each with the index of the trade that completed it; orders worth less
        than ``floor`` (1e-16 quote units) are left out (never built). The same state
        after, exactly."""
        times, makers = batch.times_us, batch.buyer_is_maker
        prices, qtys = batch.prices, batch.qtys
        n = len(times)
        if n == 0:
            return []
        np = accel.np if n >= accel.NUMPY_FROM else None
        if np is not None:  # run starts and values in bulk; exact sums only where it matters
            t = np.frombuffer(times, np.int64)
            m = np.frombuffer(makers, np.uint8)
            cut = np.flatnonzero((t[1:] != t[:-1]) | (m[1:] != m[:-1])) + 1
            starts = [0, *cut.tolist(), n]
            rough = np.add.reduceat(
                np.frombuffer(prices, np.int64).astype(np.float64)
                * np.frombuffer(qtys, np.int64).astype(np.float64),
                np.asarray(starts[:-1]),
            )
            # a run below this cannot be worth floor (float error is far under 1e-6)
            maybe = (rough >= floor * (1 - 1e-6)).tolist()
        else:
            starts = [0]
            starts += [
                i for i in range(1, n) if times[i] != times[i - 1] or makers[i] != makers[i - 1]
            ]
            starts.append(n)
            maybe = None
        out: list[tuple[int, Order]] = []
        first = self._first
        for k, (a, z) in enumerate(pairwise(starts)):
            if (
                maybe is not None
                and not maybe[k]
                and z < n
                and (
                    first is None
                    or times[a] != first.time_us
                    or _SIDES[makers[a]] is not first.side
                )
            ):  # a complete run worth less than floor that continues nothing: passed over
                if first is not None and self._value >= floor:
                    out.append((a, self._close()))
                first = self._first = None
                continue
            value = sum(map(mul, prices[a:z], qtys[a:z]))
            changes = sum(map(ne, prices[a : z - 1], prices[a + 1 : z]))
            if first is not None and times[a] == first.time_us and _SIDES[makers[a]] is first.side:
                last = self._last  # the run goes on with the open order
                assert last is not None
                self._n += z - a
                self._qty += sum(qtys[a:z])
                self._value += value
                self._levels += (prices[a] != last.price) + changes
                self._last = batch.trade(z - 1)
                continue
            if first is not None and self._value >= floor:  # complete: this run says so
                out.append((a, self._close()))
            if z < n and value < floor:  # a complete order of no interest: not built
                first = self._first = None
                continue
            first = self._first = batch.trade(a)
            self._last = batch.trade(z - 1) if z - a > 1 else first
            self._n = z - a
            self._qty = sum(qtys[a:z])
            self._value = value
            self._levels = 1 + changes
        return out

    @property
    def open(self) -> bool:
        """An order is open (its fills so far are held)."""
        return self._first is not None

    def flush(self, before_us: int) -> Order | None:
        """The open order, closed, if its exchange time is before ``before_us``."""
        first = self._first
        if first is None or first.time_us >= before_us:
            return None
        done = self._close()
        self._first = self._last = None
        return done

    def reset(self) -> None:
        """Forget the open order (trades were lost: it may be incomplete)."""
        self._first = self._last = None

    def _close(self) -> Order:
        first, last = self._first, self._last
        assert first is not None
        assert last is not None
        return Order(
            exchange=first.exchange,
            symbol=first.symbol,
            side=first.side,
            time_us=first.time_us,
            first_id=first.trade_id,
            last_id=last.trade_id,
            fills=self._n,
            qty=self._qty,
            quote_value=self._value,
            first_price=first.price,
            last_price=last.price,
            levels=self._levels,
        )

    def snapshot(self) -> dict[str, Any]:
        """The open order's fills so far (JSON-safe)."""
        if self._first is None:
            return {}
        return {
            "first": msgspec.to_builtins(self._first),
            "last": msgspec.to_builtins(self._last),
            "n": self._n,
            "qty": self._qty,
            "value": self._value,
            "levels": self._levels,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`snapshot`."""
        if not state:
            self.reset()
            return
        self._first = msgspec.convert(state["first"], Trade)
        self._last = msgspec.convert(state["last"], Trade)
        self._n = int(state["n"])
        self._qty = int(state["qty"])
        self._value = int(state["value"])
        self._levels = int(state["levels"])
