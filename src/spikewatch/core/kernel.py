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
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from spikewatch.core.alerts import AlertEvent, AlertRules
from spikewatch.core.bars import Bar
from spikewatch.core.detectors import Detector
from spikewatch.core.frames import SMALL_RUN, Capabilities, Control, MalformedFrame, ParsedFrames
from spikewatch.core.model import GapRecord, Signal, Trade, TradeBatch, iso_utc
from spikewatch.core.sequencer import MAX_AHEAD_US, UNKNOWN_TIME, Gap, Suspicion, Verdict
from spikewatch.core.state import (
    LAG_BUCKETS_MS,
    LAG_COUNTED_US,
    LagHistogram,
    SymbolState,
    SymbolStats,
    increasing,
)

__all__ = [
    "LAG_BUCKETS_MS",
    "GapPolicy",
    "Kernel",
    "LagHistogram",
    "Step",
    "SymbolState",
    "SymbolStats",
    "Venue",
    "increasing",
]

DetectorFactory = Callable[[str, str], Sequence[Detector]]
"""Builds the detectors for one ``(exchange, symbol)``."""

Released = Callable[[Sequence[Trade] | TradeBatch], None]
"""Called with each run of trades the sequencers release, in order, just before the
detectors see it (the ingest role publishes exactly these: ``Kernel(on_released=...)``)."""

Key = tuple[str, str]
"""``(exchange, symbol)``: BTCUSDT spot and BTCUSDT futures are two keys, never merged."""


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
        "alerts",
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
        #: alerts the signals opened or updated (when the kernel has alert rules)
        self.alerts: list[AlertEvent] = []
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
        bar_keep: int = 3600,
        max_held: int = 200_000,
        rules: AlertRules | None = None,
        on_released: Released | None = None,
    ) -> None:
        self._factory = detector_factory
        #: called with every run of released trades (None: nothing to call, no cost)
        self.on_released = on_released
        #: alert rules the signals go through (None: signals only)
        self.rules = rules
        self._venues: dict[str, Venue] = {v.name: v for v in venues}
        self._watch: dict[str, frozenset[str]] | None = (
            {ex: frozenset(symbols) for ex, symbols in watch.items()} if watch is not None else None
        )
        self.gap_policy = gap_policy
        #: why a gap is recorded under the RESET policy
        self.reset_reason = "not in the data (gap policy: reset)"
        self.max_backfill = max_backfill
        self.warm_window = warm_window
        self._bars = bars
        self._bar_keep = bar_keep  # one-second bars kept per symbol
        self._max_held = max_held
        self._states: dict[Key, SymbolState] = {}
        # the same states by exchange, then symbol: a lone trade's look-up hashes no tuple
        self._by_symbol: dict[str, dict[str, SymbolState]] = {}
        self._lags: list[
            tuple[int, Sequence[TradeBatch | Trade]]
        ] = []  # (recv µs, batches) to count
        self._ran: set[SymbolState] = set()  # states with trades run since the last settle
        # states that may hold something for flush() (an open order): those that ran
        # since a flush found them empty; a quiet symbol costs the clock tick nothing
        self._unflushed: set[SymbolState] = set()
        self.frames = 0
        self.ignored = 0
        self.malformed: dict[str, int] = {}
        if self._watch is not None:  # watched symbols exist from the start (status, bars)
            for exchange, symbols in self._watch.items():
                for symbol in sorted(symbols):
                    self.state(exchange, symbol)

    # -- state -----------------------------------------------------------------------

    def state(self, exchange: str, symbol: str) -> SymbolState:
        """The state of ``(exchange, symbol)``, made on first use."""
        key = (exchange, symbol)
        state = self._states.get(key)
        if state is None:
            venue = self._venues.get(exchange)
            capabilities = venue.capabilities if venue is not None else Capabilities()
            state = self._states[key] = self._by_symbol.setdefault(exchange, {})[symbol] = (
                SymbolState(
                    exchange,
                    symbol,
                    self._factory(exchange, symbol),
                    consecutive=capabilities.consecutive_ids,
                    bars=self._bars,
                    bar_keep=self._bar_keep,
                    max_held=self._max_held,
                    holes=capabilities.id_holes,
                )
            )
            state.watched = self.watches(exchange, symbol)
            if self.rules is not None:  # rules name detectors by their config tables
                for detector in state.detectors:
                    self.rules.names.setdefault(detector.key, detector.name)
        return state

    def latest_time_us(self) -> int | None:
        """The latest exchange time of any trade processed (None before the first)."""
        times = [s.last.time_us for s in self._states.values() if s.last is not None]
        return max(times) if times else None

    def last_price(self, exchange: str, symbol: str) -> int | None:
        """The last trade price of ``(exchange, symbol)`` (1e-8 units), None if unseen."""
        state = self._states.get((exchange, symbol))
        return state.last.price if state is not None and state.last is not None else None

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

    def watch(self, exchange: str, symbols: Iterable[str]) -> None:
        """Detect on ``symbols`` of ``exchange`` too, from their next trade (a listing)."""
        if self._watch is None:
            return  # everything is watched
        added = frozenset(symbols)
        self._watch[exchange] = self._watch.get(exchange, frozenset()) | added
        for symbol in sorted(added):
            self.state(exchange, symbol).watched = True

    def unwatch(self, exchange: str, symbols: Iterable[str]) -> None:
        """Stop detecting on ``symbols`` of ``exchange`` (a delisting) and forget their
        state: their trades are ignored from now on (take a checkpoint first)."""
        gone = frozenset(symbols)
        if self._watch is not None:
            self._watch[exchange] = self._watch.get(exchange, frozenset()) - gone
        for symbol in gone:
            state = self._states.pop((exchange, symbol), None)
            self._by_symbol.get(exchange, {}).pop(symbol, None)
            if state is not None:
                state.watched = False
                self._ran.discard(state)
                self._unflushed.discard(state)

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
        limit_us = recv_ns // 1000 + MAX_AHEAD_US if recv_ns else UNKNOWN_TIME
        self._feed(parsed.batches, step, limit_us=limit_us)
        if recv_ns:
            self._lags.append((recv_ns // 1000, parsed.batches))
        return self._done(step)

    def settle(self) -> None:
        """The bookkeeping a step may leave for after its signals went out: bars and the
        receive-lag histograms. Every reader of them settles first, so calling this is
        only a matter of when the work is done, never of what the results are."""
        states = self._states
        for recv_us, batches in self._lags:
            for batch in batches:
                state = states.get((batch.exchange, batch.symbol))
                if state is None or not state.watched:
                    continue
                if type(batch) is TradeBatch:
                    state.count_lag(recv_us, batch.times_us)
                else:  # one trade: inline (a quiet market's every read)
                    assert isinstance(batch, Trade)
                    lag_us = recv_us - batch.time_us
                    if lag_us <= LAG_COUNTED_US:
                        state.lag_counts[bisect_left(LAG_BUCKETS_MS, lag_us / 1000)] += 1
                        state.lag_sum += lag_us / 1000
        self._lags.clear()
        self._unflushed |= self._ran
        for state in self._ran:  # only those that ran: a quiet symbol costs nothing
            if state.pending:
                state.settle()
        self._ran.clear()

    def feed(self, items: Iterable[TradeBatch | Trade]) -> Step:
        """Trades already parsed (replay, a message bus), in arrival order."""
        step = Step()
        self._feed(items, step)
        return self._done(step)

    def _parse_each(self, venue: Venue, frames: Sequence[bytes]) -> ParsedFrames:
        """Frames one at a time, after the batch parser failed: a frame it still fails
        on is counted as a parser error."""
        batches: list[TradeBatch | Trade] = []
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

    def _feed(
        self,
        items: Iterable[TradeBatch | Trade],
        step: Step,
        *,
        trusted: bool = False,
        limit_us: int = UNKNOWN_TIME,
    ) -> None:
        """Offer trades (or runs of them) to their sequencers in order and run what is
        released. A run that follows on from the last trade goes through the detectors
        whole; any other run, trade by trade. At a gap the policy decides, before
        anything after it is offered. Live trades pass each symbol's :class:`TradeGuard`
        first (``limit_us``: the latest plausible exchange time); ``trusted`` ones
        (fetched over REST) do not.

        Lone trades (a market's read: one to seven trades of a symbol in a row) that are
        the usual (the guard has nothing to say, the sequencer's next ids) are gathered
        while the symbol stays the same and run through the detectors together: the
        same trades, in the same order, as one at a time, with the kernel's per-trade
        work (state, guard, sequencer, the run's bookkeeping) paid once per run where
        it can be. Anything else first runs what was gathered, so no order changes."""
        arrived = step.arrived
        by_symbol = self._by_symbol
        run: list[Trade] = []  # usual lone trades of `state` not run yet
        state: SymbolState | None = None  # of the last lone trade (None: look it up)
        symbol = exchange = ""
        for item in items:
            if type(item) is Trade:  # the usual case of a quiet market or a busy market
                if state is None or item.symbol != symbol or item.exchange != exchange:
                    if run:
                        self._run(state, run, step)  # type: ignore[arg-type]  # set with run
                        run = []
                    symbol, exchange = item.symbol, item.exchange
                    known = by_symbol.get(exchange)
                    state = known.get(symbol) if known is not None else None
                    if state is None or not state.watched:
                        state = self._watched((exchange, symbol), 1)
                        if state is None:
                            continue
                    arrived.add((exchange, symbol))
                guard = state.guard
                tid = item.trade_id
                if trusted:
                    guard.see(tid, item.time_us)
                elif (
                    guard.suspects
                    or not guard.high_id < tid <= guard.high_id + guard.reach
                    or item.time_us > limit_us + guard.lead_us
                ):
                    if run:
                        self._run(state, run, step)
                        run = []
                    self._judge(state, item, step, limit_us)  # all but the usual: checked
                    continue
                else:
                    guard.high_id = tid
                    guard.high_time_us = item.time_us
                sequencer = state.sequencer
                last = sequencer.last_id
                if sequencer.gap is None and (
                    tid == last + 1 or last < 0 or (tid > last and not sequencer.consecutive)
                ):  # Sequencer.offer's in-order case, inline
                    sequencer.last_id = tid
                    run.append(item)
                    continue
                if run:
                    self._run(state, run, step)
                    run = []
                released, gap = sequencer.offer(item)
                if released:
                    self._run(state, released, step)
                if gap is not None:
                    self._on_gap(state, gap, step)
                continue
            if run:
                self._run(state, run, step)  # type: ignore[arg-type]  # set with run
                run = []
            state = None
            assert isinstance(item, TradeBatch)
            self._feed_batch(item, step, trusted, limit_us)
        if run:
            self._run(state, run, step)  # type: ignore[arg-type]  # set with run

    def _feed_batch(self, item: TradeBatch, step: Step, trusted: bool, limit_us: int) -> None:
        """A column batch of one symbol's trades: whole when it follows on, else one by one."""
        n = len(item)
        if not n:
            return
        key = (item.exchange, item.symbol)
        state = self._watched(key, n)
        if state is None:
            return
        step.arrived.add(key)
        guard = state.guard
        if n >= SMALL_RUN and (trusted or guard.fits(item.trade_ids, max(item.times_us), limit_us)):
            # else cheaper trade by trade (bench/bench_detect.py), or to be checked
            ids = item.trade_ids
            if increasing(ids) and state.sequencer.accept_run(ids[0], ids[-1], n):
                guard.see(ids[-1], item.times_us[-1])
                self._ran.add(state)
                if self.on_released is not None:
                    self.on_released(item)
                try:
                    step.signals.extend(state.run_batch(item))
                except Exception as exc:  # a bug costs these trades, never the rest
                    step.failures.append((n, exc))
                return
        for trade in item.trades():  # few, out of order or after a gap: one by one
            if trusted:
                guard.see(trade.trade_id, trade.time_us)
                self._offer(state, trade, step)
                continue
            tid = trade.trade_id
            if (  # as a lone Trade above: only what is not the usual is judged
                guard.suspects
                or not guard.high_id < tid <= guard.high_id + guard.reach
                or trade.time_us > limit_us + guard.lead_us
            ):
                self._judge(state, trade, step, limit_us)
                continue
            guard.high_id = tid
            guard.high_time_us = trade.time_us
            released, gap = state.sequencer.offer(trade)
            if released:
                self._run(state, released, step)
            if gap is not None:
                self._on_gap(state, gap, step)

    def _judge(self, state: SymbolState, trade: Trade, step: Step, limit_us: int) -> None:
        """A live trade through the symbol's guard, then what it lets through onwards."""
        judged = state.guard.judge(trade, limit_us)
        if judged.repeat:
            state.duplicates += 1
        verdict = judged.verdict
        if verdict is Verdict.REJECTED:
            kind = "implausible_time" if judged.why is Suspicion.FUTURE else "implausible_id"
            for junk in judged.suspects:
                self.malformed[kind] = self.malformed.get(kind, 0) + 1
                detail = (
                    f"{junk.exchange} {junk.symbol} trade {junk.trade_id} at "
                    f"{iso_utc(junk.time_us)}: {judged.why.value if judged.why else '?'}, "
                    f"and the trades after it went on from {judged.was}: skipped"
                )
                step.malformed.append((kind, detail, msgspec.json.encode(junk)))
        elif verdict is Verdict.RESTARTED:
            self._restart(state, judged.suspects[0], judged.was, step)
        for passed in judged.passed:
            self._offer(state, passed, step)

    def _restart(self, state: SymbolState, first: Trade, was: int, step: Step) -> None:
        """The exchange restarted the symbol's trade ids (confirmed by the trades after
        ``first``): give up what was pending, record it, warm the detectors up again,
        and follow the new ids from ``first``."""
        if state.sequencer.gap is not None:
            self._give_up(state, "trade ids restarted while the gap was open", step)
        state.gap_records += 1
        step.lost_at.append(len(step.signals))
        step.lost.append(
            GapRecord(
                exchange=state.exchange,
                symbol=state.symbol,
                first_id=first.trade_id,
                last_id=was,
                missing=0,
                time_us=first.time_us,
                timestamp=iso_utc(first.time_us),
                reason=(
                    f"trade ids went back from {was} to {first.trade_id} (restarted by the "
                    "exchange): the windows warm up again"
                ),
            )
        )
        state.restarts += 1
        state.reset()
        state.last_id = first.trade_id - 1
        state.sequencer.restart(first.trade_id)

    def _watched(self, key: Key, n: int) -> SymbolState | None:
        """The state of a watched key (made on first use); None, and ``n`` trades counted
        as ignored, for a key not watched."""
        state = self._states.get(key)
        if state is None:
            if not self.watches(*key):
                self.ignored += n
                return None
            state = self.state(*key)
        if not state.watched:
            self.ignored += n
            return None
        return state

    def _offer(self, state: SymbolState, trade: Trade, step: Step) -> None:
        """One trade through the sequencer; what it releases through the detectors."""
        released, gap = state.sequencer.offer(trade)
        if released:
            self._run(state, released, step)
        if gap is not None:
            self._on_gap(state, gap, step)

    def _run(self, state: SymbolState, trades: Sequence[Trade], step: Step) -> None:
        """Released trades through the detectors; a bug costs these trades only."""
        if not trades:
            return
        self._ran.add(state)
        if self.on_released is not None:
            self.on_released(trades)
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
            self._give_up(state, self.reset_reason, step)  # (a venue's hole: skipped)
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
        if ready:
            state.guard.see(ready[-1].trade_id, ready[-1].time_us)
        self._run(state, ready, step)
        step.closed = closed
        if closed:
            state.backfills += 1
            self._after_release(state, step)
        self._recheck(state, step)
        return self._done(step)

    def give_up(self, exchange: str, symbol: str, reason: str) -> Step:
        """The open gap cannot be fetched: record it, warm the detectors up again, and
        release the held trades."""
        step = Step()
        state = self.state(exchange, symbol)
        if state.sequencer.gap is not None:
            self._give_up(state, reason, step)
        return self._done(step)

    def _give_up(self, state: SymbolState, reason: str, step: Step) -> None:
        gap = state.sequencer.gap
        assert gap is not None
        first = state.sequencer.last_id + 1
        venue = self._venues.get(state.exchange)
        if venue is not None and gap.last_id - first + 1 <= venue.capabilities.id_holes:
            # ids the venue gave to fills it does not publish as market trades: skip them
            state.skipped += gap.last_id - first + 1
            state.last_id = gap.last_id
            self._run(state, state.sequencer.give_up(), step)
            self._after_release(state, step)
            return
        self._lose(state, gap, first, gap.last_id, reason, step)
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
        self._feed(trades, step, trusted=True)
        state.backfilled += state.trades - before
        self._recheck(state, step)
        step.arrived.discard((exchange, symbol))
        return self._done(step)

    def warm(self, exchange: str, symbol: str, trades: Sequence[Trade]) -> Step:
        """Recent trades fetched at start-up, to fill the windows before live trades."""
        step = Step()
        self._feed(trades, step, trusted=True)
        self._recheck(self.state(exchange, symbol), step)
        step.arrived.discard((exchange, symbol))
        return self._done(step)

    def _recheck(self, state: SymbolState, step: Step) -> None:
        """Fetched trades moved the guard's last id: suspects held for being far ahead
        of it may be plausible now (the fetched ids reached them); judge them again."""
        guard = state.guard
        if guard.suspects and guard.why is Suspicion.AHEAD:
            held, guard.suspects = guard.suspects, []
            for trade in held:
                self._judge(state, trade, step, UNKNOWN_TIME)

    def _done(self, step: Step) -> Step:
        """The step's signals through the alert rules, if any."""
        if self.rules is not None and step.signals:
            step.alerts = self.rules.feed(step.signals)
        return step

    def flush(self, before_us: int = UNKNOWN_TIME) -> Step:
        """Signals that wait for a later trade (an order is complete when the next trade
        does not belong to it), for what is older than ``before_us`` (exchange time):
        live, on a clock tick, so a quiet pair's last order is not held; at the end of a
        replay, everything."""
        step = Step()
        self._flush_into(step, before_us)
        return self._done(step)

    def _flush_into(self, step: Step, before_us: int) -> None:
        self._unflushed |= self._ran
        done = []
        for state in self._unflushed:
            waiting = False
            for detector in state.detectors:
                flush = getattr(detector, "flush", None)
                if flush is not None:
                    found = flush(before_us)
                    if found:
                        state.signals += len(found)
                        step.signals.extend(found)
                    waiting = waiting or bool(getattr(detector, "pending", True))
            if not waiting:
                done.append(state)
        self._unflushed.difference_update(done)

    def end(self) -> Step:
        """The input is over (the end of a replay): trades the guards still hold have
        no later trades to be judged by, so they are taken as real."""
        step = Step()
        for state in self._states.values():
            guard = state.guard
            if not guard.suspects:
                continue
            held, guard.suspects = guard.suspects, []
            if guard.why is Suspicion.BACK:
                was = guard.high_id
                guard.high_id, guard.high_time_us = held[-1].trade_id, held[-1].time_us
                self._restart(state, held[0], was, step)
            else:
                guard.see(held[-1].trade_id, held[-1].time_us)
            for trade in held:
                self._offer(state, trade, step)
        self._flush_into(step, UNKNOWN_TIME)
        return self._done(step)

    # -- restarts ----------------------------------------------------------------------

    def checkpoint(
        self, exchange: str, symbol: str
    ) -> tuple[int, int | None, list[dict[str, Any]]] | None:
        """The key's last trade id and time (µs) and detector snapshots, if it has seen a
        trade."""
        state = self._states.get((exchange, symbol))
        if state is None or state.last_id < 0:
            return None
        time_us = state.last.time_us if state.last is not None else None
        return state.last_id, time_us, [d.snapshot() for d in state.detectors]

    def resume(self, exchange: str, symbol: str, after_id: int) -> None:
        """Continue after trade ``after_id`` with fresh detectors (no checkpoint to restore
        from, e.g. the last run was killed before its first one). The trades after it
        come as a gap like any other: fetched (so the detectors warm up on the trades
        just before the live ones), or recorded."""
        state = self.state(exchange, symbol)
        state.last_id = state.sequencer.last_id = state.guard.high_id = after_id
        state.guard.high_time_us = UNKNOWN_TIME

    def restore(
        self,
        exchange: str,
        symbol: str,
        last_id: int,
        snapshots: Sequence[dict[str, Any]],
        time_us: int | None = None,
    ) -> bool:
        """Continue from :meth:`checkpoint`; False (and nothing changed) when the snapshots
        are of other detectors or parameters. Without the last trade's time (an older
        checkpoint), ids going back while the process was down cannot be told from
        repeats until a newer trade has been seen."""
        state = self.state(exchange, symbol)
        if len(snapshots) != len(state.detectors):
            return False
        if [snap.get("key") for snap in snapshots] != [d.key for d in state.detectors]:
            return False
        for detector, snap in zip(state.detectors, snapshots, strict=True):
            detector.restore(snap)
        state.last_id = last_id
        state.sequencer.last_id = last_id
        state.guard.high_id = last_id
        state.guard.high_time_us = time_us if time_us is not None else UNKNOWN_TIME
        self._unflushed.add(state)  # its snapshot may hold an open order
        return True
