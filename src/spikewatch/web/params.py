"""Query-parameter parsing with bounds: every bad value is a :class:`BadRequest` naming it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
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
    value = raw.strip().upper()
    if not _SYMBOL.match(value):
        raise BadRequest(name, f"{raw[:40]!r} is not a symbol (letters and digits, e.g. BTCUSDT)")
    return value


def integer(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An optional integer within ``[low, high]``."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(name, f"{raw[:40]!r} is not an integer") from None
    if not low <= value <= high:
        raise BadRequest(name, f"must be between {low} and {high}, got {value}")
    return value


def time_us(args: Mapping[str, str], name: str) -> int | None:
    """An optional time: ISO 8601 (``2024-08-09T00:00:00Z``) or epoch milliseconds."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    text = raw.strip()
    if text.isascii() and text.isdigit():
        value = int(text) * 1000
    else:
        try:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
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
