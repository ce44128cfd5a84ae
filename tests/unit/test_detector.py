"""The volume-spike rule, checked against an independent exact reference.

The rule (from the issue): per symbol, a trade is a spike when at least ``window`` trades of
that symbol came before it and its quantity is strictly greater than ``threshold`` times
the mean quantity of the previous ``window`` trades. Nothing fires during warm-up.

The references below are written from those words alone, with ``fractions.Fraction`` over
plain lists; they share no code with :mod:`spikewatch.core.detectors`.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.core.decimal import MAX_UNITS
from spikewatch.core.detectors import VolumeSpikeDetector
from spikewatch.core.model import Side, Signal, Trade, VolumeSpikeSignal
from spikewatch.exchanges.binance import BinanceSpot

from helpers import detection, run

RECORDING = "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Quantities in 1e-8 units: mostly ordinary, sometimes huge, so that spikes do happen.
quantity = st.one_of(
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=1, max_value=MAX_UNITS),
)
quantities = st.lists(quantity, max_size=250)
windows = st.integers(min_value=1, max_value=25)
thresholds = st.sampled_from(
    [Decimal("7.5"), Decimal("10"), Decimal("2.25"), Decimal("1"), Decimal("0.7"), Decimal("3")]
)


# -- the independent references ---------------------------------------------------------


def reference_spike_positions(
    qtys: Sequence[int], window: int, threshold: Decimal | str
) -> list[int]:
    """Positions of the trades the rule calls spikes, straight from its words."""
    limit = Fraction(Decimal(threshold))
    out = []
    for i, qty in enumerate(qtys):
        if i >= window:
            mean = Fraction(sum(qtys[i - window : i]), window)
            if qty > limit * mean:
                out.append(i)
    return out


def reference_spikes_of_frames(
    events: Sequence[dict[str, Any]], window: int, threshold: str
) -> dict[int, Fraction]:
    """Trade id -> mean window quantity (base asset) of each spike, from the JSON strings."""
    limit = Fraction(threshold)
    # whole 1e-8 units, so the window sums are fast plain integer sums
    units = [Fraction(event["q"]) * 10**8 for event in events]
    assert all(u.denominator == 1 for u in units)
    qtys = [int(u) for u in units]
    out: dict[int, Fraction] = {}
    for i, event in enumerate(events):
        if i >= window:
            mean = Fraction(sum(qtys[i - window : i]), window)
            if qtys[i] > limit * mean:
                out[event["t"]] = mean / 10**8
    return out


# -- helpers ------------------------------------------------------------------------------


def make_trades(
    qtys: Sequence[int], symbol: str = "BTCUSDT", exchange: str = "binance", first_id: int = 1
) -> list[Trade]:
    """Consecutive-id trades of one symbol with the given quantities (1e-8 units)."""
    return [
        Trade(
            exchange,
            symbol,
            first_id + i,
            6_183_763_000_000,
            qty,
            1_723_161_255_342_000 + i * 1000,
            Side.SELL if i % 3 else Side.BUY,
        )
        for i, qty in enumerate(qtys)
    ]


def fired_positions(detector: VolumeSpikeDetector, trades: Sequence[Trade]) -> list[int]:
    return [i for i, trade in enumerate(trades) if detector.update(trade) is not None]


def iso_ms(time_ms: int) -> str:
    moment = EPOCH + timedelta(milliseconds=time_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def recorded_events(fixtures_dir: Path) -> list[dict[str, Any]]:
    """The recording's trade events, decoded with the standard json module."""
    with gzip.open(fixtures_dir / RECORDING, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["data"] for line in handle if line.strip()]


@pytest.fixture(scope="module")
def recorded_trades(fixtures_dir: Path) -> list[Trade]:
    """The recording's trades, through the real Binance parser."""
    parser = BinanceSpot()
    with gzip.open(fixtures_dir / RECORDING, "rb") as handle:
        trades = [parser.parse(line.rstrip(b"\n")) for line in handle if line.strip()]
    assert all(type(t) is Trade for t in trades)
    return trades  # type: ignore[return-value]


def detect(trades: Sequence[Trade], window: int, threshold: str) -> list[Signal]:
    detector = VolumeSpikeDetector(window, Decimal(threshold))
    return [s for s in map(detector.update, trades) if s is not None]


# -- the recorded session -----------------------------------------------------------------


def test_recording_is_the_documented_session(recorded_events: list[dict[str, Any]]) -> None:
    assert len(recorded_events) == 19_904
    ids = [e["t"] for e in recorded_events]
    assert ids == list(range(3_735_683_259, 3_735_703_162 + 1))


@pytest.mark.parametrize(("window", "threshold"), [(200, "10"), (50, "7.5"), (1000, "3")])
def test_detector_finds_exactly_the_reference_spikes_in_the_recording(
    recorded_events: list[dict[str, Any]],
    recorded_trades: list[Trade],
    window: int,
    threshold: str,
) -> None:
    expected = reference_spikes_of_frames(recorded_events, window, threshold)
    assert 0 < len(expected) < len(recorded_events) // 10  # real spikes, not noise
    found = [s.trade_id for s in detect(recorded_trades, window, threshold)]
    assert len(found) == len(set(found))
    assert set(found) == set(expected)


def test_default_parameters_find_467_spikes_in_the_recording(
    recorded_events: list[dict[str, Any]], recorded_trades: list[Trade]
) -> None:
    expected = reference_spikes_of_frames(recorded_events, 200, "10")
    assert len(expected) == 467
    assert len(detect(recorded_trades, 200, "10")) == 467


def test_spike_signals_describe_the_trade_that_fired(
    recorded_events: list[dict[str, Any]], recorded_trades: list[Trade]
) -> None:
    by_id = {e["t"]: e for e in recorded_events}
    means = reference_spikes_of_frames(recorded_events, 200, "10")
    signals = detect(recorded_trades, 200, "10")
    assert signals
    sides = set()
    for signal in signals:
        event = by_id[signal.trade_id]
        qty, price = Fraction(event["q"]), Fraction(event["p"])
        mean = means[signal.trade_id]
        assert signal.id == f"binance:BTCUSDT:volume_spike-w200-x10:{event['t']}"
        assert signal.signal_type == "VolumeSpike"
        assert (signal.exchange, signal.symbol) == ("binance", "BTCUSDT")
        assert signal.detector == "volume_spike-w200-x10"
        assert isinstance(signal, VolumeSpikeSignal)
        assert signal.side == ("sell" if event["m"] else "buy")
        assert signal.timestamp == iso_ms(event["T"])
        assert signal.time_us == event["T"] * 1000
        assert signal.price == float(Decimal(event["p"]))
        assert signal.volume == float(Decimal(event["q"]))
        assert signal.quote_volume == pytest.approx(float(price * qty), rel=1e-15)
        assert signal.average_volume == float(mean)
        assert signal.ratio == float(qty / mean)
        assert signal.ratio == pytest.approx(signal.volume / signal.average_volume, rel=1e-12)
        assert signal.ratio > 10
        assert (signal.window, signal.threshold) == (200, 10.0)
        sides.add(signal.side)
    assert sides == {"buy", "sell"}  # both aggressor sides occur among the spikes


def test_recording_through_the_pipeline_has_no_gaps_and_the_same_spikes(
    recorded_trades: list[Trade],
) -> None:
    pipeline = detection(lambda exchange, symbol: [VolumeSpikeDetector(200, Decimal(10))])
    signals = [s for t in recorded_trades for s in run(pipeline, t)]
    assert signals == detect(recorded_trades, 200, "10")
    (stats,) = pipeline.stats()
    assert (stats.trades, stats.duplicates, stats.gaps, stats.missing_trades) == (19_904, 0, 0, 0)
    assert stats.signals == len(signals)
    assert stats.warmed_up
    assert stats.last_trade_id == 3_735_703_162


# -- the rule's edges ---------------------------------------------------------------------


def test_trade_of_exactly_threshold_times_the_mean_is_not_a_spike() -> None:
    # mean of [1, 2, 3, 4] is 2.5 units; 10 x 2.5 = 25
    assert fired_positions(VolumeSpikeDetector(4, 10), make_trades([1, 2, 3, 4, 25])) == []
    assert fired_positions(VolumeSpikeDetector(4, 10), make_trades([1, 2, 3, 4, 26])) == [4]


def test_threshold_boundary_is_decided_exactly_not_in_binary_floats() -> None:
    # 0.7 x 90 is exactly 63, but 0.7 * 90 == 62.99999999999999 in floats
    assert 0.7 * 90 < 63
    detector = VolumeSpikeDetector(3, Decimal("0.7"))
    assert fired_positions(detector, make_trades([90, 90, 90, 63])) == []
    detector = VolumeSpikeDetector(3, Decimal("0.7"))
    assert fired_positions(detector, make_trades([90, 90, 90, 64])) == [3]


def test_fractional_threshold_boundary_is_strict() -> None:
    # mean of [1, 1, 2] is 4/3; 7.5 x 4/3 = 10
    assert fired_positions(VolumeSpikeDetector(3, "7.5"), make_trades([1, 1, 2, 10])) == []
    assert fired_positions(VolumeSpikeDetector(3, "7.5"), make_trades([1, 1, 2, 11])) == [3]


def test_first_trade_after_a_full_window_can_fire_but_not_one_before() -> None:
    assert fired_positions(VolumeSpikeDetector(3, 10), make_trades([1, 1, 10**9])) == []
    assert fired_positions(VolumeSpikeDetector(3, 10), make_trades([1, 1, 1, 10**9])) == [3]


def test_the_window_slides_so_old_trades_stop_counting() -> None:
    # a big trade raises the mean only while it is inside the window of 3
    qtys = [1, 1, 1, 100, 1, 1, 1, 20]
    assert fired_positions(VolumeSpikeDetector(3, 10), make_trades(qtys)) == [3, 7]


def test_reset_forgets_the_window_and_warms_up_again() -> None:
    detector = VolumeSpikeDetector(2, 10)
    trades = make_trades([1, 1, 1, 100, 100, 1000])
    for trade in trades[:3]:
        detector.update(trade)
    assert detector.warmed_up
    detector.reset()
    assert not detector.warmed_up
    # after the reset, 100 and 100 are the new window; 1000 is not > 10 x 100
    assert [detector.update(t) for t in trades[3:]] == [None, None, None]


def test_detector_key_names_its_parameters_in_canonical_form() -> None:
    assert VolumeSpikeDetector(200, 10).key == "volume_spike-w200-x10"
    assert VolumeSpikeDetector(200, Decimal("10.0")).key == "volume_spike-w200-x10"
    assert VolumeSpikeDetector(50, "7.50").key == "volume_spike-w50-x7.5"


@pytest.mark.parametrize(
    ("window", "threshold"),
    [(0, "10"), (-1, "10"), (200, "0"), (200, "-1"), (200, "NaN"), (200, "Infinity")],
)
def test_impossible_parameters_are_refused(window: int, threshold: str) -> None:
    with pytest.raises(ValueError, match=r"window|threshold"):
        VolumeSpikeDetector(window, Decimal(threshold))


# -- properties ---------------------------------------------------------------------------


@given(quantities, windows, thresholds)
def test_nothing_fires_during_warm_up(qtys: list[int], window: int, threshold: Decimal) -> None:
    fired = fired_positions(VolumeSpikeDetector(window, threshold), make_trades(qtys))
    assert all(i >= window for i in fired)


@given(
    st.integers(min_value=1, max_value=MAX_UNITS),
    st.integers(min_value=0, max_value=300),
    windows,
    st.sampled_from([Decimal("1"), Decimal("2.25"), Decimal("7.5"), Decimal("10")]),
)
def test_constant_volume_never_fires(qty: int, n: int, window: int, threshold: Decimal) -> None:
    detector = VolumeSpikeDetector(window, threshold)
    assert fired_positions(detector, make_trades([qty] * n)) == []


@given(quantities, windows, thresholds)
def test_decisions_equal_the_exact_reference(
    qtys: list[int], window: int, threshold: Decimal
) -> None:
    fired = fired_positions(VolumeSpikeDetector(window, threshold), make_trades(qtys))
    assert fired == reference_spike_positions(qtys, window, threshold)


SYMBOLS = [("binance", "BTCUSDT"), ("binance", "ETHUSDT"), ("otherex", "BTCUSDT")]


@given(st.data(), windows, thresholds)
def test_interleaved_symbols_get_exactly_the_signals_each_gets_alone(
    data: st.DataObject, window: int, threshold: Decimal
) -> None:
    def factory(exchange: str, symbol: str) -> list[VolumeSpikeDetector]:
        return [
            VolumeSpikeDetector(window, threshold),
            VolumeSpikeDetector(window + 2, Decimal("2.25")),
        ]

    streams = {
        key: make_trades(data.draw(st.lists(quantity, max_size=60)), key[1], key[0], 1000 * n)
        for n, key in enumerate(SYMBOLS, start=1)
    }
    labels = [key for key, trades in streams.items() for _ in trades]
    order = data.draw(st.permutations(labels))
    pending = {key: iter(trades) for key, trades in streams.items()}
    together = detection(factory)
    got: dict[tuple[str, str], list[Signal]] = defaultdict(list)
    for key in order:
        for signal in run(together, next(pending[key])):
            got[signal.exchange, signal.symbol].append(signal)
    for key, trades in streams.items():
        alone = detection(factory)
        expected = [s for t in trades for s in run(alone, t)]
        assert got[key] == expected


@given(quantities, windows, thresholds, st.data())
def test_restored_snapshot_continues_exactly_like_an_uninterrupted_run(
    qtys: list[int], window: int, threshold: Decimal, data: st.DataObject
) -> None:
    trades = make_trades(qtys)
    cut = data.draw(st.integers(min_value=0, max_value=len(trades)))
    uninterrupted = VolumeSpikeDetector(window, threshold)
    expected = [uninterrupted.update(t) for t in trades]

    before = VolumeSpikeDetector(window, threshold)
    for trade in trades[:cut]:
        before.update(trade)
    saved = json.loads(json.dumps(before.snapshot()))  # must survive a trip through JSON
    after = VolumeSpikeDetector(window, threshold)
    after.restore(saved)
    assert after.warmed_up == (cut >= window)
    assert [after.update(t) for t in trades[cut:]] == expected[cut:]


@pytest.mark.parametrize(("window", "threshold"), [(6, "10"), (5, "7.5"), (4, "10")])
def test_snapshot_of_other_parameters_is_refused(window: int, threshold: str) -> None:
    source = VolumeSpikeDetector(5, 10)
    for trade in make_trades([3, 1, 4, 1, 5, 9]):
        source.update(trade)
    with pytest.raises(ValueError, match="snapshot"):
        VolumeSpikeDetector(window, Decimal(threshold)).restore(source.snapshot())


def test_snapshot_with_a_non_positive_quantity_is_refused() -> None:
    detector = VolumeSpikeDetector(3, 10)
    with pytest.raises(ValueError, match="non-positive"):
        detector.restore({"key": detector.key, "qtys": [5, 0, 7]})


# -- the pipeline's bookkeeping -----------------------------------------------------------


def test_repeated_or_older_trade_ids_are_dropped_and_counted() -> None:
    pipeline = detection(lambda exchange, symbol: [VolumeSpikeDetector(3, 10)])
    trades = make_trades([1, 1, 1, 1], first_id=101)
    for trade in trades:
        assert list(run(pipeline, trade)) == []
    # a replayed copy of an old trade with a huge quantity must neither fire nor count
    replayed = Trade("binance", "BTCUSDT", 102, 1, 10**12, 1, Side.BUY)
    assert list(run(pipeline, replayed)) == []
    assert list(run(pipeline, trades[-1])) == []
    (stats,) = pipeline.stats()
    assert (stats.trades, stats.duplicates, stats.gaps, stats.missing_trades) == (4, 2, 0, 0)
    assert stats.last_trade_id == 104
    # the window still holds only the real trades: 11 > 10 x mean(1, 1, 1)
    nxt = Trade("binance", "BTCUSDT", 105, 1, 11, 2, Side.BUY)
    assert [s.trade_id for s in run(pipeline, nxt)] == [105]


def test_jump_in_trade_ids_counts_a_gap_and_the_missing_trades() -> None:
    pipeline = detection(lambda exchange, symbol: [VolumeSpikeDetector(3, 10)])
    for trade_id in (1, 2, 5, 6, 10):
        run(pipeline, Trade("binance", "BTCUSDT", trade_id, 1, 1, trade_id, Side.BUY))
    (stats,) = pipeline.stats()
    assert (stats.trades, stats.gaps, stats.missing_trades, stats.duplicates) == (5, 2, 5, 0)
    state = pipeline.find("binance", "BTCUSDT")
    assert state is not None
    assert state.last_id == 10
    assert pipeline.find("binance", "ETHUSDT") is None


def test_each_symbol_keeps_its_own_trade_id_sequence() -> None:
    pipeline = detection(lambda exchange, symbol: [VolumeSpikeDetector(3, 10)])
    for trade in make_trades([1, 1], "BTCUSDT", first_id=500):
        run(pipeline, trade)
    for trade in make_trades([1, 1], "ETHUSDT", first_id=7):
        run(pipeline, trade)  # lower ids than BTCUSDT's, but new for ETHUSDT
    stats = {s.symbol: s for s in pipeline.stats()}
    assert (stats["BTCUSDT"].trades, stats["ETHUSDT"].trades) == (2, 2)
    assert stats["ETHUSDT"].duplicates == 0
