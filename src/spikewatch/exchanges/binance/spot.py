"""Binance spot (``binance``): stream URLs, limits and REST trade look-ups.

Docs: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
"""

from __future__ import annotations

from collections.abc import Sequence

from spikewatch.exchanges.base import Capabilities, RestRequest
from spikewatch.exchanges.binance.codec import SpotCodec
from spikewatch.exchanges.binance.common import MAX_STREAMS_PER_CONNECTION, BinanceTrades

DEFAULT_WS_URL = "wss://stream.binance.com:9443"
DEFAULT_REST_URL = "https://api.binance.com"
#: A connection is cut by the server after 24 h; rotate a little before that.
MAX_CONNECTION_AGE_S = 23.5 * 3600
#: REST trade look-ups return at most this many trades per call.
REST_PAGE = 1000
#: Request weight of /api/v3/trades and /api/v3/historicalTrades (Binance REST docs).
# https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints
# (both "Weight: 25" on that page as updated 2026-01-15)
TRADES_WEIGHT = 25
#: Request weight of /api/v3/exchangeInfo without symbols ("Weight: 20").
# https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-endpoints
EXCHANGE_INFO_WEIGHT = 20

CAPABILITIES = Capabilities(
    max_streams_per_connection=MAX_STREAMS_PER_CONNECTION,
    # 5 incoming messages per second (pings, pongs, subscriptions) per connection
    max_messages_per_second=5,
    max_connection_age_s=24 * 3600,
    rest_page=REST_PAGE,
    rest_weight_limit=6000,
)


class BinanceSpot(BinanceTrades):
    """Binance spot: stream URLs, a pure frame parser, and REST trade look-ups."""

    name = "binance"
    default_ws_url = DEFAULT_WS_URL
    default_rest_url = DEFAULT_REST_URL

    def __init__(self, *, api_key: str = "") -> None:
        super().__init__()
        del api_key  # spot's trade look-ups need no key; taken for a uniform constructor
        self.capabilities = CAPABILITIES

    def stream_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """Combined-stream URL: ``<base>/stream?streams=btcusdt@trade/ethusdt@trade``."""
        return self._combined_url(base_url, symbols)

    def recent_trades(self, symbol: str, limit: int) -> RestRequest:
        """``GET /api/v3/trades``: the latest ``limit`` (<= 1000) trades, weight 25."""
        path = f"/api/v3/trades?symbol={symbol}&limit={min(limit, REST_PAGE)}"
        return RestRequest(path, TRADES_WEIGHT)

    def trades_from_id(self, symbol: str, from_id: int, limit: int) -> RestRequest:
        """``GET /api/v3/historicalTrades``: up to ``limit`` trades from ``from_id``, weight 25."""
        path = (
            f"/api/v3/historicalTrades?symbol={symbol}&fromId={from_id}"
            f"&limit={min(limit, REST_PAGE)}"
        )
        return RestRequest(path, TRADES_WEIGHT)

    def exchange_info(self) -> RestRequest:
        """``GET /api/v3/exchangeInfo``: every symbol and the rate limits, weight 20."""
        return RestRequest("/api/v3/exchangeInfo", EXCHANGE_INFO_WEIGHT)

    def simulator_codec(self) -> SpotCodec:
        """Spot's paths and frames for the local simulator."""
        return SpotCodec()
