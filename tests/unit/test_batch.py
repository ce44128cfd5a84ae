"""The batch (columnar) path gives exactly what the per-trade path gives.

Every batch API is checked against its one-at-a-time twin, which the rest of the suite
checks against independent references: ``VolumeSpikeDetector.update_batch`` against
``update``, ``Pipeline.process_batch`` against ``process``, ``read_batches`` against
``read_trades``, ``BinanceSpot.parse_batch`` against ``parse``, and ``replay`` of a file
against the per-trade pipeline. Each with numpy (when installed) and without it.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spikewatch.core import accel, npparse
from spikewatch.core.decimal import MAX_UNITS, BadNumber, UnitsCache, parse_units
from spikewatch.core.detectors import VolumeSpikeDetector, _quote_volume
from spikewatch.core.frames import SMALL_RUN, ParsedFrames
from spikewatch.core.kernel import Kernel
from spikewatch.core.model import Side, Signal, Trade, TradeBatch, iso_utc
from spikewatch.exchanges.base import Control, MalformedFrame
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.readers import ReadStats, read_batches, read_trades
from spikewatch.replay.runner import replay

from helpers import detection, run

BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
BTC_FRAMES = "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz"
ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
USDM_CSV = "binance-usdm-BTCUSDT-trades-2024-08-08T2354Z_first-300-rows.csv.gz"
XRPETH_CSV = "binance-spot-XRPETH-trades-2019-10-11_2019-10-13.csv.gz"
CSVS = [BTC_CSV, ETH_CSV, USDM_CSV, XRPETH_CSV]
FRAME_FILES = [
    "binance-spot-trade-combined.hftbacktest-2024-08-08.jsonl",
    "binance-spot-trade-raw.hftbacktest-2024-08-08.jsonl",
    "binance-spot-trade-legacy-ba-fields.BinanceTickDataTracker-2023-11-03.jsonl",
    "binance-usdm-trade-combined.collect-binancefutures-2022-08-11.jsonl",
]

THRESHOLDS = [Decimal("10"), Decimal("7.5"), Decimal("2.25"), Decimal("0.7")]

HAS_NUMPY = accel.np is not None


@pytest.fixture(params=["numpy", "pure"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with numpy's kernels (skipped if it is not installed), then without."""
    if request.param == "numpy" and not HAS_NUMPY:
        pytest.skip("numpy is not installed")
    if request.param == "pure":
        monkeypatch.setattr(accel, "np", None)
    else:
        monkeypatch.setattr(accel, "NUMPY_FROM", 0)  # numpy for every size of batch
    return str(request.param)


@pytest.fixture
def without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "np", None)


# -- helpers ------------------------------------------------------------------------------


def make_trades(
    qtys: Sequence[int], ids: Sequence[int] | None = None, symbol: str = "BTCUSDT"
) -> list[Trade]:
    """Trades of one symbol with the given quantities (and ids: consecutive by default).
    Times follow the ids, as on an exchange: a repeated id carries its first time."""
    ids = ids if ids is not None else range(1000, 1000 + len(qtys))
    return [
        Trade(
            "binance",
            symbol,
            tid,
            6_183_763_000_000 + 100 * i,
            qty,
            1_723_161_255_342_000 + (tid - 1000) * 1000,
            Side.SELL if i % 3 else Side.BUY,
        )
        for i, (tid, qty) in enumerate(zip(ids, qtys, strict=True))
    ]


def cut(items: Sequence[Trade], cuts: Sequence[int]) -> list[list[Trade]]:
    """``items`` split at the given positions (sorted, deduplicated, within range)."""
    points = sorted({c % (len(items) + 1) for c in cuts} | {0, len(items)})
    return [list(items[a:b]) for a, b in itertools.pairwise(points) if b > a]


def frames_of(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return [line.rstrip(b"\r\n") for line in handle if line.strip()]


def per_frame(parser: BinanceSpot, frames: Sequence[bytes]) -> list[Trade | Control | str]:
    """What parse() makes of each frame; a malformed one as its kind."""
    out: list[Trade | Control | str] = []
    for frame in frames:
        try:
            out.append(parser.parse(frame))
        except MalformedFrame as exc:
            out.append(f"malformed:{exc.kind}:{exc.detail}")
    return out


def batch_result(parser: BinanceSpot, frames: Sequence[bytes]) -> list[Trade | Control | str]:
    """What parse_batch() makes of the frames, laid out frame by frame like per_frame()."""
    parsed = parser.parse_batch(frames)
    out: list[Trade | Control | str | None] = [None] * len(frames)
    for index, exc in parsed.errors:
        out[index] = f"malformed:{exc.kind}:{exc.detail}"
    for index, control in parsed.controls:
        out[index] = control
    trades = iter(parsed.trade_list())
    for i, item in enumerate(out):
        if item is None:
            out[i] = next(trades)
    assert next(trades, None) is None
    assert all(item is not None for item in out)
    return out  # type: ignore[return-value]


def run_per_trade(trades: Sequence[Trade], window: int = 200, threshold: str = "10") -> Kernel:
    return detection(lambda ex, sym: (VolumeSpikeDetector(window, threshold),))


# -- the detector ------------------------------------------------------------------------

quantity = st.one_of(
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=1, max_value=10**11),
    st.integers(min_value=1, max_value=MAX_UNITS),  # forces the unbounded pure loop
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    qtys=st.lists(quantity, max_size=400),
    window=st.one_of(st.integers(1, 12), st.integers(1, 300)),
    threshold=st.sampled_from(THRESHOLDS),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    singles=st.sets(st.integers(0, 10), max_size=4),
)
@example(qtys=[1] * 10 + [10**6], window=3, threshold=Decimal("10"), cuts=[], singles=set())
def test_update_batch_is_update_trade_after_trade(
    kernels: str,
    qtys: list[int],
    window: int,
    threshold: Decimal,
    cuts: list[int],
    singles: set[int],
) -> None:
    trades = make_trades(qtys)
    one = VolumeSpikeDetector(window, threshold)
    expected = [s for s in map(one.update, trades) if s is not None]

    many = VolumeSpikeDetector(window, threshold)
    got: list[Signal] = []
    for k, part in enumerate(cut(trades, cuts)):
        if k in singles:  # mixed freely with single updates
            got.extend(s for s in map(many.update, part) if s is not None)
        else:
            got.extend(many.update_batch(TradeBatch.from_trades(part)))

    assert got == expected  # every field of every signal, in order
    assert many.snapshot() == one.snapshot()
    assert many.warmed_up == one.warmed_up
    # and both go on alike
    tail = make_trades([5, 10**9, 7], ids=[5000, 5001, 5002])
    assert [many.update(t) for t in tail] == [one.update(t) for t in tail]


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("window", [1, 2, 50, 200, 300])
def test_update_batch_on_the_recording_fires_on_the_same_trades(
    kernels: str, btc_frames: list[bytes], window: int, threshold: Decimal
) -> None:
    parser = BinanceSpot()
    trades = [parser.parse(f) for f in btc_frames]
    assert all(type(t) is Trade for t in trades)
    one = VolumeSpikeDetector(window, threshold)
    expected = [s for s in map(one.update, trades) if s is not None]  # type: ignore[arg-type]
    many = VolumeSpikeDetector(window, threshold)
    got = [
        s
        for part in cut(trades, [997, 5000, 5001, 13_333])  # type: ignore[arg-type]
        for s in many.update_batch(TradeBatch.from_trades(part))
    ]
    assert expected
    assert got == expected
    assert many.snapshot() == one.snapshot()


def test_update_batch_vectorised_false_takes_the_pure_loop() -> None:
    trades = make_trades([3] * 50 + [10**6] + [4] * 20)
    one = VolumeSpikeDetector(10, "10")
    expected = [s for s in map(one.update, trades) if s is not None]
    many = VolumeSpikeDetector(10, "10")
    assert many.update_batch(TradeBatch.from_trades(trades), vectorised=False) == expected
    assert len(expected) == 1


def test_update_batch_after_restore_continues_exactly() -> None:
    rng = random.Random(7)
    trades = make_trades([rng.choice([rng.randint(1, 100), 10**8]) for _ in range(500)])
    one = VolumeSpikeDetector(40, "2.25")
    first = [s for s in map(one.update, trades[:100]) if s is not None]
    restored = VolumeSpikeDetector(40, "2.25")
    restored.restore(one.snapshot())
    rest_one = [s for s in map(one.update, trades[100:]) if s is not None]
    assert restored.update_batch(TradeBatch.from_trades(trades[100:])) == rest_one
    assert first or rest_one


# -- the pipeline ------------------------------------------------------------------------

ids_strategy = st.lists(
    st.one_of(
        st.integers(1, 3),  # mostly small steps
        st.integers(-3, 0),  # repeats and steps back
        st.integers(4, 50),  # gaps
    ),
    max_size=300,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=ids_strategy,
    qty_seed=st.integers(0, 2**32),
    cuts=st.lists(st.integers(0, 300), max_size=8),
    singles=st.sets(st.integers(0, 10), max_size=3),
    window=st.integers(1, 30),
    threshold=st.sampled_from(THRESHOLDS),
)
def test_process_batch_is_process_trade_after_trade(
    kernels: str,
    steps: list[int],
    qty_seed: int,
    cuts: list[int],
    singles: set[int],
    window: int,
    threshold: Decimal,
) -> None:
    rng = random.Random(qty_seed)
    ids = list(itertools.accumulate(steps, initial=10_000))[1:]
    qtys = [rng.choice([rng.randint(1, 100), rng.randint(1, 10**9)]) for _ in ids]
    trades = make_trades(qtys, ids=ids)

    def factory(exchange: str, symbol: str) -> tuple[VolumeSpikeDetector, ...]:
        return (VolumeSpikeDetector(window, threshold), VolumeSpikeDetector(3, "2.25"))

    one = detection(factory)
    expected = [s for t in trades for s in run(one, t)]
    many = detection(factory)
    got: list[Signal] = []
    for k, part in enumerate(cut(trades, cuts)):
        if k in singles:
            got.extend(s for t in part for s in run(many, t))
        else:
            got.extend(run(many, TradeBatch.from_trades(part)))

    assert got == expected
    assert many.stats() == one.stats()
    assert many.checkpoint("binance", "BTCUSDT") == one.checkpoint("binance", "BTCUSDT")


def test_process_batch_counts_gaps_and_duplicates_like_process() -> None:
    ids = [1, 2, 3, 7, 8, 8, 5, 9, 20, 21, 19, 22]
    trades = make_trades([1] * len(ids), ids=ids)
    one = detection(lambda ex, sym: (VolumeSpikeDetector(2, "3"),))
    for trade in trades:
        run(one, trade)
    many = detection(lambda ex, sym: (VolumeSpikeDetector(2, "3"),))
    run(many, TradeBatch.from_trades(trades))

    (stats,) = many.stats()
    assert stats == one.stats()[0]
    assert (stats.trades, stats.duplicates, stats.gaps, stats.missing_trades) == (9, 3, 2, 13)
    assert stats.last_trade_id == 22


def test_process_batch_feeds_a_detector_without_update_batch_trade_by_trade() -> None:
    class Counting:
        key = "counting"

        def __init__(self) -> None:
            self.seen: list[int] = []

        def update(self, trade: Trade) -> Signal | None:
            self.seen.append(trade.trade_id)
            return None

        def snapshot(self) -> dict[str, object]:
            return {"key": self.key}

        def restore(self, state: dict[str, object]) -> None:
            pass

    counting = Counting()
    pipeline = detection(lambda ex, sym: (counting,))
    run(pipeline, TradeBatch.from_trades(make_trades([1, 2, 3], ids=[5, 5, 6])))
    assert counting.seen == [5, 6]


# -- the model ----------------------------------------------------------------------------


def test_trade_batch_round_trips_trades_and_refuses_mixed_columns() -> None:
    trades = make_trades([1, 2, 3])
    batch = TradeBatch.from_trades(trades)
    assert batch.trades() == trades
    assert [batch.trade(i) for i in range(3)] == trades
    assert batch.trade(-1) == trades[-1]
    assert batch.slice(1, 3).trades() == trades[1:]
    assert batch.take([2, 0]).trades() == [trades[2], trades[0]]
    assert len(batch) == 3
    with pytest.raises(ValueError, match="length"):
        TradeBatch.of("binance", "BTCUSDT", [1, 2], [1], [1], [1], [0])
    with pytest.raises(ValueError, match="one exchange and symbol"):
        TradeBatch.from_trades([*trades, *make_trades([1], symbol="ETHUSDT")])


@given(st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999))
@example(0)
@example(1_723_161_255_342_999)
@example(-1)
@example(253_402_300_799_999_999)
def test_iso_utc_is_the_datetime_format(time_us: int) -> None:
    moment = datetime.fromtimestamp(time_us // 1_000_000, tz=UTC)
    millis = (time_us % 1_000_000) // 1000
    assert iso_utc(time_us) == f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


@given(st.integers(1, MAX_UNITS), st.integers(1, MAX_UNITS))
@example(6_183_763_000_000, 2_000_000)
@example(10**14 - 1, 10**14 - 1)
def test_quote_volume_is_the_decimal_value(price: int, qty: int) -> None:
    assert _quote_volume(price, qty) == float(Decimal(price) * Decimal(qty) / 10**16)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["61837.63000000", "0.00009000", "1.00000000"]),
            st.text(alphabet="0123456789.e-", max_size=14),
        ),
        max_size=30,
    )
)
def test_units_cache_lookup_many_is_lookup_one_by_one(texts: list[str]) -> None:
    def one_by_one(cache: UnitsCache) -> list[int] | str:
        try:
            return [cache[t] for t in texts]
        except BadNumber:
            return "bad"

    def many(cache: UnitsCache) -> list[int] | str:
        try:
            return cache.lookup_many(texts)
        except BadNumber:
            return "bad"

    assert many(UnitsCache(limit=8)) == one_by_one(UnitsCache(limit=8))
    try:
        reference: list[int] | str = [parse_units(t) for t in texts]
    except BadNumber:
        reference = "bad"
    assert many(UnitsCache()) == reference


# -- frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 4096, 50_000])
def test_parse_batch_of_the_recording_is_parse_frame_by_frame(
    kernels: str, btc_frames: list[bytes], size: int
) -> None:
    expected = per_frame(BinanceSpot(), btc_frames)
    parser = BinanceSpot()
    got = [
        item
        for start in range(0, len(btc_frames), size)
        for item in batch_result(parser, btc_frames[start : start + size])
    ]
    assert got == expected
    parsed = parser.parse_batch(btc_frames)
    assert len(parsed.batches) == 1
    assert parsed.trades == len(btc_frames)


@pytest.mark.parametrize("name", FRAME_FILES)
def test_parse_batch_of_other_recordings_is_parse_frame_by_frame(
    kernels: str, fixtures_dir: Path, name: str
) -> None:
    frames = frames_of(fixtures_dir / name)
    assert batch_result(BinanceSpot(), frames) == per_frame(BinanceSpot(), frames)


def broken_frames(frames: list[bytes]) -> list[bytes]:
    """Real frames with every kind of trouble mixed in."""
    first = frames[0]
    return [
        first[:60],  # cut off
        first.replace(b'"q":"0.02000000"', b'"q":"0"'),  # zero quantity
        first.replace(b'"q":"0.02000000"', b'"q":"1e-5"'),  # exponent
        first.replace(b'"t":3735683259', b'"t":-1'),  # bad id
        first.replace(b'"T":1723161255342', b'"T":0'),  # bad time
        first.replace(b'"T":1723161255342', b'"T":99999999999999999999'),  # huge
        first.replace(b'"s":"BTCUSDT"', b'"s":"btcusdt"'),  # lower-case symbol
        first.replace(b'"s":"BTCUSDT"', b'"s":""'),  # no symbol
        first.replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"'),  # another symbol
        first.replace(b'"e":"trade"', b'"e":"aggTrade"'),  # another event
        first.replace(b'"e":"trade"', b'"e":"serverShutdown"'),
        first.replace(b'"m":true', b'"m":"yes"'),  # wrong type
        first.replace(b'{"stream":"btcusdt@trade",', b'{ "stream":"btcusdt@trade",'),
        first.replace(b'{"stream":"btcusdt@trade","data":', b'{"data":')[:-1]
        + b',"stream":"btcusdt@trade"}',  # keys in another order
        first.replace(b'{"stream":"btcusdt@trade",', b'{"stream":"btcusdt@trade","id":1,'),
        first[len(b'{"stream":"btcusdt@trade","data":') : -1],  # a raw frame among them
        b'{"result":null,"id":1}',  # an ack
        b'{"code":2,"msg":"Invalid request"}',  # an error reply
        b"[1,2]",
        b"",
        b"{}",
        b'{"stream":"btcusdt@bookTicker","data":{"u":1}}',
        first + b"," + first,  # two frames in one
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_parse_batch_with_malformed_frames_mixed_in_is_parse_frame_by_frame(
    kernels: str, btc_frames: list[bytes], data: st.DataObject
) -> None:
    good = btc_frames[:: len(btc_frames) // 40]
    bad = broken_frames(btc_frames)
    frames = data.draw(st.lists(st.sampled_from(good + bad), min_size=1, max_size=60))
    assert batch_result(BinanceSpot(), frames) == per_frame(BinanceSpot(), frames)


def test_parse_batch_lists_errors_and_controls_by_position(btc_frames: list[bytes]) -> None:
    frames = [btc_frames[0], btc_frames[0][:60], b'{"result":null,"id":1}', btc_frames[1]]
    parsed = BinanceSpot().parse_batch(frames)
    assert [(i, e.kind) for i, e in parsed.errors] == [(1, "not_json")]
    assert parsed.controls == [(2, Control.ACK)]
    assert [t.trade_id for t in parsed.trade_list()] == [3735683259, 3735683260]
    assert BinanceSpot().parse_batch([]).batches == []


# -- readers -----------------------------------------------------------------------------


def batch_trades(batches: Iterator[TradeBatch]) -> list[Trade]:
    return [t for batch in batches for t in batch.trades()]


@pytest.mark.parametrize("name", [*CSVS, BTC_FRAMES])
def test_read_batches_gives_exactly_the_trades_of_read_trades(
    kernels: str, fixtures_dir: Path, name: str
) -> None:
    path = fixtures_dir / name
    one, many = ReadStats(), ReadStats()
    expected = list(read_trades([path], stats=one))
    got = batch_trades(read_batches([path], stats=many))
    assert got == expected
    assert many == one
    small = batch_trades(read_batches([path], size=777))
    assert small == expected


def test_read_batches_of_several_files_keeps_their_order(fixtures_dir: Path) -> None:
    paths = [fixtures_dir / ETH_CSV, fixtures_dir / BTC_FRAMES, fixtures_dir / USDM_CSV]
    batches = list(read_batches(paths, size=5000))
    assert all(len(b) <= 5000 for b in batches)
    assert batch_trades(iter(batches)) == list(read_trades(paths))


def csv_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return handle.read().splitlines()


def write_text(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes("".join(line + newline for line in lines).encode("utf-8"))
    return path


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_read_batches_counts_and_skips_bad_rows_like_read_trades(
    kernels: str,
    fixtures_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    newline: str,
) -> None:
    lines = csv_lines(fixtures_dir / BTC_CSV)[:3000]
    row = lines[0].split(",")
    bad = [
        ",".join(row[:5]),
        ",".join([*row, "extra"]),
        ",".join(["x1", *row[1:]]),
        ",".join(["-5", *row[1:]]),
        ",".join([row[0], "abc", *row[2:]]),
        ",".join([*row[:2], "0", *row[3:]]),
        ",".join([*row[:2], "0.30000000000000004", *row[3:]]),  # float noise: rounded
        ",".join([*row[:2], "2.3e-05", *row[3:]]),
        ",".join([*row[:4], "soon", *row[5:]]),
        ",".join([*row[:5], "maybe", row[6]]),
        ",".join([" 17", *row[1:]]),  # int() takes spaces: a good row, as before
        "",
        "\ufeff" + lines[1],
    ]
    mixed = list(lines)
    rng = random.Random(5)
    for line in bad:
        mixed.insert(rng.randrange(len(mixed)), line)
    path = write_text(
        tmp_path / "BTCUSDT-trades-2024-08-08.csv", ["\ufeff" + mixed[0], *mixed[1:]], newline
    )

    one = ReadStats()
    with caplog.at_level(logging.WARNING, logger="spikewatch.replay.readers"):
        expected = list(read_trades([path], stats=one))
    logged_one = [r.getMessage() for r in caplog.records]
    caplog.clear()
    many = ReadStats()
    with caplog.at_level(logging.WARNING, logger="spikewatch.replay.readers"):
        got = batch_trades(read_batches([path], stats=many, size=1000))
    assert got == expected
    assert many == one
    assert one.bad > 0
    assert [r.getMessage() for r in caplog.records] == logged_one  # same rows, same lines


def test_read_batches_of_millisecond_and_microsecond_times(
    kernels: str, fixtures_dir: Path, tmp_path: Path
) -> None:
    lines = csv_lines(fixtures_dir / BTC_CSV)[:2000]
    rows = [line.split(",") for line in lines]
    mixed = [
        ",".join([*r[:4], str(int(r[4]) * 1000), *r[5:]]) if i % 3 else ",".join(r)
        for i, r in enumerate(rows)
    ]
    path = write_text(tmp_path / "BTCUSDT-trades-2025-01-01.csv", mixed)
    assert batch_trades(read_batches([path])) == list(read_trades([path]))


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_numpy_block_parser_never_disagrees_with_the_row_parser(data: st.DataObject) -> None:
    if not HAS_NUMPY:
        pytest.skip("numpy is not installed")
    field = st.text(alphabet="0123456789.,-+e TtrueFfalsRSE_\r", max_size=22)
    numbers = st.one_of(
        st.integers(0, 10**19).map(str),
        st.decimals(min_value=0, max_value=10**12, places=8, allow_nan=False).map(str),
        st.decimals(min_value=0, max_value=10**12, places=3, allow_nan=False).map(str),
        field,
    )
    sides = st.sampled_from(["true", "false", "True", "FALSE", "TRUE", "False", "tRue", ""])
    row = st.tuples(numbers, numbers, numbers, numbers, numbers, sides).map(list)
    rows = data.draw(st.lists(row, min_size=1, max_size=12))
    block = "".join(",".join(r) + "\n" for r in rows).encode()
    got = npparse.parse_block(accel.np, block, 6, 1, 2, 4, 5)
    if got is None:
        return  # the pure path decides: nothing to compare
    from array import array

    ids, prices, qtys, times, makers = got
    expected = []
    sell = {"true": 1, "True": 1, "TRUE": 1, "false": 0, "False": 0, "FALSE": 0}
    for r in rows:
        time = int(r[4])
        expected.append(
            (
                int(r[0]),
                parse_units(r[1]),
                parse_units(r[2]),
                time * 1000 if time < 10**14 else time,
                sell[r[5]],
            )
        )
    assert (
        list(
            zip(
                array("q", ids),
                array("q", prices),
                array("q", qtys),
                array("q", times),
                makers,
                strict=True,
            )
        )
        == expected
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.decimals(min_value=0, max_value=10**11, places=8, allow_nan=False).map(str),
            st.integers(0, 10**19).map(str),
            st.text(alphabet="0123456789.e-+ \n", max_size=20),
            st.text(max_size=5),
        ),
        min_size=1,
        max_size=20,
    )
)
@example(["61837.63000000", "0.00009000", "5.", ".5", "007", "9999999999.99999999"])
def test_numpy_decimal_strings_never_disagree_with_parse_units(texts: list[str]) -> None:
    if not HAS_NUMPY:
        pytest.skip("numpy is not installed")
    got = npparse.parse_decimals(accel.np, texts)
    if got is None:
        return  # parse_units decides each one
    assert got.tolist() == [parse_units(t) for t in texts]


# -- replay ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [BTC_FRAMES, BTC_CSV, USDM_CSV, XRPETH_CSV])
@pytest.mark.parametrize(("window", "threshold"), [(200, "10"), (50, "2.25")])
def test_replay_of_a_file_finds_the_signals_of_the_per_trade_pipeline(
    kernels: str, fixtures_dir: Path, name: str, window: int, threshold: str
) -> None:
    path = fixtures_dir / name

    def pipeline() -> Kernel:
        return detection(lambda ex, sym: (VolumeSpikeDetector(window, threshold),))

    one = pipeline()
    expected = [s for t in read_trades([path]) for s in run(one, t)]

    many = pipeline()
    got: list[Signal] = []
    reports: list[tuple[int, int, int]] = []
    summary = replay(
        read_trades([path]),
        many,
        got.append,
        progress=lambda *args: reports.append(args),
        progress_every=100,
    )
    assert expected
    assert got == expected  # every field, in order
    assert many.stats() == one.stats()
    assert summary.trades == len(list(read_trades([path])))
    assert summary.signals == len(expected)
    assert reports
    assert reports[-1][1] <= len(expected)

    mixed = pipeline()  # batches and trades in one stream
    batches = list(read_batches([path], size=summary.trades // 7))
    items: list[Trade | TradeBatch] = [*batches[:3], *batches[3].trades(), *batches[4:]]
    found: list[Signal] = []
    replay(items, mixed, found.append)
    assert found == expected


def test_replay_keeps_only_the_symbols_asked_for(fixtures_dir: Path) -> None:
    paths = [fixtures_dir / ETH_CSV, fixtures_dir / BTC_CSV]
    signals: list[Signal] = []
    summary = replay(
        read_trades(paths),
        detection(lambda ex, sym: (VolumeSpikeDetector(),)),
        signals.append,
        symbols=frozenset({"ETHUSDT"}),
    )
    assert {s.symbol for s in signals} == {"ETHUSDT"}
    assert summary.trades == 14_515


def test_a_reader_read_one_by_one_cannot_then_be_read_as_batches(fixtures_dir: Path) -> None:
    reader = read_trades([fixtures_dir / USDM_CSV])
    next(reader)
    with pytest.raises(RuntimeError, match="one by one"):
        reader.batches()
    reader.close()


def test_everything_works_where_numpy_cannot_be_imported(fixtures_dir: Path) -> None:
    # A fresh interpreter in which `import numpy` fails, as where it is not installed.
    script = f"""
import sys
sys.modules["numpy"] = None
from spikewatch.core import accel
assert accel.np is None
from spikewatch.core.detectors import VolumeSpikeDetector
from spikewatch.replay.readers import read_trades
from spikewatch.core.kernel import Kernel
from spikewatch.replay.runner import replay
for name in ({BTC_CSV!r}, {BTC_FRAMES!r}):
    path = {str(fixtures_dir)!r} + "/" + name
    signals = []
    replay(read_trades([path]), Kernel(lambda e, s: (VolumeSpikeDetector(),)), signals.append)
    assert len(signals) == 467, len(signals)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_collected_short_runs_stay_single_trades_and_long_runs_become_batches() -> None:
    """An adapter that parses frame by frame hands its results to ParsedFrames.collect:
    runs of one symbol under SMALL_RUN stay Trade objects (no column set-up for a quiet
    read), longer runs become one batch; errors and controls keep their frame index."""

    def trade(symbol: str, tid: int) -> Trade:
        return Trade("binance", symbol, tid, 100, 1, 1_000_000 + tid, Side.BUY)

    long_run = [trade("BTCUSDT", i) for i in range(SMALL_RUN)]
    bad = MalformedFrame("bad_json", "x")
    results: list[Trade | Control | MalformedFrame] = [
        trade("ETHUSDT", 1),
        bad,
        *long_run,
        Control.ACK,
        trade("ETHUSDT", 2),
    ]
    parsed = ParsedFrames.collect(results)
    assert [type(b).__name__ for b in parsed.batches] == ["Trade", "TradeBatch", "Trade"]
    assert parsed.errors == [(1, bad)]
    assert parsed.controls == [(2 + SMALL_RUN, Control.ACK)]
    assert parsed.trades == SMALL_RUN + 2
    assert parsed.trade_list() == [results[0], *long_run, results[-1]]
