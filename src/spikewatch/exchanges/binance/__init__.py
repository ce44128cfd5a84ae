"""Binance: spot (:mod:`.spot`, ``binance``) and USD-M futures (:mod:`.usdm`, ``binance-usdm``).

What both markets share (the ``@trade`` decoder, batch columns, REST rows) is in
:mod:`.common`; the simulator's codecs are in :mod:`.codec`.
"""

from spikewatch.exchanges.binance.spot import BinanceSpot
from spikewatch.exchanges.binance.usdm import BinanceUsdm

__all__ = ["BinanceSpot", "BinanceUsdm"]
