"""The wire form of a batch of trades of one ``(exchange, symbol)``: a versioned binary
layout, columns as the kernel holds them.

Version 1, little-endian::

    magic     3 bytes  b"SWT"
    version   u8       1
    count     u32      trades in the batch (>= 1)
    first_id  i64      trade id of the first trade
    last_id   i64      trade id of the last trade
    exch_len  u8, sym_len u8, then the exchange and symbol names (ASCII)
    trade_ids   count x i64
    prices      count x i64   1e-8 units (as :class:`~spikewatch.core.model.Trade` holds them)
    qtys        count x i64   1e-8 units
    times_us    count x i64   exchange time, µs since the epoch
    buyer_is_maker  count bytes, 0 or 1

33 bytes a trade plus a header of 26 + names: a fifth of a Binance trade frame (168 bytes
of JSON on average in the fixtures), half a CSV row (74). Both ends are a copy of each
column (``array.tobytes`` / ``frombytes``), no per-trade Python work: the bus moves the
kernel's own :class:`~spikewatch.core.model.TradeBatch` columns.
Values are the exact scaled integers, so a decoded batch equals the encoded one.

A payload that is not such a batch raises :class:`MalformedBatch` with a ``kind`` to count
by; the consumer counts and skips it, never crashes on it.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Final

import msgspec

from spikewatch.bus.subjects import check_token
from spikewatch.core.model import TradeBatch

MAGIC: Final = b"SWT"
VERSION: Final = 1
_HEAD: Final = struct.Struct("<3sBIqqBB")
HEADER_SIZE: Final = _HEAD.size
#: bytes per trade in the columns
TRADE_SIZE: Final = 4 * 8 + 1
_SWAP: Final = sys.byteorder == "big"  # the layout is little-endian; arrays are native


class MalformedBatch(ValueError):
    """A payload that is not a trade batch of a known version; ``kind`` names why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class BatchHeader(msgspec.Struct, frozen=True):
    """What a batch says about itself, readable without decoding the columns."""

    version: int
    exchange: str
    symbol: str
    first_id: int
    last_id: int
    count: int


def encode_batch(batch: TradeBatch) -> bytes:
    """The wire form of ``batch`` (at least one trade)."""
    return encode_columns(
        batch.exchange,
        batch.symbol,
        batch.trade_ids,
        batch.prices,
        batch.qtys,
        batch.times_us,
        batch.buyer_is_maker,
    )


def encode_columns(
    exchange: str,
    symbol: str,
    trade_ids: array[int],
    prices: array[int],
    qtys: array[int],
    times_us: array[int],
    buyer_is_maker: bytes | bytearray,
) -> bytes:
    """:func:`encode_batch` of columns not (yet) in a :class:`TradeBatch` (the publisher's
    buffers): ``array('q')`` s of one length, and one 0/1 byte per trade."""
    count = len(trade_ids)
    if count == 0:
        raise ValueError("an empty batch has no wire form (it names its symbol by a trade)")
    if not count == len(prices) == len(qtys) == len(times_us) == len(buyer_is_maker):
        raise ValueError("columns differ in length")
    name = exchange.encode("ascii")
    sym = symbol.encode("ascii")
    if len(name) > 255 or len(sym) > 255:
        raise ValueError("exchange and symbol names are at most 255 bytes")
    head = _HEAD.pack(MAGIC, VERSION, count, trade_ids[0], trade_ids[-1], len(name), len(sym))
    columns = (trade_ids, prices, qtys, times_us)
    if _SWAP:  # pragma: no cover - no big-endian machine runs the tests
        swapped = []
        for column in columns:
            copy = array("q", column)
            copy.byteswap()
            swapped.append(copy)
        columns = tuple(swapped)  # type: ignore[assignment]
    return b"".join((head, name, sym, *(c.tobytes() for c in columns), bytes(buyer_is_maker)))


def read_header(payload: bytes | bytearray | memoryview) -> BatchHeader:
    """The header of a batch, checked against the payload's length; MalformedBatch if the
    payload is not a batch of a known version."""
    size = len(payload)
    if size < HEADER_SIZE:
        raise MalformedBatch("truncated", f"{size} bytes, shorter than a header")
    magic, version, count, first_id, last_id, name_len, sym_len = _HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise MalformedBatch("not_a_batch", f"starts with {bytes(magic)!r}, not {MAGIC!r}")
    if version != VERSION:
        raise MalformedBatch("unknown_version", f"version {version}; this reader knows {VERSION}")
    if count == 0:
        raise MalformedBatch("empty", "a batch of no trades")
    expected = HEADER_SIZE + name_len + sym_len + count * TRADE_SIZE
    if size != expected:
        raise MalformedBatch("length", f"{size} bytes for {count} trades (expected {expected})")
    try:
        start = HEADER_SIZE
        exchange = bytes(payload[start : start + name_len]).decode("ascii")
        symbol = bytes(payload[start + name_len : start + name_len + sym_len]).decode("ascii")
        check_token("exchange", exchange)
        check_token("symbol", symbol)
    except ValueError as exc:  # (UnicodeDecodeError is one)
        raise MalformedBatch("bad_name", str(exc)) from None
    return BatchHeader(VERSION, exchange, symbol, first_id, last_id, count)


def decode_batch(payload: bytes | bytearray | memoryview) -> TradeBatch:
    """The batch :func:`encode_batch` made; MalformedBatch for anything else, including
    values no parser lets through (price or quantity <= 0, a side byte other than 0/1),
    so that a bad message costs itself and never the kernel."""
    head = read_header(payload)
    view = memoryview(payload)
    count = head.count
    offset = HEADER_SIZE + len(head.exchange) + len(head.symbol)
    columns = []
    for _ in range(4):
        column = array("q")
        column.frombytes(view[offset : offset + 8 * count])
        if _SWAP:  # pragma: no cover
            column.byteswap()
        columns.append(column)
        offset += 8 * count
    ids, prices, qtys, times = columns
    makers = bytes(view[offset : offset + count])
    if ids[0] != head.first_id or ids[-1] != head.last_id:
        raise MalformedBatch(
            "header_mismatch",
            f"header ids {head.first_id}..{head.last_id}, columns {ids[0]}..{ids[-1]}",
        )
    if max(makers) > 1:
        raise MalformedBatch("bad_side", "a buyer_is_maker byte other than 0 or 1")
    if min(prices) <= 0 or min(qtys) <= 0:
        raise MalformedBatch("bad_value", "a price or quantity <= 0")
    if min(times) < 0:
        raise MalformedBatch("bad_value", "a trade time before the epoch")
    return TradeBatch(head.exchange, head.symbol, ids, prices, qtys, times, makers)


def message_id(exchange: str, symbol: str, first_id: int, last_id: int) -> str:
    """The ``Nats-Msg-Id`` of a batch: the same trades published again (an ingest restart,
    a retried publish) get the same id, and JetStream drops the repeat within its
    duplicate window."""
    return f"{exchange}.{symbol}.{first_id}.{last_id}"
