"""JSON responses encoded with msgspec (typed structs go out as they are).

The response envelopes are structs too: the OpenAPI document (``web/openapi.py``) generates
their schemas from these very classes, so what it promises is what the endpoints send.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from flask import Response

from spikewatch.core.bars import Bar
from spikewatch.core.model import Signal
from spikewatch.store.base import GapRecord

_encode = msgspec.json.Encoder().encode


def encode_json(value: Any) -> bytes:
    """``value`` encoded as JSON."""
    return _encode(value)


def json_response(body: Any, status: int = 200) -> Response:
    """Encode ``body`` (structs, dicts, lists) as a JSON response."""
    return Response(_encode(body), status=status, mimetype="application/json")


class SignalList(msgspec.Struct, frozen=True):
    """One page of ``/api/signals``, newest first; follow ``next_cursor`` until it is null."""

    signals: list[Signal]
    count: int  # len(signals)
    next_cursor: str | None  # the cursor of the next page; null on the last one


class GapList(msgspec.Struct, frozen=True):
    """``/api/gaps``: recorded gaps (trades missed for good), newest first."""

    gaps: list[GapRecord]
    count: int  # len(gaps)


class BarList(msgspec.Struct, frozen=True):
    """``/api/bars``: one symbol's recent bars on one exchange, oldest first."""

    exchange: str
    symbol: str
    interval: int  # bar length, seconds
    bars: list[Bar]


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every error: what is wrong and, for a bad request parameter, which one."""

    error: str
    param: str | None = None


class Readiness(msgspec.Struct, frozen=True, omit_defaults=True):
    """``/readyz``: ready, or not and why (one reason per unmet condition)."""

    status: Literal["ready", "not ready"]
    reasons: list[str] = msgspec.field(default_factory=list)
