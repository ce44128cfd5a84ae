"""The bus's pure parts: which partition a symbol goes to, and the trade batch codec."""

from __future__ import annotations

import contextlib
import hashlib
import struct
from array import array
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.bus.codec import (
    HEADER_SIZE,
    MalformedBatch,
    decode_batch,
    encode_batch,
    encode_columns,
    message_id,
    read_header,
)
from spikewatch.bus.subjects import (
    TradeSubjects,
    parse_partitions,
    partition_of,
    signal_subject,
)
from spikewatch.core.model import Side, Trade, TradeBatch
from spikewatch.replay.readers import read_batches, read_trades

BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"

# -- partitions and subjects -------------------------------------------------------------


def test_partition_is_blake2b_of_exchange_and_symbol_and_stable() -> None:
    # fixed values: a change of hash would move every symbol to another worker mid-stream
    # (the layout is part of the stream's identity: docs/DISTRIBUTED.md)
    digest = hashlib.blake2b(b"binance.BTCUSDT", digest_size=8).digest()
    assert int.from_bytes(digest, "big") % 8 == 3
    assert partition_of("binance", "BTCUSDT", 8) == 3
    assert partition_of("binance", "ETHUSDT", 8) == 1
    assert partition_of("binance-usdm", "BTCUSDT", 8) == 3
    assert partition_of("binance", "BTCUSDT", 1) == 0


def test_every_partition_gets_symbols_and_none_is_outside() -> None:
    symbols = [f"SYM{i}USDT" for i in range(400)]
    seen = {partition_of("binance", s, 8) for s in symbols}
    assert seen == set(range(8))


def test_subject_names_the_partition_first_so_one_filter_reads_a_partition() -> None:
    subjects = TradeSubjects(8)
    part = subjects.partition("binance", "BTCUSDT")
    assert subjects.subject("binance", "BTCUSDT") == f"trades.{part}.binance.BTCUSDT"
    assert subjects.filter(part) == f"trades.{part}.*.*"
    assert subjects.wildcard == "trades.*.*.*"
    assert signal_subject("binance-usdm", "BTCUSDT") == "signals.binance-usdm.BTCUSDT"
    assert TradeSubjects(4, prefix="t1").subject("binance", "BTCUSDT").startswith("t1.")


@pytest.mark.parametrize(
    ("exchange", "symbol"), [("bin.ance", "BTCUSDT"), ("binance", "BTC*"), ("binance", "")]
)
def test_a_name_that_cannot_be_a_subject_token_is_refused(exchange: str, symbol: str) -> None:
    with pytest.raises(ValueError, match="subject token"):
        TradeSubjects(8).subject(exchange, symbol)


def test_partition_counts_and_ranges_are_checked() -> None:
    with pytest.raises(ValueError, match="partitions"):
        TradeSubjects(0)
    with pytest.raises(ValueError, match="not within"):
        TradeSubjects(8).filter(8)
    assert parse_partitions("0-7", 8) == list(range(8))
    assert parse_partitions("6,0-2,2", 8) == [0, 1, 2, 6]
    with pytest.raises(ValueError, match="not within"):
        parse_partitions("4-8", 8)
    with pytest.raises(ValueError, match="bad partition"):
        parse_partitions("a-b", 8)


# -- the codec ---------------------------------------------------------------------------

_I64 = st.integers(min_value=0, max_value=2**63 - 1)
_POSITIVE = st.integers(min_value=1, max_value=2**63 - 1)


@st.composite
def batches(draw: st.DrawFn) -> TradeBatch:
    """Any batch the kernel could hold: any ids (in any order), positive prices and
    quantities up to int64, any time, either side."""
    n = draw(st.integers(min_value=1, max_value=300))
    exchange = draw(st.sampled_from(["binance", "binance-usdm", "x"]))
    symbol = draw(st.from_regex(r"[A-Z0-9]{1,20}", fullmatch=True))
    return TradeBatch.of(
        exchange,
        symbol,
        draw(st.lists(_I64, min_size=n, max_size=n)),
        draw(st.lists(_POSITIVE, min_size=n, max_size=n)),
        draw(st.lists(_POSITIVE, min_size=n, max_size=n)),
        draw(st.lists(_I64, min_size=n, max_size=n)),
        draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)),
    )


@given(batches())
def test_decode_of_encode_is_the_same_batch_for_any_trades(batch: TradeBatch) -> None:
    payload = encode_batch(batch)
    assert decode_batch(payload) == batch
    assert decode_batch(payload).trades() == batch.trades()
    header = read_header(payload)
    assert (header.exchange, header.symbol, header.count) == (
        batch.exchange,
        batch.symbol,
        len(batch),
    )
    assert (header.first_id, header.last_id) == (batch.trade_ids[0], batch.trade_ids[-1])


def test_recorded_trades_round_trip_exactly(fixtures_dir: Path) -> None:
    path = fixtures_dir / BTC_CSV
    trades = list(read_trades([path]))
    decoded: list[Trade] = []
    for batch in read_batches([path], size=500):
        payload = encode_batch(batch)
        assert len(payload) == HEADER_SIZE + len("binance") + len("BTCUSDT") + 33 * len(batch)
        decoded.extend(decode_batch(payload).trades())
    assert decoded == trades
    assert len(decoded) == 19_904
    assert {t.side for t in decoded} == {Side.BUY, Side.SELL}


def test_message_id_names_the_batch() -> None:
    assert message_id("binance", "BTCUSDT", 5, 9) == "binance.BTCUSDT.5.9"


def _good() -> bytes:
    return encode_batch(
        TradeBatch.of("binance", "BTCUSDT", [1, 2], [10, 11], [5, 6], [7, 8], [0, 1])
    )


def _corrupt_column(payload: bytes, column: int, row: int, value: int, fmt: str = "<q") -> bytes:
    offset = HEADER_SIZE + len("binanceBTCUSDT") + column * 8 * 2 + row * 8
    out = bytearray(payload)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"", "truncated"),
        (b'{"e":"trade"}' + b" " * 20, "not_a_batch"),
        (b"SWT\x02" + _good()[4:], "unknown_version"),
        (_good()[:-1], "length"),
        (_good() + b"\x00", "length"),
        (b"SWT\x01" + struct.pack("<Iqq", 0, 0, 0) + b"\x00\x00", "empty"),
        (_good().replace(b"BTCUSDT", b"BTC.SDT"), "bad_name"),
        (_good().replace(b"BTCUSDT", b"BTC\xffSDT"), "bad_name"),
        (_corrupt_column(_good(), 0, 1, 99), "header_mismatch"),
        (_corrupt_column(_good(), 1, 0, 0), "bad_value"),
        (_corrupt_column(_good(), 2, 1, -5), "bad_value"),
        (_corrupt_column(_good(), 3, 0, -1), "bad_value"),
        (_good()[:-1] + b"\x02", "bad_side"),
    ],
)
def test_a_malformed_payload_raises_with_a_kind_to_count(payload: bytes, kind: str) -> None:
    with pytest.raises(MalformedBatch) as caught:
        decode_batch(payload)
    assert caught.value.kind == kind


@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(-3, 3),
)
def test_a_damaged_batch_decodes_or_raises_malformed_never_anything_else(
    changes: list[tuple[int, int]], resize: int
) -> None:
    payload = bytearray(_good())
    for index, value in changes:
        payload[index % len(payload)] = value
    if resize < 0:
        del payload[resize:]
    else:
        payload.extend(b"\x01" * resize)
    with contextlib.suppress(MalformedBatch):
        batch = decode_batch(bytes(payload))
        assert len(batch) >= 1
        assert min(batch.prices) > 0


def test_an_empty_batch_has_no_wire_form() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_columns("binance", "BTCUSDT", array("q"), array("q"), array("q"), array("q"), b"")
