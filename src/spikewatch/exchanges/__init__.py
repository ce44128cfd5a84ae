"""One module per exchange: stream URLs and a pure ``parse(frame)``; see :mod:`.base`."""

from spikewatch.exchanges.base import Control, Exchange, MalformedFrame, ParsedFrames
from spikewatch.exchanges.binance import BinanceSpot

EXCHANGES: dict[str, type[Exchange]] = {"binance": BinanceSpot}

__all__ = [
    "EXCHANGES",
    "BinanceSpot",
    "Control",
    "Exchange",
    "MalformedFrame",
    "ParsedFrames",
]
