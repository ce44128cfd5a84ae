"""How the local simulator speaks Binance spot and USD-M futures (tests and demo run offline).

Both markets send the same ``@trade`` events and REST rows but for a few fields; the
venue modules pick a codec here and hand it out through ``simulator_codec()``.
"""

from __future__ import annotations

import time

from spikewatch.core.decimal import SCALE
from spikewatch.core.model import Side, Trade
from spikewatch.exchanges.binance.common import (
    API_KEY_HEADER,
    MAX_STREAMS_PER_CONNECTION,
    trade_stream,
)


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


def _limit(kind: str, interval: str, num: int, limit: int) -> dict[str, object]:
    """One entry of exchangeInfo's ``rateLimits``."""
    return {"rateLimitType": kind, "interval": interval, "intervalNum": num, "limit": limit}


class _Codec:
    """What both markets' codecs share: stream names, limits and the exchangeInfo reply."""

    rest_weight_limit: int
    #: REST path -> request weight (the simulator charges these per IP and minute)
    rest_weights: dict[str, int]
    #: WebSocket limits the simulator enforces (0: none documented, none enforced)
    max_streams: int = MAX_STREAMS_PER_CONNECTION
    max_messages_per_s: int
    max_connects_per_5min: int
    #: the rateLimits array of exchangeInfo
    rate_limits: tuple[dict[str, object], ...]
    #: what exchangeInfo says of each symbol beside its name, status and assets
    symbol_info: dict[str, object]
    #: a symbol's status in exchangeInfo by the simulator's state of it
    statuses: dict[str, str]

    def stream_name(self, symbol: str) -> str:
        """``btcusdt@trade``."""
        return trade_stream(symbol)

    def exchange_info(
        self,
        symbols: list[str],
        now_ms: int,
        *,
        states: dict[str, str] | None = None,
        assets: dict[str, tuple[str, str]] | None = None,
    ) -> dict[str, object]:
        """An exchangeInfo reply: the venue's rateLimits and every symbol with its status
        (``states``: "trading", "halted" or "delisted" per symbol; trading when absent)
        and its base and quote assets (``assets``; left out when unknown)."""
        states, assets = states or {}, assets or {}

        def describe(symbol: str) -> dict[str, object]:
            status = self.statuses[states.get(symbol, "trading")]
            row: dict[str, object] = {"symbol": symbol, "status": status}
            if symbol in assets:
                row["baseAsset"], row["quoteAsset"] = assets[symbol]
            return {**row, **self.symbol_info}

        return {
            "timezone": "UTC",
            "serverTime": now_ms,
            "rateLimits": list(self.rate_limits),
            "exchangeFilters": [],
            "symbols": [describe(s) for s in symbols],
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
    # https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-endpoints
    # (ping 1, time 1, exchangeInfo 20) and .../rest-api/market-data-endpoints (25 each)
    rest_weights: dict[str, int] = {  # noqa: RUF012
        "/api/v3/ping": 1,
        "/api/v3/time": 1,
        "/api/v3/exchangeInfo": 20,
        "/api/v3/trades": 25,
        "/api/v3/historicalTrades": 25,
    }
    # https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
    # ("WebSocket Limits": 5 incoming messages per second, 1024 streams, 300 connection
    # attempts every 5 minutes per IP)
    max_messages_per_s = 5
    max_connects_per_5min = 300
    rate_limits = (
        _limit("REQUEST_WEIGHT", "MINUTE", 1, 6000),
        _limit("ORDERS", "SECOND", 10, 100),
        _limit("ORDERS", "DAY", 1, 200000),
        _limit("RAW_REQUESTS", "MINUTE", 5, 61000),
    )
    symbol_info: dict[str, object] = {  # noqa: RUF012
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "isSpotTradingAllowed": True,
        "permissions": [],
    }
    # https://developers.binance.com/docs/binance-spot-api-docs/enums (TRADING, END_OF_DAY,
    # HALT, BREAK); a delisted pair stays listed in BREAK
    statuses: dict[str, str] = {  # noqa: RUF012
        "trading": "TRADING",
        "halted": "HALT",
        "delisted": "BREAK",
    }

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
    # .../usds-margined-futures/market-data/rest-api/ (Exchange-Information 1, Check-Server-
    # Time 1, Test-Connectivity 1, Recent-Trades-List 5, Old-Trades-Lookup 20)
    rest_weights: dict[str, int] = {  # noqa: RUF012
        "/fapi/v1/ping": 1,
        "/fapi/v1/time": 1,
        "/fapi/v1/exchangeInfo": 1,
        "/fapi/v1/trades": 5,
        "/fapi/v1/historicalTrades": 20,
    }
    # https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
    # (10 incoming messages per second, 1024 streams); the page states no limit on
    # connection attempts, so none is enforced
    max_messages_per_s = 10
    max_connects_per_5min = 0
    # .../usds-margined-futures/market-data/rest-api/Exchange-Information (the example)
    rate_limits = (
        _limit("REQUEST_WEIGHT", "MINUTE", 1, 2400),
        _limit("ORDERS", "MINUTE", 1, 1200),
        _limit("ORDERS", "SECOND", 10, 300),
    )
    symbol_info: dict[str, object] = {  # noqa: RUF012
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,  # what Binance gives perpetuals
    }
    # contract statuses: TRADING, ... SETTLING, CLOSE; a delisted perpetual is SETTLING;
    # futures have no halt status of their own, so a halted one is shown SETTLING too
    statuses: dict[str, str] = {  # noqa: RUF012
        "trading": "TRADING",
        "halted": "SETTLING",
        "delisted": "SETTLING",
    }

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
