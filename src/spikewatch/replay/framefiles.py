"""Recordings of raw WebSocket frames -> trades, decoded by the exchange's own batch
parser thousands of frames at a time (see :func:`spikewatch.replay.tape.frames_of_lines`
for the line formats); bad frames counted and logged once per kind, with their line."""

from __future__ import annotations

import bisect
import contextlib
import functools
import gzip
import zlib
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Final, NamedTuple, Protocol

from spikewatch.core.frames import FrameMarks, ParsedFrames
from spikewatch.core.model import Trade, TradeBatch
from spikewatch.replay.files import CHUNK, FileState, ReadStats, open_binary
from spikewatch.replay.tape import frames_of_lines, line_blocks

#: Frames handed to the exchange's parser at a time, at most: a batch parser builds a few
#: lists of this length, which stay in the CPU cache (65,536 at a time took 1.6x as long).
FRAME_GROUP: Final = 8192
#: Blocks a group of frames may span: bounds the memory a sparse recording holds on to.
_GROUP_BLOCKS: Final = 8


class FrameParser(Protocol):
    """What the readers need of an exchange: its name, and its batch parser (every
    :class:`spikewatch.exchanges.base.Exchange` has both)."""

    @property
    def name(self) -> str:
        """The exchange named in the trades, e.g. ``"binance"``, ``"binance-usdm"``."""
        ...

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        """Decode frames; every frame lands in exactly one list of the result."""
        ...


def frame_batches(
    path: Path, stats: ReadStats, size: int, exchange: FrameParser
) -> Iterator[TradeBatch]:
    """Trades of a frame recording, as the exchange's parser batches them."""
    state = FileState(path.name, stats)
    good = 0
    stats.files += 1
    try:
        with contextlib.closing(_parsed_frames(path, exchange, state, size)) as batches:
            for batch in batches:
                good += len(batch)
                yield batch
    finally:
        stats.trades += good


def read_frames(path: Path, stats: ReadStats, exchange: FrameParser) -> Iterator[Trade]:
    """The trades of :func:`frame_batches`, one :class:`Trade` at a time."""
    state = FileState(path.name, stats)
    good = 0
    stats.files += 1
    try:
        with contextlib.closing(_parsed_frames(path, exchange, state, FRAME_GROUP)) as batches:
            for batch in batches:
                for trade in batch.trades():
                    good += 1
                    yield trade
    finally:
        stats.trades += good


class _Origin(NamedTuple):
    """Where frames waiting to be parsed were read: to name the line of a bad one."""

    first: int  # index of the block's first frame among the file's frames read
    line: int  # line number of the block's first line
    lines: list[bytes]  # the block's lines
    keep: bytes | None  # as given to frames_of_lines


def _parsed_frames(
    path: Path, exchange: FrameParser, state: FileState, size: int
) -> Generator[TradeBatch, None, None]:
    """The trade batches of a recording, its frames parsed ``size`` at a time at most.

    Read a block (1 MiB) at a time: lines split and cleaned in bulk, lines that cannot
    hold a trade left unparsed, the frames of consecutive blocks parsed together. Bad
    frames are counted in ``state``; lines that are not blank in its stats' rows.
    """
    # the venue's own markers, where its adapter has them; else every line is parsed
    marks: FrameMarks | None = getattr(exchange, "frame_marks", None)
    cap = min(size, FRAME_GROUP)
    waiting: list[bytes] = []
    origins: list[_Origin] = []
    taken = 0  # frames read so far
    line = 1  # number of the next block's first line
    rows = 0
    try:
        with open_binary(path) as handle:
            # Read in this thread: a ReadAhead thread made whole replays of recordings
            # slower on two cores (median of 8 alternate runs of the 995,200 frames of
            # bench_replay.py: 1.98 s with it, 1.74 s without), contending for the GIL.
            chunks = iter(functools.partial(handle.read, CHUNK), b"")
            for lines, events in line_blocks(chunks, marks.event if marks else None):
                keep = None
                # A block of trade frames only (the usual recording of @trade streams) is
                # read without a look at each line; see _judge for what that leaves out.
                if marks is not None and events < len(lines):
                    keep = marks.line
                frames, count = frames_of_lines(lines, keep)
                rows += count
                if frames:
                    origins.append(_Origin(taken, line, lines, keep))
                    waiting += frames
                    taken += len(frames)
                line += len(lines)
                if len(waiting) * 2 >= cap or len(origins) >= _GROUP_BLOCKS:
                    yield from _parse_waiting(exchange, state, marks, waiting, origins, cap)
                    waiting = []
                    origins = []
            if waiting:
                yield from _parse_waiting(exchange, state, marks, waiting, origins, cap)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: corrupt or truncated compressed file ({exc})") from exc
    finally:
        state.stats.rows += rows


def _parse_waiting(
    exchange: FrameParser,
    state: FileState,
    marks: FrameMarks | None,
    frames: list[bytes],
    origins: list[_Origin],
    cap: int,
) -> Iterator[TradeBatch]:
    """Parse ``frames`` in groups of at most ``cap`` (of even sizes); count bad frames."""
    groups = -(-len(frames) // cap)
    step = -(-len(frames) // groups)
    first = origins[0].first
    for start in range(0, len(frames), step):
        group = frames[start : start + step]
        parsed = exchange.parse_batch(group)
        if parsed.errors:
            _judge(state, marks, parsed, group, origins, first + start)
        for item in parsed.batches:  # a short run may come as single trades
            yield item if isinstance(item, TradeBatch) else TradeBatch.from_trades([item])


def _judge(
    state: FileState,
    marks: FrameMarks | None,
    parsed: ParsedFrames,
    group: list[bytes],
    origins: list[_Origin],
    first: int,
) -> None:
    """Count the group's bad frames; log the first of each kind with its line number."""
    starts = [origin.first for origin in origins]
    for index, exc in parsed.errors:
        frame = group[index]
        origin = origins[bisect.bisect_right(starts, first + index) - 1]
        if origin.keep is None and marks is not None and marks.line not in frame:
            # a block of trade frames is parsed whole: a frame in it that another block
            # would have skipped unparsed is not judged either
            continue
        line = None
        if exc.kind not in state.logged:
            line = _line_of(origin, first + index - origin.first)
        state.bad(exc.kind, exc.detail, frame, line)


def _line_of(origin: _Origin, nth: int) -> int:
    """The line number of the ``nth`` frame read from ``origin``'s block."""
    keep = origin.keep
    read = [
        i
        for i, line in enumerate(origin.lines)
        if (text := line.strip()) and (keep is None or keep in text)
    ]
    return origin.line + read[nth]
