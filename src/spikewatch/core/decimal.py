"""Exact fixed-point numbers: decimal strings <-> integers in units of 1e-8.

Binance sends prices and quantities as decimal strings with at most 8 decimals, so an
integer count of 1e-8 units holds them exactly and sums of them never drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from itertools import filterfalse

SCALE_DIGITS = 8
SCALE = 10**SCALE_DIGITS
#: Largest value an ``int64`` holds; Binance itself keeps quantities in int64 at this scale.
MAX_UNITS = 2**63 - 1

_PAD = "0" * SCALE_DIGITS


class BadNumber(ValueError):
    """A price or quantity that is not a finite positive decimal with <= 8 decimals."""


def parse_units(text: str) -> int:
    """Parse a positive decimal string (e.g. ``"0.00123000"``) into 1e-8 units, exactly.

    Accepts plain decimals only: no sign, exponent, NaN or infinity. Digits beyond the
    8th decimal must be zeros. Raises :class:`BadNumber` otherwise, and for zero.
    """
    # Fast path: Binance spot always sends exactly 8 decimals ("0.00123000").
    if len(text) > 9 and text[-9] == ".":
        digits = text[:-9] + text[-8:]
        if digits.isdigit() and digits.isascii():
            units = int(digits)
            if 0 < units <= MAX_UNITS:
                return units
    whole, dot, frac = text.partition(".")
    if len(frac) > SCALE_DIGITS:
        extra = frac[SCALE_DIGITS:]
        if extra.strip("0"):
            raise BadNumber(f"more than {SCALE_DIGITS} decimals: {text[:40]!r}")
        frac = frac[:SCALE_DIGITS]
    digits = whole + frac + _PAD[len(frac) :]
    if not (digits.isascii() and digits.isdigit()) or (dot and not frac and not whole):
        raise BadNumber(f"not a plain decimal: {text[:40]!r}")
    units = int(digits)
    if units <= 0:
        raise BadNumber(f"not positive: {text[:40]!r}")
    if units > MAX_UNITS:
        raise BadNumber(f"out of range: {text[:40]!r}")
    return units


def float_to_units(value: float) -> int:
    """Round a float read from a lossy source (parquet, ccxt JSON) to 1e-8 units.

    Those files held 8-decimal exchange values written as binary floats; rounding to the
    nearest unit recovers the original decimal.
    """
    if value != value or value in (float("inf"), float("-inf")):
        raise BadNumber(f"not finite: {value!r}")
    try:
        units = int((Decimal(repr(value)) * SCALE).to_integral_value())
    except InvalidOperation as exc:  # pragma: no cover - repr of a finite float is valid
        raise BadNumber(f"not a number: {value!r}") from exc
    if units <= 0:
        raise BadNumber(f"not positive: {value!r}")
    if units > MAX_UNITS:
        raise BadNumber(f"out of range: {value!r}")
    return units


def units_to_decimal(units: int) -> Decimal:
    """The exact decimal value of a count of 1e-8 units."""
    return Decimal(units).scaleb(-SCALE_DIGITS)


def units_to_str(units: int) -> str:
    """Format units as a plain decimal without trailing zeros: ``150000000`` -> ``"1.5"``."""
    whole, frac = divmod(units, SCALE)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:0{SCALE_DIGITS}d}".rstrip("0")


def units_to_float(units: int) -> float:
    """The nearest float to a count of 1e-8 units (for JSON output only, never decisions)."""
    result: float = units / SCALE
    return result


class UnitsCache(dict[str, int]):
    """``cache[text]`` is ``parse_units(text)``, memoised: trade streams repeat a few
    thousand price and quantity strings over and over. Bounded: cleared when full."""

    __slots__ = ("limit",)

    def __init__(self, limit: int = 1 << 16) -> None:
        super().__init__()
        self.limit = limit

    def __missing__(self, text: str) -> int:
        units = self.parse(text)
        if len(self) >= self.limit:
            self.clear()
        self[text] = units
        return units

    def parse(self, text: str) -> int:
        """Parse a value that is not cached yet (raises :class:`BadNumber`)."""
        return parse_units(text)

    def lookup_many(self, texts: Sequence[str]) -> list[int]:
        """``[self[t] for t in texts]``, faster: the texts not cached yet are parsed
        together when they all have the exact form Binance sends (8 decimals), one at a
        time (and as :meth:`parse` decides, raising :class:`BadNumber`) otherwise."""
        # not set(texts).difference(self): with a dict subclass, that walks the whole cache
        new = set(filterfalse(self.__contains__, texts))
        if new:
            fresh = list(new)
            parsed = _parse_8_decimals(fresh)
            if parsed is None:
                return [self[t] for t in texts]
            if len(self) + len(fresh) > self.limit:
                self.clear()
            self.update(zip(fresh, parsed, strict=True))
        values = list(map(self.get, texts))
        if None in values:  # cleared on the way (more new texts than the limit)
            return [self[t] for t in texts]
        return values  # type: ignore[return-value]  # no None in it


def _parse_8_decimals(texts: list[str]) -> list[int] | None:
    """parse_units of each text if every one has the form of its fast path (digits, a dot
    and 8 digits), in bulk; None otherwise."""
    if min(map(len, texts)) <= SCALE_DIGITS + 1:
        return None
    if "".join([t[-9] for t in texts]) != "." * len(texts):
        return None
    digits = [t.replace(".", "", 1) for t in texts]  # a dot elsewhere fails isdigit
    joined = "".join(digits)
    if not (joined.isdigit() and joined.isascii()):
        return None
    values = list(map(int, digits))
    if min(values) <= 0 or max(values) > MAX_UNITS:
        return None
    return values
