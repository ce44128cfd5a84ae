"""The REST weight budget: every look-up an exchange counts against one limit per minute and
IP acquires its weight here before it is sent.

Binance counts request weight per IP and minute (spot 6,000, USD-M 2,400; ``rateLimits`` of
exchangeInfo) and answers 429, then 418 (a ban), to a client that goes over. Hundreds of
symbols warming up or filling gaps at once must share that limit, most urgent first:

- a rolling one-minute window of the weight sent, kept under ``limit * (1 - margin)``;
- the exchange's own count (``X-MBX-USED-WEIGHT-1M``) is read from every reply to a
  request that had the IP to itself (no other of ours in flight from its sending to its
  reply): what it counts beyond our own weight of the minute is other processes' on the
  same IP, and is kept free for them until the reading is a window old. A reply to one
  of several concurrent requests cannot tell: the exchange may have counted the others
  before or after it (a test caught a budget that trusted such counts sending twice its
  cap). So when there has been no reading for a window (at start, and under constant
  load once a minute), the next request goes alone first;
- requests that do not fit wait in a priority queue: open gaps first (busier symbols
  before quieter ones), then catch-ups after a reconnect, then warm starts, then
  background look-ups; first come, first served within a class;
- a request may carry a deadline: if it cannot be sent before it, it is dropped and the
  caller is told why (a gap is then recorded as not fetched, instead of waiting forever);
- a 429 or 418 with ``Retry-After`` blocks every request until then.

:class:`WeightBudget` is the pure core: no I/O, no clock (``now`` is passed in), so the
tests drive it with a fake clock. :class:`RestBudget` is the thin asyncio layer the REST
client uses (one driver task wakes the waiting requests; clock and sleep are injected).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: Seconds of Binance's weight window (``X-MBX-USED-WEIGHT-1M``).
WINDOW_S = 60.0
#: Share of the limit kept free: other processes on the IP, replies whose weight the
#: exchange counted in a later minute than we did, a request or two in flight.
MARGIN = 0.1
#: Deadlines the engine gives its look-ups, in seconds from when it asks. A gap holds its
#: symbol's live trades until it is filled: a minute is the most it should wait.
GAP_DEADLINE_S = 60.0
#: A catch-up after a reconnect is an optimisation (the next live trade shows any gap).
CATCH_UP_DEADLINE_S = 30.0
#: A warm-start look-up: a symbol not fetched by then warms up from the stream instead.
WARM_START_DEADLINE_S = 120.0


class Lane(enum.IntEnum):
    """Classes of REST look-ups, most urgent first."""

    GAP = 0  # an open gap: the symbol's live trades are held until it is filled
    CATCH_UP = 1  # the trades after the last one seen, after a reconnect
    WARM_START = 2  # recent trades that fill a window at start-up
    BACKGROUND = 3  # refreshes that can wait (exchangeInfo, symbol lists)


@dataclass(frozen=True, slots=True)
class Priority:
    """A look-up's place in the queue: its lane, and within it the symbol's recent trade
    rate (trades per second; busier symbols first). Rates within a factor of two rank
    the same, so their requests keep their order of arrival."""

    lane: Lane
    rate: float = 0.0

    @classmethod
    def gap(cls, interval_s: float | None) -> Priority:
        """An open gap of a symbol that trades every ``interval_s`` seconds (None: unknown)."""
        rate = 1.0 / interval_s if interval_s is not None and interval_s > 0 else 0.0
        return cls(Lane.GAP, rate)

    def rank(self) -> tuple[int, int]:
        """Sort key, smallest first: the lane, then the rate's power of two, highest first."""
        if math.isnan(self.rate) or self.rate <= 0:  # unknown: the least busy
            busy = -(1 << 30)
        elif math.isinf(self.rate):
            busy = 1 << 30
        else:
            busy = math.frexp(self.rate)[1]  # the power of two: 2..3.99/s rank the same
        return (int(self.lane), -busy)


GAP = Priority(Lane.GAP)
CATCH_UP = Priority(Lane.CATCH_UP)
WARM_START = Priority(Lane.WARM_START)
BACKGROUND = Priority(Lane.BACKGROUND)


class State(enum.Enum):
    """Where a request is: queued, sent (weight spent, reply due), done, or never sent."""

    WAITING = "waiting"
    SENT = "sent"
    DONE = "done"  # sent and answered (or failed): no longer in flight
    DROPPED = "dropped"  # not sent: past its deadline, or it can never fit
    CANCELLED = "cancelled"  # the caller stopped waiting


class Ticket:
    """One request's claim on the budget (the core changes its state)."""

    __slots__ = (
        "alone",
        "deadline",
        "priority",
        "reason",
        "sent_at",
        "sent_own",
        "seq",
        "state",
        "submitted",
        "weight",
    )

    def __init__(
        self, weight: int, priority: Priority, deadline: float | None, now: float, seq: int
    ) -> None:
        self.weight = weight
        self.priority = priority
        self.deadline = deadline
        self.submitted = now
        self.seq = seq
        self.state = State.WAITING
        self.reason = ""  # why it was dropped
        self.sent_at = 0.0
        self.sent_own = 0  # the budget's own weight in the window when it was sent, its own
        self.alone = False  # no other request in flight from its sending to its reply

    def __repr__(self) -> str:
        return f"Ticket(#{self.seq} {self.priority.lane.name} w={self.weight} {self.state.value})"


@dataclass(frozen=True, slots=True)
class Polled:
    """What :meth:`WeightBudget.poll` decided: requests to send now, requests dropped, and
    when to poll again (None: nothing waits)."""

    sent: list[Ticket]
    dropped: list[Ticket]
    wake: float | None


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """Counters of a weight budget."""

    limit: int  # weight per window the exchange allows
    cap: int  # the part of it the budget uses (limit minus the margin)
    used: int  # weight counted in the current window: ours, and others' as last read
    queued: int  # requests waiting now
    in_flight: int  # requests sent, reply not yet in
    sent: int  # requests sent
    weight_sent: int  # their weight
    waits: int  # requests that had to wait for weight or a Retry-After
    wait_s: float  # seconds they waited, together
    dropped: int  # requests not sent: past their deadline (or heavier than the cap)
    rate_limited_until: float  # clock time before which nothing is sent (0: not blocked)


@dataclass(slots=True)
class _Reading:
    """The exchange's count in the reply to a request sent alone at ``at``: ``others``
    is how much of it was not ours (other processes on the IP)."""

    at: float
    others: int


class WeightBudget:
    """The pure scheduler: ``submit`` requests, ``poll`` to learn which go now, ``settle``
    each sent one with the exchange's count from its reply, ``block`` on a Retry-After.
    Times are seconds on one caller's clock (monotonic); nothing here reads a clock."""

    def __init__(self, limit: int, *, margin: float = MARGIN, window: float = WINDOW_S) -> None:
        if limit < 1 or not 0 <= margin < 1 or window <= 0:
            raise ValueError(f"bad budget: limit {limit}, margin {margin}, window {window}")
        self.limit = limit
        self.cap = max(1, math.floor(limit * (1 - margin)))
        self.window = window
        self._queue: list[tuple[tuple[int, int], int, Ticket]] = []  # (rank, seq, ticket)
        self._deadlines: list[tuple[float, int, Ticket]] = []
        self._log: deque[tuple[float, int]] = deque()  # (sent at, weight), oldest first
        self._own = 0  # weight in _log
        self._reading: _Reading | None = None  # the latest, while less than a window old
        self._read_at: float | None = None  # when the latest lone request was sent
        self._alone: Ticket | None = None  # the request in flight by itself, if one is
        self._blocked_until = 0.0
        self.blocked_by = ""  # what blocked it last ("HTTP 429")
        self._seq = itertools.count()
        self._queued = self._in_flight = 0
        self._sent = self._weight_sent = self._waits = self._dropped = 0
        self._wait_s = 0.0

    # -- the requests ----------------------------------------------------------------

    def submit(self, weight: int, priority: Priority, deadline: float | None, now: float) -> Ticket:
        """Queue a request of ``weight``; :meth:`poll` sends it when it fits."""
        ticket = Ticket(max(0, weight), priority, deadline, now, next(self._seq))
        if ticket.weight > self.cap:
            self._drop(ticket, f"weight {weight} is more than the budget's {self.cap}")
            return ticket
        self._queued += 1
        heapq.heappush(self._queue, (priority.rank(), ticket.seq, ticket))
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, ticket.seq, ticket))
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """The caller gave up on ``ticket`` (a sent one no longer counts as in flight; its
        weight stays spent)."""
        if ticket.state is State.WAITING:
            self._queued -= 1
            ticket.state = State.CANCELLED
        elif ticket.state is State.SENT:  # no reply to learn from
            ticket.alone = False
            self.settle(ticket, None)

    def settle(self, ticket: Ticket, used: int | None) -> None:
        """The reply to a sent ``ticket`` is in (or the request failed); ``used`` is the
        exchange's weight count it reported (``X-MBX-USED-WEIGHT-1M``), None if none.
        Read only when the request had the IP to itself (see the module's docstring)."""
        if ticket.state is not State.SENT:
            return
        self._in_flight -= 1
        ticket.state = State.DONE
        if self._alone is ticket:
            self._alone = None
        if not ticket.alone:
            return  # others of ours were in flight: the count cannot tell theirs from ours
        self._read_at = ticket.sent_at
        if used is not None:
            self._reading = _Reading(ticket.sent_at, max(0, used - ticket.sent_own))

    def block(self, until: float, reason: str) -> None:
        """Send nothing before ``until`` (a 429 or 418 with Retry-After)."""
        if until > self._blocked_until:
            self._blocked_until = until
            self.blocked_by = reason

    def blocked_until(self) -> float:
        """Clock time before which nothing is sent (in the past when not blocked)."""
        return self._blocked_until

    # -- the decisions ---------------------------------------------------------------

    def poll(self, now: float) -> Polled:
        """Send what fits now, most urgent first; drop what is past its deadline (or
        blocked past it); say when to poll next."""
        sent: list[Ticket] = []
        dropped: list[Ticket] = []
        self._expire(now)
        blocked = now < self._blocked_until
        # past its deadline now, or the exchange asked for quiet until after it
        horizon = self._blocked_until if blocked else now
        while self._deadlines and self._deadlines[0][0] <= horizon:
            deadline, _, ticket = heapq.heappop(self._deadlines)
            if ticket.state is not State.WAITING:
                continue
            self._queued -= 1
            if deadline <= now:
                why = f"waited {now - ticket.submitted:.0f}s in the REST queue, past its deadline"
            else:
                why = (
                    f"rate limited ({self.blocked_by}) for {self._blocked_until - now:.0f}s "
                    f"more, past its deadline"
                )
            self._drop(ticket, why)
            dropped.append(ticket)
        head: Ticket | None = None
        probing = False
        while self._queue:
            ticket = self._queue[0][2]
            if ticket.state is not State.WAITING:
                heapq.heappop(self._queue)
                continue
            # no reading for a window: the exchange's count is unknown, one goes alone
            probing = self._in_flight > 0 and (
                self._read_at is None or self._read_at + self.window <= now
            )
            if blocked or probing or self._usage(now) + ticket.weight > self.cap:
                head = ticket
                break
            heapq.heappop(self._queue)
            self._send(ticket, now)
            sent.append(ticket)
        wake: float | None = None
        if head is not None:
            if blocked:
                wake = self._blocked_until
            elif not probing:  # (probing: the reply will tell, through settle)
                wake = self._fit_time(head.weight, now)
            while self._deadlines and self._deadlines[0][2].state is not State.WAITING:
                heapq.heappop(self._deadlines)
            if self._deadlines:
                first = self._deadlines[0][0]
                wake = first if wake is None else min(wake, first)
        return Polled(sent, dropped, wake)

    def usage(self, now: float) -> int:
        """Weight counted in the window ending ``now``: ours, and others' as the latest
        reading of the exchange's count (less than a window old) showed it."""
        self._expire(now)
        return self._usage(now)

    def stats(self, now: float) -> BudgetStats:
        """A copy of the counters at ``now``."""
        return BudgetStats(
            limit=self.limit,
            cap=self.cap,
            used=self.usage(now),
            queued=self._queued,
            in_flight=self._in_flight,
            sent=self._sent,
            weight_sent=self._weight_sent,
            waits=self._waits,
            wait_s=self._wait_s,
            dropped=self._dropped,
            rate_limited_until=self._blocked_until if now < self._blocked_until else 0.0,
        )

    @property
    def queued(self) -> int:
        """Requests waiting."""
        return self._queued

    @property
    def in_flight(self) -> int:
        """Requests sent whose reply is not in yet."""
        return self._in_flight

    # -- inside ----------------------------------------------------------------------

    def _send(self, ticket: Ticket, now: float) -> None:
        ticket.state = State.SENT
        ticket.sent_at = now
        self._log.append((now, ticket.weight))
        self._own += ticket.weight
        self._weight_sent += ticket.weight
        ticket.sent_own = self._own
        if self._alone is not None:  # it has company now: its reply cannot be read
            self._alone.alone = False
            self._alone = None
        if self._in_flight == 0:
            ticket.alone = True
            self._alone = ticket
        self._queued -= 1
        self._in_flight += 1
        self._sent += 1
        if now > ticket.submitted:
            self._waits += 1
            self._wait_s += now - ticket.submitted

    def _drop(self, ticket: Ticket, reason: str) -> None:
        ticket.state = State.DROPPED
        ticket.reason = reason
        self._dropped += 1

    def _expire(self, now: float) -> None:
        """Forget sends that left the window ``(now - window, now]``."""
        log = self._log
        while log and log[0][0] + self.window <= now:
            self._own -= log.popleft()[1]
        if self._reading is not None and self._reading.at + self.window <= now:
            self._reading = None

    def _usage(self, now: float) -> int:
        del now  # _expire has run
        reading = self._reading
        return self._own + (0 if reading is None else reading.others)

    def _fit_time(self, weight: int, now: float) -> float:
        """The earliest time from ``now`` on when ``weight`` more fits under the cap,
        as sends leave the window and the exchange's count grows old (nothing else
        changing)."""
        need = self.cap - weight
        reading = self._reading
        others, stale = 0, now  # others' weight in the count, until it is stale
        if reading is not None:
            others, stale = reading.others, reading.at + self.window
        own = self._own
        at = now
        sends = iter(self._log)
        following = next(sends, None)
        while True:
            while following is not None and following[0] + self.window <= at:
                own -= following[1]
                following = next(sends, None)
            if own + (others if at < stale else 0) <= need:
                return at
            changes = [following[0] + self.window] if following is not None else []
            if at < stale:
                changes.append(stale)
            if not changes:  # nothing left to wait for (cannot happen: weight <= cap)
                return at
            at = min(changes)


class NotSent(Exception):
    """A request the budget dropped: past its deadline, or never able to fit."""


class RestBudget:
    """The weight budget for asyncio callers: ``await acquire(...)`` before a request,
    ``settle(...)`` after its reply. One driver task (running only while requests wait)
    sleeps until the next request can go and wakes it. Thread-safe for :meth:`stats`."""

    def __init__(
        self,
        limit: int,
        *,
        margin: float = MARGIN,
        window: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.core = WeightBudget(limit, margin=margin, window=window)
        self.clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()  # the core, between the loop and stats() readers
        self._waiters: dict[Ticket, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._driver: asyncio.Task[None] | None = None

    @property
    def limit(self) -> int:
        """Weight per window the exchange allows."""
        return self.core.limit

    def deadline_in(self, seconds: float) -> float:
        """The clock time ``seconds`` from now (for ``deadline`` arguments)."""
        return self.clock() + seconds

    async def acquire(
        self, weight: int, priority: Priority = BACKGROUND, deadline: float | None = None
    ) -> Ticket:
        """Wait until ``weight`` may be sent (most urgent first); the returned ticket
        must be :meth:`settle`\\ d. Raises :class:`NotSent` past ``deadline``."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests run several): fresh waiting
            with self._lock:
                for stale in self._waiters:
                    self.core.cancel(stale)
            self._waiters.clear()
            self._loop, self._changed, self._driver = loop, asyncio.Event(), None
        with self._lock:
            now = self.clock()
            ticket = self.core.submit(weight, priority, deadline, now)
            self._wake(self.core.poll(now))
        if ticket.state is State.WAITING:
            future = loop.create_future()
            self._waiters[ticket] = future
            self._kick()
            try:
                await future
            except asyncio.CancelledError:
                with self._lock:
                    self.core.cancel(ticket)
                self._kick()
                raise
            finally:
                self._waiters.pop(ticket, None)
        if ticket.state is State.DROPPED:
            raise NotSent(ticket.reason)
        return ticket

    def settle(self, ticket: Ticket, used: int | None) -> None:
        """The reply to ``ticket`` is in; ``used``: the exchange's weight count, if sent."""
        with self._lock:
            self.core.settle(ticket, used)
        self._kick()

    def block(self, seconds: float, reason: str) -> None:
        """Send nothing for ``seconds`` (a Retry-After)."""
        with self._lock:
            self.core.block(self.clock() + seconds, reason)
        self._kick()

    def blocked_for(self) -> tuple[float, str]:
        """Seconds before anything may be sent (<= 0: not blocked), and why."""
        with self._lock:
            return self.core.blocked_until() - self.clock(), self.core.blocked_by

    def stats(self) -> BudgetStats:
        """A copy of the counters (from any thread)."""
        with self._lock:
            return self.core.stats(self.clock())

    def _wake(self, polled: Polled) -> None:
        for ticket in (*polled.sent, *polled.dropped):
            future = self._waiters.get(ticket)
            if future is not None and not future.done():
                future.set_result(None)

    def _kick(self) -> None:
        """Something changed: the driver looks again (started if requests wait)."""
        if self._changed is None:
            return
        self._changed.set()
        if self._waiters and (self._driver is None or self._driver.done()):
            assert self._loop is not None
            self._driver = self._loop.create_task(self._drive())

    async def _drive(self) -> None:
        changed = self._changed
        assert changed is not None
        while self._waiters:
            changed.clear()
            with self._lock:
                polled = self.core.poll(self.clock())
                self._wake(polled)
                queued = self.core.queued
            if not queued or polled.wake is None:
                return
            delay = polled.wake - self.clock()
            if delay <= 0:  # due already (the clock moved on while polling)
                await asyncio.sleep(0)
                continue
            waits = [
                asyncio.ensure_future(changed.wait()),
                asyncio.ensure_future(self._sleep(delay)),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiting
