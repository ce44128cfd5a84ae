"""Binance: spot (:mod:`.spot`, ``binance``) and USD-M futures (:mod:`.usdm`, ``binance-usdm``).

What both markets share (the ``@trade`` decoder, batch columns, REST rows) is in
:mod:`.common`; the simulator's codecs are in :mod:`.codec`.
"""

from spikewatch.exchanges.binance.common import MAX_STREAMS_PER_CONNECTION
from spikewatch.exchanges.binance.spot import (
    DEFAULT_REST_URL,
    DEFAULT_WS_URL,
    MAX_CONNECTION_AGE_S,
    REST_PAGE,
    TRADES_WEIGHT,
    BinanceSpot,
)
from spikewatch.exchanges.binance.usdm import BinanceUsdm

# DEFAULT_*_URL, MAX_CONNECTION_AGE_S, REST_PAGE and TRADES_WEIGHT are spot's, re-exported
# for the engine and config until they read them from the adapter (issue 9).
__all__ = [
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "MAX_CONNECTION_AGE_S",
    "MAX_STREAMS_PER_CONNECTION",
    "REST_PAGE",
    "TRADES_WEIGHT",
    "BinanceSpot",
    "BinanceUsdm",
]
