"""Keeps each symbol's trades in id order across reconnects: finds gaps, holds live trades
while the missing ones are fetched, and releases everything in order.

Pure: it only decides. The engine fetches (over REST) and feeds what it gets back.
Binance trade ids are consecutive per symbol, so a jump in ids is a gap.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import msgspec

from spikewatch.core.model import Trade


class Gap(msgspec.Struct, frozen=True):
    """Trade ids ``first_id..last_id`` (inclusive) of one symbol that were not received."""

    exchange: str
    symbol: str
    first_id: int
    last_id: int
    time_us: int  # exchange time of the first trade after the gap

    @property
    def size(self) -> int:
        """How many trades are missing."""
        return self.last_id - self.first_id + 1


class Sequencer:
    """One symbol's gap keeper.

    ``offer(trade)`` returns the trades that may be processed now, in order, and a
    :class:`Gap` when one opens; while a gap is open, live trades are held (at most
    ``max_held``). ``fill(trades)`` takes fetched trades; ``give_up()`` abandons the gap.
    """

    __slots__ = (
        "consecutive",
        "duplicates",
        "gap",
        "held",
        "holes",
        "last_id",
        "max_held",
        "overflowed",
        "skipped",
    )

    def __init__(
        self,
        last_id: int = -1,
        max_held: int = 200_000,
        *,
        consecutive: bool = True,
        holes: int = 0,
    ) -> None:
        self.last_id = last_id  # -1: nothing seen yet, so no gap can be known
        # False for a venue whose ids only increase: repeats are dropped, no gap is known
        self.consecutive = consecutive
        # ids in a row that fetched trades may skip (fills the venue does not publish)
        self.holes = holes
        self.skipped = 0
        self.gap: Gap | None = None
        self.held: list[Trade] = []
        self.max_held = max_held
        self.overflowed = False
        self.duplicates = 0  # live trades dropped as already seen (or already held)

    def offer(self, trade: Trade) -> tuple[list[Trade], Gap | None]:
        """A live trade: what to process now, and the gap it reveals (if any)."""
        tid = trade.trade_id
        if self.gap is not None:
            if tid > self.gap.last_id and (not self.held or tid > self.held[-1].trade_id):
                if len(self.held) < self.max_held:
                    self.held.append(trade)
                else:
                    # bounded memory: trades past the limit are let go; after the release
                    # they show as the next gap and are fetched in turn, so none is lost
                    self.overflowed = True
            else:
                self.duplicates += 1
            return [], None
        last = self.last_id
        if last < 0 or tid == last + 1 or (tid > last and not self.consecutive):
            self.last_id = tid
            return [trade], None
        if tid <= last:
            self.duplicates += 1  # seen already (overlap after a reconnect or rotation)
            return [], None
        self.gap = Gap(trade.exchange, trade.symbol, last + 1, tid - 1, trade.time_us)
        self.held = [trade]
        self.overflowed = False
        return [], self.gap

    def accept_run(self, first_id: int, last_id: int, count: int) -> bool:
        """The fast path of :meth:`offer` for ``count`` live trades whose ids are strictly
        increasing from ``first_id`` to ``last_id``: True (and they are all accepted, to
        be processed now) when no gap is open and they are exactly the next ids; False
        and nothing changed otherwise (then offer them one by one)."""
        if self.gap is not None:
            return False
        if not self.consecutive:
            if first_id <= self.last_id:
                return False
            self.last_id = last_id
            return True
        if last_id - first_id != count - 1:
            return False
        if self.last_id >= 0 and first_id != self.last_id + 1:
            return False
        self.last_id = last_id
        return True

    def fill(self, trades: list[Trade]) -> tuple[list[Trade], bool]:
        """Fetched trades (any order, extras ignored): what to process now, and whether the
        gap is closed (then the held live trades follow in the returned list). After a
        close, :attr:`gap` may be set again if the held trades have a gap of their own."""
        gap = self.gap
        if gap is None:
            return [], True
        ready = []
        for trade in sorted(trades, key=lambda t: t.trade_id):
            tid = trade.trade_id
            if tid <= self.last_id:
                continue  # a repeat, or of what is done already
            jump = tid - self.last_id - 1
            if jump > self.holes:
                break  # these trades do not follow on: the next page must
            if tid > gap.last_id:  # past the gap: the ids left in it are a hole
                self.skipped += gap.last_id - self.last_id
                self.last_id = gap.last_id
                break
            self.skipped += jump
            ready.append(trade)
            self.last_id = tid
        if self.last_id < gap.last_id:
            return ready, False
        ready.extend(self._release())
        return ready, True

    def give_up(self) -> list[Trade]:
        """Abandon the open gap: the held trades, to process after a fresh warm-up
        (:attr:`gap` may be set again, as after :meth:`fill`)."""
        if self.gap is None:
            return []
        self.last_id = self.gap.last_id
        return self._release()

    def restart(self, first_id: int) -> None:
        """The venue restarted its ids: follow them from ``first_id`` (nothing held)."""
        self.last_id = first_id - 1
        self.gap = None
        self.held = []
        self.overflowed = False

    def skip_to(self, first_id: int) -> None:
        """Give up on ids before ``first_id`` (a gap too large to fetch), keep the rest."""
        if self.gap is not None and first_id > self.last_id + 1:
            self.last_id = first_id - 1

    def _release(self) -> list[Trade]:
        """Hand over held trades in order; a jump among them opens the next gap (then
        :attr:`gap` is set again and the rest stays held)."""
        out: list[Trade] = []
        held, self.held, self.gap = self.held, [], None
        self.overflowed = False
        for index, trade in enumerate(held):
            tid = trade.trade_id
            if tid <= self.last_id:
                continue
            if tid != self.last_id + 1:
                self.gap = Gap(
                    trade.exchange, trade.symbol, self.last_id + 1, tid - 1, trade.time_us
                )
                self.held = held[index:]
                break
            out.append(trade)
            self.last_id = tid
        return out


#: Trades in a row (the suspect first) that confirm an implausible trade.
CONFIRM = 3
#: A forward jump of more ids than this needs confirming: a brief drop on a busy pair
#: misses a few hundred; a junk frame's id can be anything.
SUSPECT_JUMP = 1000
#: A live trade stamped further ahead of the local clock than this needs confirming
#: (exchange and local clocks agree within a second or two when both are synchronised).
MAX_AHEAD_US = 10 * 60 * 1_000_000
#: A bound that no time reaches: no clock to compare with, or an unknown last time.
UNKNOWN_TIME = 1 << 62


class Verdict(enum.Enum):
    """What :class:`TradeGuard` made of the suspects it held."""

    CONFIRMED = "confirmed"  # real: the ids jumped ahead (a gap), or the clock is off
    RESTARTED = "restarted"  # real: the exchange restarted the ids from a lower one
    REJECTED = "rejected"  # the old sequence went on: the suspects were junk


class Suspicion(enum.Enum):
    """Why the guard holds a trade."""

    AHEAD = "its id is far ahead of the last one"
    BACK = "its id is below the last one at a later time"
    FUTURE = "its time is far ahead of the local clock"


class Judged(msgspec.Struct):
    """Trades the guard lets through now (in order), and what it decided about its
    suspects, if anything."""

    passed: list[Trade]
    verdict: Verdict | None = None
    suspects: list[Trade] = []  # of the verdict: rejected, or the first of a restart
    was: int = -1  # the highest id before the verdict
    why: Suspicion | None = None
    repeat: bool = False  # the trade repeats one held: dropped (count it as a repeat)


class TradeGuard:
    """One symbol's check of live trades before the :class:`Sequencer`.

    A trade that no honest stream sends (an id far ahead or back below the last one at
    a later time, or a time far ahead of the local clock) may be a junk frame or a real
    change: an outage, the exchange restarting its ids, a local clock that is off. The
    guard holds it as a suspect, moving nothing, until the next trades decide: if they
    go on from it (higher ids, no earlier times; :data:`CONFIRM` trades in all), it is
    real; if the old sequence goes on, the suspects are rejected (counted and skipped).
    Repeats (ids already seen, at their old times) pass meanwhile: the sequencer drops
    them. Pure and deterministic, so live and replay agree (replay has no clock: no time
    is too far ahead).
    """

    __slots__ = ("consecutive", "high_id", "high_time_us", "lead_us", "reach", "suspects", "why")

    def __init__(self, *, consecutive: bool = True) -> None:
        self.consecutive = consecutive
        #: ids ahead of high_id that need no check (on a venue whose ids only increase,
        #: any jump ahead is plausible)
        self.reach = SUSPECT_JUMP if consecutive else UNKNOWN_TIME
        self.high_id = -1  # the highest id let through (or fetched), -1: none yet
        self.high_time_us = 0  # its exchange time
        self.suspects: list[Trade] = []
        self.why: Suspicion | None = None
        #: how far the exchange's clock was confirmed to be ahead of the local one (a
        #: local clock set wrong): times within MAX_AHEAD_US beyond that pass
        self.lead_us = 0

    def fits(self, ids: Sequence[int], latest_us: int, limit_us: int) -> bool:
        """Whether a run of increasing ``ids`` whose latest time is ``latest_us`` needs no
        check (nothing held, the first id within reach, no time past ``limit_us``);
        then the caller :meth:`see` s its last trade."""
        high = self.high_id
        return (
            not self.suspects
            and (high < 0 or high < ids[0] <= high + self.reach)
            and latest_us <= limit_us + self.lead_us
        )

    def see(self, trade_id: int, time_us: int) -> None:
        """A trade that needs no check (fetched over REST, or of a run already checked)."""
        if trade_id > self.high_id:
            self.high_id = trade_id
            self.high_time_us = time_us

    def judge(self, trade: Trade, limit_us: int = UNKNOWN_TIME) -> Judged:
        """Check one live trade (in arrival order); ``limit_us``: the latest plausible
        exchange time (the local clock plus :data:`MAX_AHEAD_US`)."""
        suspects = self.suspects
        if not suspects:
            return self._fresh(trade, limit_us)
        tid = trade.trade_id
        if trade in suspects:
            return Judged([], repeat=True)  # a suspect sent again (a reconnect's overlap)
        last = suspects[-1]
        if tid > last.trade_id and trade.time_us >= last.time_us:  # on from the suspects
            suspects.append(trade)
            if len(suspects) < CONFIRM:
                return Judged([])
            self.suspects = []
            was = self.high_id
            why = self.why
            if why is Suspicion.BACK:
                self.high_id, self.high_time_us = trade.trade_id, trade.time_us
                return Judged(suspects, Verdict.RESTARTED, suspects[:1], was, why)
            self.see(trade.trade_id, trade.time_us)
            if why is Suspicion.FUTURE:  # the local clock is behind: allow for it
                self.lead_us = max(self.lead_us, trade.time_us - (limit_us - MAX_AHEAD_US))
            return Judged(suspects, Verdict.CONFIRMED, [], was, why)
        if self._repeat(trade):
            return Judged([trade])  # an overlap's repeat: the sequencer drops it
        self.suspects = []
        why = self.why
        judged = self._fresh(trade, limit_us)
        return Judged(judged.passed, Verdict.REJECTED, suspects, self.high_id, why)

    def _fresh(self, trade: Trade, limit_us: int) -> Judged:
        high = self.high_id
        tid = trade.trade_id
        if trade.time_us > limit_us + self.lead_us:
            return self._suspect(trade, Suspicion.FUTURE)
        if high < 0:
            self.see(tid, trade.time_us)
            return Judged([trade])
        if tid > high:
            if tid - high > self.reach:
                return self._suspect(trade, Suspicion.AHEAD)
            self.see(tid, trade.time_us)
            return Judged([trade])
        if trade.time_us > self.high_time_us:  # an older id at a newer time: not a repeat
            return self._suspect(trade, Suspicion.BACK)
        return Judged([trade])  # a repeat (the sequencer counts it)

    def _suspect(self, trade: Trade, why: Suspicion) -> Judged:
        self.suspects = [trade]
        self.why = why
        return Judged([])

    def _repeat(self, trade: Trade) -> bool:
        return trade.trade_id <= self.high_id and trade.time_us <= self.high_time_us
