"""A tape: recorded trade events in time order, each kept as the exchange's own JSON.

The simulator serves a tape; readers build one from raw frame recordings (bytes kept
exactly as received) or from historical trades (frames written in Binance's format).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from spikewatch.core.decimal import SCALE
from spikewatch.core.model import Side, Trade


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


def _fmt(units: int) -> str:
    whole, frac = divmod(units, SCALE)
    return f"{whole}.{frac:08d}"


def trade_payload(trade: Trade) -> bytes:
    """A Binance spot ``@trade`` event for ``trade`` (event time = trade time)."""
    ms = trade.time_us // 1000
    maker = "true" if trade.side is Side.SELL else "false"
    return (
        f'{{"e":"trade","E":{ms},"s":"{trade.symbol}","t":{trade.trade_id},'
        f'"p":"{_fmt(trade.price)}","q":"{_fmt(trade.qty)}","T":{ms},"m":{maker},"M":true}}'
    ).encode()


def entry_from_trade(trade: Trade) -> TapeEntry:
    """A tape entry for a trade read from a historical file."""
    return TapeEntry(trade.symbol, trade.trade_id, trade.time_us // 1000, trade_payload(trade))


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


def read_frame_lines(path: str | Path) -> Iterator[bytes]:
    """Frames from a JSON-lines recording (plain or .gz).

    Accepts lines that are a frame, ``<recv_ns> <frame>`` (hftbacktest captures) and the
    ``spikewatch record`` format ``{"recv_ns":..,"frame":..}``.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            if line[:1].isdigit():
                _, _, line = line.partition(b" ")
            elif line.startswith(b'{"recv_ns"'):
                line = _recorded_frame(line)
            yield line


class _Recorded(msgspec.Struct):
    recv_ns: int
    frame: str


def _recorded_frame(line: bytes) -> bytes:
    try:
        return msgspec.json.decode(line, type=_Recorded).frame.encode()
    except msgspec.DecodeError:
        return line


def tape_from_frames(frames: Iterable[bytes]) -> list[TapeEntry]:
    """Trade entries of recorded frames, in recorded order (other frames are skipped)."""
    return [e for e in map(entry_from_frame, frames) if e is not None]


def tape_from_trades(trades: Iterable[Trade]) -> list[TapeEntry]:
    """Tape entries for historical trades."""
    return [entry_from_trade(t) for t in trades]


def merge_by_time(tapes: Iterable[list[TapeEntry]]) -> list[TapeEntry]:
    """One tape of several symbols' tapes, by time then symbol (stable)."""
    merged = [entry for tape in tapes for entry in tape]
    merged.sort(key=lambda e: e.time_ms)
    return merged
