"""The pipeline: routes each trade to its symbol's detectors, once, in trade-id order."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from itertools import islice
from operator import attrgetter, lt
from typing import Any

import msgspec

from spikewatch.core import accel
from spikewatch.core.detectors import BatchDetector, Detector
from spikewatch.core.model import Signal, Trade, TradeBatch

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
        "batch_detectors",
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
        # update_batch of each detector, or None where a detector has only update()
        self.batch_detectors = tuple(
            d if isinstance(d, BatchDetector) else None for d in self.detectors
        )
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

    def process_batch(self, batch: TradeBatch) -> list[Signal]:
        """Run a batch of one symbol's trades through its detectors: exactly what
        :meth:`process` on each of its trades would do (signals, order, counters)."""
        n = len(batch)
        if n == 0:
            return []
        key = (batch.exchange, batch.symbol)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _SymbolState(self._factory(*key))
        ids = batch.trade_ids
        last = state.last_id
        first = ids[0]
        if not (first > last and increasing(ids)):
            # Repeats or ids out of order: keep what process() would keep, then go on.
            kept = []
            for i, tid in enumerate(ids):
                if tid > last:
                    kept.append(i)
                    last = tid
            state.duplicates += n - len(kept)
            if not kept:
                return []
            if len(kept) < n:
                batch = batch.take(kept)
                ids = batch.trade_ids
                n = len(kept)
            last = state.last_id
            first = ids[0]
        # Now ids are strictly increasing and above the last one seen.
        if last >= 0 and first != last + 1:
            state.gaps += 1
            state.missing += first - last - 1
        spread = ids[-1] - first
        if spread != n - 1:  # not consecutive: count the jumps inside the batch
            steps = list(map(int.__sub__, islice(ids, 1, None), ids))
            state.gaps += n - 1 - steps.count(1)
            state.missing += spread - (n - 1)
        state.last_id = ids[-1]
        state.last = batch.trade(-1)
        state.trades += n
        found: list[Signal] = []
        produced = 0
        for detector, batched in zip(state.detectors, state.batch_detectors, strict=True):
            if batched is not None:
                signals = batched.update_batch(batch)
            else:
                signals = [s for s in map(detector.update, batch.trades()) if s is not None]
            if signals:
                produced += 1
                found.extend(signals)
        if produced > 1:  # process() gives a trade's signals together, in detector order
            found.sort(key=attrgetter("trade_id"))  # stable: detector order within a trade
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

    def _state(self, exchange: str, symbol: str) -> _SymbolState:
        key = (exchange, symbol)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _SymbolState(self._factory(exchange, symbol))
        return state

    def reset(self, exchange: str, symbol: str) -> None:
        """Forget the symbol's windows (after trades were lost): its detectors warm up again."""
        for detector in self._state(exchange, symbol).detectors:
            detector.reset()

    def checkpoint(self, exchange: str, symbol: str) -> tuple[int, list[dict[str, Any]]] | None:
        """The symbol's last trade id and detector snapshots, if it has seen a trade."""
        state = self._states.get((exchange, symbol))
        if state is None or state.last_id < 0:
            return None
        return state.last_id, [d.snapshot() for d in state.detectors]

    def restore(
        self, exchange: str, symbol: str, last_id: int, snapshots: Sequence[dict[str, Any]]
    ) -> bool:
        """Continue from :meth:`checkpoint`; False (and nothing changed) when the snapshots
        are of other detectors or parameters."""
        state = self._state(exchange, symbol)
        if len(snapshots) != len(state.detectors):
            return False
        keys = [d.key for d in state.detectors]
        if [snap.get("key") for snap in snapshots] != keys:
            return False
        for detector, snap in zip(state.detectors, snapshots, strict=True):
            detector.restore(snap)
        state.last_id = last_id
        return True

    def snapshot(self) -> dict[str, object]:
        """Every symbol's detector state and last trade id, JSON-safe, for a warm restart."""
        return {
            f"{ex}:{sym}": {
                "last_id": s.last_id,
                "detectors": [d.snapshot() for d in s.detectors],
            }
            for (ex, sym), s in self._states.items()
        }


def increasing(ids: array[int]) -> bool:
    """True if every id is above the one before it."""
    np = accel.np
    if np is not None and len(ids) > 64:
        view = np.frombuffer(ids, np.int64)
        return bool((view[1:] > view[:-1]).all())
    return all(map(lt, ids, islice(ids, 1, None)))
