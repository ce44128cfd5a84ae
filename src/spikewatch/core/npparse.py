"""Vectorised, exact parsing with numpy: blocks of clean data.binance.vision CSV rows
(:func:`parse_block`), and lists of decimal strings (:func:`parse_decimals`).

Only for blocks whose every row is of the plainest form: the right number of columns,
ids and times of ASCII digits, prices and quantities of ASCII digits with at most one dot
and 8 decimals, sides spelled as the readers accept them. Whatever else a block holds
(a bad row, a CRLF line end, a sign, an exponent, a value out of range), :func:`parse_block`
returns None and the caller parses the block in pure Python, which decides each row
exactly as before. So numpy never changes a result: it only skips work on clean blocks.

Values are read right-aligned: each field's bytes are gathered into a row of a small
``uint8`` matrix (padded on the left with zeros), and a product with powers of ten turns
the digits into values: in float64 while they stay below 10**15 < 2**53 (every partial
sum is then an exact integer), in int64 above. No field has more than 18 digits, so no
value overflows int64.
"""

from __future__ import annotations

from typing import Any, Final

_US_FROM: Final = 10**14  # see replay.csvfiles._US_FROM
_US_END: Final = 253_402_300_800_000_000
_SCALE_DIGITS: Final = 8
#: At most this many characters per field: 10**18 - 1 < 2**63.
_MAX_DIGITS: Final = 18
#: At most this many digits before the dot of a price or quantity (so units < 10**18).
_MAX_WHOLE: Final = 10
#: Bytes put before a block, so that the first field can be read as the bytes ending at it.
_PAD: Final = b"0" * 24
_DOT: Final = (ord(".") - ord("0")) % 256  # a dot, once "0" is subtracted in uint8

Columns = tuple[bytes, bytes, bytes, bytes, bytes]
"""The native int64 bytes of ids, prices, qtys and µs times, and the buyer_is_maker bytes."""


def parse_block(
    np: Any, block: bytes, width: int, price: int, qty: int, time: int, side: int
) -> Columns | None:
    """Columns of ``block`` (complete lines, each ending with a newline), or None if any
    row is not of the plainest form (see the module doc)."""
    if not block.endswith(b"\n"):
        return None
    buf = np.frombuffer(_PAD + block, dtype=np.uint8)
    seps = np.flatnonzero((buf == 44) | (buf == 10))
    rows, extra = divmod(len(seps), width)
    newlines = buf[seps] == 10
    # Every width-th separator a newline, and no other: every line has `width` columns.
    if extra or int(np.count_nonzero(newlines)) != rows:
        return None
    if not newlines[width - 1 :: width].all():
        return None
    ctx = _Block(np, buf, seps, width)
    ids = ctx.integers(0)
    if ids is None:
        return None
    raw_times = ctx.integers(time)
    if raw_times is None:
        return None
    times = raw_times * np.where(raw_times < _US_FROM, 1000, 1)  # ms -> µs, per value
    if not ((times > 0).all() and (times < _US_END).all()):
        return None
    prices = ctx.decimals(price)
    if prices is None:
        return None
    qtys = ctx.decimals(qty)
    if qtys is None:
        return None
    sells = ctx.sides(side)
    if sells is None:
        return None
    return ids.tobytes(), prices.tobytes(), qtys.tobytes(), times.tobytes(), sells.tobytes()


def parse_decimals(np: Any, texts: list[str]) -> Any | None:
    """``parse_units`` of each text as an int64 array, if every one is a plain decimal
    (digits, at most one dot, at most 8 decimals and 10 digits before the dot, > 0);
    None otherwise (the caller then parses them one by one)."""
    if not texts:
        return None
    data = ("\n".join(texts) + "\n").encode("utf-8", "surrogatepass")
    buf = np.frombuffer(_PAD + data, dtype=np.uint8)
    seps = np.flatnonzero(buf == 10)
    if len(seps) != len(texts):  # a text with a newline in it
        return None
    return _Block(np, buf, seps, 1).decimals(0)


class _Block:
    """One block's bytes and separator positions, and the column readers."""

    __slots__ = ("buf", "np", "seps", "width")

    def __init__(self, np: Any, buf: Any, seps: Any, width: int) -> None:
        self.np = np
        self.buf = buf
        self.seps = seps
        self.width = width

    def _bounds(self, column: int) -> tuple[Any, Any]:
        """Start (first byte) and end (its separator) of each row's field ``column``."""
        np, seps, width = self.np, self.seps, self.width
        ends = seps[column::width]
        if column:
            starts = seps[column - 1 :: width] + 1
        else:
            starts = np.empty_like(ends)
            starts[0] = len(_PAD)
            starts[1:] = seps[width - 1 : -1 : width] + 1
        return starts, ends

    def _digits(self, column: int) -> Any | None:
        """The fields right-aligned in a rows x m ``uint8`` matrix (m: the longest field),
        as characters minus "0", zero to the left of each field; None if a field is empty
        or longer than 18 characters."""
        np = self.np
        starts, ends = self._bounds(column)
        lengths = ends - starts
        m = int(lengths.max())
        shortest = int(lengths.min())
        if shortest < 1 or m > _MAX_DIGITS:
            return None
        # the m bytes before each field's end (_PAD guarantees m of them)
        chars = np.lib.stride_tricks.sliding_window_view(self.buf, m)[ends - m]
        digits = chars - 48  # uint8: anything but "0".."9" wraps above 9
        if shortest != m:
            digits *= np.arange(-m, 0) >= -lengths[:, None]
        return digits

    def _value(self, digits: Any) -> Any:
        """int64 values of rows of digits 0-9 (most significant first)."""
        np = self.np
        m = digits.shape[1]
        if m <= 15:  # < 10**15 < 2**53: float64 sums of these products are exact
            return (digits @ (10.0 ** np.arange(m - 1, -1, -1))).astype(np.int64)
        return digits.astype(np.int64) @ (10 ** np.arange(m - 1, -1, -1, dtype=np.int64))

    def integers(self, column: int) -> Any | None:
        """A column of plain non-negative integers of at most 18 digits."""
        digits = self._digits(column)
        if digits is None or (digits > 9).any():
            return None
        return self._value(digits)

    def decimals(self, column: int) -> Any | None:
        """A column of positive decimals (at most one dot, 8 decimals, 10 digits before
        the dot), in integer units of 1e-8."""
        np = self.np
        digits = self._digits(column)
        if digits is None:
            return None
        m = digits.shape[1]
        dots = digits == _DOT
        # 1 + the dot's place in the row, 0 for none (and a sum if there are several)
        places = (dots @ np.arange(1.0, m + 1)).astype(np.int64)
        dotted = int(np.count_nonzero(places))
        if int(np.count_nonzero(digits > 9)) != dotted or int(np.count_nonzero(dots)) != dotted:
            return None  # a character that is neither a digit nor a dot, or two dots
        has_dot = places > 0
        after = np.where(has_dot, m - places, 0)  # digits after the dot
        if int(after.max()) > _SCALE_DIGITS:
            return None
        digits *= digits <= 9  # the dot counts as a 0 digit
        # The digits read with the dot as a 0: whole * 10**(after + 1) + fraction.
        value = self._value(digits)
        powers = 10 ** np.arange(_MAX_DIGITS + 2, dtype=np.int64)
        split = np.where(has_dot, powers[after + 1], 1)
        whole = value // split
        if int(whole.max()) >= 10**_MAX_WHOLE:
            return None
        units = whole * 10**_SCALE_DIGITS + (value % split) * powers[_SCALE_DIGITS - after]
        if not (units > 0).all():
            return None  # zero, or "." alone
        return units

    def sides(self, column: int) -> Any | None:
        """1 where is_buyer_maker is true, 0 where false, as ``uint8``; None if a value is
        not one of true/True/TRUE/false/False/FALSE."""
        np = self.np
        starts, ends = self._bounds(column)
        lengths = ends - starts
        four = lengths == 4
        if not (four | (lengths == 5)).all():
            return None
        # Five bytes from each start (for 4-letter words the fifth is the separator: it
        # is zeroed), read as a little-endian number: exact in float64 (< 2**40).
        chars = np.lib.stride_tricks.sliding_window_view(self.buf, 5)[starts]
        keys = chars @ (256.0 ** np.arange(5)) - four * (chars[:, 4] * 256.0**4)
        sells = (keys == _TRUE[0]) | (keys == _TRUE[1]) | (keys == _TRUE[2])
        buys = (keys == _FALSE[0]) | (keys == _FALSE[1]) | (keys == _FALSE[2])
        if not (sells | buys).all():
            return None
        return sells.view(np.uint8)


_TRUE: Final = tuple(float(int.from_bytes(w, "little")) for w in (b"true", b"True", b"TRUE"))
_FALSE: Final = tuple(float(int.from_bytes(w, "little")) for w in (b"false", b"False", b"FALSE"))
