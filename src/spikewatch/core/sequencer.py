"""Keeps each symbol's trades in id order across reconnects: finds gaps, holds live trades
while the missing ones are fetched, and releases everything in order.

Pure: it only decides. The engine fetches (over REST) and feeds what it gets back.
Binance trade ids are consecutive per symbol, so a jump in ids is a gap.
"""

from __future__ import annotations

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

    __slots__ = ("consecutive", "duplicates", "gap", "held", "last_id", "max_held", "overflowed")

    def __init__(
        self, last_id: int = -1, max_held: int = 200_000, *, consecutive: bool = True
    ) -> None:
        self.last_id = last_id  # -1: nothing seen yet, so no gap can be known
        # False for a venue whose ids only increase: repeats are dropped, no gap is known
        self.consecutive = consecutive
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
            if trade.trade_id == self.last_id + 1 and trade.trade_id <= gap.last_id:
                ready.append(trade)
                self.last_id = trade.trade_id
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
