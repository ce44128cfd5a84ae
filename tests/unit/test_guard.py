"""Implausible live trades on real recorded frames: ids that go back (an exchange-side
restart), one id far ahead, one time far in the future. Each was found breaking a run
from outside (issue 10, items 1 to 3); the kernel's :class:`TradeGuard` must hold such a
trade until the trades after it decide, then recover exactly."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from spikewatch.core.kernel import GapPolicy, Kernel
from spikewatch.core.model import Side, Signal, Trade
from spikewatch.core.sequencer import CONFIRM, SUSPECT_JUMP, Suspicion, TradeGuard, Verdict
from spikewatch.replay.runner import replay

from kernel_kit import Outcome, feed_reads, make_kernel, trade_id, trades_of
from reference import reference_spikes

NOW_NS = time.time_ns()


def rewritten(
    frame: bytes, *, shift_id: int = 0, time_ms: int | None = None, shift_ms: int = 0
) -> bytes:
    """A recorded combined-stream frame with its trade id moved and/or its time set."""
    doc = json.loads(frame)
    data = doc["data"]
    data["t"] += shift_id
    data["T"] = (data["T"] if time_ms is None else time_ms) + shift_ms
    return json.dumps(doc, separators=(",", ":")).encode()


def live(kernel: Kernel, frames: Sequence[bytes], size: int, out: Outcome) -> None:
    """Frames read ``size`` at a time, received now (the local clock is checked)."""
    for start in range(0, len(frames), size):
        out.add(kernel.feed_frames("binance", frames[start : start + size], NOW_NS))


def test_ids_going_back_are_a_restart_recorded_once_and_detection_goes_on(
    btc_frames: list[bytes],
) -> None:
    """After trade 8,000 the exchange restarts its ids a million lower, a minute later
    (maintenance): nothing after it may be dropped as a repeat; the windows warm up
    again."""
    head, tail = btc_frames[:8000], btc_frames[8000:]
    restarted = [rewritten(f, shift_id=-1_000_000, shift_ms=60_000) for f in tail]
    for size in (1, 300):
        kernel = make_kernel(GapPolicy.FETCH)
        out = Outcome()
        live(kernel, head + restarted, size, out)
        assert out.ids() == reference_spikes(head) + reference_spikes(restarted)
        (record,) = out.lost
        assert (record.first_id, record.last_id) == (trade_id(restarted[0]), trade_id(head[-1]))
        assert record.missing == 0
        assert "went back" in record.reason
        (stats,) = kernel.stats()
        assert (stats.trades, stats.duplicates, stats.id_restarts) == (len(btc_frames), 0, 1)
        assert out.fetch == []


def test_one_trade_far_ahead_is_skipped_and_costs_nothing(btc_frames: list[bytes]) -> None:
    """A junk frame with an id a billion ahead must not move the sequence: every real
    trade after it is detected on, no gap is fetched or recorded."""
    junk = rewritten(btc_frames[6000], shift_id=1_000_000_000)
    stream = [*btc_frames[:6001], junk, *btc_frames[6001:]]
    for size in (1, 300):
        kernel = make_kernel(GapPolicy.FETCH)
        out = Outcome()
        live(kernel, stream, size, out)
        assert out.ids() == reference_spikes(btc_frames)
        assert (out.lost, out.fetch) == ([], [])
        assert kernel.counters().malformed == {"implausible_id": 1}
        (stats,) = kernel.stats()
        assert (stats.trades, stats.last_trade_id) == (len(btc_frames), trade_id(btc_frames[-1]))


def test_one_trade_stamped_in_2099_is_skipped_and_the_bars_go_on(
    btc_frames: list[bytes],
) -> None:
    """A frame that repeats the next trade's id with a time in 2099: live it is rejected
    (far ahead of the local clock), so neither the bars nor the latest signal freeze."""
    year_2099_ms = 4_070_908_800_000
    junk = rewritten(btc_frames[5000], time_ms=year_2099_ms)
    stream = [*btc_frames[:5000], junk, *btc_frames[5000:]]
    kernel = make_kernel(GapPolicy.FETCH)
    out = Outcome()
    live(kernel, stream, 1, out)
    assert out.ids() == reference_spikes(btc_frames)
    assert kernel.counters().malformed == {"implausible_time": 1}
    last_bar = kernel.bars("binance", "BTCUSDT")[-1]
    assert last_bar.time == trades_of(btc_frames[-1:])[0].time_us // 1_000_000
    assert max(s.time_us for s in out.signals) < year_2099_ms * 1000


def test_a_real_outage_beyond_the_suspect_jump_is_a_gap_as_before(
    btc_frames: list[bytes],
) -> None:
    """Ids that jump further than SUSPECT_JUMP and go on from there are real: the gap is
    handled by the policy exactly as without the guard (here recorded, windows reset)."""
    hole = slice(4000, 4000 + SUSPECT_JUMP + 500)
    stream = btc_frames[: hole.start] + btc_frames[hole.stop :]
    kernel = make_kernel(GapPolicy.RESET)
    out = Outcome()
    live(kernel, stream, 1, out)
    assert out.ids() == reference_spikes(btc_frames[: hole.start]) + reference_spikes(
        btc_frames[hole.stop :]
    )
    (record,) = out.lost
    assert record.missing == hole.stop - hole.start
    assert kernel.counters().malformed == {}


def test_replay_takes_trades_still_held_at_the_end_as_real(btc_frames: list[bytes]) -> None:
    """A recording that ends just after a big jump: the last trades have no followers to
    confirm them, and replay must not drop them."""
    stream = btc_frames[:3000] + btc_frames[3000 + SUSPECT_JUMP + 10 : 3000 + SUSPECT_JUMP + 12]
    summary = replay(trades_of(stream), make_kernel(GapPolicy.RESET), lambda s: None)
    assert summary.trades == len(stream)


def trade(tid: int, time_us: int) -> Trade:
    return Trade("binance", "BTCUSDT", tid, 100, 1, time_us, Side.BUY)


def test_the_guard_lets_repeats_pass_while_it_judges() -> None:
    guard = TradeGuard()
    guard.see(100, 1_000)
    assert guard.judge(trade(5_000, 2_000)).passed == []  # far ahead: held
    assert guard.judge(trade(99, 900)).passed == [trade(99, 900)]  # an overlap's repeat
    assert guard.judge(trade(5_001, 2_000)).passed == []
    judged = guard.judge(trade(5_002, 2_001))
    assert judged.verdict is Verdict.CONFIRMED
    assert judged.why is Suspicion.AHEAD
    assert [t.trade_id for t in judged.passed] == [5_000, 5_001, 5_002]
    assert len(judged.passed) == CONFIRM
    assert guard.high_id == 5_002


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 3 * SUSPECT_JUMP), st.integers(0, 50), st.integers(1, 30)),
        min_size=1,
        max_size=25,
    )
)
def test_honest_streams_are_never_rejected(steps: list[tuple[int, int, int]]) -> None:
    """Any honest stream (runs of consecutive ids after gaps of any size, overlaps that
    repeat earlier trades with their own times) loses nothing to the guard: every id is
    processed once, in order, and nothing is rejected. (The last run may be short:
    replay's end() takes what is still held.)"""
    sent: list[Trade] = []
    seen: dict[int, Trade] = {}
    next_id = 1_000
    for gap, overlap, run in steps:
        for tid in range(next_id - overlap, next_id):  # a reconnect repeats a few
            if tid in seen:
                sent.append(seen[tid])
        next_id += gap
        for tid in range(next_id, next_id + run):
            seen[tid] = trade(tid, 1_700_000_000_000_000 + tid * 1_000)
            sent.append(seen[tid])
        next_id += run
    kernel = make_kernel(GapPolicy.RESET)
    out = Outcome()
    for item in sent:
        out.add(kernel.feed([item]))
    out.add(kernel.end())
    (stats,) = kernel.stats()
    assert stats.trades == len(seen)
    assert stats.last_trade_id == max(seen)
    assert kernel.counters().malformed == {}
    assert stats.id_restarts == 0


def test_live_and_replay_agree_on_junk(btc_frames: list[bytes]) -> None:
    junk = rewritten(btc_frames[7000], shift_id=50_000_000)
    stream = [*btc_frames[:7001], junk, *btc_frames[7001:9000]]
    kernel = make_kernel(GapPolicy.RESET)
    out = Outcome()
    feed_reads(kernel, stream, 1, out)
    replayed: list[Signal] = []
    replay(trades_of(stream), make_kernel(GapPolicy.RESET), replayed.append)
    assert replayed == out.signals
    assert out.ids() == reference_spikes(btc_frames[:9000])


def test_the_lag_histogram_counts_live_trades_not_replayed_history(
    btc_frames: list[bytes],
) -> None:
    """Recorded 2024 trades served today (a simulator, a demo) are not an ingest lag of
    two years: only trades received within an hour of their exchange time count."""
    frames = btc_frames[:500]
    old = make_kernel(GapPolicy.RESET)
    old.feed_frames("binance", frames, NOW_NS)
    fresh = make_kernel(GapPolicy.RESET)
    for frame, trade in zip(frames, trades_of(frames), strict=True):
        fresh.feed_frames("binance", [frame], trade.time_us * 1000 + 5_000_000)  # 5 ms late
    old.settle()
    fresh.settle()
    assert sum(old.states()[0].lag_counts) == 0
    assert sum(fresh.states()[0].lag_counts) == 500


def test_a_local_clock_an_hour_behind_costs_nothing(btc_frames: list[bytes]) -> None:
    """Every trade looks an hour in the future of a local clock set wrong: the first
    ones confirm each other, the guard allows for the clock, and every trade counts."""
    frames = btc_frames[:3000]
    kernel = make_kernel(GapPolicy.FETCH)
    out = Outcome()
    for frame, trade in zip(frames, trades_of(frames), strict=True):
        out.add(kernel.feed_frames("binance", [frame], (trade.time_us - 3_600_000_000) * 1000))
    assert out.ids() == reference_spikes(frames)
    assert kernel.counters().malformed == {}
    assert kernel.stats()[0].trades == len(frames)
