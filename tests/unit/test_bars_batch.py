"""Bars and the sequencer on the live batch path: a read of many trades handled at once
must leave exactly the state that handling its trades one by one leaves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from spikewatch.core.bars import BarSeries
from spikewatch.core.model import Side, Trade, TradeBatch
from spikewatch.core.sequencer import Gap, Sequencer

T0 = 1_723_161_255_000_000  # 2024-08-08T23:54:15Z, in µs


@st.composite
def trade_runs(draw: st.DrawFn) -> list[Trade]:
    """Trades of one symbol with times mostly rising, sometimes equal (bursts), sometimes
    going back (a late trade), across several bar boundaries."""
    n = draw(st.integers(1, 120))
    times, t = [], T0 + draw(st.integers(0, 999_999))
    for _ in range(n):
        t += draw(st.sampled_from([0, 0, 1, 250, 90_000, 700_000, 1_300_000, -400_000]))
        times.append(t)
    prices = draw(st.lists(st.integers(1, 10**13), min_size=n, max_size=n))
    qtys = draw(st.lists(st.integers(1, 10**10), min_size=n, max_size=n))
    return [
        Trade("binance", "BTCUSDT", 100 + i, p, q, tt, Side.BUY)
        for i, (p, q, tt) in enumerate(zip(prices, qtys, times, strict=True))
    ]


@given(runs=st.lists(trade_runs(), min_size=1, max_size=4), interval=st.sampled_from([1, 5]))
def test_update_batch_leaves_the_bars_of_update_trade_by_trade(
    runs: list[list[Trade]], interval: int
) -> None:
    one_by_one, batched = BarSeries(interval, keep=50), BarSeries(interval, keep=50)
    for run in runs:
        for trade in run:
            one_by_one.update(trade)
        batched.update_batch(TradeBatch.from_trades(run))
    assert batched.bars() == one_by_one.bars()
    assert batched.last() == one_by_one.last()


def trade(tid: int) -> Trade:
    return Trade("binance", "BTCUSDT", tid, 6_000_000_000_000, 100_000, tid * 1000, Side.BUY)


@given(
    start=st.integers(-1, 50),
    first=st.integers(0, 60),
    count=st.integers(1, 20),
    open_gap=st.booleans(),
)
def test_accept_run_accepts_exactly_what_offer_would_pass_straight_through(
    start: int, first: int, count: int, open_gap: bool
) -> None:
    """accept_run says yes only when offering the run one by one would release every
    trade at once with no gap; then the state is the same as after those offers."""
    accepting, offering = Sequencer(start), Sequencer(start)
    if open_gap and start >= 0:  # a gap is open: live trades are held
        for seq in (accepting, offering):
            seq.offer(trade(start + 5))
    ids = list(range(first, first + count))
    released: list[int] = []
    gaps: list[Gap | None] = []
    for tid in ids:
        ready, gap = offering.offer(trade(tid))
        released.extend(t.trade_id for t in ready)
        gaps.append(gap)
    accepted = accepting.accept_run(ids[0], ids[-1], count)
    assert accepted == (released == ids and not any(gaps))
    if accepted:
        assert accepting.last_id == offering.last_id == ids[-1]
        assert accepting.gap is None
    else:  # nothing changed: the caller offers them one by one
        fresh = Sequencer(start)
        if open_gap and start >= 0:
            fresh.offer(trade(start + 5))
        assert (accepting.last_id, accepting.gap, accepting.held) == (
            fresh.last_id,
            fresh.gap,
            fresh.held,
        )


def test_accept_run_refuses_ids_that_are_not_consecutive() -> None:
    seq = Sequencer(10)
    assert not seq.accept_run(11, 20, 5)  # 11..20 is 10 ids, not 5
    assert seq.last_id == 10
    assert seq.accept_run(11, 15, 5)
    assert seq.last_id == 15


@given(
    runs=st.lists(trade_runs(), min_size=1, max_size=4),
    keep=st.integers(1, 40),
    limit=st.one_of(st.none(), st.integers(1, 60)),
)
def test_bars_keep_the_last_ones_exactly(
    runs: list[list[Trade]], keep: int, limit: int | None
) -> None:
    """The compact columns give the bars an unbounded series would give, cut to the last
    ``keep`` closed ones (and the forming one), the last ``limit`` of them when asked."""
    kept, whole = BarSeries(1, keep=keep), BarSeries(1, keep=10**6)
    for trade in (t for run in runs for t in run):
        kept.update(trade)
        whole.update(trade)
    everything = whole.bars()
    closed, forming = everything[:-1], everything[-1:]
    expected = closed[-keep:] + forming
    assert kept.bars() == expected
    assert kept.bars(limit) == (expected[-limit:] if limit else expected)
    assert kept.last() == whole.last()
