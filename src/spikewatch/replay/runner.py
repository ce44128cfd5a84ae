"""Replay: historical or recorded trades through the same pipeline the live engine uses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import msgspec

from spikewatch.core.model import Signal, Trade
from spikewatch.core.pipeline import Pipeline


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
    trades: Iterable[Trade],
    pipeline: Pipeline,
    on_signal: Callable[[Signal], None],
    *,
    symbols: frozenset[str] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    progress_every: int = 65536,
) -> ReplaySummary:
    """Run ``trades`` (in time order) through ``pipeline``; ``on_signal`` gets each signal.

    ``symbols`` keeps only those symbols; ``progress(trades, signals, time_us)`` is called
    every ``progress_every`` trades.
    """
    started = time.perf_counter()
    count = signals = 0
    first: int | None = None
    last: int | None = None
    process = pipeline.process
    next_report = progress_every
    for trade in trades:
        if symbols is not None and trade.symbol not in symbols:
            continue
        count += 1
        moment = trade.time_us
        if first is None or moment < first:
            first = moment
        if last is None or moment > last:
            last = moment
        found = process(trade)
        if found:
            signals += len(found)
            for signal in found:
                on_signal(signal)
        if progress is not None and count >= next_report:
            next_report += progress_every
            progress(count, signals, trade.time_us)
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
