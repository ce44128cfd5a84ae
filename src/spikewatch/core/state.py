"""What the kernel keeps for one ``(exchange, symbol)``: the sequencer, the detectors,
the bars and the counters, and the in-order detection over them. Pure, like the kernel."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import islice
from operator import itemgetter, le, lt

import msgspec

from spikewatch.core import accel
from spikewatch.core.bars import BarSeries
from spikewatch.core.detectors import BatchDetector, Detector
from spikewatch.core.model import Signal, Trade, TradeBatch
from spikewatch.core.sequencer import Sequencer, TradeGuard

#: Upper bounds (ms) of the ingest-lag histogram: local receive time minus exchange time.
LAG_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

#: Trades received this long after their exchange time are history served as if live
#: (a simulator replaying a recording, a backlog): their lag is not counted.
LAG_COUNTED_US = 3600 * 1_000_000

_NO_SIGNALS: tuple[Signal, ...] = ()


class SymbolStats(msgspec.Struct, frozen=True):
    """A point-in-time copy of one ``(exchange, symbol)``'s counters."""

    exchange: str
    symbol: str
    trades: int  # processed by the detectors
    duplicates: int  # dropped as already seen
    gaps: int  # jumps in the processed ids (gaps not filled)
    missing_trades: int  # trades in those jumps
    signals: int
    last_trade_id: int | None
    last_trade_time_us: int | None
    last_price: int | None
    warmed_up: bool
    backfilling: bool  # a gap is being fetched; live trades are held meanwhile
    backfills: int  # gaps filled over REST
    backfilled_trades: int
    gap_records: int  # gaps recorded as lost (the detectors warmed up again)
    id_restarts: int = 0  # the venue restarted its trade ids (confirmed), recorded too
    skipped_ids: int = 0  # ids of fills the venue does not publish (Capabilities.id_holes)


class LagHistogram(msgspec.Struct, frozen=True):
    """Counts by latency (ms) per bucket of a bounds tuple, plus +Inf."""

    counts: list[int]  # not cumulative; the last entry is above the last bound
    sum_ms: float


class SymbolState:
    """Everything the kernel keeps for one ``(exchange, symbol)``."""

    __slots__ = (
        "backfilled",
        "backfills",
        "bars",
        "batch_detectors",
        "detectors",
        "duplicates",
        "exchange",
        "gap_records",
        "gaps",
        "guard",
        "lag_counts",
        "lag_sum",
        "last",
        "last_id",
        "missing",
        "pending",
        "restarts",
        "sequencer",
        "signals",
        "skipped",
        "symbol",
        "trades",
        "updates",
        "watched",
    )

    def __init__(
        self,
        exchange: str,
        symbol: str,
        detectors: Sequence[Detector],
        *,
        consecutive: bool,
        bars: bool,
        bar_keep: int = 3600,
        max_held: int,
        holes: int = 0,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.detectors = tuple(detectors)
        #: each detector's bound update(), looked up once (run() calls them per trade)
        self.updates = tuple(d.update for d in self.detectors)
        # update_batch of each detector, or None where a detector has only update()
        self.batch_detectors = tuple(
            d if isinstance(d, BatchDetector) and getattr(d, "batchable", True) else None
            for d in self.detectors
        )
        self.sequencer = Sequencer(max_held=max_held, consecutive=consecutive, holes=holes)
        self.guard = TradeGuard(consecutive=consecutive)
        self.bars = BarSeries(keep=bar_keep) if bars else None
        # trades run since the last settle(), for the bars: the chart can wait until a
        # step's signals have gone out, a signal should not wait for the chart
        self.pending: list[Sequence[Trade] | TradeBatch] = []
        self.last_id = -1  # of the last trade processed
        self.last: Trade | None = None
        self.trades = self.duplicates = self.gaps = self.missing = self.signals = 0
        self.backfills = self.backfilled = self.gap_records = self.restarts = 0
        self.skipped = 0  # ids of a venue's unpublished fills (Capabilities.id_holes)
        self.lag_counts = [0] * (len(LAG_BUCKETS_MS) + 1)
        self.lag_sum = 0.0
        #: its trades are detected on (the kernel sets it; others are counted as ignored)
        self.watched = True

    # -- detection: in-order trades only (the sequencer sees to it) ------------------

    def run(self, trades: Sequence[Trade]) -> Sequence[Signal]:
        """Run in-order trades through the detectors; the signals they raise."""
        found: list[Signal] | None = None
        updates = self.updates
        last = self.last_id
        for trade in trades:
            tid = trade.trade_id
            if tid <= last:
                self.duplicates += 1
                continue
            if last >= 0 and tid != last + 1:
                self.gaps += 1
                self.missing += tid - last - 1
            self.last_id = last = tid
            self.last = trade
            self.trades += 1
            for update in updates:
                signal = update(trade)
                if signal is not None:
                    if found is None:
                        found = []
                    found.append(signal)
        if self.bars is not None:
            self.pending.append(trades)
        if found is None:
            return _NO_SIGNALS
        self.signals += len(found)
        return found

    def run_batch(self, batch: TradeBatch) -> list[Signal]:
        """:meth:`run` for a column batch: exactly the same signals, order and counters."""
        n = len(batch)
        if n == 0:
            return []
        ids = batch.trade_ids
        last = self.last_id
        if not (ids[0] > last and increasing(ids)):
            # Repeats or ids out of order: keep what run() would keep, then go on.
            kept = []
            for i, tid in enumerate(ids):
                if tid > last:
                    kept.append(i)
                    last = tid
            self.duplicates += n - len(kept)
            if not kept:
                return []
            if len(kept) < n:
                batch = batch.take(kept)
                ids = batch.trade_ids
                n = len(kept)
            last = self.last_id
        first = ids[0]
        if last >= 0 and first != last + 1:
            self.gaps += 1
            self.missing += first - last - 1
        spread = ids[-1] - first
        if spread != n - 1:  # not consecutive: count the jumps inside the batch
            steps = list(map(int.__sub__, islice(ids, 1, None), ids))
            self.gaps += n - 1 - steps.count(1)
            self.missing += spread - (n - 1)
        self.last_id = ids[-1]
        self.last = batch.trade(-1)
        self.trades += n
        found: list[Signal] = []
        per_detector: list[list[tuple[int, Signal]] | list[Signal]] = []
        trades: list[Trade] | None = None
        for detector, batched in zip(self.detectors, self.batch_detectors, strict=True):
            if batched is not None:  # its signals are of the trades they fire on
                per_detector.append(batched.update_batch(batch))
                continue
            placed_batch = getattr(detector, "update_batch_placed", None)
            if placed_batch is not None:  # signals with the index of the trade they come on
                per_detector.append(placed_batch(batch))
                continue
            if trades is None:
                trades = batch.trades()
            update = detector.update
            placed: list[tuple[int, Signal]] = []
            for i, trade in enumerate(trades):
                signal = update(trade)
                if signal is not None:  # (an order's signal comes on the trade after it)
                    placed.append((i, signal))
            per_detector.append(placed)
        producing = [k for k, fired in enumerate(per_detector) if fired]
        if len(producing) == 1:  # the usual case: one detector's signals, in order
            found = [f[1] if isinstance(f, tuple) else f for f in per_detector[producing[0]]]
        elif producing:  # as run() gives them: each trade's signals together, in detector order
            where = {tid: i for i, tid in enumerate(ids)}
            ordered = [
                (f[0], k, f[1]) if isinstance(f, tuple) else (where[f.trade_id], k, f)
                for k in producing
                for f in per_detector[k]
            ]
            ordered.sort(key=itemgetter(0, 1))
            found = [sig for _, _, sig in ordered]
        if self.bars is not None:
            self.pending.append(batch)
        self.signals += len(found)
        return found

    def settle(self) -> None:
        """Fold the trades run since the last call into the bars."""
        bars = self.bars
        if bars is None:
            return
        for item in self.pending:
            if type(item) is TradeBatch:
                bars.update_batch(item)
            else:
                bars.update_many(item)  # type: ignore[arg-type]  # trades, not a batch
        self.pending.clear()

    def reset(self) -> None:
        """Forget the windows (trades were lost): the detectors warm up again."""
        for detector in self.detectors:
            detector.reset()

    @property
    def warmed_up(self) -> bool:
        """Every detector can fire."""
        return all(getattr(d, "warmed_up", True) for d in self.detectors)

    def count_lag(self, recv_us: int, times_us: Sequence[int]) -> None:
        """Add the receive lag of trades (µs times) to the histogram (not those older
        than :data:`LAG_COUNTED_US`: replayed history, not a live lag)."""
        counts = self.lag_counts
        total = 0
        i, n = 0, len(times_us)
        ordered = n < 2 or all(map(le, times_us, islice(times_us, 1, None)))
        while i < n:  # trades of a burst share their time: one bucket lookup per time
            time_us = times_us[i]
            j = bisect_right(times_us, time_us, i) if ordered else i + 1
            lag_us = recv_us - time_us
            if lag_us <= LAG_COUNTED_US:
                total += lag_us * (j - i)
                counts[bisect_left(LAG_BUCKETS_MS, lag_us / 1000)] += j - i
            i = j
        self.lag_sum += total / 1000

    def stats(self) -> SymbolStats:
        """A copy of the counters."""
        last = self.last
        return SymbolStats(
            exchange=self.exchange,
            symbol=self.symbol,
            trades=self.trades,
            duplicates=self.duplicates + self.sequencer.duplicates,
            gaps=self.gaps,
            missing_trades=self.missing,
            signals=self.signals,
            last_trade_id=last.trade_id if last else None,
            last_trade_time_us=last.time_us if last else None,
            last_price=last.price if last else None,
            warmed_up=self.warmed_up,
            backfilling=self.sequencer.gap is not None,
            backfills=self.backfills,
            backfilled_trades=self.backfilled,
            gap_records=self.gap_records,
            id_restarts=self.restarts,
            skipped_ids=self.skipped + self.sequencer.skipped,
        )


def increasing(ids: Sequence[int]) -> bool:
    """True if every id is above the one before it."""
    np = accel.np
    if np is not None and len(ids) > 64:
        view = np.frombuffer(ids, np.int64)
        return bool((view[1:] > view[:-1]).all())
    return all(map(lt, ids, islice(ids, 1, None)))
