"""The simulator's HTTP replies: Binance's REST trade look-ups (and the unusable 200s the
faults ask for), its rate-limit refusals, and the simulator's own control routes.

Pure functions of what they are given; :mod:`spikewatch.replay.simulator` owns the state.
"""

from __future__ import annotations

import http
from collections.abc import Callable, Sequence

import msgspec
from websockets.datastructures import Headers
from websockets.http11 import Response

from spikewatch.core.model import Trade
from spikewatch.replay.limits import Verdict

#: What ``Faults.bad_replies`` may ask for: 200 replies a trade look-up cannot use.
BAD_REPLIES = (
    "html",  # an HTML page (a proxy's or captive portal's), as text/html
    "garbage",  # bytes that are no JSON
    "empty",  # no body at all
    "empty_list",  # [] although the trades asked for exist
    "error_object",  # a JSON error object instead of the list
    "wrong_id",  # real trades, but from ten ids after the one asked for
    "hole",  # real trades from the id asked for, with one missing (spot has no holes)
)

Header = tuple[str, str]


def json_reply(status: int, body: object, headers: Sequence[Header] = ()) -> Response:
    """A JSON response with ``status``, ``body`` and extra ``headers``."""
    payload = msgspec.json.encode(body)
    hdrs = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    for name, value in headers:
        hdrs[name] = value
    return Response(status, http.HTTPStatus(status).phrase, hdrs, payload)


def first_at_or_after(trades: Sequence[Trade], trade_id: int) -> int:
    """The index of the first of ``trades`` (in id order) with an id >= ``trade_id``."""
    lo, hi = 0, len(trades)
    while lo < hi:
        mid = (lo + hi) // 2
        if trades[mid].trade_id < trade_id:
            lo = mid + 1
        else:
            hi = mid
    return lo


def trades_reply(
    played: Sequence[Trade] | None,
    historical: bool,
    query: dict[str, str],
    row: Callable[[Trade], dict[str, object]],
    headers: Sequence[Header],
) -> Response:
    """A ``trades`` or ``historicalTrades`` reply from the trades ``played`` so far
    (None: no such symbol)."""
    if played is None:
        return json_reply(400, {"code": -1121, "msg": "Invalid symbol."}, headers)
    try:
        limit = int(query.get("limit", "500"))
        from_id = int(query["fromId"]) if "fromId" in query else None
    except ValueError:
        body = {"code": -1100, "msg": "Illegal characters found in a parameter."}
        return json_reply(400, body, headers)
    if not 1 <= limit <= 1000:
        return json_reply(400, {"code": -1100, "msg": "limit must be between 1 and 1000."})
    if historical and from_id is not None:
        start = first_at_or_after(played, from_id)
        chosen = played[start : start + limit]
    else:
        chosen = played[-limit:]
    return json_reply(200, list(map(row, chosen)), headers)


def bad_reply(
    kind: str,
    played: Sequence[Trade],
    query: dict[str, str],
    row: Callable[[Trade], dict[str, object]],
    headers: Sequence[Header],
) -> Response:
    """A 200 reply of ``kind`` (see :data:`BAD_REPLIES`) to a historicalTrades call."""
    raw: bytes | None = {
        "html": b"<html><head><title>502 Bad Gateway</title></head><body></body></html>",
        "garbage": b"\x00\x9f\x92 not json {[",
        "empty": b"",
    }.get(kind)
    if raw is not None:
        kind_type = "text/html" if kind == "html" else "application/json"
        hdrs = Headers([("Content-Type", kind_type), ("Content-Length", str(len(raw)))])
        return Response(200, "OK", hdrs, raw)
    if kind == "empty_list":
        return json_reply(200, [], headers)
    if kind == "error_object":
        return json_reply(200, {"code": -1003, "msg": "Simulated error."}, headers)
    start = first_at_or_after(played, int(query.get("fromId", "0")))
    limit = int(query.get("limit", "500"))
    if kind == "wrong_id":
        chosen = list(played[start + 10 : start + 10 + limit])
    else:  # a hole: the second trade left out
        chosen = [*played[start : start + 1], *played[start + 2 : start + limit]]
    return json_reply(200, list(map(row, chosen)), headers)


def refusal(verdict: Verdict, limit: int, headers: Sequence[Header]) -> Response:
    """Binance's 429 (weight past the limit) or 418 (banned) with ``Retry-After``
    (error -1003, its messages as the spot error-code page words them)."""
    retry = [*headers, ("Retry-After", str(verdict.retry_after))]
    if verdict.status == 418:
        msg = (
            f"Way too much request weight used; IP banned until {verdict.banned_until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
    else:
        msg = (
            f"Too much request weight used; current limit is {limit} request weight per "
            "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
        )
    return json_reply(verdict.status, {"code": -1003, "msg": msg}, retry)


def connection_refusal() -> Response:
    """The answer to a WebSocket handshake past the connection-attempt limit. Binance
    documents the limit, not the answer: HTTP 429, as its REST side answers past a limit."""
    body = {"code": -1003, "msg": "Too many connection attempts; try again later."}
    return json_reply(429, body, [("Retry-After", "300")])
