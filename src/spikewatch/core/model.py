"""Typed values that cross the layers: :class:`Trade` in, :class:`Signal` out."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

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


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """A detector's finding about one trade; encodes to the public JSON shape."""

    id: str  # deterministic: exchange, symbol, detector and trade id
    signal_type: str
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
    average_volume: float  # mean quantity of the window before the trade
    ratio: float  # volume / average_volume
    window: int
    threshold: float


def iso_utc(time_us: int) -> str:
    """Format epoch microseconds as ISO 8601 UTC with milliseconds: ``2024-08-08T23:54:15.342Z``."""
    moment = datetime.fromtimestamp(time_us // 1_000_000, tz=UTC)
    millis = (time_us % 1_000_000) // 1000
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"
