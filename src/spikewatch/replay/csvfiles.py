"""data.binance.vision ``trades`` and ``aggTrades`` CSVs -> trades, row by row
(:func:`read_csv`) or column-wise a block at a time (:func:`csv_batches`, with numpy when
it is installed); bad rows counted, logged once per kind, and skipped."""

from __future__ import annotations

import contextlib
import logging
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

from spikewatch.core import accel
from spikewatch.core.decimal import BadNumber, UnitsCache, float_to_units, parse_units
from spikewatch.core.model import Trade, TradeBatch
from spikewatch.core.npparse import parse_block
from spikewatch.replay.files import FileState, ReadStats, line_batches, open_binary, read_blocks
from spikewatch.replay.formats import MAKER, SIDES, is_header

log = logging.getLogger("spikewatch.replay.readers")

#: Times at or above this are microseconds, below it milliseconds. Spot dumps switched
#: from ms to µs on 2025-01-01 (binance-public-data README); 1e14 ms is the year 5138
#: and 1e14 µs is 1973, so the magnitude tells the unit of each value apart.
_US_FROM: Final = 10**14
#: 10000-01-01T00:00Z in µs: anything later is not a time.
_US_END: Final = 253_402_300_800_000_000
_MAX_ID: Final = 2**63 - 1
#: Distinct price/qty strings kept per file; a day of BTCUSDT holds a few thousand.
_CACHE_SIZE: Final = 1 << 16
_BOM: Final = "\ufeff".encode()


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the used columns of a CSV format are, and how many columns a row may have."""

    price: int
    qty: int
    time: int
    side: int
    widths: tuple[int, ...]  # allowed column counts (without and with is_best_match)


LAYOUTS: Final = {
    "trades": Layout(price=1, qty=2, time=4, side=5, widths=(6, 7)),
    "aggtrades": Layout(price=1, qty=2, time=5, side=6, widths=(7, 8)),
}


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


def read_csv(
    path: Path, layout: Layout, symbol: str, stats: ReadStats, exchange: str
) -> Iterator[Trade]:
    """The hot loop: split each line, look values up, build the Trade; bad rows go slow."""
    state = FileState(path.name, stats)
    prices, qtys = _Units(), _Units()
    sides = SIDES
    make = Trade
    p_at, q_at, t_at, s_at = layout.price, layout.qty, layout.time, layout.side
    us_from, us_end, max_id = _US_FROM, _US_END, _MAX_ID
    width = 0  # this file's column count, taken from its first line
    header = 0
    good = 0
    stats.files += 1
    try:
        with (
            open_binary(path) as handle,
            contextlib.closing(line_batches(path, handle, state)) as batches,
        ):
            for lines in batches:
                if not width and lines:
                    lines[0] = lines[0].lstrip("\ufeff")  # a byte-order mark, if any
                    first = lines[0].split(",")
                    width = len(first) if len(first) in layout.widths else layout.widths[0]
                    if is_header(first[0].strip()):
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


_Columns: TypeAlias = "tuple[array[int], array[int], array[int], array[int], bytes]"
"""trade ids, prices, qtys, times (µs), buyer_is_maker: the columns of a TradeBatch."""


def csv_batches(
    path: Path, layout: Layout, symbol: str, stats: ReadStats, size: int, exchange: str
) -> Iterator[TradeBatch]:
    """A CSV's trades a block (about 1 MiB of rows) at a time, cut to ``size``."""
    state = FileState(path.name, stats)
    reader = _CsvBlocks(layout, state)
    given = 0
    stats.files += 1
    try:
        with (
            open_binary(path) as handle,
            # a read-ahead thread pays only when parsing releases the GIL (numpy does)
            contextlib.closing(
                read_blocks(path, handle, state, read_ahead=accel.np is not None)
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
    :func:`read_csv` does, bad rows counted and logged the same way. (Splitting a whole
    block at once in pure Python was tried: no faster than the line loop.)"""

    __slots__ = ("good", "header", "layout", "prices", "qtys", "state", "width")

    def __init__(self, layout: Layout, state: FileState) -> None:
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
        if is_header(first[0].strip()):
            self.header = 1
            return block[end + 1 :]
        return block

    def _line_columns(self, text: str) -> _Columns:
        """Row by row, exactly as :func:`read_csv`: bad rows are counted and logged."""
        layout, state, width = self.layout, self.state, self.width
        prices, qtys, makers = self.prices, self.qtys, MAKER
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
    state: FileState,
    layout: Layout,
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
    layout: Layout, width: int, prices: _Units, qtys: _Units, row: list[str]
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
    if row[layout.side] not in SIDES:
        return "bad_side", "not True/False"
    return "bad_row", "rejected"  # pragma: no cover - every check above has a kind
