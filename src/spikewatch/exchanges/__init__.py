"""One package per exchange, each implementing :class:`~.base.Exchange`; see :mod:`.base`."""

from typing import Protocol

from spikewatch.exchanges.base import Control, Exchange, MalformedFrame, ParsedFrames
from spikewatch.exchanges.binance import BinanceSpot, BinanceUsdm


class ExchangeFactory(Protocol):
    """An adapter class: its name and default URLs, and ``cls(api_key=...)`` to make one
    (``type[Exchange]`` would not let a caller pass the key that some REST calls need)."""

    @property
    def name(self) -> str: ...

    @property
    def default_ws_url(self) -> str: ...

    @property
    def default_rest_url(self) -> str: ...

    def __call__(self, *, api_key: str = "") -> Exchange: ...


#: name in settings -> adapter class
EXCHANGES: dict[str, ExchangeFactory] = {"binance": BinanceSpot, "binance-usdm": BinanceUsdm}

__all__ = [
    "EXCHANGES",
    "BinanceSpot",
    "BinanceUsdm",
    "Control",
    "Exchange",
    "ExchangeFactory",
    "MalformedFrame",
    "ParsedFrames",
]
