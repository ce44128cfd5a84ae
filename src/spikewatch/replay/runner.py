"""Replay: historical or recorded trades through the same pipeline the live engine uses."""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable, Sequence

import msgspec

from spikewatch.core import accel
from spikewatch.core.model import Signal, Trade, TradeBatch
from spikewatch.core.pipeline import Pipeline
from spikewatch.replay.readers import TradeReader


class ReplaySummary(msgspec.Struct, frozen=True):
    """What a replay saw and found."""

    trades: int
    signals: int
    duplicates: int
    gaps: int
    first_time_us: int | None  # earliest trade time seen
    last_time_us: int | None  # latest trade time seen
    wall_seconds: float

    @property
    def span_hours(self) -> float:
        """Hours of market time between the first and the last trade."""
        if self.first_time_us is None or self.last_time_us is None:
            return 0.0
        return (self.last_time_us - self.first_time_us) / 3.6e9

    @property
    def signals_per_hour(self) -> float:
        """Signals per hour of market time."""
        return self.signals / self.span_hours if self.span_hours > 0 else 0.0

    @property
    def trades_per_second(self) -> float:
        """Replay throughput, trades per wall-clock second."""
        return self.trades / self.wall_seconds if self.wall_seconds > 0 else 0.0


def replay(
    trades: Iterable[Trade] | Iterable[TradeBatch] | Iterable[Trade | TradeBatch],
    pipeline: Pipeline,
    on_signal: Callable[[Signal], None],
    *,
    symbols: frozenset[str] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    progress_every: int = 65536,
) -> ReplaySummary:
    """Run ``trades`` (in time order) through ``pipeline``; ``on_signal`` gets each signal.

    ``trades`` may hold :class:`Trade` s, :class:`TradeBatch` es or both; what
    :func:`~spikewatch.replay.readers.read_trades` returns is read a batch at a time
    (the same trades and signals, many times faster). ``symbols`` keeps only those
    symbols; ``progress(trades, signals, time_us)`` is called every ``progress_every``
    trades (or at the end of the batch that crosses the mark).
    """
    started = time.perf_counter()
    count = signals = 0
    first: int | None = None
    last: int | None = None
    process = pipeline.process
    process_batch = pipeline.process_batch
    next_report = progress_every
    items: Iterable[Trade | TradeBatch] = (
        trades.batches() if isinstance(trades, TradeReader) and not trades.started else trades
    )
    found: Sequence[Signal]
    for item in items:
        if type(item) is TradeBatch:
            if symbols is not None and item.symbol not in symbols:
                continue
            n = len(item)
            if not n:
                continue
            count += n
            low, high = _time_range(item.times_us)
            found = process_batch(item)
            moment = item.times_us[-1]
        else:
            assert isinstance(item, Trade)
            if symbols is not None and item.symbol not in symbols:
                continue
            count += 1
            low = high = moment = item.time_us
            found = process(item)
        if first is None or low < first:
            first = low
        if last is None or high > last:
            last = high
        if found:
            signals += len(found)
            for signal in found:
                on_signal(signal)
        if progress is not None and count >= next_report:
            next_report = (count // progress_every + 1) * progress_every
            progress(count, signals, moment)
    stats = pipeline.stats()
    return ReplaySummary(
        trades=sum(s.trades for s in stats),
        signals=signals,
        duplicates=sum(s.duplicates for s in stats),
        gaps=sum(s.gaps for s in stats),
        first_time_us=first,
        last_time_us=last,
        wall_seconds=time.perf_counter() - started,
    )


def _time_range(times: array[int]) -> tuple[int, int]:
    """The earliest and the latest of a batch's times."""
    np = accel.np
    if np is not None and len(times) > 64:
        view = np.frombuffer(times, np.int64)
        return int(view.min()), int(view.max())
    return min(times), max(times)
