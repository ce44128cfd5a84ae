"""Query-parameter parsing with bounds: every bad value is a :class:`BadRequest` naming it.

The patterns are the ones the OpenAPI document publishes (``web/openapi.py`` reads them from
here), written in the common subset of Python and ECMA-262 regular expressions, and matched
with ``fullmatch``: a value the document calls invalid is a 400, never quietly accepted.
An empty value (``?symbol=``) means the parameter was not given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

#: A symbol, any case: checked before upper-casing ("ß".upper() is "SS").
SYMBOL_PATTERN = r"^[A-Za-z0-9]{2,30}$"
#: An exchange name (``binance``, ``binance-usdm``), any case: lower-cased.
EXCHANGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"
#: An integer: ASCII digits only (``int()`` also takes " 5", "+5", "1_0", non-ASCII digits).
INTEGER_PATTERN = r"^-?[0-9]{1,18}$"
#: Epoch milliseconds (ASCII digits; the length bound keeps ``int()`` cheap).
EPOCH_MS_PATTERN = r"^[0-9]{1,16}$"
#: ISO 8601 / RFC 3339 date or date-time; no offset means UTC.
ISO_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?$"
)
#: A ``next_cursor`` token: unpadded URL-safe base64.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,1000}$"
_SYMBOL = re.compile(SYMBOL_PATTERN)
_EXCHANGE = re.compile(EXCHANGE_PATTERN)
_INTEGER = re.compile(INTEGER_PATTERN)
_EPOCH_MS = re.compile(EPOCH_MS_PATTERN)
_ISO_TIME = re.compile(ISO_TIME_PATTERN)
CURSOR = re.compile(CURSOR_PATTERN)
#: Accepted times: 2000-01-01 .. 2100-01-01 UTC (microseconds since the epoch).
MIN_TIME_US = 946_684_800_000_000
MAX_TIME_US = 4_102_444_800_000_000


class BadRequest(ValueError):
    """A request parameter is missing, unknown or out of range."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def reject_unknown(args: Iterable[str], allowed: Iterable[str]) -> None:
    """Raise for a query parameter the endpoint does not take (catches typos like ``limt``)."""
    known = set(allowed)
    for name in args:
        if name not in known:
            raise BadRequest(name, f"unknown parameter; this endpoint takes {sorted(known)}")


def symbol(args: Mapping[str, str], name: str = "symbol") -> str | None:
    """An optional symbol such as ``BTCUSDT`` (any case)."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    if not _SYMBOL.fullmatch(raw):
        if raw.isascii() and raw.isalnum():  # the right characters: the length is wrong
            raise BadRequest(
                name,
                f"{raw[:40]!r} is {len(raw)} character{'' if len(raw) == 1 else 's'} long; "
                "a symbol has 2 to 30 (e.g. BTCUSDT)",
            )
        raise BadRequest(name, f"{raw[:40]!r} is not a symbol (letters and digits, e.g. BTCUSDT)")
    return raw.upper()


def watched(
    symbol: str | None, symbols: Sequence[str], exchange: str, name: str = "symbol"
) -> None:
    """Raise for a symbol the runtime does not watch: nothing will ever come of it."""
    if symbol is not None and symbol not in symbols:
        shown = ", ".join(symbols[:10]) + (
            f" and {len(symbols) - 10} more" if len(symbols) > 10 else ""
        )
        raise BadRequest(name, f"{symbol} is not watched on {exchange} (watched: {shown})")


def exchange(args: Mapping[str, str], served: Sequence[str], name: str = "exchange") -> str | None:
    """An optional exchange such as ``binance-usdm`` (any case), which must be one this
    server serves; not given: the one it serves (None when it serves several: all)."""
    raw = args.get(name)
    if raw is None or raw == "":
        return served[0] if len(served) == 1 else None
    if not _EXCHANGE.fullmatch(raw):
        raise BadRequest(
            name,
            f"{raw[:40]!r} is not an exchange name (letters, digits, '-', e.g. binance-usdm)",
        )
    value = raw.lower()
    if value not in served:
        raise BadRequest(name, f"{value} is not served here ({', '.join(served)})")
    return value


def integer(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An optional integer within ``[low, high]``."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):
        raise BadRequest(name, f"{raw[:40]!r} is not a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(name, f"must be between {low} and {high}, got {value}")
    return value


def time_us(args: Mapping[str, str], name: str) -> int | None:
    """An optional time: ISO 8601 (``2024-08-09T00:00:00Z``) or epoch milliseconds."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    if _EPOCH_MS.fullmatch(raw):
        value = int(raw) * 1000
    else:
        try:
            if not _ISO_TIME.fullmatch(raw):
                raise ValueError(raw)
            moment = datetime.fromisoformat(raw.replace("z", "Z"))
        except ValueError:
            raise BadRequest(
                name,
                f"{raw[:40]!r} is not a time (ISO 8601 like 2024-08-09T00:00:00Z, or epoch ms)",
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
        value = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not MIN_TIME_US <= value <= MAX_TIME_US:
        raise BadRequest(name, "must be between 2000-01-01 and 2100-01-01")
    return value


def time_range(args: Mapping[str, str]) -> tuple[int | None, int | None]:
    """Optional ``since`` (inclusive) and ``until`` (exclusive); ``until`` after ``since``."""
    since = time_us(args, "since")
    until = time_us(args, "until")
    if since is not None and until is not None and since >= until:
        raise BadRequest("until", "must be later than since")
    return since, until
