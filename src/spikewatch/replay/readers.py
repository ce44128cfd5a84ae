"""Historical trade files -> :class:`Trade`: data.binance.vision CSVs and frame recordings.

Formats (see :func:`detect_format`):

* ``"trades"``: data.binance.vision ``trades`` CSV,
  ``id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]``. Spot dumps have no
  header; futures dumps may start with one.
* ``"aggtrades"``: data.binance.vision ``aggTrades`` CSV, ``agg_trade_id,price,quantity,
  first_trade_id,last_trade_id,transact_time,is_buyer_maker[,is_best_match]``; one row is
  one taker order, and its ``agg_trade_id`` becomes the trade id.
* ``"frames"``: JSON lines of raw WebSocket frames (bare, ``<recv_ns> <frame>`` or
  ``spikewatch record``'s wrapper, see :func:`spikewatch.replay.tape.frames_of_lines`),
  decoded by the exchange's own batch parser, thousands at a time. Lines that cannot hold
  a trade (other streams: depth, bookTicker...) are counted and skipped unparsed.

CSVs may be plain, ``.gz`` or a ``.zip`` holding one CSV (the data.binance.vision
download); recordings plain or ``.gz``. Everything is streamed in chunks, never read
whole. Bad rows are counted in :class:`ReadStats`, logged once per kind per file, and
skipped.

Docs: https://github.com/binance/binance-public-data
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import functools
import gzip
import itertools
import logging
import queue
import threading
import zipfile
import zlib
from array import array
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple, Protocol, TypeAlias

from spikewatch.core import accel
from spikewatch.core.decimal import BadNumber, UnitsCache, float_to_units, parse_units
from spikewatch.core.frames import FrameMarks, ParsedFrames
from spikewatch.core.model import Side, Trade, TradeBatch
from spikewatch.core.npparse import parse_block
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.tape import frames_of_lines, line_blocks

log = logging.getLogger(__name__)

FORMATS: Final = ("trades", "aggtrades", "frames")
#: The exchange of the trades read when none is given.
EXCHANGE: Final = "binance"

#: Times at or above this are microseconds, below it milliseconds. Spot dumps switched
#: from ms to µs on 2025-01-01 (binance-public-data README); 1e14 ms is the year 5138
#: and 1e14 µs is 1973, so the magnitude tells the unit of each value apart.
_US_FROM: Final = 10**14
#: 10000-01-01T00:00Z in µs: anything later is not a time.
_US_END: Final = 253_402_300_800_000_000
_MAX_ID: Final = 2**63 - 1

_CHUNK: Final = 1 << 20
#: A "line" longer than this is not a trade row (a binary file, a missing newline): it is
#: counted and skipped rather than buffered without bound.
_MAX_LINE: Final = 1 << 16
#: Distinct price/qty strings kept per file; a day of BTCUSDT holds a few thousand.
_CACHE_SIZE: Final = 1 << 16

#: Trades per batch that :func:`read_batches` yields at most, unless told otherwise.
BATCH_SIZE: Final = 65536
#: Frames handed to the exchange's parser at a time, at most: a batch parser builds a few
#: lists of this length, which stay in the CPU cache (65,536 at a time took 1.6x as long).
_FRAME_GROUP: Final = 8192
#: Blocks a group of frames may span: bounds the memory a sparse recording holds on to.
_GROUP_BLOCKS: Final = 8
_BOM: Final = "\ufeff".encode()

_QUOTES: Final = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_NAME_MARKERS: Final = ("trades", "aggTrades", "aggtrades", "trade")

_SELL, _BUY = Side.SELL, Side.BUY
# The side column, also as the last field of a line: "\n" is split off, "\r" (CRLF files)
# is not, so those spellings are looked up too instead of stripping every line.
_SIDES: Final[dict[str, Side]] = {
    f"{word}{end}": side
    for words, side in ((("True", "true", "TRUE"), _SELL), (("False", "false", "FALSE"), _BUY))
    for word in words
    for end in ("", "\r")
}
#: The same spellings -> buyer_is_maker (1: the taker sold).
_MAKER: Final[dict[str, int]] = {word: int(side is _SELL) for word, side in _SIDES.items()}


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


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the used columns of a CSV format are, and how many columns a row may have."""

    price: int
    qty: int
    time: int
    side: int
    widths: tuple[int, ...]  # allowed column counts (without and with is_best_match)


_LAYOUTS: Final = {
    "trades": _Layout(price=1, qty=2, time=4, side=5, widths=(6, 7)),
    "aggtrades": _Layout(price=1, qty=2, time=5, side=6, widths=(7, 8)),
}


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


# -- public API ------------------------------------------------------------------------


def read_trades(
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    symbol: str | None = None,
    stats: ReadStats | None = None,
    exchange: FrameParser | None = None,
) -> TradeReader:
    """Stream the trades of ``paths``, file after file in the order given.

    ``fmt`` is one of :data:`FORMATS`, or None to detect each file's format. ``symbol``
    names the symbol of CSV files (default: from each file name); frames name their own
    symbol, so it is not used for them. Times come out in µs whether a file holds ms or
    µs (told apart per value). Counts are added to ``stats``. ``exchange`` (default
    :class:`~spikewatch.exchanges.binance.BinanceSpot`) parses the frames, and its name
    is the exchange of every trade, of CSV rows too.

    The result iterates like a generator: ``close()`` it to stop early and close the open
    file. :func:`spikewatch.replay.runner.replay` reads it a batch at a time instead (see
    :meth:`TradeReader.batches`). Every file is checked before the first trade is read, so
    a missing file, an unknown format or a CSV without a symbol raises here
    (FileNotFoundError, ValueError), not hours into a replay.
    """
    plan = _plan(paths, fmt, symbol)
    return TradeReader(plan, stats if stats is not None else ReadStats(), exchange)


def read_batches(
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    symbol: str | None = None,
    stats: ReadStats | None = None,
    size: int = BATCH_SIZE,
    exchange: FrameParser | None = None,
) -> Generator[TradeBatch, None, None]:
    """The trades :func:`read_trades` gives, as :class:`TradeBatch` es of at most ``size``
    trades of one symbol each, read column-wise without a :class:`Trade` per row.

    The same values, bad rows, counts and checks as :func:`read_trades` (its arguments
    mean the same). CSV blocks of clean rows are parsed in bulk (with numpy when it is
    installed); a block with anything unusual in it is read row by row, as before.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    plan = _plan(paths, fmt, symbol)
    stats = stats if stats is not None else ReadStats()
    return _read_all_batches(plan, stats, size, exchange if exchange is not None else BinanceSpot())


class TradeReader(Iterator[Trade]):
    """What :func:`read_trades` returns: an iterator of trades that closes its file on
    ``close()``, and that a batch consumer can read as batches instead."""

    __slots__ = ("_exchange", "_plan", "_started", "_stats", "_trades")

    def __init__(
        self,
        plan: list[tuple[Path, str, str]],
        stats: ReadStats,
        exchange: FrameParser | None = None,
    ) -> None:
        self._plan = plan
        self._stats = stats
        self._exchange = exchange if exchange is not None else BinanceSpot()
        self._trades = _read_all(plan, stats, self._exchange)
        self._started = False

    def __next__(self) -> Trade:
        self._started = True
        return next(self._trades)

    def close(self) -> None:
        """Stop reading: close the open file (counts so far stay in the stats)."""
        self._trades.close()

    @property
    def started(self) -> bool:
        """True once a trade (or the batches) has been taken."""
        return self._started

    def batches(self, size: int = BATCH_SIZE) -> Generator[TradeBatch, None, None]:
        """The same trades as :func:`read_batches` reads them, instead of one by one;
        only before the first trade has been taken."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if self._started:
            raise RuntimeError("trades were already read one by one from this reader")
        self._started = True
        self._trades.close()
        return _read_all_batches(self._plan, self._stats, size, self._exchange)


def _plan(
    paths: Sequence[str | Path], fmt: str | None, symbol: str | None
) -> list[tuple[Path, str, str]]:
    """(path, format, symbol) of each file, checked before anything is read."""
    if isinstance(paths, str | Path):  # a str is a Sequence[str] too: one path, not chars
        paths = [paths]
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    forced = _clean_symbol(symbol) if symbol is not None else None
    plan: list[tuple[Path, str, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            raise ValueError(f"{path} is a directory: give the files in it, e.g. {path}/*.gz")
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        if fmt is None:
            kind = detect_format(path)
        else:
            _check_text(path)
            kind = fmt
        if kind == "frames":
            if path.suffix.lower() == ".zip":
                raise ValueError(f"{path}: frame recordings are read plain or .gz, not .zip")
            plan.append((path, kind, ""))
            continue
        name = forced or symbol_from_filename(path) or _symbol_from_zip_member(path)
        if name is None:
            raise ValueError(
                f"{path}: cannot tell the symbol from the file name; "
                "pass it with --symbol (symbol=...)"
            )
        plan.append((path, kind, name))
    return plan


def detect_format(path: str | Path) -> str:
    """The format of a trade file, ``"trades"``, ``"aggtrades"`` or ``"frames"``.

    Decided by the first line (a header, or the shape of the first row); the file name
    decides only for an empty file. Raises ValueError naming the file if it cannot tell.
    """
    path = Path(path)
    with _open_binary(path) as handle:
        head = _read_head(path, handle)
    _refuse_binary(path, head)
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not first:
        hinted = _format_from_name(path.name)
        if hinted is None:
            raise ValueError(f"{path}: the file is empty; cannot tell its format")
        return hinted
    kind = _format_of_line(first)
    if kind is None:
        raise ValueError(
            f"{path}: not a Binance trades, aggTrades or frames file "
            f"(first line: {first[:80]!r}); pass the format if it is one"
        )
    return kind


def _check_text(path: Path) -> None:
    """Raise ValueError when ``path`` cannot be a trade file of any format (binary)."""
    with _open_binary(path) as handle:
        _refuse_binary(path, _read_head(path, handle))


_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZIP_MAGIC: Final = b"PK\x03\x04"
#: Control characters that no text trade file holds (tab, newline and return aside).
_CONTROL: Final = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


def _refuse_binary(path: Path, head: bytes) -> None:
    """Raise ValueError naming the fix when the (decompressed) ``head`` of ``path`` is
    not text: a compressed file without its suffix, or not a trade file at all. The
    message never quotes the bytes."""
    if head.startswith(_GZIP_MAGIC):
        raise ValueError(f"{path}: gzip-compressed, but not named .gz: rename it {path.name}.gz")
    if head.startswith(_ZIP_MAGIC):
        raise ValueError(f"{path}: a zip archive, but not named .zip: rename it {path.name}.zip")
    sample = head[:4096]
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        binary = any(c in _CONTROL for c in sample)
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise ValueError(
            f"{path}: not a text file; replay reads trade CSVs and JSON-lines frame "
            "recordings (plain, .gz or .zip)"
        )


def symbol_from_filename(path: str | Path) -> str | None:
    """The symbol in a data.binance.vision-style file name (``BTCUSDT-trades-...``), or None."""
    name = Path(path).name
    tokens = name.replace("_", "-").replace(".", "-").split("-")
    # The canonical layout: the token right before "-trades" / "-aggTrades".
    for before, token in itertools.pairwise(tokens):
        if token in _NAME_MARKERS and _is_symbol(before):
            return before
    # Otherwise the first all-caps token that ends in a common quote asset.
    for token in tokens:
        if len(token) >= 5 and _is_symbol(token) and token.endswith(_QUOTES):
            return token
    return None


# -- detection helpers ---------------------------------------------------------------


def _is_symbol(token: str) -> bool:
    return token.isascii() and token.isalnum() and token.isupper()


def _clean_symbol(symbol: str) -> str:
    cleaned = symbol.strip().upper()
    if not (cleaned.isascii() and cleaned.isalnum()):
        raise ValueError(f"not a symbol: {symbol!r} (expected letters and digits, e.g. BTCUSDT)")
    return cleaned


def _format_from_name(name: str) -> str | None:
    lowered = name.lower()
    if "aggtrades" in lowered:
        return "aggtrades"
    if ".jsonl" in lowered or "trade-msgs" in lowered:
        return "frames"
    if "trades" in lowered:
        return "trades"
    return None


def _is_bool(text: str) -> bool:
    return text.strip() in _SIDES


def _format_of_line(line: str) -> str | None:
    if line.startswith("{"):
        return "frames"
    stamp, _, rest = line.partition(" ")
    if stamp.isdigit() and rest.lstrip().startswith("{"):  # "<recv_ns> <frame>"
        return "frames"
    fields = [f.strip() for f in line.split(",")]
    if _is_header(fields[0]):
        names = [f.lower() for f in fields]
        if "agg_trade_id" in names or "first_trade_id" in names:
            return "aggtrades"
        if names[:3] == ["id", "price", "qty"]:
            return "trades"
        return None
    width = len(fields)
    if width == 6 and _is_bool(fields[5]):
        return "trades"
    if width == 7 and _is_bool(fields[5]) and _is_bool(fields[6]):
        return "trades"  # spot, with is_best_match
    if width == 7 and fields[5].isdigit() and _is_bool(fields[6]):
        return "aggtrades"  # futures, no is_best_match
    if width == 8 and fields[5].isdigit() and _is_bool(fields[6]):
        return "aggtrades"
    return None


def _is_header(first_field: str) -> bool:
    return first_field.replace("_", "").isalpha()


def _symbol_from_zip_member(path: Path) -> str | None:
    if path.suffix.lower() != ".zip":
        return None
    with _zip_member(path) as (_, member):
        return symbol_from_filename(member)


# -- opening files -----------------------------------------------------------------------


class _Readable(Protocol):
    """A binary stream: an open file, a GzipFile or a zip member."""

    def read(self, size: int = -1, /) -> bytes: ...


@contextlib.contextmanager
def _zip_member(path: Path) -> Iterator[tuple[_Readable, str]]:
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
def _open_binary(path: Path) -> Iterator[_Readable]:
    """The decompressed bytes of a plain, .gz or .zip file."""
    suffix = path.suffix.lower()
    if suffix == ".zip":
        with _zip_member(path) as (member, _):
            yield member
    elif suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            yield handle
    else:
        with open(path, "rb") as handle:
            yield handle


def _read_head(path: Path, handle: _Readable) -> bytes:
    try:
        return handle.read(1 << 14)
    except gzip.BadGzipFile:  # its message quotes the first bytes
        raise ValueError(
            f"{path}: named .gz, but not gzip-compressed: rename it without .gz"
        ) from None
    except (EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: corrupt or truncated compressed file ({exc})") from exc


class _ReadAhead:
    """``handle.read(size)`` until the end, one chunk ahead in a thread of its own.

    Decompression (zlib releases the GIL) then overlaps the parsing of the chunk before
    it: about a fifth of the time of a column-wise replay of a .gz file, saved on two
    cores. The thread is owned:
    started here, stopped and joined by :meth:`close` (before the file is closed); its
    queue holds two chunks at most; an error it meets is raised in the reader."""

    def __init__(self, handle: _Readable, size: int) -> None:
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


class _ReadInline:
    """``handle.read(size)`` in the caller's thread: for the per-trade path, whose pure
    Python parsing holds the GIL, so that a read-ahead thread would only contend for it."""

    def __init__(self, handle: _Readable, size: int) -> None:
        self._handle = handle
        self._size = size

    def read(self) -> bytes:
        """The next chunk; b"" at the end."""
        return self._handle.read(self._size)

    def close(self) -> None:
        """Nothing to stop."""


def _blocks(
    path: Path, handle: _Readable, state: _FileState, *, read_ahead: bool
) -> Generator[bytes, None, None]:
    """The stream a chunk of whole lines at a time, each block ending with ``\\n`` (one is
    added to a last line without it); a line too long to be a row is counted and dropped.
    Close it before the handle (a read-ahead thread reads from the handle)."""
    reader = _ReadAhead(handle, _CHUNK) if read_ahead else _ReadInline(handle, _CHUNK)
    try:
        yield from _cut_lines(path, reader, state)
    finally:
        reader.close()


def _cut_lines(path: Path, reader: _ReadAhead | _ReadInline, state: _FileState) -> Iterator[bytes]:
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


def _line_batches(
    path: Path, handle: _Readable, state: _FileState
) -> Generator[list[str], None, None]:
    """The lines of a stream, a chunk's worth at a time (without their ``\\n``)."""
    with contextlib.closing(_blocks(path, handle, state, read_ahead=False)) as blocks:
        for block in blocks:
            lines = block.decode("utf-8", "replace").split("\n")
            lines.pop()  # "" after the last "\n"
            yield lines


# -- reading ----------------------------------------------------------------------------


class _Units(UnitsCache):
    """Like the live parser's cache, but also rounds values written from floats."""

    __slots__ = ("rounded",)

    def __init__(self) -> None:
        super().__init__(_CACHE_SIZE)
        self.rounded = 0  # values with float noise that were rounded (see parse)

    def parse(self, text: str) -> int:
        """Exact units; files written from floats ("0.30000000000000004", "1e-05") are
        rounded to the 8-decimal value they stood for."""
        try:
            return parse_units(text)
        except BadNumber:
            frac = text.partition(".")[2]
            if len(frac) <= 8 and "e" not in text.lower():
                raise
            try:
                units = float_to_units(float(text))
            except ValueError as exc:  # float() of junk; BadNumber is a ValueError too
                raise BadNumber(str(exc)) from None
            self.rounded += 1
            return units


class _FileState:
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


def _read_all(
    plan: list[tuple[Path, str, str]], stats: ReadStats, exchange: FrameParser
) -> Generator[Trade, None, None]:
    for path, kind, symbol in plan:
        if kind == "frames":
            yield from _read_frames(path, stats, exchange)
        else:
            yield from _read_csv(path, _LAYOUTS[kind], symbol, stats, exchange.name)


def _read_csv(
    path: Path, layout: _Layout, symbol: str, stats: ReadStats, exchange: str
) -> Iterator[Trade]:
    """The hot loop: split each line, look values up, build the Trade; bad rows go slow."""
    state = _FileState(path.name, stats)
    prices, qtys = _Units(), _Units()
    sides = _SIDES
    make = Trade
    p_at, q_at, t_at, s_at = layout.price, layout.qty, layout.time, layout.side
    us_from, us_end, max_id = _US_FROM, _US_END, _MAX_ID
    width = 0  # this file's column count, taken from its first line
    header = 0
    good = 0
    stats.files += 1
    try:
        with (
            _open_binary(path) as handle,
            contextlib.closing(_line_batches(path, handle, state)) as batches,
        ):
            for lines in batches:
                if not width and lines:
                    lines[0] = lines[0].lstrip("\ufeff")  # a byte-order mark, if any
                    first = lines[0].split(",")
                    width = len(first) if len(first) in layout.widths else layout.widths[0]
                    if _is_header(first[0].strip()):
                        del lines[0]
                        header = 1
                for line in lines:
                    row = line.split(",")
                    try:
                        if len(row) != width:
                            raise ValueError
                        trade_id = int(row[0])
                        time = int(row[t_at])
                        if time < us_from:
                            time *= 1000
                        if not (0 < time < us_end and 0 <= trade_id <= max_id):
                            raise ValueError
                        trade = make(
                            exchange,
                            symbol,
                            trade_id,
                            prices[row[p_at]],
                            qtys[row[q_at]],
                            time,
                            sides[row[s_at]],
                        )
                    except (ValueError, KeyError, IndexError):
                        _bad_row(state, layout, width, prices, qtys, line, header + good)
                        continue
                    good += 1
                    yield trade
    finally:
        stats.trades += good
        stats.rows += good + state.bad_total
        rounded = prices.rounded + qtys.rounded
        if rounded:
            log.info(
                "%s: %d price/qty values had float noise (> 8 decimals or an exponent) "
                "and were rounded to 1e-8",
                path.name,
                rounded,
            )


def _read_all_batches(
    plan: list[tuple[Path, str, str]], stats: ReadStats, size: int, exchange: FrameParser
) -> Generator[TradeBatch, None, None]:
    for path, kind, symbol in plan:
        if kind == "frames":
            yield from _frame_batches(path, stats, size, exchange)
        else:
            yield from _csv_batches(path, _LAYOUTS[kind], symbol, stats, size, exchange.name)


_Columns: TypeAlias = "tuple[array[int], array[int], array[int], array[int], bytes]"
"""trade ids, prices, qtys, times (µs), buyer_is_maker: the columns of a TradeBatch."""


def _csv_batches(
    path: Path, layout: _Layout, symbol: str, stats: ReadStats, size: int, exchange: str
) -> Iterator[TradeBatch]:
    """A CSV's trades a block (about 1 MiB of rows) at a time, cut to ``size``."""
    state = _FileState(path.name, stats)
    reader = _CsvBlocks(layout, state)
    given = 0
    stats.files += 1
    try:
        with (
            _open_binary(path) as handle,
            # a read-ahead thread pays only when parsing releases the GIL (numpy does)
            contextlib.closing(
                _blocks(path, handle, state, read_ahead=accel.np is not None)
            ) as blocks,
        ):
            for block in blocks:
                columns = reader.read(block)
                if columns is None:
                    continue
                batch = TradeBatch(exchange, symbol, *columns)
                n = len(batch)
                for start in range(0, n, size):
                    piece = batch if n <= size else batch.slice(start, start + size)
                    given += len(piece)
                    yield piece
    finally:
        stats.trades += given
        stats.rows += given + state.bad_total
        rounded = reader.prices.rounded + reader.qtys.rounded
        if rounded:
            log.info(
                "%s: %d price/qty values had float noise (> 8 decimals or an exponent) "
                "and were rounded to 1e-8",
                path.name,
                rounded,
            )


class _CsvBlocks:
    """Turns blocks of CSV lines into columns: with numpy when it is installed and the
    block is clean (see :mod:`spikewatch.core.npparse`), else line by line exactly as
    :func:`_read_csv` does, bad rows counted and logged the same way. (Splitting a whole
    block at once in pure Python was tried: no faster than the line loop.)"""

    __slots__ = ("good", "header", "layout", "prices", "qtys", "state", "width")

    def __init__(self, layout: _Layout, state: _FileState) -> None:
        self.layout = layout
        self.state = state
        self.prices = _Units()
        self.qtys = _Units()
        self.width = 0  # this file's column count, taken from its first line
        self.header = 0
        self.good = 0  # good rows so far (for the line numbers of bad ones)

    def read(self, block: bytes) -> _Columns | None:
        """The columns of the block's good rows; None if it has none."""
        if not self.width:
            block = self._first_line(block)
            if not block:
                return None
        layout = self.layout
        columns: _Columns | None = None
        np = accel.np
        if np is not None:
            parsed = parse_block(
                np, block, self.width, layout.price, layout.qty, layout.time, layout.side
            )
            if parsed is not None:
                ids, prices, qtys, times, makers = parsed
                columns = (
                    array("q", ids),
                    array("q", prices),
                    array("q", qtys),
                    array("q", times),
                    makers,
                )
        if columns is None:
            columns = self._line_columns(block.decode("utf-8", "replace"))
        rows = len(columns[0])
        self.good += rows
        return columns if rows else None

    def _first_line(self, block: bytes) -> bytes:
        """Take the column count from the first line; drop a byte-order mark and a header."""
        while block.startswith(_BOM):
            block = block[len(_BOM) :]
        end = block.find(b"\n")
        first = block[:end].decode("utf-8", "replace").split(",")
        widths = self.layout.widths
        self.width = len(first) if len(first) in widths else widths[0]
        if _is_header(first[0].strip()):
            self.header = 1
            return block[end + 1 :]
        return block

    def _line_columns(self, text: str) -> _Columns:
        """Row by row, exactly as :func:`_read_csv`: bad rows are counted and logged."""
        layout, state, width = self.layout, self.state, self.width
        prices, qtys, makers = self.prices, self.qtys, _MAKER
        p_at, q_at, t_at, s_at = layout.price, layout.qty, layout.time, layout.side
        us_from, us_end, max_id = _US_FROM, _US_END, _MAX_ID
        out_ids: list[int] = []
        out_prices: list[int] = []
        out_qtys: list[int] = []
        out_times: list[int] = []
        out_makers: list[int] = []
        lines = text.split("\n")
        lines.pop()  # "" after the last "\n"
        good = self.good
        for line in lines:
            row = line.split(",")
            try:
                if len(row) != width:
                    raise ValueError
                trade_id = int(row[0])
                time = int(row[t_at])
                if time < us_from:
                    time *= 1000
                if not (0 < time < us_end and 0 <= trade_id <= max_id):
                    raise ValueError
                price = prices[row[p_at]]
                qty = qtys[row[q_at]]
                maker = makers[row[s_at]]
            except (ValueError, KeyError, IndexError):
                _bad_row(state, layout, width, prices, qtys, line, self.header + good)
                continue
            good += 1
            out_ids.append(trade_id)
            out_prices.append(price)
            out_qtys.append(qty)
            out_times.append(time)
            out_makers.append(maker)
        return (
            array("q", out_ids),
            array("q", out_prices),
            array("q", out_qtys),
            array("q", out_times),
            bytes(out_makers),
        )


def _bad_row(
    state: _FileState,
    layout: _Layout,
    width: int,
    prices: _Units,
    qtys: _Units,
    line: str,
    good_before: int,
) -> None:
    """Classify a row the hot loop rejected, count it, and log its kind once."""
    if not line.strip():
        state.blank += 1  # not a row: a trailing or separating blank line
        return
    number = good_before + state.bad_total + state.blank + 1
    kind, detail = _classify_row(layout, width, prices, qtys, line.split(","))
    state.bad(kind, detail, line, number)


def _classify_row(
    layout: _Layout, width: int, prices: _Units, qtys: _Units, row: list[str]
) -> tuple[str, str]:
    if len(row) != width:
        return "bad_columns", f"{len(row)} columns, expected {width}"
    try:
        trade_id = int(row[0])
    except ValueError:
        return "bad_id", "not an integer"
    if not 0 <= trade_id <= _MAX_ID:
        return "bad_id", "out of range"
    for kind, cache, text in (
        ("bad_price", prices, row[layout.price]),
        ("bad_qty", qtys, row[layout.qty]),
    ):
        try:
            cache[text]
        except BadNumber as exc:
            return kind, str(exc)
    try:
        time = int(row[layout.time])
    except ValueError:
        return "bad_time", "not an integer"
    if time < _US_FROM:
        time *= 1000
    if not 0 < time < _US_END:
        return "bad_time", "out of range"
    if row[layout.side] not in _SIDES:
        return "bad_side", "not True/False"
    return "bad_row", "rejected"  # pragma: no cover - every check above has a kind


# -- frame recordings ----------------------------------------------------------------------


def _frame_batches(
    path: Path, stats: ReadStats, size: int, exchange: FrameParser
) -> Iterator[TradeBatch]:
    """Trades of a frame recording, as the exchange's parser batches them."""
    state = _FileState(path.name, stats)
    good = 0
    stats.files += 1
    try:
        with contextlib.closing(_parsed_frames(path, exchange, state, size)) as batches:
            for batch in batches:
                good += len(batch)
                yield batch
    finally:
        stats.trades += good


def _read_frames(path: Path, stats: ReadStats, exchange: FrameParser) -> Iterator[Trade]:
    """The trades of :func:`_frame_batches`, one :class:`Trade` at a time."""
    state = _FileState(path.name, stats)
    good = 0
    stats.files += 1
    try:
        with contextlib.closing(_parsed_frames(path, exchange, state, _FRAME_GROUP)) as batches:
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
    path: Path, exchange: FrameParser, state: _FileState, size: int
) -> Generator[TradeBatch, None, None]:
    """The trade batches of a recording, its frames parsed ``size`` at a time at most.

    Read a block (1 MiB) at a time: lines split and cleaned in bulk, lines that cannot
    hold a trade left unparsed, the frames of consecutive blocks parsed together. Bad
    frames are counted in ``state``; lines that are not blank in its stats' rows.
    """
    # the venue's own markers, where its adapter has them; else every line is parsed
    marks: FrameMarks | None = getattr(exchange, "frame_marks", None)
    cap = min(size, _FRAME_GROUP)
    waiting: list[bytes] = []
    origins: list[_Origin] = []
    taken = 0  # frames read so far
    line = 1  # number of the next block's first line
    rows = 0
    try:
        with _open_binary(path) as handle:
            # Read in this thread: a _ReadAhead thread made whole replays of recordings
            # slower on two cores (median of 8 alternate runs of the 995,200 frames of
            # bench_replay.py: 1.98 s with it, 1.74 s without), contending for the GIL.
            chunks = iter(functools.partial(handle.read, _CHUNK), b"")
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
    state: _FileState,
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
    state: _FileState,
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
