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

This module is the readers' one entry point; the work is done by :mod:`.formats` (which
file is which), :mod:`.files` (opening, chunks of whole lines, per-file counts),
:mod:`.csvfiles` and :mod:`.framefiles` (one module per kind of file).

Docs: https://github.com/binance/binance-public-data
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Final

from spikewatch.core.model import Trade, TradeBatch
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.csvfiles import LAYOUTS, csv_batches, read_csv
from spikewatch.replay.files import ReadStats
from spikewatch.replay.formats import (
    FORMATS,
    check_text,
    clean_symbol,
    detect_format,
    symbol_from_filename,
    symbol_from_zip_member,
)
from spikewatch.replay.framefiles import FrameParser, frame_batches, read_frames

__all__ = [
    "BATCH_SIZE",
    "EXCHANGE",
    "FORMATS",
    "FrameParser",
    "ReadStats",
    "TradeReader",
    "detect_format",
    "read_batches",
    "read_trades",
    "symbol_from_filename",
]

#: The exchange of the trades read when none is given.
EXCHANGE: Final = "binance"

#: Trades per batch that :func:`read_batches` yields at most, unless told otherwise.
BATCH_SIZE: Final = 65536


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
    forced = clean_symbol(symbol) if symbol is not None else None
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
            check_text(path)
            kind = fmt
        if kind == "frames":
            if path.suffix.lower() == ".zip":
                raise ValueError(f"{path}: frame recordings are read plain or .gz, not .zip")
            plan.append((path, kind, ""))
            continue
        name = forced or symbol_from_filename(path) or symbol_from_zip_member(path)
        if name is None:
            raise ValueError(
                f"{path}: cannot tell the symbol from the file name; "
                "pass it with --symbol (symbol=...)"
            )
        plan.append((path, kind, name))
    return plan


def _read_all(
    plan: list[tuple[Path, str, str]], stats: ReadStats, exchange: FrameParser
) -> Generator[Trade, None, None]:
    for path, kind, symbol in plan:
        if kind == "frames":
            yield from read_frames(path, stats, exchange)
        else:
            yield from read_csv(path, LAYOUTS[kind], symbol, stats, exchange.name)


def _read_all_batches(
    plan: list[tuple[Path, str, str]], stats: ReadStats, size: int, exchange: FrameParser
) -> Generator[TradeBatch, None, None]:
    for path, kind, symbol in plan:
        if kind == "frames":
            yield from frame_batches(path, stats, size, exchange)
        else:
            yield from csv_batches(path, LAYOUTS[kind], symbol, stats, size, exchange.name)
