"""What Binance spot and USD-M futures share: the ``<symbol>@trade`` stream, raw or combined.

Frames: ``{"e":"trade","E":..,"s":"BTCUSDT","t":id,"p":"price","q":"qty","T":ms,"m":bool,..}``
or the same wrapped as ``{"stream":"btcusdt@trade","data":{..}}``. Unknown fields are
ignored: older spot frames carry ``b``/``a``, spot frames ``M``, futures frames ``X`` and no
``M``. Subscriptions, the decoder, the batch column conversion and the REST trade rows are
the same on both markets; :mod:`.spot` and :mod:`.usdm` add URLs, routes and limits.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from itertools import compress, islice, pairwise, repeat
from operator import ne
from typing import Any, Literal, TypeVar

import msgspec

from spikewatch.core import accel
from spikewatch.core.decimal import MAX_UNITS, BadNumber, UnitsCache
from spikewatch.core.frames import SMALL_RUN, FrameMarks
from spikewatch.core.model import Side, Trade, TradeBatch
from spikewatch.core.npparse import parse_decimals
from spikewatch.core.symbolsets import SymbolInfo
from spikewatch.exchanges.base import Control, MalformedFrame, ParsedFrames, RestRequest

#: Binance accepts at most 1024 streams on one connection (spot and USD-M futures alike).
MAX_STREAMS_PER_CONNECTION = 1024
#: The header that carries an API key (MARKET_DATA endpoints need the key, no signature).
API_KEY_HEADER = "X-MBX-APIKEY"
_YEAR_10000_MS = 253_402_300_800_000


class _TradeMsg(msgspec.Struct):
    event: str = msgspec.field(name="e")
    symbol: str = msgspec.field(name="s")
    trade_id: int = msgspec.field(name="t")
    price: str = msgspec.field(name="p")
    qty: str = msgspec.field(name="q")
    time_ms: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")
    # USD-M futures only: MARKET, or INSURANCE_FUND / ADL liquidation fills (NA: none).
    kind: str | None = msgspec.field(default=None, name="X")


class _Combined(msgspec.Struct):
    stream: str
    data: _TradeMsg


# The same shapes for parse_batch, not tracked by the cyclic GC (they hold only strings,
# ints and bools), which makes decoding tens of thousands of them much cheaper. The
# wrapper takes no other keys, so that a frame it decodes is one that parse() turns into
# the same trade message (see _decode_each).
class _BatchTradeMsg(msgspec.Struct, gc=False):
    # Only market trades decode: any other event goes to parse(), which knows them all.
    event: Literal["trade"] = msgspec.field(name="e")
    symbol: str = msgspec.field(name="s")
    trade_id: int = msgspec.field(name="t")
    price: str = msgspec.field(name="p")
    qty: str = msgspec.field(name="q")
    time_ms: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")
    kind: Literal["MARKET"] | None = msgspec.field(default=None, name="X")


class _BatchCombined(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    stream: str
    data: _BatchTradeMsg


_decode_combined = msgspec.json.Decoder(_Combined).decode
_decode_raw = msgspec.json.Decoder(_TradeMsg).decode
_decode_any = msgspec.json.Decoder().decode
_decode_wrapped = msgspec.json.Decoder(_BatchCombined).decode
_decode_batch_raw = msgspec.json.Decoder(_BatchTradeMsg).decode

_SELL, _BUY = Side.SELL, Side.BUY


def _q(values: Sequence[int]) -> array[int]:
    """``values`` as a TradeBatch column (an ``array('q')`` as it is, else a copy)."""
    return values if isinstance(values, array) else array("q", values)


_COMBINED_HEAD = b'{"stream":'


def _to_trade(msg: _TradeMsg | _BatchTradeMsg, exchange: str, units: UnitsCache) -> Trade | Control:
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


class _RestTrade(msgspec.Struct):
    # spot rows add isBestMatch, futures rows isRPITrade: both ignored
    id: int
    price: str
    qty: str
    time: int
    buyer_is_maker: bool = msgspec.field(name="isBuyerMaker")


_decode_rest_trades = msgspec.json.Decoder(list[_RestTrade]).decode


def trade_stream(symbol: str) -> str:
    """The stream of ``symbol``'s trades: ``btcusdt@trade`` (stream names are lower-case)."""
    return f"{symbol.lower()}@trade"


class BinanceTrades:
    """The ``@trade`` stream protocol both Binance markets speak; subclasses name the venue."""

    #: the exchange name the parsed trades carry
    name: str
    #: every trade event is ``"e":"trade"``; the other streams (depth, bookTicker,
    #: aggTrade, markPrice...) never hold the lower-case word ``trade``
    frame_marks = FrameMarks(b"trade", b'"e":"trade"')

    def __init__(self) -> None:
        # price/qty string -> exact units; one per parser, so no state is shared
        self._units = UnitsCache()

    def _combined_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``<base>/stream?streams=btcusdt@trade/ethusdt@trade``: ``base`` ends in any route."""
        if not symbols:
            raise ValueError("at least one symbol is needed")
        if len(symbols) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"at most {MAX_STREAMS_PER_CONNECTION} streams per connection")
        streams = "/".join(map(trade_stream, symbols))
        return f"{base_url.rstrip('/')}/stream?streams={streams}"

    def subscribe(self, symbols: Sequence[str], request_id: int) -> bytes:
        """``{"method":"SUBSCRIBE","params":["btcusdt@trade",..],"id":n}``."""
        return _request("SUBSCRIBE", symbols, request_id)

    def unsubscribe(self, symbols: Sequence[str], request_id: int) -> bytes:
        """``{"method":"UNSUBSCRIBE","params":["btcusdt@trade",..],"id":n}``."""
        return _request("UNSUBSCRIBE", symbols, request_id)

    def greeting(self, symbols: Sequence[str]) -> list[bytes]:
        """Nothing: the combined-stream URL names the streams."""
        return []

    def heartbeat(self) -> bytes | None:
        """None: Binance keeps connections alive with WebSocket pings, no app messages."""
        return None

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        """What :meth:`parse` makes of each of ``frames``, in far less time per frame.

        Frames are decoded by a C-level loop over msgspec (no Python code per frame), and
        the usual case, all of them market trades, is converted column-wise into
        :class:`TradeBatch` es. Anything else (a malformed frame, a control, an odd
        value) sends the batch, or the frames concerned, through :meth:`parse` itself,
        so every good trade is kept and every bad frame reported exactly as it would be.
        """
        if not frames:
            return ParsedFrames([], [], [])
        if len(frames) == 1:  # a quiet market's read
            try:
                item = self.parse(frames[0])
            except MalformedFrame as exc:
                return ParsedFrames([], [(0, exc)], [])
            if type(item) is Trade:
                return ParsedFrames([item], [], [])
            assert isinstance(item, Control)
            return ParsedFrames([], [], [(0, item)])
        if len(frames) < SMALL_RUN:  # the bulk set-up costs more than it saves
            return self._parse_few(frames)
        msgs = _decode_each(frames)
        if None not in msgs:
            fast = self._columns(msgs)  # type: ignore[arg-type]  # no None in it
            if fast is not None:
                return fast
        return self._convert_each(frames, msgs)

    def _parse_few(self, frames: Sequence[bytes]) -> ParsedFrames:
        """A few frames, each through :meth:`parse` (the same results as the bulk path)."""
        results: list[Trade | Control | MalformedFrame] = []
        for frame in frames:
            try:
                results.append(self.parse(frame))
            except MalformedFrame as exc:
                results.append(exc)
        return ParsedFrames.collect(results)

    def _columns(self, msgs: list[_BatchTradeMsg]) -> ParsedFrames | None:
        """The usual case in bulk: every frame a market trade with valid values (the
        decoder let only market trade events through). None otherwise."""
        n = len(msgs)
        ids: Sequence[int] = [m.trade_id for m in msgs]
        times: Sequence[int] = [m.time_ms for m in msgs]
        np = accel.np if n >= accel.NUMPY_FROM else None
        if np is not None:  # ints beyond int64 make np.array raise OverflowError
            try:
                id_view = np.array(ids, dtype=np.int64)
                ms_view = np.array(times, dtype=np.int64)
            except OverflowError:
                return None
            if int(id_view.min()) < 0 or int(ms_view.min()) <= 0:
                return None
            if int(ms_view.max()) >= _YEAR_10000_MS:  # ids: int64 is MAX_UNITS at most
                return None
            ids = array("q", id_view.tobytes())
            times_us: Sequence[int] = array("q", (ms_view * 1000).tobytes())
        else:
            if min(ids) < 0 or max(ids) > MAX_UNITS:
                return None
            if min(times) <= 0 or max(times) >= _YEAR_10000_MS:
                return None
            times_us = [t * 1000 for t in times]
        prices = self._units_column([m.price for m in msgs])
        qtys = self._units_column([m.qty for m in msgs])
        if prices is None or qtys is None:
            return None
        makers = bytes([m.buyer_is_maker for m in msgs])
        symbols = [m.symbol for m in msgs]
        first = symbols[0]
        name = self.name
        if symbols.count(first) == n:
            if not first.isupper():
                return None
            batch = TradeBatch(name, first, _q(ids), _q(prices), _q(qtys), _q(times_us), makers)
            return ParsedFrames([batch], [], [])
        if not all(map(str.isupper, symbols)):
            return None
        # where the symbol changes: runs of one symbol's trades (a market's read)
        bounds = [0, *compress(range(1, n), map(ne, symbols, islice(symbols, 1, None))), n]
        batches: list[TradeBatch | Trade] = []
        for start, stop in pairwise(bounds):
            symbol = symbols[start]
            if stop - start < SMALL_RUN:  # a few trades of one of many symbols (a market):
                # as lone Trades, which the kernel takes one by one anyway
                for i in range(start, stop):
                    side = _SELL if makers[i] else _BUY
                    batches.append(
                        Trade(name, symbol, ids[i], prices[i], qtys[i], times_us[i], side)
                    )
                continue
            batches.append(
                TradeBatch(
                    name,
                    symbol,
                    _q(ids[start:stop]),
                    _q(prices[start:stop]),
                    _q(qtys[start:stop]),
                    _q(times_us[start:stop]),
                    makers[start:stop],
                )
            )
        return ParsedFrames(batches, [], [])

    def _units_column(self, texts: list[str]) -> Sequence[int] | None:
        """Exact 1e-8 units of price or quantity strings (an ``array('q')`` or a list);
        None if one is not valid."""
        np = accel.np if len(texts) >= accel.NUMPY_FROM else None
        if np is not None:  # plain decimals in bulk, no hashing of each string
            parsed = parse_decimals(np, texts)
            if parsed is not None:
                return array("q", parsed.tobytes())
        try:
            return self._units.lookup_many(texts)
        except BadNumber:
            return None

    def _convert_each(
        self, frames: Sequence[bytes], msgs: list[_BatchTradeMsg | None]
    ) -> ParsedFrames:
        """Frames one by one: a decoded trade message as :meth:`parse` converts it, any
        other frame through :meth:`parse` itself."""
        results: list[Trade | Control | MalformedFrame] = []
        for frame, msg in zip(frames, msgs, strict=True):
            try:
                if msg is not None:
                    results.append(_to_trade(msg, self.name, self._units))
                else:
                    results.append(self.parse(frame))
            except MalformedFrame as exc:
                results.append(exc)
        return ParsedFrames.collect(results)

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

    def exchange_info(self) -> RestRequest:
        """``GET .../exchangeInfo`` of the market (each subclass names its path)."""
        raise NotImplementedError

    def listing(self) -> RestRequest:
        """The venue's listing of pairs: its ``exchangeInfo``."""
        return self.exchange_info()

    def parse_listing(self, body: bytes) -> list[SymbolInfo]:
        """The pairs of an ``exchangeInfo`` reply (spot and USD-M alike:
        ``symbols[].symbol/status/baseAsset/quoteAsset``); :class:`MalformedFrame` when
        the reply is not one."""
        try:
            info = _decode_listing(body)
        except msgspec.DecodeError as exc:
            raise MalformedFrame("bad_rest_reply", str(exc)[:200]) from None
        return [SymbolInfo(s.symbol, s.status, s.baseAsset, s.quoteAsset) for s in info.symbols]

    def parse_rest_trades(self, body: bytes, symbol: str) -> list[Trade]:
        """Trades of a REST ``trades`` or ``historicalTrades`` reply (oldest first).

        Raises :class:`MalformedFrame` when the reply is not a list of valid trades.
        """
        try:
            rows = _decode_rest_trades(body)
        except msgspec.DecodeError as exc:
            raise MalformedFrame("bad_rest_reply", str(exc)[:200]) from None
        trades = []
        units = self._units
        for row in rows:
            try:
                price, qty = units[row.price], units[row.qty]
            except BadNumber as exc:
                raise MalformedFrame("bad_value", str(exc)) from None
            if not 0 <= row.id <= MAX_UNITS or not 0 < row.time < _YEAR_10000_MS:
                raise MalformedFrame("bad_value", f"trade id {row.id}, time {row.time}")
            side = _SELL if row.buyer_is_maker else _BUY
            trades.append(Trade(self.name, symbol, row.id, price, qty, row.time * 1000, side))
        return trades


class _ListedPair(msgspec.Struct):
    symbol: str
    status: str
    baseAsset: str  # Binance's field names
    quoteAsset: str


class _Listing(msgspec.Struct):
    symbols: list[_ListedPair]


_decode_listing = msgspec.json.Decoder(_Listing).decode


class _Request(msgspec.Struct):
    method: str
    params: list[str]
    id: int


def _request(method: str, symbols: Sequence[str], request_id: int) -> bytes:
    if not symbols:
        raise ValueError("at least one symbol is needed")
    return msgspec.json.encode(_Request(method, list(map(trade_stream, symbols)), request_id))


def _decode_each(frames: Sequence[bytes]) -> list[_BatchTradeMsg | None]:
    """The market trade message of each frame, decoded on its own, or None for a frame
    that does not decode as one (a control, another event, a malformed frame...), which
    :meth:`BinanceTrades.parse` must then judge.

    Combined frames are decoded by a wrapper that takes no keys but ``stream`` and
    ``data``: :meth:`BinanceTrades.parse` finds the same trade message in such a frame
    whether or not it starts with ``{"stream":`` (its slow path looks under ``data``).
    Raw frames are decoded as parse decodes them, unless one of them starts like a
    combined frame (parse would decode that one as combined).
    """
    if frames[0][:10] == _COMBINED_HEAD:
        return [m.data if m is not None else None for m in _decode_all(_decode_wrapped, frames)]
    try:
        if any(map(bytes.startswith, frames, repeat(_COMBINED_HEAD))):
            return [None] * len(frames)
    except TypeError:  # str frames: parse() takes them one by one
        return [None] * len(frames)
    return _decode_all(_decode_batch_raw, frames)


_T = TypeVar("_T")
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError, UnicodeError, TypeError)


def _decode_all(decode: Callable[[bytes], _T], frames: Sequence[bytes]) -> list[_T | None]:
    """``decode`` of each frame, None where it fails."""
    try:  # the usual case: one C-level loop over all frames
        return list(map(decode, frames))
    except _DECODE_ERRORS:
        pass
    decoded: list[_T | None] = []
    for frame in frames:
        try:
            decoded.append(decode(frame))
        except _DECODE_ERRORS:
            decoded.append(None)
    return decoded
