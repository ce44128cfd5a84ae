"""How the local simulator speaks Binance spot and USD-M futures (tests and demo run offline).

Both markets send the same ``@trade`` events and REST rows but for a few fields; the
venue modules pick a codec here and hand it out through ``simulator_codec()``.
"""

from __future__ import annotations

import time

from spikewatch.core.decimal import SCALE
from spikewatch.core.model import Side, Trade
from spikewatch.exchanges.binance.common import API_KEY_HEADER, trade_stream


def _fmt(units: int) -> str:
    whole, frac = divmod(units, SCALE)
    return f"{whole}.{frac:08d}"


def _rest_row(trade: Trade) -> dict[str, object]:
    return {
        "id": trade.trade_id,
        "price": _fmt(trade.price),
        "qty": _fmt(trade.qty),
        "quoteQty": _fmt(trade.price * trade.qty // SCALE),
        "time": trade.time_us // 1000,
        "isBuyerMaker": trade.side is Side.SELL,
    }


class _Codec:
    """What both markets' codecs share: stream names and the exchangeInfo reply."""

    rest_weight_limit: int
    #: what exchangeInfo says of each symbol beside its name and status
    symbol_info: dict[str, object]

    def stream_name(self, symbol: str) -> str:
        """``btcusdt@trade``."""
        return trade_stream(symbol)

    def exchange_info(self, symbols: list[str], now_ms: int) -> dict[str, object]:
        """A minimal exchangeInfo reply: the weight limit and the symbols."""
        return {
            "timezone": "UTC",
            "serverTime": now_ms,
            "rateLimits": [_weight_limit(self.rest_weight_limit)],
            "symbols": [{"symbol": s, "status": "TRADING", **self.symbol_info} for s in symbols],
        }


class SpotCodec(_Codec):
    """Binance spot: ``/ws`` and ``/stream``, ``/api/v3/...`` REST, no API key needed."""

    # https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
    ws_routes: tuple[str, ...] = ("/ws", "/stream")
    recent_trades_path = "/api/v3/trades"
    historical_trades_path = "/api/v3/historicalTrades"
    time_path = "/api/v3/time"
    ping_path = "/api/v3/ping"
    exchange_info_path = "/api/v3/exchangeInfo"
    api_key_header = ""
    #: REQUEST_WEIGHT per minute that exchangeInfo announces
    rest_weight_limit = 6000
    symbol_info: dict[str, object] = {"isSpotTradingAllowed": True}  # noqa: RUF012

    def trade_frame(self, trade: Trade) -> bytes:
        """A spot ``@trade`` event (event time = trade time), fields in Binance's order."""
        ms = trade.time_us // 1000
        maker = "true" if trade.side is Side.SELL else "false"
        return (
            f'{{"e":"trade","E":{ms},"s":"{trade.symbol}","t":{trade.trade_id},'
            f'"p":"{_fmt(trade.price)}","q":"{_fmt(trade.qty)}","T":{ms},"m":{maker},"M":true}}'
        ).encode()

    def rest_trade(self, trade: Trade) -> dict[str, object]:
        """A ``/api/v3/trades`` row (spot rows carry ``isBestMatch``)."""
        return {**_rest_row(trade), "isBestMatch": True}

    def shutdown_frame(self) -> bytes | None:
        """``{"e":"serverShutdown","E":<now ms>}``: spot announces a server going down."""
        # the wall clock only dates the notice; no parser reads E of it
        return f'{{"e":"serverShutdown","E":{int(time.time() * 1000)}}}'.encode()


class UsdmCodec(_Codec):
    """Binance USD-M futures: the ``/public`` route, ``/fapi/v1/...`` REST, and an API key
    for ``historicalTrades``."""

    # USD-M streams are routed; @trade is served on /public (see usdm.py for the sources)
    ws_routes: tuple[str, ...] = ("/public/ws", "/public/stream")
    recent_trades_path = "/fapi/v1/trades"
    historical_trades_path = "/fapi/v1/historicalTrades"
    time_path = "/fapi/v1/time"
    ping_path = "/fapi/v1/ping"
    exchange_info_path = "/fapi/v1/exchangeInfo"
    # historicalTrades is MARKET_DATA: the key goes in this header
    # https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Old-Trades-Lookup
    api_key_header = API_KEY_HEADER
    rest_weight_limit = 2400
    symbol_info: dict[str, object] = {"contractType": "PERPETUAL"}  # noqa: RUF012

    def trade_frame(self, trade: Trade) -> bytes:
        """A futures ``@trade`` event as recorded: ``e,E,T,s,t,p,q,X,m``, no ``M``."""
        ms = trade.time_us // 1000
        maker = "true" if trade.side is Side.SELL else "false"
        return (
            f'{{"e":"trade","E":{ms},"T":{ms},"s":"{trade.symbol}","t":{trade.trade_id},'
            f'"p":"{_fmt(trade.price)}","q":"{_fmt(trade.qty)}","X":"MARKET","m":{maker}}}'
        ).encode()

    def rest_trade(self, trade: Trade) -> dict[str, object]:
        """A ``/fapi/v1/trades`` row: no ``isBestMatch``, and ``isRPITrade`` as the docs show."""
        return {**_rest_row(trade), "isRPITrade": False}

    def shutdown_frame(self) -> bytes | None:
        """None: the USD-M stream docs announce no serverShutdown event."""
        return None


def _weight_limit(limit: int) -> dict[str, object]:
    return {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": limit,
    }
