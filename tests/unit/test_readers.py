"""Historical trade files read into Trades: real data.binance.vision-layout CSVs and frames.

Every input here is a real recording from tests/fixtures (see its SOURCES.md), or real rows
from one written out in another real layout (a zip, µs times, aggTrades), as each test says.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import logging
import re
import shutil
import zipfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from msgspec.structs import replace

from spikewatch.core.decimal import BadNumber, parse_units
from spikewatch.core.model import Side, Trade
from spikewatch.exchanges.base import ParsedFrames
from spikewatch.exchanges.binance import BinanceSpot, BinanceUsdm
from spikewatch.replay import framefiles
from spikewatch.replay.readers import (
    ReadStats,
    detect_format,
    read_batches,
    read_trades,
    symbol_from_filename,
)
from spikewatch.replay.tape import frames_of_lines

BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
BTC_FRAMES = "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz"
ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
USDM_CSV = "binance-usdm-BTCUSDT-trades-2024-08-08T2354Z_first-300-rows.csv.gz"
XRPETH_CSV = "binance-spot-XRPETH-trades-2019-10-11_2019-10-13.csv.gz"

BTC_TRADES = 19_904
ETH_TRADES = 14_515


# -- helpers ----------------------------------------------------------------------------


def csv_rows(path: Path) -> list[list[str]]:
    """The rows of a (gzipped) CSV fixture, header included, read with the csv module."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def write_csv(path: Path, rows: list[list[str]], *, newline: str = "\n") -> Path:
    """Write rows as a CSV, gzipped if the name ends in .gz."""
    text = "".join(",".join(row) + newline for row in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def units(text: str) -> int:
    """Exact 1e-8 units of a decimal string, by Decimal: an independent reference."""
    value = Decimal(text) * 10**8
    assert value == value.to_integral_value(), text
    return int(value)


def reference_trades(
    rows: list[list[str]], symbol: str, *, time_col: int = 4, side_col: int = 5
) -> list[Trade]:
    """Trades of data.binance.vision rows (ms times), stated plainly with Decimal."""
    return [
        Trade(
            "binance",
            symbol,
            int(row[0]),
            units(row[1]),
            units(row[2]),
            int(row[time_col]) * 1000,
            Side.SELL if row[side_col].lower() == "true" else Side.BUY,
        )
        for row in rows
        if row[0].isdigit()
    ]


# -- the same trades, whatever the file ----------------------------------------------------


def test_btc_csv_and_btc_frames_give_identical_trades(fixtures_dir: Path) -> None:
    from_csv = list(read_trades([fixtures_dir / BTC_CSV]))
    from_frames = list(read_trades([fixtures_dir / BTC_FRAMES]))

    assert len(from_csv) == BTC_TRADES
    assert from_csv == from_frames  # Struct equality: every field of every trade
    assert from_csv[0] == Trade(
        "binance", "BTCUSDT", 3735683259, 6_183_763_000_000, 2_000_000, 1723161255342000, Side.SELL
    )
    assert [t.trade_id for t in from_csv] == list(range(3735683259, 3735683259 + BTC_TRADES))


@pytest.mark.parametrize(("name", "symbol"), [(BTC_CSV, "BTCUSDT"), (ETH_CSV, "ETHUSDT")])
def test_spot_csv_reads_the_exact_decimal_values(
    fixtures_dir: Path, name: str, symbol: str
) -> None:
    path = fixtures_dir / name
    stats = ReadStats()

    trades = list(read_trades([path], stats=stats))

    assert trades == reference_trades(csv_rows(path), symbol)
    assert stats == ReadStats(files=1, rows=len(trades), trades=len(trades))


def test_futures_csv_header_is_skipped_and_lowercase_booleans_read(fixtures_dir: Path) -> None:
    path = fixtures_dir / USDM_CSV
    stats = ReadStats()

    trades = list(read_trades([path], stats=stats))

    assert detect_format(path) == "trades"
    assert len(trades) == 300
    assert stats.rows == 300  # the header is not a row, and not a bad one
    assert stats.bad_rows == {}
    assert trades[0] == Trade(
        "binance", "BTCUSDT", 5266583935, 6_180_030_000_000, 600_000, 1723161256322000, Side.BUY
    )
    assert trades == reference_trades(csv_rows(path), "BTCUSDT")
    assert {t.side for t in trades} == {Side.BUY, Side.SELL}


def test_microsecond_times_give_the_same_time_us(fixtures_dir: Path, tmp_path: Path) -> None:
    # Real rows with their ms times multiplied by 1000: the layout of spot dumps from
    # 2025-01-01 on, which write µs.
    rows = csv_rows(fixtures_dir / BTC_CSV)[:2000]
    scaled = [[*row[:4], str(int(row[4]) * 1000), *row[5:]] for row in rows]
    mixed = [s if i % 2 else r for i, (r, s) in enumerate(zip(rows, scaled, strict=True))]
    in_ms = write_csv(tmp_path / "BTCUSDT-trades-2024-08-08.csv", rows)
    in_us = write_csv(tmp_path / "BTCUSDT-trades-2025-01-01.csv", scaled)
    both = write_csv(tmp_path / "BTCUSDT-trades-mixed.csv", mixed)

    expected = list(read_trades([in_ms]))

    assert expected[0].time_us == 1723161255342000
    assert list(read_trades([in_us])) == expected
    assert list(read_trades([both])) == expected  # the unit is told per value


def test_zip_download_reads_like_the_plain_csv(fixtures_dir: Path, tmp_path: Path) -> None:
    # A data.binance.vision download is a zip holding one CSV of the same name.
    with gzip.open(fixtures_dir / BTC_CSV, "rb") as handle:
        data = handle.read()
    named = tmp_path / "BTCUSDT-trades-2024-08-08.zip"
    unnamed = tmp_path / "download.zip"
    for target in (named, unnamed):
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("BTCUSDT-trades-2024-08-08.csv", data)

    expected = list(read_trades([fixtures_dir / BTC_CSV]))

    assert detect_format(named) == "trades"
    assert list(read_trades([named])) == expected
    assert list(read_trades([unnamed])) == expected  # symbol from the CSV inside


def test_zip_with_several_files_is_refused(fixtures_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "BTCUSDT-trades-2024-08.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.write(fixtures_dir / BTC_CSV, "a.csv")
        archive.write(fixtures_dir / ETH_CSV, "b.csv")

    with pytest.raises(ValueError, match="one CSV"):
        read_trades([target])


@pytest.mark.parametrize(
    ("header", "best_match"),
    [
        (None, True),
        (
            "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker",
            False,
        ),
    ],
    ids=["spot-no-header-8-columns", "futures-header-7-columns"],
)
def test_aggtrades_rows_read_as_one_trade_per_taker_order(
    fixtures_dir: Path, tmp_path: Path, header: str | None, best_match: bool
) -> None:
    # No real aggTrades CSV exists in the shared data: each real trade row is written as
    # an aggTrades row of one trade (first_trade_id = last_trade_id = id), in the spot
    # (no header, is_best_match) and futures (header, no is_best_match) layouts.
    rows = csv_rows(fixtures_dir / BTC_CSV)[:3000]
    agg = [
        [r[0], r[1], r[2], r[0], r[0], r[4], r[5], *([r[6]] if best_match else [])] for r in rows
    ]
    if header is not None:
        agg.insert(0, header.split(","))
    path = write_csv(tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv.gz", agg)
    stats = ReadStats()

    trades = list(read_trades([path], stats=stats))

    assert detect_format(path) == "aggtrades"
    assert trades == reference_trades(rows, "BTCUSDT")
    assert stats.rows == stats.trades == 3000


def test_explicit_format_is_used_without_detection(fixtures_dir: Path) -> None:
    trades = list(read_trades([fixtures_dir / BTC_CSV], fmt="trades"))

    assert len(trades) == BTC_TRADES


def test_float_valued_csv_reads_exactly(fixtures_dir: Path) -> None:
    path = fixtures_dir / XRPETH_CSV
    rows = csv_rows(path)

    trades = list(read_trades([path]))

    assert len(trades) == 12_477
    assert rows[0][2] == "23.0"  # written from a float
    assert trades[0] == Trade(
        "binance", "XRPETH", 13519807, 141_342, 2_300_000_000, 1570752011620000, Side.SELL
    )
    assert trades == reference_trades(rows, "XRPETH")


def test_float_noise_is_rounded_to_the_8_decimal_value(fixtures_dir: Path, tmp_path: Path) -> None:
    # Real XRPETH rows with price and qty written the way float writers do: 20 fixed
    # decimals (binary noise past the 8th) and exponent form.
    rows = csv_rows(fixtures_dir / XRPETH_CSV)[:500]
    noisy = [[r[0], f"{float(r[1]):.20f}", f"{float(r[2]):e}", *r[3:]] for r in rows]
    assert noisy[0][1:3] == ["0.00141342000000000008", "2.300000e+01"]
    with pytest.raises(BadNumber):
        parse_units(noisy[0][1])  # so the reader has to fall back to the float
    path = write_csv(tmp_path / "XRPETH-trades-2019-10-11.csv", noisy)

    assert list(read_trades([path])) == reference_trades(rows, "XRPETH")


def test_plain_csv_with_crlf_line_endings_reads_the_same(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    rows = csv_rows(fixtures_dir / USDM_CSV)
    path = write_csv(tmp_path / "BTCUSDT-trades-2024-08-08.csv", rows, newline="\r\n")
    stats = ReadStats()

    assert list(read_trades([path], stats=stats)) == list(read_trades([fixtures_dir / USDM_CSV]))
    assert stats.bad_rows == {}


# -- bad input ---------------------------------------------------------------------------


def test_bad_rows_are_counted_by_kind_logged_once_and_skipped(
    fixtures_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = csv_rows(fixtures_dir / BTC_CSV)[:40]
    row = good[0]
    broken = {
        "bad_columns": [row[:5], [*row, "extra"]],
        "bad_id": [["x1", *row[1:]], ["-5", *row[1:]]],
        "bad_price": [[row[0], "abc", *row[2:]], [row[0], "-61837.63", *row[2:]]],
        "bad_qty": [[*row[:2], "0", *row[3:]], [*row[:2], "0.00000000", *row[3:]]],
        "bad_time": [[*row[:4], "soon", *row[5:]], [*row[:4], "-1", *row[5:]]],
        "bad_side": [[*row[:5], "maybe", row[6]]],
    }
    rows = list(good)
    for i, bad in enumerate(itertools.chain.from_iterable(broken.values())):
        rows.insert(3 + 4 * i, bad)
    rows.insert(10, [""])  # a blank line is neither a trade nor a bad row
    path = write_csv(tmp_path / "BTCUSDT-trades-2024-08-08.csv", rows)
    stats = ReadStats()

    with caplog.at_level(logging.WARNING, logger="spikewatch.replay.readers"):
        trades = list(read_trades([path], stats=stats))

    assert trades == reference_trades(good, "BTCUSDT")
    assert stats.bad_rows == {kind: len(bad) for kind, bad in broken.items()}
    assert stats.bad == 11
    assert stats.rows == 40 + 11
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == len(broken)  # once per kind per file
    assert all(path.name in message for message in logged)


def test_a_last_line_without_newline_is_still_read(fixtures_dir: Path, tmp_path: Path) -> None:
    rows = csv_rows(fixtures_dir / BTC_CSV)[:10]
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    path.write_text("\n".join(",".join(r) for r in rows), encoding="utf-8")

    assert list(read_trades([path])) == reference_trades(rows, "BTCUSDT")


def test_a_huge_junk_line_is_one_bad_row_and_reading_goes_on(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    rows = csv_rows(fixtures_dir / BTC_CSV)[:10]
    junk = ["x" * 3_000_000]  # e.g. binary bytes with no newline: never buffered whole
    path = write_csv(tmp_path / "BTCUSDT-trades-2024-08-08.csv", [*rows[:5], junk, *rows[5:]])
    stats = ReadStats()

    assert list(read_trades([path], stats=stats)) == reference_trades(rows, "BTCUSDT")
    assert stats.bad_rows == {"bad_columns": 1}


def test_malformed_frames_are_counted_and_other_frames_skipped(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    with gzip.open(fixtures_dir / BTC_FRAMES, "rb") as handle:
        frames = [next(handle).rstrip(b"\n") for _ in range(20)]
    broken = [
        frames[3][:60],  # cut off mid-frame
        frames[4].replace(b'"q":"0.00009000"', b'"q":"0"'),  # a zero quantity
    ]
    assert broken[1] != frames[4]
    ack = b'{"result":null,"id":1}'  # Binance's reply to SUBSCRIBE: not a trade, not bad
    lines = [*frames[:10], *broken, ack, *frames[10:]]
    path = tmp_path / "btcusdt-frames.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    stats = ReadStats()

    trades = list(read_trades([path], stats=stats))

    assert detect_format(path) == "frames"
    assert [t.trade_id for t in trades] == [3735683259 + i for i in range(20)]
    assert stats.bad_rows == {"not_json": 1, "bad_value": 1}
    assert stats.rows == 23


def test_truncated_gzip_raises_a_clear_error(fixtures_dir: Path, tmp_path: Path) -> None:
    data = (fixtures_dir / BTC_CSV).read_bytes()
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv.gz"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match="truncated"):
        for _ in read_trades([path]):
            pass


def test_missing_file_raises_when_called_not_when_iterated(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.csv"):
        read_trades([tmp_path / "BTCUSDT-trades-nothing.csv"])


def test_unknown_format_name_is_refused(fixtures_dir: Path) -> None:
    with pytest.raises(ValueError, match="klines"):
        read_trades([fixtures_dir / BTC_CSV], fmt="klines")


def test_a_file_of_another_layout_is_refused_by_name(tmp_path: Path) -> None:
    # The header of the Tardis.dev export in shared/data (its 1a): not a Binance layout.
    path = tmp_path / "binance-usdm-BTCUSDT-trades-2020-02-22.tardis.csv"
    path.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n")

    with pytest.raises(ValueError, match=r"tardis\.csv"):
        detect_format(path)
    with pytest.raises(ValueError, match=r"tardis\.csv"):
        read_trades([path])


def test_empty_file_without_a_format_in_its_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-2024.csv"
    path.write_text("")

    with pytest.raises(ValueError, match="empty"):
        detect_format(path)


def test_empty_file_named_as_trades_reads_no_trades(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    path.write_text("")
    stats = ReadStats()

    assert detect_format(path) == "trades"
    assert list(read_trades([path], stats=stats)) == []
    assert stats == ReadStats(files=1)


# -- symbols ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("BTCUSDT-trades-2024-08-08.csv", "BTCUSDT"),
        ("BTCUSDT-trades-2024-08-08.zip", "BTCUSDT"),
        ("ETHBTC-aggTrades-2024-08-08.zip", "ETHBTC"),
        ("1000PEPEUSDT-trades-2024-08.csv.gz", "1000PEPEUSDT"),
        ("/data/binance/BNBFDUSD-trades-2024-01-02.csv", "BNBFDUSD"),
        (BTC_CSV, "BTCUSDT"),
        (BTC_FRAMES, "BTCUSDT"),
        (XRPETH_CSV, "XRPETH"),
        ("binance-spot-SOLEUR-2024-08-08.csv", "SOLEUR"),
        ("trades.csv", None),
        ("btcusdt-trades-2024-08-08.csv", None),  # lower case is not a symbol token
        ("download-2024-08-08.csv.gz", None),
        ("BINANCE-BTC-2024.csv", None),  # too short, and no token before -trades
    ],
)
def test_symbol_is_taken_from_the_file_name(name: str, symbol: str | None) -> None:
    assert symbol_from_filename(name) == symbol


def test_csv_without_symbol_in_its_name_asks_for_symbol(fixtures_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "trades.csv.gz"
    shutil.copy(fixtures_dir / BTC_CSV, path)

    with pytest.raises(ValueError, match="--symbol"):
        read_trades([path])
    trades = list(read_trades([path], symbol="btcusdt"))
    assert len(trades) == BTC_TRADES
    assert {t.symbol for t in trades} == {"BTCUSDT"}


def test_symbol_argument_wins_over_the_file_name(fixtures_dir: Path) -> None:
    trades = list(read_trades([fixtures_dir / ETH_CSV], symbol="ETHUSDC"))

    assert {t.symbol for t in trades} == {"ETHUSDC"}


# -- several files, streaming ----------------------------------------------------------------


def test_files_are_read_in_the_order_given_and_counted(fixtures_dir: Path) -> None:
    stats = ReadStats()

    trades = list(read_trades([fixtures_dir / ETH_CSV, fixtures_dir / BTC_FRAMES], stats=stats))

    assert [t.symbol for t in trades] == ["ETHUSDT"] * ETH_TRADES + ["BTCUSDT"] * BTC_TRADES
    total = ETH_TRADES + BTC_TRADES
    assert stats == ReadStats(files=2, rows=total, trades=total)


def test_one_path_string_is_read_as_one_file(fixtures_dir: Path) -> None:
    assert len(list(read_trades(str(fixtures_dir / BTC_CSV)))) == BTC_TRADES


def test_stopping_early_keeps_the_counts_of_what_was_read(fixtures_dir: Path) -> None:
    stats = ReadStats()
    trades = read_trades([fixtures_dir / BTC_CSV], stats=stats)

    first = list(itertools.islice(trades, 100))
    trades.close()  # a generator: closing it closes the file

    assert len(first) == 100
    assert stats.trades == 100


# -- frame recordings of several streams, other exchanges ---------------------------------

USDM_FRAMES = "binance-usdm-trade-combined.collect-binancefutures-2022-08-11.jsonl"
CAPTURE_START = 1723161254206652067

#: Real frames of the other streams of binance-spot-BTCUSDT-wsraw-2024-08-09T0000Z
#: .hftbacktest.gz (shared data, hftbacktest's capture): a bookTicker and a depth update,
#: and the REST depth snapshot such a capture starts with (2024-08-08T2354Z; cut to its
#: first two levels a side, it holds a thousand).
BOOK_TICKER = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":50093421613,"s":"BTCUSDT",'
    b'"b":"61685.99000000","B":"1.25869000","a":"61686.00000000","A":"2.44816000"}}'
)
DEPTH_UPDATE = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161835777,'
    b'"s":"BTCUSDT","U":50093645881,"u":50093645881,"b":[["56717.98000000","0.00000000"]],'
    b'"a":[]}}'
)
DEPTH_SNAPSHOT = (
    b'{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"],'
    b'["61837.62000000","0.61700000"]],"asks":[["61837.64000000","1.54698000"],'
    b'["61837.65000000","0.00843000"]]}'
)


def btc_frame_lines(fixtures_dir: Path, count: int) -> list[bytes]:
    with gzip.open(fixtures_dir / BTC_FRAMES, "rb") as handle:
        return [next(handle).rstrip(b"\n") for _ in range(count)]


def capture(frames: list[bytes]) -> bytes:
    """Frames as hftbacktest writes them: ``<recv_ns> <frame>`` lines."""
    return b"".join(b"%d %s\n" % (CAPTURE_START + i, f) for i, f in enumerate(frames))


def test_a_capture_of_several_streams_gives_its_trades_and_skips_the_rest_quietly(
    fixtures_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trades = btc_frame_lines(fixtures_dir, 300)
    others = [BOOK_TICKER, DEPTH_UPDATE, BOOK_TICKER, BOOK_TICKER]
    mixed = [DEPTH_SNAPSHOT]  # what hftbacktest's capture starts with
    for i, frame in enumerate(trades):
        mixed += [others[i % 4], others[(i + 1) % 4], frame]
    path = tmp_path / "btcusdt-wsraw.hftbacktest.gz"
    path.write_bytes(gzip.compress(capture(mixed)))
    only_trades = tmp_path / "btcusdt-trades.jsonl"
    only_trades.write_bytes(b"\n".join(trades))
    stats = ReadStats()

    with caplog.at_level(logging.WARNING, logger="spikewatch.replay.readers"):
        got = list(read_trades([path], stats=stats))

    assert detect_format(path) == "frames"
    assert got == list(read_trades([only_trades]))
    assert len(got) == 300
    assert stats == ReadStats(files=1, rows=len(mixed), trades=300)  # nothing bad
    assert caplog.records == []


def test_frames_read_the_same_whatever_the_block_size(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A block with as many trade events as lines is parsed whole, any other line by line
    # (lines without "trade" skipped unjudged): where blocks end must change nothing.
    frames = btc_frame_lines(fixtures_dir, 400)
    lines = list(frames)
    lines[50] = frames[50][:60]  # cut off mid-frame: bad
    lines[120] = re.sub(rb'"q":"[0-9.]+"', b'"q":"0"', frames[120])  # a zero quantity: bad
    lines[200] = frames[200] + b"," + frames[201]  # two frames in one line: bad
    lines[201] = DEPTH_SNAPSHOT  # another stream's frame: skipped unjudged
    text = b"\r\n".join(lines)  # CRLF, and no newline after the last line
    path = tmp_path / "btcusdt.jsonl.gz"
    path.write_bytes(gzip.compress(text))
    read_whole: list[bool] = []

    def spy(lines: list[bytes], keep: bytes | None = None) -> tuple[list[bytes], int]:
        read_whole.append(keep is None)
        return frames_of_lines(lines, keep)

    monkeypatch.setattr(framefiles, "frames_of_lines", spy)
    results = []
    for chunk in (1 << 20, 4096, 997, 200):
        monkeypatch.setattr(framefiles, "CHUNK", chunk)
        stats = ReadStats()
        batched = ReadStats()
        trades = list(read_trades([path], stats=stats))
        in_batches = [t for b in read_batches([path], stats=batched, size=64) for t in b.trades()]
        assert in_batches == trades
        assert batched == stats
        results.append((trades, stats))
        if chunk == 1 << 20:  # one block (and the last line), an event for each line
            assert all(read_whole)

    assert False in read_whole  # smaller blocks around DEPTH_SNAPSHOT: line by line
    trades, stats = results[0]
    assert all(r == results[0] for r in results)
    assert [t.trade_id for t in trades] == [
        3735683259 + i for i in range(400) if i not in (50, 120, 200, 201)
    ]
    assert stats.rows == 400
    assert stats.bad_rows == {"not_json": 2, "bad_value": 1}


def test_a_bad_frame_is_logged_with_its_line_number(
    fixtures_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = btc_frame_lines(fixtures_dir, 30)
    lines = [BOOK_TICKER, *frames[:10], DEPTH_UPDATE, b"", frames[10][:60], *frames[11:]]
    path = tmp_path / "btcusdt-wsraw.hftbacktest"
    path.write_bytes(capture(lines))

    with caplog.at_level(logging.WARNING, logger="spikewatch.replay.readers"):
        trades = list(read_trades([path], fmt="frames"))

    assert len(trades) == 29
    (record,) = caplog.records
    assert "btcusdt-wsraw.hftbacktest line 14: skipped a bad row (not_json" in record.getMessage()


def test_truncated_gzip_recording_raises_a_clear_error(fixtures_dir: Path, tmp_path: Path) -> None:
    data = (fixtures_dir / BTC_FRAMES).read_bytes()
    path = tmp_path / "btcusdt-trade-msgs.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match="truncated"):
        for _ in read_trades([path]):
            pass


def test_futures_trades_are_named_after_the_exchange_given(fixtures_dir: Path) -> None:
    frames = fixtures_dir / USDM_FRAMES
    rows = fixtures_dir / USDM_CSV

    spot_named = list(read_trades([frames, rows]))
    futures = list(read_trades([frames, rows], exchange=BinanceUsdm()))
    batches = list(read_batches([frames, rows], exchange=BinanceUsdm()))

    assert {t.exchange for t in spot_named} == {"binance"}  # the default, as before
    assert {t.exchange for t in futures} == {"binance-usdm"}
    assert {b.exchange for b in batches} == {"binance-usdm"}
    assert len(futures) == 500 + 300
    assert [t.exchange for t in futures] != [t.exchange for t in spot_named]
    assert [(t.trade_id, t.price, t.qty, t.time_us, t.side) for t in futures] == [
        (t.trade_id, t.price, t.qty, t.time_us, t.side) for t in spot_named
    ]


class CountingExchange:
    """An exchange the readers know nothing of: Binance's parser under another name,
    counting the frames it is given."""

    name = "toy"

    def __init__(self) -> None:
        self.inner = BinanceSpot()
        self.frames = 0

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        self.frames += len(frames)
        parsed = self.inner.parse_batch(frames)
        renamed = [replace(b, exchange=self.name) for b in parsed.batches]
        return ParsedFrames(renamed, parsed.errors, parsed.controls)


def test_an_unknown_exchange_is_handed_every_frame(fixtures_dir: Path, tmp_path: Path) -> None:
    frames = btc_frame_lines(fixtures_dir, 100)
    path = tmp_path / "btcusdt-wsraw.hftbacktest"
    path.write_bytes(capture([BOOK_TICKER, *frames]) + b"\n" + capture([DEPTH_UPDATE]))
    toy = CountingExchange()

    trades = list(read_trades([path], exchange=toy))

    assert toy.frames == 102  # the blank line is no frame
    assert len(trades) == 100
    assert {t.exchange for t in trades} == {"toy"}


# -- files that cannot be trade files: one line naming the fix, never their bytes ---------


def test_a_directory_is_refused_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is a directory: give the files in it, e\.g\. "):
        read_trades([tmp_path])


@pytest.mark.parametrize("fmt", [None, "trades", "frames"])
def test_a_binary_file_is_refused_without_quoting_its_bytes(
    tmp_path: Path, fmt: str | None
) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    path.write_bytes(bytes(range(256)) * 16)

    with pytest.raises(ValueError, match="not a text file") as caught:
        read_trades([path], fmt=fmt)
    assert "\\x" not in str(caught.value)


def test_a_compressed_file_without_its_suffix_is_told_how_to_rename_it(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    gz = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    shutil.copyfile(fixtures_dir / BTC_CSV, gz)
    archive = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("BTCUSDT-trades-2024-08-09.csv", "1,2,3\n")

    with pytest.raises(ValueError, match=r"gzip-compressed, but not named \.gz: rename it "):
        read_trades([gz])
    with pytest.raises(ValueError, match=r"a zip archive, but not named \.zip: rename it "):
        read_trades([archive], fmt="trades")


def test_a_gz_file_that_is_not_gzip_is_refused_without_quoting_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv.gz"
    path.write_bytes(b"1,61837.63,0.1,6183.7,1723161600000,True,True\n")

    with pytest.raises(ValueError, match=r"named \.gz, but not gzip-compressed") as caught:
        detect_format(path)
    assert "b'" not in str(caught.value)


def test_the_lines_of_other_streams_are_counted_as_skipped(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    trades = btc_frame_lines(fixtures_dir, 300)
    mixed = [DEPTH_SNAPSHOT]
    for frame in trades:
        mixed += [DEPTH_UPDATE, BOOK_TICKER, frame]
    path = tmp_path / "btcusdt-wsraw.hftbacktest.gz"
    path.write_bytes(gzip.compress(capture(mixed)))
    stats = ReadStats()

    assert len(list(read_trades([path], stats=stats))) == 300

    assert stats.skipped == len(mixed) - 300
    assert stats.bad == 0


def test_a_csv_skips_nothing_quietly(fixtures_dir: Path) -> None:
    stats = ReadStats()
    assert len(list(read_trades([fixtures_dir / BTC_CSV], stats=stats))) == BTC_TRADES
    assert stats.skipped == 0
