"""The sequencer: whatever the stream delivers (drops, repeats, overlaps), the trades it
releases are each id exactly once, in order, once the gaps are filled."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from spikewatch.core.model import Side, Trade
from spikewatch.core.sequencer import Gap, Sequencer


def trade(tid: int) -> Trade:
    return Trade("binance", "BTCUSDT", tid, 6_000_000_000_000, 100_000, tid * 1000, Side.BUY)


def run(delivered: list[int], source: range, fail: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """Feed ``delivered`` ids live; fill each gap from ``source`` unless its first id is in
    ``fail`` (then give it up). Returns the released ids."""
    seq = Sequencer()
    out: list[int] = []

    def settle(gap: Gap | None) -> None:
        while gap is not None:
            if gap.first_id in fail:
                out.extend(t.trade_id for t in seq.give_up())
            else:
                wanted = [trade(i) for i in source if gap.first_id <= i <= gap.last_id]
                ready, closed = seq.fill(wanted)
                assert closed
                out.extend(t.trade_id for t in ready)
            gap = seq.gap

    for tid in delivered:
        ready, gap = seq.offer(trade(tid))
        out.extend(t.trade_id for t in ready)
        settle(gap)
    return out


def test_consecutive_trades_pass_straight_through() -> None:
    assert run(list(range(100, 110)), range(0)) == list(range(100, 110))


def test_a_gap_is_filled_in_order_before_the_live_trades_after_it() -> None:
    assert run([1, 2, 3, 8, 9, 10], range(1, 11)) == list(range(1, 11))


def test_held_trades_wait_for_the_fill() -> None:
    seq = Sequencer()
    seq.offer(trade(1))
    ready, gap = seq.offer(trade(5))
    assert ready == []
    assert gap is not None
    assert (gap.first_id, gap.last_id, gap.size) == (2, 4, 3)
    assert seq.offer(trade(6)) == ([], None)
    assert seq.offer(trade(5)) == ([], None)  # a repeat of a held trade is dropped
    ready, closed = seq.fill([trade(3), trade(2)])  # partial, any order
    assert [t.trade_id for t in ready] == [2, 3]
    assert not closed
    ready, closed = seq.fill([trade(4)])
    assert closed
    assert [t.trade_id for t in ready] == [4, 5, 6]


def test_a_gap_given_up_releases_the_held_trades_after_it() -> None:
    assert run([1, 2, 10, 11], range(1, 12), fail={3}) == [1, 2, 10, 11]


@given(
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=300),
    st.lists(st.integers(min_value=0, max_value=299), max_size=30),
)
def test_any_delivery_pattern_releases_every_id_once_in_order(
    steps: list[int], repeats: list[int]
) -> None:
    # a live stream that skips ahead by 0..3 ids at a time, and re-sends old ids (as an
    # overlapping connection does): with every gap filled, all ids come out once, in order
    delivered, tid = [], 1000
    for step in steps:
        tid += 1 + step
        delivered.append(tid)
    for r in repeats:
        delivered.insert(min(r, len(delivered)), delivered[min(r, len(delivered) - 1)] - 1)
    first = delivered[0]
    out = run(delivered, range(first, tid + 1))
    assert out == list(range(first, max(delivered) + 1))


def test_past_the_hold_limit_trades_become_the_next_gap_and_are_still_fetched() -> None:
    seq = Sequencer(max_held=3)
    seq.offer(trade(1))
    _, gap = seq.offer(trade(5))
    assert gap is not None
    for tid in range(6, 12):  # 6 and 7 are held, 8..11 are let go (memory stays bounded)
        seq.offer(trade(tid))
    assert len(seq.held) == 3
    assert seq.overflowed
    ready, closed = seq.fill([trade(i) for i in range(2, 5)])
    assert closed
    assert [t.trade_id for t in ready] == [2, 3, 4, 5, 6, 7]
    assert seq.gap is None  # nothing held beyond 7: the next live trade shows the hole
    _, again = seq.offer(trade(12))
    assert again is not None
    assert (again.first_id, again.last_id) == (8, 11)
