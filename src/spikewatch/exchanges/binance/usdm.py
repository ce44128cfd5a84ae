"""Binance USD-M futures (``binance-usdm``): routed stream URLs, limits, ``/fapi`` REST.

Streams: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
Frames are spot's ``@trade`` events plus ``X`` (MARKET, INSURANCE_FUND, ADL, NA) and no
``M``; only ``X=MARKET`` fills are trades (the shared parser ignores the others).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from spikewatch.exchanges.base import Capabilities, RestRequest
from spikewatch.exchanges.binance.codec import UsdmCodec
from spikewatch.exchanges.binance.common import (
    API_KEY_HEADER,
    MAX_STREAMS_PER_CONNECTION,
    BinanceTrades,
)

DEFAULT_WS_URL = "wss://fstream.binance.com"
DEFAULT_REST_URL = "https://fapi.binance.com"

# Since 2026-04-23 fstream serves streams only under routed paths (/public, /market,
# /private); an unrouted connection gets /public streams only, and a stream on the wrong
# route is acknowledged but stays silent.
# https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Important-WebSocket-Change-Notice
# https://developers.binance.com/docs/products/caas/market-data-streams ("a connection
# with no routed path only receives /public data")
# The notice lists /public as the high-frequency route (bookTicker, depth) and /market as
# the regular one (aggTrade, markPrice, kline...); @trade is not in its excerpt. It is
# /public: after the cut-over @trade kept flowing on the unrouted URL (= /public) while
# aggTrade, kline and markPrice went silent there, and @trade answers on /public/ws
# (binance/binance-connector-python#526, ccxt/ccxt#28396).
TRADE_ROUTE = "/public"

#: Trades one look-up returns at most: /fapi/v1/trades takes 1000, historicalTrades 500,
#: so a page by id is 500.
RECENT_PAGE = 1000
HISTORICAL_PAGE = 500
# https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Recent-Trades-List
RECENT_TRADES_WEIGHT = 5
# https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Old-Trades-Lookup
# (MARKET_DATA: needs an X-MBX-APIKEY header, no signature)
HISTORICAL_TRADES_WEIGHT = 20
# https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Exchange-Information
EXCHANGE_INFO_WEIGHT = 1

# https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
# (1024 streams, 10 incoming messages per second, 24 h per connection) and
# https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info
# (REQUEST_WEIGHT 2400 per minute and IP)
CAPABILITIES = Capabilities(
    # Futures trade ids skip the ids of insurance-fund / ADL fills: the stream sends them
    # with X other than MARKET (skipped by the parser) and the public trade files leave
    # single ids out (binance/binance-public-data#363: "3249558288 -> 3249558290").
    id_holes=3,
    max_streams_per_connection=MAX_STREAMS_PER_CONNECTION,
    max_messages_per_second=10,
    max_connection_age_s=24 * 3600,
    rest_page=HISTORICAL_PAGE,
    rest_weight_limit=2400,
)


class BinanceUsdm(BinanceTrades):
    """Binance USD-M futures: routed stream URLs, the shared parser, ``/fapi`` look-ups."""

    name = "binance-usdm"
    default_ws_url = DEFAULT_WS_URL
    default_rest_url = DEFAULT_REST_URL

    def __init__(self, *, api_key: str = "") -> None:
        super().__init__()
        self._api_key = api_key
        # without a key a gap cannot be fetched (historicalTrades needs one): recorded
        self.capabilities = dataclasses.replace(CAPABILITIES, fetch_by_id=bool(api_key))

    def stream_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """``<base>/public/stream?streams=btcusdt@trade/...``: ``base`` without the route."""
        return self._combined_url(base_url.rstrip("/") + TRADE_ROUTE, symbols)

    def recent_trades(self, symbol: str, limit: int) -> RestRequest:
        """``GET /fapi/v1/trades``: the latest ``limit`` (<= 1000) market trades, weight 5."""
        path = f"/fapi/v1/trades?symbol={symbol}&limit={min(limit, RECENT_PAGE)}"
        return RestRequest(path, RECENT_TRADES_WEIGHT)

    def trades_from_id(self, symbol: str, from_id: int, limit: int) -> RestRequest | None:
        """``GET /fapi/v1/historicalTrades``: up to ``limit`` (<= 500) trades from
        ``from_id``, weight 20, with the API key; None when no key was given."""
        if not self._api_key:
            return None
        path = (
            f"/fapi/v1/historicalTrades?symbol={symbol}&fromId={from_id}"
            f"&limit={min(limit, HISTORICAL_PAGE)}"
        )
        return RestRequest(path, HISTORICAL_TRADES_WEIGHT, ((API_KEY_HEADER, self._api_key),))

    def exchange_info(self) -> RestRequest:
        """``GET /fapi/v1/exchangeInfo``: every contract and the rate limits, weight 1."""
        return RestRequest("/fapi/v1/exchangeInfo", EXCHANGE_INFO_WEIGHT)

    def simulator_codec(self) -> UsdmCodec:
        """USD-M's routes, paths and frames for the local simulator."""
        return UsdmCodec()
