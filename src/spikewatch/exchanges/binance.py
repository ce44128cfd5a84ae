"""Binance spot market streams: the ``<symbol>@trade`` stream, raw or combined.

Docs: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
Frames: ``{"e":"trade","E":..,"s":"BTCUSDT","t":id,"p":"price","q":"qty","T":ms,"m":bool,..}``
or the same wrapped as ``{"stream":"btcusdt@trade","data":{..}}``. Unknown fields are
ignored: older spot frames carry ``b``/``a``, futures frames carry ``X`` and no ``M``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from spikewatch.core.decimal import MAX_UNITS, BadNumber, UnitsCache
from spikewatch.core.model import Side, Trade
from spikewatch.exchanges.base import Control, MalformedFrame

DEFAULT_WS_URL = "wss://stream.binance.com:9443"
DEFAULT_REST_URL = "https://api.binance.com"
#: A connection is cut by the server after 24 h; rotate a little before that.
MAX_CONNECTION_AGE_S = 23.5 * 3600
#: Binance accepts at most 1024 streams on one connection.
MAX_STREAMS_PER_CONNECTION = 1024
_YEAR_10000_MS = 253_402_300_800_000


class _TradeMsg(msgspec.Struct):
    event: str = msgspec.field(name="e")
    symbol: str = msgspec.field(name="s")
    trade_id: int = msgspec.field(name="t")
    price: str = msgspec.field(name="p")
    qty: str = msgspec.field(name="q")
    time_ms: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")
    # USD-M futures only: MARKET, or INSURANCE_FUND / ADL liquidation fills.
    kind: str | None = msgspec.field(default=None, name="X")


class _Combined(msgspec.Struct):
    stream: str
    data: _TradeMsg


_decode_combined = msgspec.json.Decoder(_Combined).decode
_decode_raw = msgspec.json.Decoder(_TradeMsg).decode
_decode_any = msgspec.json.Decoder().decode

_SELL, _BUY = Side.SELL, Side.BUY


def _to_trade(msg: _TradeMsg, exchange: str, units: UnitsCache) -> Trade | Control:
    if msg.event != "trade":
        return Control.IGNORED
    if msg.kind is not None and msg.kind != "MARKET":
        return Control.IGNORED
    try:
        price = units[msg.price]
        qty = units[msg.qty]
    except BadNumber as exc:
        raise MalformedFrame("bad_value", str(exc)) from None
    if not 0 <= msg.trade_id <= MAX_UNITS or not 0 < msg.time_ms < _YEAR_10000_MS:
        raise MalformedFrame("bad_value", f"trade id {msg.trade_id}, time {msg.time_ms}")
    symbol = msg.symbol
    if not symbol.isupper():
        symbol = symbol.upper()
        if not symbol:
            raise MalformedFrame("bad_value", "empty symbol")
    return Trade(
        exchange,
        symbol,
        msg.trade_id,
        price,
        qty,
        msg.time_ms * 1000,
        _SELL if msg.buyer_is_maker else _BUY,
    )


def _slow_parse(frame: bytes | str, exchange: str, units: UnitsCache) -> Trade | Control:
    """Decode a frame the fast paths could not: other key orders or spacing, controls,
    and everything malformed (which raises MalformedFrame)."""
    try:
        doc = _decode_any(frame)
    except msgspec.DecodeError as exc:
        raise MalformedFrame("not_json", str(exc)) from None
    except (RecursionError, UnicodeError) as exc:
        raise MalformedFrame("not_json", type(exc).__name__) from None
    if not isinstance(doc, dict):
        raise MalformedFrame("bad_schema", f"expected an object, got {type(doc).__name__}")
    inner: Any = doc.get("data", doc)
    if not isinstance(inner, dict):
        raise MalformedFrame("bad_schema", "'data' is not an object")
    event = inner.get("e")
    if event == "serverShutdown":
        return Control.SHUTDOWN
    if "result" in doc and "id" in doc:
        return Control.ACK
    if "code" in doc and "msg" in doc:
        raise MalformedFrame("error_reply", f"{doc.get('code')}: {str(doc.get('msg'))[:200]}")
    if isinstance(event, str) and event != "trade":
        return Control.IGNORED
    if event == "trade":
        try:
            return _to_trade(msgspec.convert(inner, _TradeMsg), exchange, units)
        except msgspec.ValidationError as exc:
            raise MalformedFrame("bad_schema", str(exc)) from None
    stream = doc.get("stream")
    if isinstance(stream, str) and not stream.endswith("@trade"):
        return Control.IGNORED  # another stream's event (e.g. bookTicker has no "e")
    raise MalformedFrame("bad_schema", "not a trade event")


class BinanceSpot:
    """Binance spot: stream URLs and a pure frame parser."""

    name = "binance"

    def __init__(self) -> None:
        # price/qty string -> exact units; one per parser, so no state is shared
        self._units = UnitsCache()

    def stream_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """Combined-stream URL: ``<base>/stream?streams=btcusdt@trade/ethusdt@trade``."""
        if not symbols:
            raise ValueError("at least one symbol is needed")
        if len(symbols) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"at most {MAX_STREAMS_PER_CONNECTION} streams per connection")
        streams = "/".join(f"{s.lower()}@trade" for s in symbols)
        return f"{base_url.rstrip('/')}/stream?streams={streams}"

    def parse(self, frame: bytes | str) -> Trade | Control:
        """Decode a raw or combined ``@trade`` frame into a :class:`Trade`."""
        head = frame[:10]
        try:
            if head == b'{"stream":' or head == '{"stream":':
                return _to_trade(_decode_combined(frame).data, self.name, self._units)
            return _to_trade(_decode_raw(frame), self.name, self._units)
        except (msgspec.DecodeError, RecursionError, UnicodeError):
            # ValidationError is a DecodeError: a wrapper first, other spacing, a control
            return _slow_parse(frame, self.name, self._units)
