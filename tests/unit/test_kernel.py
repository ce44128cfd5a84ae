"""The kernel on real recorded frames: the rule's spikes, and each gap policy's outcome
against the independent reference (tests/reference.py) applied as the policy promises."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikewatch.core.detectors import VolumeSpikeDetector
from spikewatch.core.frames import Capabilities, ParsedFrames
from spikewatch.core.kernel import GapPolicy, Kernel
from spikewatch.core.model import GapRecord, Side, Signal, Trade, TradeBatch
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.runner import replay

from kernel_kit import WINDOW, Outcome, feed_reads, make_kernel, trade_id, trades_of
from reference import reference_spikes


@pytest.mark.parametrize("policy", list(GapPolicy))
@pytest.mark.parametrize("size", [1, 7, 300, 4096])
def test_without_gaps_every_policy_finds_exactly_the_reference_spikes(
    btc_frames: list[bytes], policy: GapPolicy, size: int
) -> None:
    kernel = make_kernel(policy)
    out = Outcome()
    feed_reads(kernel, btc_frames, size, out)
    assert out.ids() == reference_spikes(btc_frames)
    assert (out.lost, out.fetch) == ([], [])
    (stats,) = kernel.stats()
    assert (stats.trades, stats.gaps, stats.duplicates) == (len(btc_frames), 0, 0)


HOLE = slice(5000, 5400)


def with_hole(frames: list[bytes], hole: slice = HOLE) -> tuple[list[bytes], list[bytes]]:
    """The stream without the frames of ``hole``, and those frames."""
    return frames[: hole.start] + frames[hole.stop :], frames[hole]


def test_reset_records_the_gap_and_warms_up_again(btc_frames: list[bytes]) -> None:
    stream, missing = with_hole(btc_frames)
    kernel = make_kernel(GapPolicy.RESET)
    out = Outcome()
    feed_reads(kernel, stream, 300, out)
    before, after = btc_frames[: HOLE.start], btc_frames[HOLE.stop :]
    assert out.ids() == reference_spikes(before) + reference_spikes(after)
    (record,) = out.lost
    assert (record.first_id, record.last_id) == (trade_id(missing[0]), trade_id(missing[-1]))
    assert record.missing == len(missing)
    assert out.fetch == []
    (stats,) = kernel.stats()
    assert (stats.gap_records, stats.gaps, stats.missing_trades) == (1, 1, len(missing))


def test_fetch_holds_the_trades_after_a_gap_until_it_is_filled(btc_frames: list[bytes]) -> None:
    stream, missing = with_hole(btc_frames)
    kernel = make_kernel(GapPolicy.FETCH)
    out = Outcome()
    feed_reads(kernel, stream, 300, out)
    (gap,) = out.fetch
    assert (gap.first_id, gap.last_id) == (trade_id(missing[0]), trade_id(missing[-1]))
    # the trades after the gap are held: nothing after it was detected yet
    assert out.ids() == reference_spikes(btc_frames[: HOLE.start])
    assert kernel.stats()[0].backfilling
    fetched = trades_of(missing)
    first = out.add(kernel.fill("binance", "BTCUSDT", fetched[:250]))
    assert not first.closed
    last = out.add(kernel.fill("binance", "BTCUSDT", fetched[250:]))
    assert last.closed
    assert out.ids() == reference_spikes(btc_frames)  # as if nothing had been missed
    stats = kernel.stats()[0]
    assert (stats.backfills, stats.backfilled_trades, stats.gaps) == (1, len(missing), 0)
    assert not stats.backfilling
    assert out.lost == []


def test_a_fetch_given_up_is_the_reset_outcome(btc_frames: list[bytes]) -> None:
    stream, _ = with_hole(btc_frames)
    reset, fetch = make_kernel(GapPolicy.RESET), make_kernel(GapPolicy.FETCH)
    reset_out, fetch_out = Outcome(), Outcome()
    feed_reads(reset, stream, len(stream), reset_out)
    feed_reads(fetch, stream, len(stream), fetch_out)
    fetch_out.add(fetch.give_up("binance", "BTCUSDT", "not in the data (gap policy: reset)"))
    assert fetch_out.ids() == reset_out.ids()
    assert fetch_out.lost == reset_out.lost
    assert fetch.stats() == reset.stats()


def test_continue_keeps_the_windows_across_the_gap(btc_frames: list[bytes]) -> None:
    stream, missing = with_hole(btc_frames)
    kernel = make_kernel(GapPolicy.CONTINUE)
    out = Outcome()
    feed_reads(kernel, stream, 300, out)
    assert out.ids() == reference_spikes(stream)
    assert (out.lost, out.fetch) == ([], [])
    (stats,) = kernel.stats()
    assert (stats.gaps, stats.missing_trades, stats.gap_records) == (1, len(missing), 0)


def test_a_gap_beyond_max_backfill_is_lost_but_for_one_window_fetched_to_warm_up(
    btc_frames: list[bytes],
) -> None:
    stream, missing = with_hole(btc_frames)
    kernel = make_kernel(GapPolicy.FETCH, max_backfill=100)
    out = Outcome()
    feed_reads(kernel, stream, 300, out)
    (record,) = out.lost
    assert record.reason == "larger than max_backfill"
    assert (record.first_id, record.missing) == (trade_id(missing[0]), len(missing) - WINDOW)
    (gap,) = out.fetch
    assert (gap.first_id, gap.last_id) == (trade_id(missing[-WINDOW]), trade_id(missing[-1]))
    assert out.add(kernel.fill("binance", "BTCUSDT", trades_of(missing[-WINDOW:]))).closed
    warm_then_live = btc_frames[HOLE.stop - WINDOW :]
    assert out.ids() == reference_spikes(btc_frames[: HOLE.start]) + reference_spikes(
        warm_then_live
    )


@pytest.mark.slow  # seconds of examples: CI runs it, `make check` leaves it out
@settings(max_examples=30, deadline=None)
@given(
    start=st.integers(1, 5_000),
    length=st.integers(1, 800),
    size=st.sampled_from([1, 3, 50, 333, 2000]),
)
def test_gaps_anywhere_follow_their_policy(
    btc_frames: list[bytes], start: int, length: int, size: int
) -> None:
    btc_frames = btc_frames[:6000]
    hole = slice(start, min(start + length, len(btc_frames) - 1))
    stream, missing = with_hole(btc_frames, hole)
    reset, fetch = make_kernel(GapPolicy.RESET), make_kernel(GapPolicy.FETCH)
    reset_out, fetch_out = Outcome(), Outcome()
    feed_reads(reset, stream, size, reset_out)
    expected = reference_spikes(btc_frames[: hole.start]) + reference_spikes(
        btc_frames[hole.stop :]
    )
    assert reset_out.ids() == expected
    feed_reads(fetch, stream, size, fetch_out)
    assert len(fetch_out.fetch) == 1
    assert fetch_out.add(fetch.fill("binance", "BTCUSDT", trades_of(missing))).closed
    assert fetch_out.ids() == reference_spikes(btc_frames)


def test_replay_records_the_same_gaps_and_signals_as_live_without_rest(
    btc_frames: list[bytes],
) -> None:
    stream, _ = with_hole(btc_frames)
    live = make_kernel(GapPolicy.FETCH)
    live_out = Outcome()
    for start in range(0, len(stream), 300):  # live: the runtime gives each gap up
        step = live_out.add(live.feed_frames("binance", stream[start : start + 300]))
        for gap in step.fetch:
            live_out.add(live.give_up(gap.exchange, gap.symbol, "no REST access"))
    replayed: list[Signal] = []
    lost: list[GapRecord] = []
    summary = replay(
        trades_of(stream), make_kernel(GapPolicy.RESET), replayed.append, on_gap=lost.append
    )
    assert replayed == live_out.signals
    assert [(g.first_id, g.last_id) for g in lost] == [
        (g.first_id, g.last_id) for g in live_out.lost
    ]
    assert summary.lost_trades == HOLE.stop - HOLE.start


def test_a_checkpoint_restored_in_a_new_kernel_continues_exactly(btc_frames: list[bytes]) -> None:
    first, second = make_kernel(GapPolicy.FETCH), make_kernel(GapPolicy.FETCH)
    out = Outcome()
    feed_reads(first, btc_frames[:9000], 500, out)
    saved = first.checkpoint("binance", "BTCUSDT")
    assert saved is not None
    last_id, time_us, snapshots = json.loads(json.dumps(saved))  # as stored: through JSON
    assert second.restore("binance", "BTCUSDT", last_id, snapshots, time_us)
    feed_reads(second, btc_frames[8500:], 500, out)  # an overlap: repeats are dropped
    assert out.ids() == reference_spikes(btc_frames)
    assert second.stats()[0].duplicates == 500


def test_spot_and_futures_of_one_symbol_are_two_states(btc_frames: list[bytes]) -> None:
    kernel = make_kernel(GapPolicy.RESET)
    spot = trades_of(btc_frames[:300])
    futures = [
        Trade("binance-usdm", t.symbol, t.trade_id + 7, t.price, t.qty, t.time_us, t.side)
        for t in spot
    ]
    out = Outcome()
    out.add(kernel.feed([TradeBatch.from_trades(spot), TradeBatch.from_trades(futures)]))
    stats = {(s.exchange, s.symbol): s for s in kernel.stats()}
    assert set(stats) == {("binance", "BTCUSDT"), ("binance-usdm", "BTCUSDT")}
    assert stats["binance", "BTCUSDT"].trades == stats["binance-usdm", "BTCUSDT"].trades == 300
    assert (out.lost, out.fetch) == ([], [])


class SparseIds:
    """A toy venue whose trade ids only increase (no gaps can be known), one trade per
    frame as ``id,qty``."""

    name = "sparse"
    capabilities = Capabilities(consecutive_ids=False, fetch_by_id=False)

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        trades = []
        for frame in frames:
            tid, qty = (int(x) for x in frame.split(b","))
            trades.append(Trade(self.name, "TOY", tid, 100, qty, tid * 1000, Side.BUY))
        return ParsedFrames([TradeBatch.from_trades(trades)] if trades else [], [], [])


def test_a_venue_without_consecutive_ids_only_drops_repeats() -> None:
    kernel = Kernel(
        lambda exchange, symbol: (VolumeSpikeDetector(3, 10),),
        venues=(SparseIds(),),
        gap_policy=GapPolicy.FETCH,
    )
    out = Outcome()
    out.add(kernel.feed_frames("sparse", [b"10,1", b"25,1", b"26,1"]))
    out.add(kernel.feed_frames("sparse", [b"25,99", b"90,31", b"400,1"]))  # 25: a repeat
    assert [s.trade_id for s in out.signals] == [90]
    assert (out.lost, out.fetch) == ([], [])
    (stats,) = kernel.stats()
    assert (stats.trades, stats.duplicates, stats.gap_records) == (5, 1, 0)


class Flaky(BinanceSpot):
    """Binance's parser, but the batch call fails on any read holding a frame that
    mentions trade id 3735683300 (a parser bug on one frame)."""

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        if any(b'"t":3735683300,' in f for f in frames):
            raise RuntimeError("a parser bug")
        return super().parse_batch(frames)


def test_a_parser_bug_costs_only_the_frame_it_fails_on(btc_frames: list[bytes]) -> None:
    kernel = Kernel(
        lambda exchange, symbol: (VolumeSpikeDetector(WINDOW, 10),),
        venues=(Flaky(),),
        gap_policy=GapPolicy.RESET,
    )
    out = Outcome()
    feed_reads(kernel, btc_frames[:1000], 100, out)
    assert kernel.counters().malformed == {"parser_error": 1}
    assert kernel.counters().frames == 1000
    assert kernel.stats()[0].trades == 999
