"""Typed values that cross the layers: :class:`Trade` in, :class:`Signal` out, and
:class:`TradeBatch`, many trades of one symbol as columns."""

from __future__ import annotations

import enum
import functools
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import repeat
from typing import ClassVar, Union

import msgspec


class Side(enum.Enum):
    """The taker's (aggressor's) side of a trade."""

    BUY = "buy"
    SELL = "sell"


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One exchange trade. ``price`` and ``qty`` are exact, in units of 1e-8."""

    exchange: str  # lower-case venue name, e.g. "binance"
    symbol: str  # upper-case, e.g. "BTCUSDT"
    trade_id: int  # the venue's trade id: consecutive per symbol on Binance
    price: int  # 1e-8 units of the quote asset per base unit
    qty: int  # 1e-8 units of the base asset
    time_us: int  # exchange trade time, microseconds since the Unix epoch, UTC
    side: Side  # the taker's side


_SIDES = (Side.BUY, Side.SELL)  # indexed by buyer_is_maker: 1 means the taker sold


class TradeBatch(msgspec.Struct, frozen=True, gc=False):
    """Trades of one symbol, in order, as parallel columns: what the batch paths pass
    around instead of one :class:`Trade` per trade (replay reads millions of them).

    The integer columns are ``array('q')`` (int64, as Binance keeps them), so numpy can
    view them without copying; ``buyer_is_maker`` holds one byte per trade, 1 where the
    buyer was the maker, i.e. the taker sold. Pure data: build with :meth:`of` or
    :meth:`from_trades`.
    """

    exchange: str
    symbol: str
    trade_ids: array[int]
    prices: array[int]  # 1e-8 units
    qtys: array[int]  # 1e-8 units
    times_us: array[int]  # exchange trade time, µs since the Unix epoch
    buyer_is_maker: bytes  # 1: the taker sold (Side.SELL), 0: the taker bought

    def __post_init__(self) -> None:
        ids, prices, qtys, times = self.trade_ids, self.prices, self.qtys, self.times_us
        if not ids.typecode == prices.typecode == qtys.typecode == times.typecode == "q":
            raise TypeError("TradeBatch columns must be array('q')")
        if not len(ids) == len(prices) == len(qtys) == len(times) == len(self.buyer_is_maker):
            raise ValueError("TradeBatch columns differ in length")

    @classmethod
    def of(
        cls,
        exchange: str,
        symbol: str,
        trade_ids: Iterable[int],
        prices: Iterable[int],
        qtys: Iterable[int],
        times_us: Iterable[int],
        buyer_is_maker: Iterable[int] | bytes,
    ) -> TradeBatch:
        """A batch from any iterables of ints (bools for ``buyer_is_maker``)."""
        return cls(
            exchange,
            symbol,
            array("q", trade_ids),
            array("q", prices),
            array("q", qtys),
            array("q", times_us),
            bytes(buyer_is_maker),
        )

    @classmethod
    def from_trades(cls, trades: Sequence[Trade]) -> TradeBatch:
        """The columns of ``trades``, which must all be of one exchange and symbol."""
        if not trades:
            raise ValueError("no trades: a batch names its symbol, so it needs one trade")
        if len(trades) == 1:  # a quiet market's read: straight to the columns
            t = trades[0]
            return cls(
                t.exchange,
                t.symbol,
                array("q", (t.trade_id,)),
                array("q", (t.price,)),
                array("q", (t.qty,)),
                array("q", (t.time_us,)),
                b"\x01" if t.side is Side.SELL else b"\x00",
            )
        exchange, symbol = trades[0].exchange, trades[0].symbol
        if any(t.symbol != symbol or t.exchange != exchange for t in trades):
            raise ValueError("a TradeBatch holds trades of one exchange and symbol")
        sell = Side.SELL
        return cls.of(
            exchange,
            symbol,
            [t.trade_id for t in trades],
            [t.price for t in trades],
            [t.qty for t in trades],
            [t.time_us for t in trades],
            [t.side is sell for t in trades],
        )

    def __len__(self) -> int:
        return len(self.trade_ids)

    def trade(self, index: int) -> Trade:
        """The trade at ``index`` (negative counts from the end)."""
        return Trade(
            self.exchange,
            self.symbol,
            self.trade_ids[index],
            self.prices[index],
            self.qtys[index],
            self.times_us[index],
            _SIDES[self.buyer_is_maker[index]],
        )

    def trades(self) -> list[Trade]:
        """One :class:`Trade` per row, in order."""
        n = len(self.trade_ids)
        return list(
            map(
                Trade,
                repeat(self.exchange, n),
                repeat(self.symbol, n),
                self.trade_ids,
                self.prices,
                self.qtys,
                self.times_us,
                map(_SIDES.__getitem__, self.buyer_is_maker),
            )
        )

    def slice(self, start: int, stop: int) -> TradeBatch:
        """The rows ``start:stop`` as a new batch."""
        return TradeBatch(
            self.exchange,
            self.symbol,
            self.trade_ids[start:stop],
            self.prices[start:stop],
            self.qtys[start:stop],
            self.times_us[start:stop],
            self.buyer_is_maker[start:stop],
        )

    def take(self, rows: Sequence[int]) -> TradeBatch:
        """The given rows (indices, in the order given) as a new batch."""
        ids, prices, qtys, times, makers = (
            self.trade_ids,
            self.prices,
            self.qtys,
            self.times_us,
            self.buyer_is_maker,
        )
        return TradeBatch(
            self.exchange,
            self.symbol,
            array("q", [ids[i] for i in rows]),
            array("q", [prices[i] for i in rows]),
            array("q", [qtys[i] for i in rows]),
            array("q", [times[i] for i in rows]),
            bytes([makers[i] for i in rows]),
        )


class Signal(msgspec.Struct, frozen=True, tag_field="signal_type", tag="Signal"):
    """The fields every detector's finding about one trade has.

    Each detector has its own signal type: a subclass with its details as extra fields and
    its ``signal_type`` as the tag (``class VolumeSpikeSignal(Signal, tag="VolumeSpike")``).
    A new detector adds a subclass; nothing here changes. The JSON is flat: the tag, these
    fields, then the details (the shape ``/api/get_signal`` has always served).
    """

    id: str  # deterministic: exchange, symbol, detector and trade id
    exchange: str
    symbol: str
    detector: str
    trade_id: int
    timestamp: str  # exchange trade time, ISO 8601 UTC with milliseconds and "Z"
    time_us: int
    price: float
    volume: float  # the trade's quantity, base asset
    quote_volume: float  # price * volume, quote asset
    side: str  # "buy" or "sell": the taker's side

    #: a spike, the kind ``/api/get_signal`` serves as the latest; the alert profile's
    #: order events and surges are not (they are in ``/api/signals`` and ``/api/alerts``)
    spike: ClassVar[bool] = True

    @property
    def signal_type(self) -> str:
        """The kind of finding, e.g. ``"VolumeSpike"`` (the JSON's ``signal_type``)."""
        return str(type(self).__struct_config__.tag)


class VolumeSpikeSignal(Signal, frozen=True, tag="VolumeSpike"):
    """The original rule's finding: a quantity above ``threshold`` x the window mean."""

    average_volume: float  # mean quantity of the window before the trade
    ratio: float  # volume / average_volume
    window: int
    threshold: float


class NotionalSignal(Signal, frozen=True, tag="Notional"):
    """A taker order (or a single trade) whose value reached a tier. ``trade_id`` is its
    first fill, ``price`` its volume-weighted average, ``volume`` its whole quantity."""

    spike: ClassVar[bool] = False

    usd_value: float | None  # None when the quote asset has no known USD rate yet
    tier: float  # the highest tier reached, USD
    unit: str  # "order" (fills folded) or "trade"
    fills: int
    levels: int  # distinct prices swept
    first_price: float
    last_price: float
    last_trade_id: int


class SurgeSignal(Signal, frozen=True, tag="Surge"):
    """A time bucket whose volume so far reached ``factor`` x the median of the buckets
    with trades before it. ``trade_id``, ``price`` and ``side`` are of the trade that
    crossed; ``volume`` is the bucket's volume so far (base asset)."""

    spike: ClassVar[bool] = False

    bucket_s: int
    bucket_start: str  # ISO 8601
    baseline: float  # median bucket volume, base asset
    ratio: float  # volume / baseline
    factor: float
    trades_in_bucket: int
    usd_value: float | None  # the bucket's value so far, USD


def signal_types() -> tuple[type[Signal], ...]:
    """Every signal type defined so far (the subclasses of :class:`Signal`, any depth)."""
    found: list[type[Signal]] = []
    todo = [Signal]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return tuple(found)


_decoders: dict[tuple[type[Signal], ...], msgspec.json.Decoder[Signal]] = {}


def decode_signal(payload: bytes | str) -> Signal:
    """A signal from its JSON, as its own type (by ``signal_type``); raises
    ``msgspec.DecodeError`` for JSON of no known type."""
    types = signal_types()
    decoder = _decoders.get(types)
    if decoder is None:  # a new signal type was defined since: include it
        decoder = _decoders[types] = msgspec.json.Decoder(Union[types])  # noqa: UP007
    return decoder.decode(payload)


class GapRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Trades that were missed and could not be fetched: the detectors warmed up again
    after it, so it can neither fake nor hide a spike."""

    exchange: str
    symbol: str
    first_id: int  # first missing trade id
    last_id: int  # last missing trade id (inclusive)
    missing: int
    time_us: int  # exchange time of the first trade after the gap
    timestamp: str  # the same, ISO 8601
    reason: str


def iso_utc(time_us: int) -> str:
    """Format epoch microseconds as ISO 8601 UTC with milliseconds: ``2024-08-08T23:54:15.342Z``."""
    minutes, rest = divmod(time_us, 60_000_000)
    return f"{_minute(minutes)}{rest // 1_000_000:02d}.{rest % 1_000_000 // 1000:03d}Z"


@functools.lru_cache(maxsize=1024)
def _minute(minutes: int) -> str:
    """``YYYY-MM-DDTHH:MM:`` of a minute counted from the epoch. Memoised: a replay builds
    many signals within the same minutes, and formatting a datetime cost more than all
    the rest of a signal."""
    moment = datetime.fromtimestamp(minutes * 60, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M}:"
