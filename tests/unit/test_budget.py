"""The REST weight budget, on a fake clock: what goes first, what waits for the window,
what the exchange's own count changes, what is dropped at its deadline, and what a
Retry-After blocks. A property: whatever arrives, the weight sent in any minute stays
under the cap, and every request is sent or dropped past its deadline."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikewatch.ingest.budget import (
    BACKGROUND,
    CATCH_UP,
    GAP,
    WARM_START,
    Lane,
    NotSent,
    Priority,
    RestBudget,
    State,
    Ticket,
    WeightBudget,
)


def sent_now(budget: WeightBudget, now: float, *, answer: bool = True) -> list[Ticket]:
    """Poll at ``now``; every request sent is answered at once (no count in the reply)
    unless ``answer`` is False. Repeats until nothing more goes (a reply can free more)."""
    out: list[Ticket] = []
    while True:
        polled = budget.poll(now)
        if not polled.sent:
            return out
        out.extend(polled.sent)
        if not answer:
            return out
        for ticket in polled.sent:
            budget.settle(ticket, None)


def spend(budget: WeightBudget, weight: int, now: float = 0.0) -> None:
    """Send ``weight`` at ``now`` (it must fit)."""
    ticket = budget.submit(weight, BACKGROUND, None, now)
    assert sent_now(budget, now) == [ticket]


# -- order ------------------------------------------------------------------------------


def test_what_fits_goes_at_once_and_the_rest_waits_for_the_window_to_free() -> None:
    budget = WeightBudget(100, margin=0.1)  # a cap of 90 per minute
    tickets = [budget.submit(25, WARM_START, None, 0.0) for _ in range(5)]
    assert sent_now(budget, 0.0) == tickets[:3]  # 75; a fourth would make 100
    polled = budget.poll(10.0)
    assert polled.sent == []
    assert polled.wake == 60.0  # when the first send leaves the window
    assert sent_now(budget, 59.999) == []
    assert sent_now(budget, 60.0) == tickets[3:]  # all three of t=0 left: room for 3
    stats = budget.stats(60.0)
    assert stats.waits == 2
    assert stats.sent == 5
    assert stats.weight_sent == 125
    assert stats.used == 50
    assert stats.queued == 0


def test_gaps_go_before_catch_ups_before_warm_starts_before_background() -> None:
    budget = WeightBudget(10, margin=0.0)
    spend(budget, 10)  # fills the minute
    arrivals = [BACKGROUND, WARM_START, CATCH_UP, GAP, WARM_START, GAP, CATCH_UP]
    tickets = [budget.submit(10, priority, None, 1.0) for priority in arrivals]
    order = []
    for minute in range(1, len(tickets) + 1):
        order.extend(sent_now(budget, 60.0 * minute))
    assert [t.priority.lane for t in order] == [
        Lane.GAP,
        Lane.GAP,
        Lane.CATCH_UP,
        Lane.CATCH_UP,
        Lane.WARM_START,
        Lane.WARM_START,
        Lane.BACKGROUND,
    ]
    # first come, first served within a lane
    assert [t.seq for t in order if t.priority.lane is Lane.GAP] == [
        tickets[3].seq,
        tickets[5].seq,
    ]


def test_gaps_of_busier_symbols_go_first_and_similar_rates_keep_their_order() -> None:
    budget = WeightBudget(10, margin=0.0)
    spend(budget, 10)
    quiet = budget.submit(10, Priority.gap(60.0), None, 1.0)  # a trade a minute
    unknown = budget.submit(10, Priority.gap(None), None, 1.0)  # no live trade seen yet
    busy_a = budget.submit(10, Priority.gap(0.3), None, 1.0)  # ~3.3 trades/s
    busy_b = budget.submit(10, Priority.gap(0.26), None, 1.0)  # ~3.8/s: same power of two
    busiest = budget.submit(10, Priority.gap(0.01), None, 1.0)  # 100/s
    order = []
    for minute in range(1, 6):
        order.extend(sent_now(budget, 60.0 * minute))
    assert order == [busiest, busy_a, busy_b, quiet, unknown]


# -- the window and the exchange's count -----------------------------------------------


def test_the_window_is_rolling_a_send_counts_for_exactly_one_minute() -> None:
    budget = WeightBudget(100, margin=0.0)
    spend(budget, 60, 0.0)
    spend(budget, 40, 30.0)
    third = budget.submit(50, WARM_START, None, 31.0)
    polled = budget.poll(31.0)
    assert polled.sent == []
    assert polled.wake == 60.0  # the 60 of t=0 leave; the 40 of t=30 stay till 90
    assert sent_now(budget, 60.0) == [third]
    assert budget.usage(60.0) == 90
    assert budget.usage(90.0) == 50
    assert budget.usage(119.0) == 50
    assert budget.usage(120.0) == 0


def test_weight_other_processes_on_the_ip_used_is_left_to_them() -> None:
    budget = WeightBudget(1000, margin=0.1)  # cap 900
    probe = budget.submit(25, WARM_START, None, 0.0)
    assert sent_now(budget, 0.0, answer=False) == [probe]
    # the exchange counted 800 this minute: 775 of it by someone else
    budget.settle(probe, 800)
    assert budget.usage(0.0) == 800
    tickets = [budget.submit(25, WARM_START, None, 1.0) for _ in range(10)]
    assert sent_now(budget, 1.0) == tickets[:4]  # 800 + 4 * 25 = 900
    assert budget.usage(1.0) == 900
    polled = budget.poll(2.0)
    assert polled.wake == 60.0  # the count is of the minute up to the probe
    assert sent_now(budget, 60.0) == tickets[4:]


def test_without_a_count_from_the_exchange_our_own_sends_count() -> None:
    budget = WeightBudget(100, margin=0.0)
    tickets = [budget.submit(20, GAP, None, 0.0) for _ in range(5)]
    sent = sent_now(budget, 0.0, answer=False)
    assert sent == tickets[:1]  # the first request goes alone: the count is unknown
    budget.settle(sent[0], None)
    assert sent_now(budget, 0.0) == tickets[1:]
    late = budget.submit(20, GAP, None, 1.0)
    assert sent_now(budget, 1.0) == []  # our own 100 of the last minute count
    assert sent_now(budget, 60.0) == [late]


def test_our_own_weight_leaves_the_exchanges_count_as_it_leaves_the_window() -> None:
    budget = WeightBudget(100, margin=0.0)
    spend(budget, 20, 0.0)
    tickets = [budget.submit(20, GAP, None, 10.0) for _ in range(4)]
    assert sent_now(budget, 10.0, answer=False) == tickets
    for ticket in tickets:
        budget.settle(ticket, 100)  # the exchange counts what we sent, no more
    late = budget.submit(20, GAP, None, 11.0)
    polled = budget.poll(11.0)
    assert polled.wake == 60.0  # when the send of t=0 leaves, not when the count is old
    assert sent_now(budget, 60.0) == [late]


def test_a_count_in_a_reply_to_one_of_several_concurrent_requests_is_not_read() -> None:
    # the exchange may have counted the others before or after it: the count cannot
    # tell ours from other processes' (trusting it once sent twice the cap)
    budget = WeightBudget(1000, margin=0.0)
    spend(budget, 10)
    first, second = (budget.submit(10, GAP, None, 1.0) for _ in range(2))
    assert sent_now(budget, 1.0, answer=False) == [first, second]
    budget.settle(second, 900)
    budget.settle(first, 10)
    assert budget.usage(1.0) == 30
    # a request that had the IP to itself is read
    alone = budget.submit(10, GAP, None, 2.0)
    assert sent_now(budget, 2.0, answer=False) == [alone]
    budget.settle(alone, 540)
    assert budget.usage(2.0) == 540


# -- deadlines and Retry-After ----------------------------------------------------------


def test_a_request_that_cannot_go_before_its_deadline_is_dropped_with_the_reason() -> None:
    budget = WeightBudget(100, margin=0.0)
    spend(budget, 100)
    hurried = budget.submit(10, GAP, 30.0, 5.0)
    patient = budget.submit(10, WARM_START, None, 5.0)
    polled = budget.poll(5.0)
    assert polled.wake == 30.0  # the deadline comes before the window frees
    polled = budget.poll(30.0)
    assert polled.dropped == [hurried]
    assert hurried.state is State.DROPPED
    assert "past its deadline" in hurried.reason
    assert "waited 25s" in hurried.reason
    assert sent_now(budget, 60.0) == [patient]
    assert budget.stats(60.0).dropped == 1


def test_a_request_heavier_than_the_cap_is_dropped_at_once() -> None:
    budget = WeightBudget(100, margin=0.1)
    ticket = budget.submit(95, GAP, None, 0.0)
    assert ticket.state is State.DROPPED
    assert "more than the budget's 90" in ticket.reason
    assert budget.poll(0.0).wake is None


def test_a_retry_after_blocks_every_request_and_drops_those_due_before_it_ends() -> None:
    budget = WeightBudget(1000, margin=0.0)
    budget.block(100.0, "HTTP 429")
    soon = budget.submit(1, GAP, 50.0, 0.0)
    later = budget.submit(1, CATCH_UP, 200.0, 0.0)
    patient = budget.submit(1, BACKGROUND, None, 0.0)
    polled = budget.poll(0.0)
    assert polled.sent == []
    assert polled.dropped == [soon]  # known now: no need to wait for its deadline
    assert "rate limited (HTTP 429) for 100s more" in soon.reason
    assert polled.wake == 100.0
    assert sent_now(budget, 99.0) == []
    assert sent_now(budget, 100.0) == [later, patient]
    budget.block(50.0, "HTTP 418")  # an earlier end does not shorten the block
    assert budget.blocked_until() == 100.0


def test_a_cancelled_request_gives_its_place_up() -> None:
    budget = WeightBudget(10, margin=0.0)
    spend(budget, 10)
    gone = budget.submit(10, GAP, None, 1.0)
    stays = budget.submit(10, WARM_START, None, 1.0)
    budget.cancel(gone)
    assert sent_now(budget, 60.0) == [stays]
    assert budget.stats(60.0).queued == 0


# -- the property -----------------------------------------------------------------------


@dataclass
class Arrival:
    after: float  # seconds after the previous arrival
    weight: int
    lane: Lane
    rate: float
    patience: float | None  # deadline = arrival + patience
    foreign: int | None  # weight of others in the exchange's count (None: no count)
    retry_after: float | None  # the reply is a 429 asking for this


arrivals = st.lists(
    st.builds(
        Arrival,
        after=st.sampled_from([0.0, 0.0, 0.001, 0.5, 1.0, 7.25, 30.0, 59.999, 60.0, 61.0]),
        weight=st.integers(0, 120),
        lane=st.sampled_from(list(Lane)),
        rate=st.sampled_from([0.0, 0.5, 1.0, 3.0, 250.0, float("nan")]),
        patience=st.none() | st.sampled_from([0.0, 1.0, 20.0, 60.0, 300.0]),
        foreign=st.none() | st.integers(0, 150),
        retry_after=st.none() | st.none() | st.sampled_from([1.0, 30.0, 90.0]),
    ),
    max_size=60,
)


@dataclass
class Run:
    sends: list[tuple[float, int]] = field(default_factory=list)
    blocks: list[tuple[float, float]] = field(default_factory=list)


@settings(max_examples=300, deadline=None)
@given(arrivals, st.integers(1, 200), st.sampled_from([0.0, 0.1, 0.25]))
def test_no_minute_ever_sends_more_than_the_cap_and_no_request_waits_forever(
    arriving: list[Arrival], limit: int, margin: float
) -> None:
    budget = WeightBudget(limit, margin=margin)
    run = Run()
    plan: dict[int, Arrival] = {}
    tickets: list[Ticket] = []
    now = 0.0
    times = []
    for arrival in arriving:
        now += arrival.after
        times.append(now)

    def step(at: float) -> float | None:
        """Poll at ``at`` until nothing more goes; answer each send at once."""
        while True:
            polled = budget.poll(at)
            assert not polled.sent or budget.blocked_until() <= at
            for ticket in polled.sent:
                run.sends.append((at, ticket.weight))
                spec = plan[ticket.seq]
                if spec.retry_after is not None:
                    budget.block(at + spec.retry_after, "HTTP 429")
                    run.blocks.append((at, at + spec.retry_after))
                # the exchange's count: our own weight of the last minute, and others'
                own = sum(w for sent_at, w in run.sends if sent_at + 60.0 > at)
                budget.settle(ticket, None if spec.foreign is None else own + spec.foreign)
            if not polled.sent:
                return polled.wake

    wake: float | None = None
    for arrival, at in zip(arriving, times, strict=True):
        while wake is not None and wake < at:  # what the clock reaches before it
            wake = step(wake)
        deadline = None if arrival.patience is None else at + arrival.patience
        ticket = budget.submit(arrival.weight, Priority(arrival.lane, arrival.rate), deadline, at)
        plan[ticket.seq] = arrival
        tickets.append(ticket)
        wake = step(at)
    for _ in range(10 * len(tickets) + 10):  # then the clock runs on until all is decided
        if wake is None:
            break
        wake = step(wake)
    assert wake is None

    # every request was sent, or dropped (past its deadline, blocked past it, too heavy)
    for ticket in tickets:
        assert ticket.state in (State.DONE, State.DROPPED), ticket
        if ticket.state is State.DONE:
            assert ticket.deadline is None or ticket.sent_at < ticket.deadline
            assert ticket.sent_at >= ticket.submitted
        else:
            assert ticket.weight > budget.cap or ticket.deadline is not None
    # the weight sent in any window of a minute stays under the cap (windows ending at a
    # send are the fullest)
    for index, (at, _) in enumerate(run.sends):
        inside = sum(w for sent_at, w in run.sends[: index + 1] if sent_at + 60.0 > at)
        assert inside <= budget.cap
    # nothing is sent while a Retry-After holds
    for start, end in run.blocks:
        assert not [s for s, _ in run.sends if start < s < end]
    assert budget.stats(now).queued == 0
    assert budget.stats(now).in_flight == 0


# -- the asyncio layer ------------------------------------------------------------------


class FakeClock:
    """Time that moves only when the budget sleeps (everything else takes no time)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_waiting_requests_are_woken_most_urgent_first() -> None:
    clock = FakeClock()
    budget = RestBudget(100, margin=0.0, clock=clock, sleep=clock.sleep)
    order: list[str] = []

    async def look_up(name: str, priority: Priority) -> None:
        ticket = await budget.acquire(50, priority)
        order.append(name)
        budget.settle(ticket, None)

    async def main() -> None:
        await look_up("first", BACKGROUND)
        await look_up("second", BACKGROUND)  # the minute is full now
        await asyncio.gather(
            look_up("warm", WARM_START),
            look_up("background", BACKGROUND),
            look_up("gap", GAP),
            look_up("catch-up", CATCH_UP),
        )

    asyncio.run(main())
    assert order == ["first", "second", "gap", "catch-up", "warm", "background"]
    assert clock.now == 120.0  # two more minutes, two requests each
    stats = budget.stats()
    assert stats.waits == 4
    assert stats.queued == 0
    assert stats.in_flight == 0


def test_an_acquire_past_its_deadline_raises_not_sent() -> None:
    clock = FakeClock()
    budget = RestBudget(100, margin=0.0, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        budget.settle(await budget.acquire(100, WARM_START), None)
        with pytest.raises(NotSent, match="past its deadline"):
            await budget.acquire(10, GAP, deadline=budget.deadline_in(20.0))
        budget.settle(await budget.acquire(10, WARM_START), None)

    asyncio.run(main())
    assert clock.now == 60.0
    assert budget.stats().dropped == 1


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    clock = FakeClock()
    budget = RestBudget(100, margin=0.0, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        budget.settle(await budget.acquire(100, WARM_START), None)
        waiter = asyncio.ensure_future(budget.acquire(10, GAP))
        await asyncio.sleep(0)
        assert budget.stats().queued == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert budget.stats().queued == 0

    asyncio.run(main())
