"""Replay: historical or recorded trades through the same kernel the live engine drives."""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable, Sequence

import msgspec

from spikewatch.core import accel
from spikewatch.core.alerts import AlertEvent
from spikewatch.core.kernel import Kernel, Step
from spikewatch.core.model import GapRecord, Signal, Trade, TradeBatch
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
    lost_trades: int = 0  # in gaps recorded as lost (the windows warmed up again after)
    #: symbols whose trades the ``symbols`` filter left out
    other_symbols: frozenset[str] = frozenset()

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
    kernel: Kernel,
    on_signal: Callable[[Signal], object] | None,
    *,
    symbols: frozenset[str] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    progress_every: int = 65536,
    on_gap: Callable[[GapRecord], None] | None = None,
    on_signals: Callable[[Sequence[Signal]], object] | None = None,
    on_alerts: Callable[[Sequence[AlertEvent]], object] | None = None,
) -> ReplaySummary:
    """Run ``trades`` (in time order) through ``kernel``; ``on_signal`` gets each signal,
    ``on_gap`` each gap recorded as lost (by the kernel's gap policy, as live would);
    ``on_signals``, if given, each step's signals at once (a sink worker's ``put_many``).

    ``trades`` may hold :class:`Trade` s, :class:`TradeBatch` es or both; what
    :func:`~spikewatch.replay.readers.read_trades` returns is read a batch at a time
    (the same trades and signals, many times faster). ``symbols`` keeps only those
    symbols; ``progress(trades, signals, time_us)`` is called every ``progress_every``
    trades (or at the end of the batch that crosses the mark).
    """

    def deliver(step: Step) -> int:
        """Hand a step's results to the callbacks; the trades it recorded as lost."""
        if step.alerts and on_alerts is not None:
            on_alerts(step.alerts)
        if step.signals and on_signals is not None:
            on_signals(step.signals)
        if on_signal is not None:
            for signal in step.signals:
                on_signal(signal)
        missing = 0
        for record in step.lost:
            missing += record.missing
            if on_gap is not None:
                on_gap(record)
        return missing

    started = time.perf_counter()
    count = signals = lost = 0
    first: int | None = None
    last: int | None = None
    feed = kernel.feed
    next_report = progress_every
    items: Iterable[Trade | TradeBatch] = (
        trades.batches() if isinstance(trades, TradeReader) and not trades.started else trades
    )
    others: set[str] = set()
    for item in items:
        if type(item) is TradeBatch:
            if symbols is not None and item.symbol not in symbols:
                others.add(item.symbol)
                continue
            n = len(item)
            if not n:
                continue
            count += n
            low, high = _time_range(item.times_us)
            moment = item.times_us[-1]
        else:
            assert isinstance(item, Trade)
            if symbols is not None and item.symbol not in symbols:
                others.add(item.symbol)
                continue
            count += 1
            low = high = moment = item.time_us
        step = feed((item,))
        if first is None or low < first:
            first = low
        if last is None or high > last:
            last = high
        if step.signals or step.lost:
            signals += len(step.signals)
            lost += deliver(step)
        if progress is not None and count >= next_report:
            next_report = (count // progress_every + 1) * progress_every
            progress(count, signals, moment)
    step = kernel.end()  # trades held for judging that no later trade came to judge
    signals += len(step.signals)
    lost += deliver(step)
    stats = kernel.stats()
    return ReplaySummary(
        trades=sum(s.trades for s in stats),
        signals=signals,
        duplicates=sum(s.duplicates for s in stats),
        gaps=sum(s.gaps for s in stats),
        lost_trades=lost,
        first_time_us=first,
        last_time_us=last,
        wall_seconds=time.perf_counter() - started,
        other_symbols=frozenset(others),
    )


def _time_range(times: array[int]) -> tuple[int, int]:
    """The earliest and the latest of a batch's times."""
    np = accel.np
    if np is not None and len(times) > 64:
        view = np.frombuffer(times, np.int64)
        return int(view.min()), int(view.max())
    return min(times), max(times)
