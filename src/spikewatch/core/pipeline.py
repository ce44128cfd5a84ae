"""The pipeline: routes each trade to its symbol's detectors, once, in trade-id order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from spikewatch.core.detectors import Detector
from spikewatch.core.model import Signal, Trade

DetectorFactory = Callable[[str, str], Sequence[Detector]]
"""Builds the detectors for one ``(exchange, symbol)``."""

_NO_SIGNALS: tuple[Signal, ...] = ()


class SymbolStats(msgspec.Struct, frozen=True):
    """A point-in-time copy of one symbol's counters."""

    exchange: str
    symbol: str
    trades: int
    duplicates: int
    gaps: int
    missing_trades: int
    signals: int
    last_trade_id: int | None
    last_trade_time_us: int | None
    last_price: int | None
    warmed_up: bool


class _SymbolState:
    __slots__ = (
        "detectors",
        "duplicates",
        "gaps",
        "last",
        "last_id",
        "missing",
        "signals",
        "trades",
    )

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)
        self.last_id = -1
        self.last: Trade | None = None
        self.trades = 0
        self.duplicates = 0
        self.gaps = 0
        self.missing = 0
        self.signals = 0


class Pipeline:
    """Feeds trades to per-symbol detectors; drops repeats, counts gaps in trade ids.

    Trade ids are consecutive per symbol on Binance, so a trade whose id is not above the
    last one seen was already processed (an overlap after a reconnect or rotation) and is
    dropped; a jump in ids is counted as a gap.
    """

    def __init__(self, detector_factory: DetectorFactory) -> None:
        self._factory = detector_factory
        self._states: dict[tuple[str, str], _SymbolState] = {}

    def process(self, trade: Trade) -> Sequence[Signal]:
        """Run ``trade`` through its symbol's detectors; return the signals it raised."""
        key = (trade.exchange, trade.symbol)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _SymbolState(self._factory(*key))
        tid = trade.trade_id
        last = state.last_id
        if tid <= last:
            state.duplicates += 1
            return _NO_SIGNALS
        if last >= 0 and tid != last + 1:
            state.gaps += 1
            state.missing += tid - last - 1
        state.last_id = tid
        state.last = trade
        state.trades += 1
        found: list[Signal] | None = None
        for detector in state.detectors:
            signal = detector.update(trade)
            if signal is not None:
                if found is None:
                    found = []
                found.append(signal)
        if found is None:
            return _NO_SIGNALS
        state.signals += len(found)
        return found

    def last_trade_id(self, exchange: str, symbol: str) -> int | None:
        """The id of the last trade processed for the symbol, if any."""
        state = self._states.get((exchange, symbol))
        return state.last_id if state is not None and state.last_id >= 0 else None

    def stats(self) -> list[SymbolStats]:
        """Copies of every symbol's counters, in first-seen order."""
        out = []
        for (exchange, symbol), s in self._states.items():
            last = s.last
            out.append(
                SymbolStats(
                    exchange=exchange,
                    symbol=symbol,
                    trades=s.trades,
                    duplicates=s.duplicates,
                    gaps=s.gaps,
                    missing_trades=s.missing,
                    signals=s.signals,
                    last_trade_id=last.trade_id if last else None,
                    last_trade_time_us=last.time_us if last else None,
                    last_price=last.price if last else None,
                    warmed_up=all(getattr(d, "warmed_up", True) for d in s.detectors),
                )
            )
        return out

    def snapshot(self) -> dict[str, object]:
        """Every symbol's detector state and last trade id, JSON-safe, for a warm restart."""
        return {
            f"{ex}:{sym}": {
                "last_id": s.last_id,
                "detectors": [d.snapshot() for d in s.detectors],
            }
            for (ex, sym), s in self._states.items()
        }
