"""A tape: recorded trade events in time order, each kept as the exchange's own JSON.

The simulator serves a tape; readers build one from raw frame recordings (bytes kept
exactly as received) or from historical trades (frames written in Binance's format: spot's
by default, or the venue codec's ``trade_frame``).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec

from spikewatch.core.model import Trade
from spikewatch.exchanges.binance.codec import SpotCodec


class TapeEntry(msgspec.Struct, frozen=True, gc=False):
    """One trade event: its symbol, id and time, and the raw ``@trade`` payload."""

    symbol: str  # upper-case
    trade_id: int
    time_ms: int
    payload: bytes  # the inner event object, e.g. b'{"e":"trade",...}'


class _Peek(msgspec.Struct):
    e: str | None = None
    s: str | None = None
    t: int | None = None
    T: int | None = None


class _Wrapped(msgspec.Struct):
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_peek = msgspec.json.Decoder(_Peek).decode
_wrapped = msgspec.json.Decoder(_Wrapped).decode


_SPOT = SpotCodec()


def trade_payload(trade: Trade) -> bytes:
    """A Binance spot ``@trade`` event for ``trade`` (event time = trade time)."""
    return _SPOT.trade_frame(trade)


def entry_from_trade(trade: Trade, encode: Callable[[Trade], bytes] = trade_payload) -> TapeEntry:
    """A tape entry for a trade read from a historical file, its event made by ``encode``."""
    return TapeEntry(trade.symbol, trade.trade_id, trade.time_us // 1000, encode(trade))


def entry_from_frame(frame: bytes) -> TapeEntry | None:
    """A tape entry for a raw or combined ``@trade`` frame; None for anything else."""
    try:
        inner = frame
        if frame.startswith(b'{"stream"'):
            raw = _wrapped(frame).data
            if not raw:
                return None
            inner = bytes(raw)
        peek = _peek(inner)
    except msgspec.DecodeError:
        return None
    if peek.e != "trade" or peek.s is None or peek.t is None or peek.T is None:
        return None
    return TapeEntry(peek.s.upper(), peek.t, peek.T, inner)


#: Decompressed bytes read at a time: lines are split and cleaned a block at a time
#: (one ``bytes.split``, one ``map``) instead of one ``readline`` and a few calls each.
FRAME_BLOCK = 1 << 20

_RECORDED_HEAD = b'{"recv_ns"'
#: Every line that starts with _RECORDED_HEAD sorts in [_RECORDED_HEAD, _RECORDED_END).
_RECORDED_END = b'{"recv_ns#'


def read_frame_lines(path: str | Path) -> Iterator[bytes]:
    """Frames from a JSON-lines recording (plain or .gz).

    Accepts lines that are a frame, ``<recv_ns> <frame>`` (hftbacktest captures) and the
    ``spikewatch record`` format ``{"recv_ns":..,"frame":..}``; blank lines are skipped.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for lines, _ in line_blocks(iter(lambda: handle.read(FRAME_BLOCK), b"")):
            yield from frames_of_lines(lines)[0]


def line_blocks(
    chunks: Iterable[bytes], counting: bytes | None = None
) -> Iterator[tuple[list[bytes], int]]:
    """The lines of a stream cut into ``chunks``, a chunk's worth at a time, and how many
    times ``counting`` (no newline in it) occurs in those lines (0 without it).

    Lines come without their ``\\n``; one may span any number of chunks, and the last may
    lack its ``\\n``. The chunks are split where they lie, never copied whole.
    """
    begun: list[bytes] = []  # the start of a line that has not ended yet
    for chunk in chunks:
        lines = chunk.split(b"\n")
        last = lines.pop()  # what follows the last "\n": the start of the next line
        if not lines:
            begun.append(last)
            continue
        count = chunk.count(counting) - last.count(counting) if counting else 0
        if begun:  # the first line began in earlier chunks
            first = lines[0]
            begun.append(first)
            lines[0] = b"".join(begun)
            begun.clear()
            if counting:
                count += lines[0].count(counting) - first.count(counting)
        if last:
            begun.append(last)
        yield lines, count
    rest = b"".join(begun)
    if rest:
        yield [rest], rest.count(counting) if counting else 0


def frames_of_lines(lines: list[bytes], keep: bytes | None = None) -> tuple[list[bytes], int]:
    """The frames of recorded lines (without their ``\\n``), and how many lines were not
    blank; each line read as :func:`read_frame_lines` reads it.

    With ``keep``, only the lines that contain it are read: the others are counted, not
    looked at (a reader's cheap way past other streams' frames).
    """
    lines = list(map(bytes.strip, lines))
    blank = lines.count(b"")
    rows = len(lines) - blank
    if keep is not None:
        lines = [line for line in lines if keep in line]
    elif blank:
        lines = [line for line in lines if line]
    if not lines:
        return lines, rows
    # What each line needs is told by its first bytes, so min() and max() (C loops over
    # the block) tell whether every line is a bare frame, or every line has a prefix.
    low = min(lines)
    if low >= b"{":  # no line starts with a digit
        if low >= _RECORDED_END or max(lines) < _RECORDED_HEAD:
            return lines, rows  # bare frames, none in the recorder's wrapper
        if low >= _RECORDED_HEAD and max(lines) < _RECORDED_END:
            try:  # all in the recorder's wrapper
                return [_recorded(line).frame.encode() for line in lines], rows
            except msgspec.DecodeError:
                pass
    elif low >= b"0" and max(lines) < b":":  # all "<recv_ns> <frame>"
        return [line.partition(b" ")[2] for line in lines], rows
    return [_frame_of_line(line) for line in lines], rows


def _frame_of_line(line: bytes) -> bytes:
    """The frame of one stripped, non-blank line."""
    if line[:1].isdigit():
        return line.partition(b" ")[2]
    if line.startswith(_RECORDED_HEAD):
        return _recorded_frame(line)
    return line


class _Recorded(msgspec.Struct):
    recv_ns: int
    frame: str


_recorded = msgspec.json.Decoder(_Recorded).decode


def _recorded_frame(line: bytes) -> bytes:
    try:
        return _recorded(line).frame.encode()
    except msgspec.DecodeError:
        return line


def tape_from_frames(frames: Iterable[bytes]) -> list[TapeEntry]:
    """Trade entries of recorded frames, in recorded order (other frames are skipped)."""
    return [e for e in map(entry_from_frame, frames) if e is not None]


def tape_from_trades(
    trades: Iterable[Trade], encode: Callable[[Trade], bytes] = trade_payload
) -> list[TapeEntry]:
    """Tape entries for historical trades, their events made by ``encode`` (spot's)."""
    return [entry_from_trade(t, encode) for t in trades]


def merge_by_time(tapes: Iterable[list[TapeEntry]]) -> list[TapeEntry]:
    """One tape of several symbols' tapes, by time then symbol (stable)."""
    merged = [entry for tape in tapes for entry in tape]
    merged.sort(key=lambda e: e.time_ms)
    return merged
