"""Opening trade files and cutting them into blocks of whole lines: plain, ``.gz`` or a
``.zip`` of one CSV, streamed in chunks (never read whole), with the per-file counts of
bad rows that every reader keeps (see :mod:`spikewatch.replay.readers`)."""

from __future__ import annotations

import contextlib
import gzip
import logging
import queue
import threading
import zipfile
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

log = logging.getLogger("spikewatch.replay.readers")

CHUNK: Final = 1 << 20
#: A "line" longer than this is not a trade row (a binary file, a missing newline): it is
#: counted and skipped rather than buffered without bound.
_MAX_LINE: Final = 1 << 16


@dataclass(slots=True)
class ReadStats:
    """What the readers saw: files opened, data rows (or frames), trades and bad rows."""

    files: int = 0
    rows: int = 0  # data rows of CSVs (header and blank lines excluded), lines of frames
    trades: int = 0
    bad_rows: dict[str, int] = field(default_factory=dict)  # by kind, e.g. "bad_price"

    @property
    def bad(self) -> int:
        """All bad rows, of every kind."""
        return sum(self.bad_rows.values())

    @property
    def skipped(self) -> int:
        """Lines of recordings that held no trade (other streams: depth, tickers...),
        skipped quietly; 0 for CSVs, whose every row is a trade or a bad row."""
        return max(0, self.rows - self.trades - self.bad)


class Readable(Protocol):
    """A binary stream: an open file, a GzipFile or a zip member."""

    def read(self, size: int = -1, /) -> bytes: ...


@contextlib.contextmanager
def zip_member(path: Path) -> Iterator[tuple[Readable, str]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a readable zip file ({exc})") from exc
    with archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
        if len(names) != 1:
            csvs = [n for n in names if n.lower().endswith(".csv")]
            if len(csvs) != 1:
                raise ValueError(f"{path}: expected one CSV in the zip, found {names[:5]}")
            names = csvs
        with archive.open(names[0]) as member:
            yield member, names[0]


@contextlib.contextmanager
def open_binary(path: Path) -> Iterator[Readable]:
    """The decompressed bytes of a plain, .gz or .zip file."""
    suffix = path.suffix.lower()
    if suffix == ".zip":
        with zip_member(path) as (member, _):
            yield member
    elif suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            yield handle
    else:
        with open(path, "rb") as handle:
            yield handle


def read_head(path: Path, handle: Readable) -> bytes:
    try:
        return handle.read(1 << 14)
    except gzip.BadGzipFile:  # its message quotes the first bytes
        raise ValueError(
            f"{path}: named .gz, but not gzip-compressed: rename it without .gz"
        ) from None
    except (EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: corrupt or truncated compressed file ({exc})") from exc


class ReadAhead:
    """``handle.read(size)`` until the end, one chunk ahead in a thread of its own.

    Decompression (zlib releases the GIL) then overlaps the parsing of the chunk before
    it: about a fifth of the time of a column-wise replay of a .gz file, saved on two
    cores. The thread is owned:
    started here, stopped and joined by :meth:`close` (before the file is closed); its
    queue holds two chunks at most; an error it meets is raised in the reader."""

    def __init__(self, handle: Readable, size: int) -> None:
        self._handle = handle
        self._size = size
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="spikewatch-read", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        chunk: bytes | BaseException = b"?"
        while chunk and not self._stop.is_set():
            try:
                chunk = self._handle.read(self._size)
            except BaseException as exc:  # handed to the reader, raised there
                chunk = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(chunk, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if isinstance(chunk, BaseException):
                return

    def read(self) -> bytes:
        """The next chunk; b"" at the end."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread and wait for it (it finishes the read it is in)."""
        self._stop.set()
        self._thread.join()


class ReadInline:
    """``handle.read(size)`` in the caller's thread: for the per-trade path, whose pure
    Python parsing holds the GIL, so that a read-ahead thread would only contend for it."""

    def __init__(self, handle: Readable, size: int) -> None:
        self._handle = handle
        self._size = size

    def read(self) -> bytes:
        """The next chunk; b"" at the end."""
        return self._handle.read(self._size)

    def close(self) -> None:
        """Nothing to stop."""


def read_blocks(
    path: Path, handle: Readable, state: FileState, *, read_ahead: bool
) -> Generator[bytes, None, None]:
    """The stream a chunk of whole lines at a time, each block ending with ``\\n`` (one is
    added to a last line without it); a line too long to be a row is counted and dropped.
    Close it before the handle (a read-ahead thread reads from the handle)."""
    reader = ReadAhead(handle, CHUNK) if read_ahead else ReadInline(handle, CHUNK)
    try:
        yield from _cut_lines(path, reader, state)
    finally:
        reader.close()


def _cut_lines(path: Path, reader: ReadAhead | ReadInline, state: FileState) -> Iterator[bytes]:
    tail = b""
    try:
        while chunk := reader.read():
            data = tail + chunk if tail else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no newline yet: keep it, unless it is too long to be a row
                tail = data
                if len(tail) > _MAX_LINE:
                    if not state.skip_to_newline:  # count a long line once
                        state.bad("bad_columns", "a line longer than 64 KiB", tail[:80])
                        state.skip_to_newline = True
                    tail = b""
                continue
            tail = data[cut:]
            block = data[:cut]
            if state.skip_to_newline:  # the rest of the long line
                block = block[block.index(b"\n") + 1 :]
                state.skip_to_newline = False
            if block:
                yield block
    except (EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: corrupt or truncated compressed file ({exc})") from exc
    if tail and not state.skip_to_newline:
        yield tail + b"\n"  # a last line without "\n"


def line_batches(
    path: Path, handle: Readable, state: FileState
) -> Generator[list[str], None, None]:
    """The lines of a stream, a chunk's worth at a time (without their ``\\n``)."""
    with contextlib.closing(read_blocks(path, handle, state, read_ahead=False)) as blocks:
        for block in blocks:
            lines = block.decode("utf-8", "replace").split("\n")
            lines.pop()  # "" after the last "\n"
            yield lines


class FileState:
    """Per-file counters for the slow path: bad rows (logged once per kind), blank lines."""

    __slots__ = ("bad_total", "blank", "logged", "name", "skip_to_newline", "stats")

    def __init__(self, name: str, stats: ReadStats) -> None:
        self.name = name
        self.stats = stats
        self.logged: set[str] = set()
        self.blank = 0
        self.bad_total = 0
        self.skip_to_newline = False

    def bad(self, kind: str, detail: str, row: str | bytes, line: int | None = None) -> None:
        counts = self.stats.bad_rows
        counts[kind] = counts.get(kind, 0) + 1
        self.bad_total += 1
        if kind not in self.logged:
            self.logged.add(kind)
            where = f" line {line}" if line is not None else ""
            log.warning(
                "%s%s: skipped a bad row (%s: %s): %.80r; further %s rows of this file "
                "are counted, not logged",
                self.name,
                where,
                kind,
                detail,
                row,
                kind,
            )
