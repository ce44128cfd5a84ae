"""The kernel: one pure state machine that live ingest, replay and (next) the message-bus
mode all drive. Frames or trades go in; one :class:`Step` comes out.

In the style of python-websockets' sans-I/O protocol objects: the kernel does no I/O,
starts no thread and reads no clock (a read's receive time is an input). It keeps one
:class:`SymbolState` per ``(exchange, symbol)``: sequencer, detectors, bars and counters.
What needs the outside world comes back in the step for the runtime to act on: signals to
deliver, gaps to fetch, lost trades to record, a shutdown notice to rotate on.

Gaps (a jump in trade ids on a venue whose ids are consecutive) follow a
:class:`GapPolicy`:

* ``FETCH`` (live with REST): the trades after the gap are held; the gap is in
  :attr:`Step.fetch`; the runtime answers with :meth:`Kernel.fill` (pages of fetched
  trades) and, if it cannot fetch, :meth:`Kernel.give_up`.
* ``RESET`` (replay, or live without REST): the gap is recorded at once, the symbol's
  detectors warm up again, and the trades after it go on. The same outcome as a ``FETCH``
  gap given up, so live and replay agree on data with holes.
* ``CONTINUE``: the gap is counted and the windows keep going as if nothing was missed
  (the behaviour of replays before the kernel; never the default).
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from operator import attrgetter, le, lt
from typing import Any, Protocol

import msgspec

from spikewatch.core import accel
from spikewatch.core.bars import Bar, BarSeries
from spikewatch.core.detectors import BatchDetector, Detector
from spikewatch.core.frames import Capabilities, Control, MalformedFrame, ParsedFrames
from spikewatch.core.model import GapRecord, Signal, Trade, TradeBatch, iso_utc
from spikewatch.core.sequencer import Gap, Sequencer

DetectorFactory = Callable[[str, str], Sequence[Detector]]
"""Builds the detectors for one ``(exchange, symbol)``."""

Key = tuple[str, str]
"""``(exchange, symbol)``: BTCUSDT spot and BTCUSDT futures are two keys, never merged."""

#: Upper bounds (ms) of the ingest-lag histogram: local receive time minus exchange time.
LAG_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

_NO_SIGNALS: tuple[Signal, ...] = ()
#: Runs of fewer trades go through the detectors trade by trade: the column paths' fixed
#: costs are higher than their gains on a handful (the two agree exactly: tests/unit).
SMALL_RUN = 8


class GapPolicy(enum.Enum):
    """What the kernel does when trade ids jump (see the module docstring)."""

    FETCH = "fetch"
    RESET = "reset"
    CONTINUE = "continue"


class Venue(Protocol):
    """What the kernel needs of an exchange adapter: its name, its guarantees, and a pure
    batch parser (``spikewatch.exchanges.base.Exchange`` has all three)."""

    name: str
    capabilities: Capabilities

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        """Decode frames that arrived together."""
        ...


class Step:
    """What one call into the kernel produced, for the runtime to act on."""

    __slots__ = (
        "arrived",
        "closed",
        "failures",
        "fetch",
        "lost",
        "lost_at",
        "malformed",
        "shutdown",
        "signals",
    )

    def __init__(self) -> None:
        #: new signals, in order: deliver them (store, live push, alerts...)
        self.signals: list[Signal] = []
        #: gaps to fetch (policy FETCH): answer with fill() pages or give_up()
        self.fetch: list[Gap] = []
        #: trades lost for good: store the records, tell live clients
        self.lost: list[GapRecord] = []
        #: for each of :attr:`lost`, how many of :attr:`signals` came before it
        self.lost_at: list[int] = []
        #: (kind, detail, frame) of each malformed frame, to log (already counted)
        self.malformed: list[tuple[str, str, bytes]] = []
        #: the server announced that it will close this connection: rotate
        self.shutdown = False
        #: keys that received live trades in this step
        self.arrived: set[Key] = set()
        #: after fill(): the gap is closed (no more pages needed)
        self.closed = False
        #: (trades, error) of each run of trades whose processing raised (a bug): those
        #: trades are skipped, the rest of the step goes on; the runtime logs them
        self.failures: list[tuple[int, Exception]] = []


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
        "lag_counts",
        "lag_sum",
        "last",
        "last_id",
        "missing",
        "pending",
        "sequencer",
        "signals",
        "symbol",
        "trades",
    )

    def __init__(
        self,
        exchange: str,
        symbol: str,
        detectors: Sequence[Detector],
        *,
        consecutive: bool,
        bars: bool,
        max_held: int,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.detectors = tuple(detectors)
        # update_batch of each detector, or None where a detector has only update()
        self.batch_detectors = tuple(
            d if isinstance(d, BatchDetector) else None for d in self.detectors
        )
        self.sequencer = Sequencer(max_held=max_held, consecutive=consecutive)
        self.bars = BarSeries() if bars else None
        # trades run since the last settle(), for the bars: the chart can wait until a
        # step's signals have gone out, a signal should not wait for the chart
        self.pending: list[Sequence[Trade] | TradeBatch] = []
        self.last_id = -1  # of the last trade processed
        self.last: Trade | None = None
        self.trades = self.duplicates = self.gaps = self.missing = self.signals = 0
        self.backfills = self.backfilled = self.gap_records = 0
        self.lag_counts = [0] * (len(LAG_BUCKETS_MS) + 1)
        self.lag_sum = 0.0

    # -- detection: in-order trades only (the sequencer sees to it) ------------------

    def run(self, trades: Sequence[Trade]) -> Sequence[Signal]:
        """Run in-order trades through the detectors; the signals they raise."""
        found: list[Signal] | None = None
        detectors = self.detectors
        for trade in trades:
            tid = trade.trade_id
            last = self.last_id
            if tid <= last:
                self.duplicates += 1
                continue
            if last >= 0 and tid != last + 1:
                self.gaps += 1
                self.missing += tid - last - 1
            self.last_id = tid
            self.last = trade
            self.trades += 1
            for detector in detectors:
                signal = detector.update(trade)
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
        produced = 0
        for detector, batched in zip(self.detectors, self.batch_detectors, strict=True):
            if batched is not None:
                signals = batched.update_batch(batch)
            else:
                signals = [s for s in map(detector.update, batch.trades()) if s is not None]
            if signals:
                produced += 1
                found.extend(signals)
        if produced > 1:  # run() gives a trade's signals together, in detector order
            found.sort(key=attrgetter("trade_id"))  # stable: detector order within a trade
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
            if isinstance(item, TradeBatch):
                bars.update_batch(item)
            else:
                for trade in item:
                    bars.update(trade)
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
        """Add the receive lag of trades (µs times) to the histogram."""
        counts = self.lag_counts
        total = 0
        i, n = 0, len(times_us)
        ordered = n < 2 or all(map(le, times_us, islice(times_us, 1, None)))
        while i < n:  # trades of a burst share their time: one bucket lookup per time
            time_us = times_us[i]
            j = bisect_right(times_us, time_us, i) if ordered else i + 1
            lag_us = recv_us - time_us
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
        )


class KernelCounters(msgspec.Struct, frozen=True):
    """Counters of the kernel as a whole."""

    frames: int
    malformed: dict[str, int]
    ignored: int


class Kernel:
    """One state object per ``(exchange, symbol)``; frames or trades in, a :class:`Step` out.

    ``watch`` names the symbols of each exchange to detect on (others are counted as
    ignored); None watches everything. ``warm_window`` is how many trades before a gap
    too large to fetch are fetched anyway, so the detectors are warm when live trades
    resume (the detectors' window).
    """

    def __init__(
        self,
        detector_factory: DetectorFactory,
        *,
        venues: Iterable[Venue] = (),
        watch: Mapping[str, Iterable[str]] | None = None,
        gap_policy: GapPolicy = GapPolicy.FETCH,
        max_backfill: int = 100_000,
        warm_window: int = 0,
        bars: bool = True,
        max_held: int = 200_000,
    ) -> None:
        self._factory = detector_factory
        self._venues: dict[str, Venue] = {v.name: v for v in venues}
        self._watch = (
            {ex: frozenset(symbols) for ex, symbols in watch.items()} if watch is not None else None
        )
        self.gap_policy = gap_policy
        #: why a gap is recorded under the RESET policy
        self.reset_reason = "not in the data (gap policy: reset)"
        self.max_backfill = max_backfill
        self.warm_window = warm_window
        self._bars = bars
        self._max_held = max_held
        self._states: dict[Key, SymbolState] = {}
        self._lags: list[tuple[int, list[TradeBatch]]] = []  # (recv µs, batches) to count
        self.frames = 0
        self.ignored = 0
        self.malformed: dict[str, int] = {}
        if self._watch is not None:  # watched symbols exist from the start (status, bars)
            for exchange, symbols in self._watch.items():
                for symbol in sorted(symbols):
                    self.state(exchange, symbol)

    # -- state -----------------------------------------------------------------------

    def add_venue(self, venue: Venue) -> None:
        """Parse frames of ``venue`` from now on (keyed by its name)."""
        self._venues[venue.name] = venue

    def state(self, exchange: str, symbol: str) -> SymbolState:
        """The state of ``(exchange, symbol)``, made on first use."""
        key = (exchange, symbol)
        state = self._states.get(key)
        if state is None:
            venue = self._venues.get(exchange)
            consecutive = venue.capabilities.consecutive_ids if venue is not None else True
            state = self._states[key] = SymbolState(
                exchange,
                symbol,
                self._factory(exchange, symbol),
                consecutive=consecutive,
                bars=self._bars,
                max_held=self._max_held,
            )
        return state

    def find(self, exchange: str, symbol: str) -> SymbolState | None:
        """The state of ``(exchange, symbol)`` if it exists (never makes one)."""
        return self._states.get((exchange, symbol))

    def states(self) -> list[SymbolState]:
        """Every state, in first-seen order."""
        return list(self._states.values())

    def watches(self, exchange: str, symbol: str) -> bool:
        """Whether trades of ``(exchange, symbol)`` are detected on."""
        watch = self._watch
        if watch is None:
            return True
        symbols = watch.get(exchange)
        return symbols is not None and symbol in symbols

    def counters(self) -> KernelCounters:
        """A copy of the kernel-wide counters."""
        return KernelCounters(self.frames, dict(self.malformed), self.ignored)

    def stats(self) -> list[SymbolStats]:
        """Copies of every symbol's counters, in first-seen order."""
        return [s.stats() for s in self._states.values()]

    def bars(self, exchange: str, symbol: str, limit: int | None = None) -> list[Bar]:
        """Recent bars of ``(exchange, symbol)``, oldest first (empty when unknown)."""
        state = self._states.get((exchange, symbol))
        if state is None or state.bars is None:
            return []
        state.settle()
        return state.bars.bars(limit)

    # -- input -----------------------------------------------------------------------

    def feed_frames(self, exchange: str, frames: Sequence[bytes], recv_ns: int = 0) -> Step:
        """Frames of one network read (or recording) of ``exchange``, with their local
        receive time in ns (0: unknown, e.g. replay)."""
        step = Step()
        if not frames:
            return step
        venue = self._venues[exchange]
        try:
            parsed = venue.parse_batch(frames)
        except Exception:  # a parser bug costs the frames it fails on, never the rest
            parsed = self._parse_each(venue, frames)
        self.frames += len(frames)
        malformed = self.malformed
        for index, exc in parsed.errors:
            malformed[exc.kind] = malformed.get(exc.kind, 0) + 1
            step.malformed.append((exc.kind, str(exc), frames[index]))
        for _, control in parsed.controls:
            if control is Control.IGNORED:
                self.ignored += 1
            elif control is Control.SHUTDOWN:
                step.shutdown = True
        self._feed(parsed.batches, step)
        if recv_ns:
            self._lags.append((recv_ns // 1000, parsed.batches))
        return step

    def settle(self) -> None:
        """The bookkeeping a step may leave for after its signals went out: bars and the
        receive-lag histograms. Every reader of them settles first, so calling this is
        only a matter of when the work is done, never of what the results are."""
        for recv_us, batches in self._lags:
            for batch in batches:
                state = self._states.get((batch.exchange, batch.symbol))
                if state is not None and self.watches(batch.exchange, batch.symbol):
                    state.count_lag(recv_us, batch.times_us)
        self._lags.clear()
        for state in self._states.values():
            if state.pending:
                state.settle()

    def feed(self, items: Iterable[TradeBatch | Trade]) -> Step:
        """Trades already parsed (replay, a message bus), in arrival order."""
        step = Step()
        self._feed(items, step)
        return step

    def _parse_each(self, venue: Venue, frames: Sequence[bytes]) -> ParsedFrames:
        """Frames one at a time, after the batch parser failed: a frame it still fails
        on is counted as a parser error."""
        batches: list[TradeBatch] = []
        errors: list[tuple[int, MalformedFrame]] = []
        controls: list[tuple[int, Control]] = []
        for index, frame in enumerate(frames):
            try:
                one = venue.parse_batch((frame,))
            except Exception as exc:
                errors.append((index, MalformedFrame("parser_error", f"{type(exc).__name__}")))
                continue
            batches.extend(one.batches)
            errors.extend((index, e) for _, e in one.errors)
            controls.extend((index, c) for _, c in one.controls)
        return ParsedFrames(batches, errors, controls)

    def _feed(self, items: Iterable[TradeBatch | Trade], step: Step) -> None:
        """Offer trades (or runs of them) to their sequencers in order and run what is
        released. A run that follows on from the last trade goes through the detectors
        whole; any other run, trade by trade. At a gap the policy decides, before
        anything after it is offered."""
        units: list[TradeBatch | Trade] = []
        for item in items:
            if type(item) is TradeBatch:
                if not len(item):
                    continue
                exchange, symbol = item.exchange, item.symbol
                n = len(item)
            else:
                assert isinstance(item, Trade)
                exchange, symbol = item.exchange, item.symbol
                n = 1
            if not self.watches(exchange, symbol):
                self.ignored += n
                continue
            step.arrived.add((exchange, symbol))
            units.append(item)
        i = 0
        while i < len(units):
            unit = units[i]
            i += 1
            if type(unit) is Trade:
                state = self.state(unit.exchange, unit.symbol)
                released, gap = state.sequencer.offer(unit)
                if released:
                    self._run(state, released, step)
                if gap is not None:
                    self._on_gap(state, gap, step)
                continue
            assert isinstance(unit, TradeBatch)
            n = len(unit)
            if n < SMALL_RUN:  # cheaper trade by trade (bench/bench_detect.py)
                if n == 1:
                    units.insert(i, unit.trade(0))
                else:
                    units[i:i] = unit.trades()
                continue
            state = self.state(unit.exchange, unit.symbol)
            ids = unit.trade_ids
            if increasing(ids) and state.sequencer.accept_run(ids[0], ids[-1], len(ids)):
                try:
                    step.signals.extend(state.run_batch(unit))
                except Exception as exc:  # a bug costs these trades, never the rest
                    step.failures.append((len(unit), exc))
            else:
                units[i:i] = unit.trades()  # its trades one by one, from here

    @staticmethod
    def _run(state: SymbolState, trades: Sequence[Trade], step: Step) -> None:
        """Released trades through the detectors; a bug costs these trades only."""
        if not trades:
            return
        try:
            step.signals.extend(state.run(trades))
        except Exception as exc:
            step.failures.append((len(trades), exc))

    # -- gaps ------------------------------------------------------------------------

    def _on_gap(self, state: SymbolState, gap: Gap, step: Step) -> None:
        """A gap just opened (the trades after it are held): apply the policy."""
        policy = self.gap_policy
        venue = self._venues.get(state.exchange)
        if policy is GapPolicy.FETCH and venue is not None and not venue.capabilities.fetch_by_id:
            self._give_up(state, f"{state.exchange} gaps cannot be fetched", step)
            return
        if policy is GapPolicy.CONTINUE:
            self._run(state, state.sequencer.give_up(), step)
            self._after_release(state, step)
            return
        if policy is GapPolicy.RESET:
            self._give_up(state, self.reset_reason, step)
            return
        if gap.size > max(self.max_backfill, self.warm_window):
            # too many to fetch: keep the trades just before the live ones for a warm start
            first = gap.last_id - self.warm_window + 1
            self._lose(state, gap, gap.first_id, first - 1, "larger than max_backfill", step)
            state.reset()
            state.sequencer.skip_to(first)
            if first > gap.last_id:  # nothing worth fetching (no window to warm)
                self._run(state, state.sequencer.give_up(), step)
                self._after_release(state, step)
                return
            gap = Gap(gap.exchange, gap.symbol, first, gap.last_id, gap.time_us)
        step.fetch.append(gap)

    def _after_release(self, state: SymbolState, step: Step) -> None:
        """Held trades were released; if they had a gap of their own, handle it."""
        again = state.sequencer.gap
        if again is not None:
            self._on_gap(state, again, step)

    def fill(self, exchange: str, symbol: str, trades: Sequence[Trade]) -> Step:
        """Fetched trades of the open gap (any order, extras ignored). When the gap is
        closed (:attr:`Step.closed`), the held live trades follow; if they have a gap of
        their own, it is in :attr:`Step.fetch`."""
        step = Step()
        state = self.state(exchange, symbol)
        ready, closed = state.sequencer.fill(list(trades))
        state.backfilled += len(trades)
        self._run(state, ready, step)
        step.closed = closed
        if closed:
            state.backfills += 1
            self._after_release(state, step)
        return step

    def give_up(self, exchange: str, symbol: str, reason: str) -> Step:
        """The open gap cannot be fetched: record it, warm the detectors up again, and
        release the held trades."""
        step = Step()
        state = self.state(exchange, symbol)
        if state.sequencer.gap is not None:
            self._give_up(state, reason, step)
        return step

    def _give_up(self, state: SymbolState, reason: str, step: Step) -> None:
        gap = state.sequencer.gap
        assert gap is not None
        self._lose(state, gap, state.sequencer.last_id + 1, gap.last_id, reason, step)
        state.reset()
        self._run(state, state.sequencer.give_up(), step)
        self._after_release(state, step)

    def _lose(
        self, state: SymbolState, gap: Gap, first_id: int, last_id: int, reason: str, step: Step
    ) -> None:
        """Record ids ``first_id..last_id`` as lost (nothing when empty)."""
        if last_id < first_id:
            return
        state.gap_records += 1
        step.lost_at.append(len(step.signals))
        step.lost.append(
            GapRecord(
                exchange=gap.exchange,
                symbol=gap.symbol,
                first_id=first_id,
                last_id=last_id,
                missing=last_id - first_id + 1,
                time_us=gap.time_us,
                timestamp=iso_utc(gap.time_us),
                reason=reason,
            )
        )

    def catch_up(self, exchange: str, symbol: str, trades: Sequence[Trade]) -> Step:
        """Trades fetched after a reconnect (those after the last one seen), offered as if
        they had come live; a jump inside them opens a gap like any other."""
        state = self.state(exchange, symbol)
        before = state.trades
        step = Step()
        self._feed(trades, step)
        state.backfilled += state.trades - before
        step.arrived.discard((exchange, symbol))
        return step

    def warm(self, exchange: str, symbol: str, trades: Sequence[Trade]) -> Step:
        """Recent trades fetched at start-up, to fill the windows before live trades."""
        step = Step()
        self._feed(trades, step)
        step.arrived.discard((exchange, symbol))
        return step

    # -- restarts ----------------------------------------------------------------------

    def checkpoint(self, exchange: str, symbol: str) -> tuple[int, list[dict[str, Any]]] | None:
        """The key's last trade id and detector snapshots, if it has seen a trade."""
        state = self._states.get((exchange, symbol))
        if state is None or state.last_id < 0:
            return None
        return state.last_id, [d.snapshot() for d in state.detectors]

    def restore(
        self, exchange: str, symbol: str, last_id: int, snapshots: Sequence[dict[str, Any]]
    ) -> bool:
        """Continue from :meth:`checkpoint`; False (and nothing changed) when the snapshots
        are of other detectors or parameters."""
        state = self.state(exchange, symbol)
        if len(snapshots) != len(state.detectors):
            return False
        if [snap.get("key") for snap in snapshots] != [d.key for d in state.detectors]:
            return False
        for detector, snap in zip(state.detectors, snapshots, strict=True):
            detector.restore(snap)
        state.last_id = last_id
        state.sequencer.last_id = last_id
        return True


def increasing(ids: Sequence[int]) -> bool:
    """True if every id is above the one before it."""
    np = accel.np
    if np is not None and len(ids) > 64:
        view = np.frombuffer(ids, np.int64)
        return bool((view[1:] > view[:-1]).all())
    return all(map(lt, ids, islice(ids, 1, None)))
