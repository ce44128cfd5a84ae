"""The OpenAPI 3.1 description of every endpoint, served at ``GET /api/openapi.json``.

The schemas of the bodies are generated from the msgspec structs the endpoints encode
(:class:`Signal`, :class:`Alert`, :class:`EngineStatus`, :class:`Bar`, the envelopes in
``responses.py`` and ``alerts.py``),
and the parameter patterns are the ones ``params.py`` checks, so the document cannot drift
from the code. Paths and prose are written here by hand. The document is built once per
app, when the blueprint is registered.
"""

from __future__ import annotations

from typing import Any

import msgspec
from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState

import spikewatch
from spikewatch.core.alerts import SEVERITIES, Alert, AlertEvent
from spikewatch.core.bars import Bar
from spikewatch.core.leaderboard import BY, WINDOWS
from spikewatch.core.model import Side, Signal, signal_types
from spikewatch.status import LAG_BUCKETS_MS, EngineStatus, LiveSymbol, LiveTotals
from spikewatch.web import params
from spikewatch.web.alerts import RULE_PATTERN, AlertList, StoredAlert
from spikewatch.web.api import DEFAULT_BARS, DEFAULT_PAGE, MAX_BARS, MAX_PAGE
from spikewatch.web.market import (
    DEFAULT_SYMBOLS,
    DEFAULT_TOP,
    MAX_OFFSET,
    MAX_SYMBOLS,
    MAX_TOP,
    QUOTE_PATTERN,
    SEARCH_PATTERN,
    STATES,
    SymbolList,
    TopList,
)
from spikewatch.web.responses import BarList, ErrorBody, GapList, Readiness, SignalList

OPENAPI_PATH = "/api/openapi.json"
_EXTENSION = "spikewatch.openapi"
_REF = "#/components/schemas/{name}"

openapi = Blueprint("openapi", __name__)

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": _REF.format(name=name)}


def _json(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: Json, description: str) -> Json:
    # Every query parameter is optional, and an empty value means "not given" (params.py).
    return {
        "name": name,
        "in": "query",
        "required": False,
        "allowEmptyValue": True,
        "description": description,
        "schema": schema,
    }


_SYMBOL = _query(
    "symbol",
    {"type": "string", "pattern": params.SYMBOL_PATTERN, "examples": ["BTCUSDT", "btcusdt"]},
    "A symbol, letters and digits, any case (it is upper-cased).",
)
_EXCHANGE = _query(
    "exchange",
    {
        "type": "string",
        "pattern": params.EXCHANGE_PATTERN,
        "examples": ["binance", "binance-usdm"],
    },
    "An exchange this server serves (`exchange` in /api/status), any case (it is "
    "lower-cased); default: the one it serves. `(exchange, symbol)` names a series: BTCUSDT "
    "spot (`binance`) and BTCUSDT USD-M futures (`binance-usdm`) never merge. An exchange "
    "the server does not serve is a 400, even when its signals are in the same database.",
)


def _time(name: str, description: str) -> Json:
    return _query(
        name,
        {
            "anyOf": [
                {"type": "string", "pattern": params.ISO_TIME_PATTERN},
                {"type": "string", "pattern": params.EPOCH_MS_PATTERN},
            ],
            "examples": ["2024-08-09T00:00:00Z", "2024-08-09T02:00:00+02:00", "1723161600000"],
        },
        f"{description} ISO 8601 (a date, or a date-time with an optional `Z` or `+hh:mm` "
        "offset; none means UTC; URL-encode `+` as `%2B`) or epoch milliseconds. "
        "Between 2000-01-01 and 2100-01-01.",
    )


_SEARCH = _query(
    "q",
    {"type": "string", "pattern": SEARCH_PATTERN, "examples": ["btc", "USDT"]},
    "Only symbols containing this, any case.",
)
_QUOTE = _query(
    "quote",
    {"type": "string", "pattern": QUOTE_PATTERN, "examples": ["USDT", "btc"]},
    "Only symbols quoted in this asset (the end of the symbol, e.g. USDT), any case.",
)
_CURSOR = _query(
    "cursor",
    {"type": "string", "pattern": params.CURSOR_PATTERN},
    "The `next_cursor` of the previous page (opaque).",
)


def _limit(default: int, maximum: int, what: str) -> Json:
    return _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        f"How many {what} at most.",
    )


#: Shared responses.
_BAD_REQUEST = {"$ref": "#/components/responses/BadRequest"}
_SERVER_ERROR = {"$ref": "#/components/responses/ServerError"}


def _get(
    summary: str,
    description: str,
    responses: Json,
    *,
    tag: str,
    operation_id: str,
    parameters: list[Json] | None = None,
    method: str = "get",
    extra: Json | None = None,
) -> Json:
    return {
        method: {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "tags": [tag],
            "parameters": parameters or [],
            "responses": {**responses, "500": _SERVER_ERROR},
            **(extra or {}),
        }
    }


_STREAM_DESCRIPTION = """\
Server-Sent Events (`text/event-stream`); the response never ends while the server runs.

Events:
- `signal`: `data` is a Signal (JSON, one line); `id` is its delivery number, increasing by
  one per signal and continuing across restarts.
- `status`: every second, `data` is a JSON array of LiveSymbol (per symbol: connection,
  last price, trade rate, the forming one-second bar); beyond 50 watched symbols, only
  those that traded since the previous event. No `id`.
- `totals`: right after each `status` (`spikewatch run` only), `data` is a LiveTotals:
  the exchange as a whole, over every watched symbol (their count, trades, trade rate,
  signals, the connections' state). No `id`.
- `alert` (only when alert rules are configured): `data` is an AlertEvent,
  `{"alert": Alert, "opened": true|false}`: `opened` true when a rule raises a new alert,
  false when a later signal folds into it (the same `alert.id`, more `signals`, a new
  `usd_total` and `summary`: replace the one shown). No `id`: alerts are not replayed on
  resume; read what was missed from `/api/alerts`.
- comment lines (`: keep-alive`) every 15 s on an idle stream; the first message sets
  `retry: 2000` (ms).

Resuming: a client that reconnects with the `Last-Event-ID` header (browsers send it by
themselves) or `?last_event_id=` first gets every signal delivered after that number (at
most 10,000, from the store), then the live events. A client that reads too slowly is
disconnected (counted as a dropped slow client) and resumes the same way.

`symbol` and `exchange` (default: the one served) narrow the `signal` and `alert` events
(signals live and resumed alike); `status` events always come.
"""


def build_document() -> Json:
    """The OpenAPI 3.1 document, as a JSON-ready dict."""
    kinds = [kind for kind in signal_types() if kind is not Signal]
    (signal_ref, *_), components = msgspec.json.schema_components(
        [
            Signal,
            *kinds,
            Alert,
            AlertEvent,
            StoredAlert,
            AlertList,
            EngineStatus,
            Bar,
            LiveSymbol,
            LiveTotals,
            SignalList,
            BarList,
            GapList,
            SymbolList,
            TopList,
            ErrorBody,
            Readiness,
        ],
        ref_template=_REF,
    )
    # "Signal" is any detector's signal type: each has the common fields and its own
    # details (the base struct itself is never sent)
    components["Signal"] = {
        "title": "Signal",
        "description": "A detector's finding about one trade; `signal_type` tells which "
        "detector's, and so which details follow the common fields.",
        "oneOf": [_ref(kind.__name__) for kind in kinds],
        "discriminator": {
            "propertyName": "signal_type",
            "mapping": {
                str(kind.__struct_config__.tag): f"#/components/schemas/{kind.__name__}"
                for kind in kinds
            },
        },
    }
    # The alert's plain-string fields hold one of a few values (core/alerts.py); say which
    for name in ("Alert", "StoredAlert"):
        fields = components[name]["properties"]
        fields["severity"]["enum"] = list(SEVERITIES)
        fields["side"]["enum"] = [side.value for side in Side] + ["mixed"]
        fields["usd_value"]["description"] = "The first signal's value, USD (null: unknown)."
        fields["usd_total"]["description"] = (
            "All signals folded in, USD (null if one had no USD value)."
        )
        fields["price"]["description"] = "The first signal's price, in the quote asset."
        fields["time_us"]["description"] = "Exchange time of the first signal, µs since epoch."
    # the market board's plain-string fields hold one of a few values (web/market.py)
    components["TopList"]["properties"]["window"]["enum"] = list(WINDOWS)
    components["TopList"]["properties"]["by"]["enum"] = list(BY)
    components["SymbolState"]["properties"]["connection"]["enum"] = list(STATES)
    components["Awaiting"] = {
        "title": "Awaiting",
        "description": "What /api/get_signal says before the first signal.",
        "type": "object",
        "properties": {"status": {"const": "Awaiting first signal..."}},
        "required": ["status"],
        "additionalProperties": False,
    }
    components["Health"] = {
        "title": "Health",
        "type": "object",
        "properties": {"status": {"const": "ok"}},
        "required": ["status"],
    }
    error = _ref("ErrorBody")
    paths: Json = {
        "/api/get_signal": _get(
            "The latest signal",
            "The latest spike by trade time, over all symbols or of `symbol`, on `exchange` "
            "(default: the one served); before the first "
            'one, exactly `{"status": "Awaiting first signal..."}`. After a restart it '
            "serves the latest stored signal of the served exchange.",
            {
                "200": _json(
                    {"oneOf": [signal_ref, _ref("Awaiting")]}, "The signal, or the awaiting status."
                ),
                "400": _BAD_REQUEST,
            },
            tag="signals",
            operation_id="getSignal",
            parameters=[_SYMBOL, _EXCHANGE],
        ),
        "/api/signals": _get(
            "Stored signals, newest first",
            "Signals by trade time (newest first, then by id), `since <= time < until`, of "
            "`exchange` (default: the one served), in "
            "pages: follow `next_cursor` until it is null to read every match exactly once.",
            {"200": _json(_ref("SignalList"), "One page of signals."), "400": _BAD_REQUEST},
            tag="signals",
            operation_id="listSignals",
            parameters=[
                _SYMBOL,
                _EXCHANGE,
                _time("since", "Only signals at or after this time (inclusive)."),
                _time("until", "Only signals before this time (exclusive); later than `since`."),
                _limit(DEFAULT_PAGE, MAX_PAGE, "signals"),
                _CURSOR,
            ],
        ),
        "/api/alerts": _get(
            "The alert log, newest first",
            "Alerts the alert rules raised (docs/ALERTS.md), by the time of their first "
            "signal (newest first, then by id), `since <= time < until`, of `exchange` "
            "(default: the one served), in pages: follow `next_cursor` until it is null. "
            "Each alert is its latest fold (`signals` folded in so far, their `usd_total`) "
            "with its delivery state per configured destination. Without alert rules "
            "(`alert_profile` off and no `[[alerts]]`) the page is empty, `enabled` is "
            "false and `note` says how to turn them on. A `rule` neither configured nor in "
            "the log is a 400.",
            {"200": _json(_ref("AlertList"), "One page of alerts."), "400": _BAD_REQUEST},
            tag="alerts",
            operation_id="listAlerts",
            parameters=[
                _query(
                    "rule",
                    {"type": "string", "pattern": RULE_PATTERN, "examples": ["whale", "surge"]},
                    "Only the alerts of this rule (its `name`, as configured).",
                ),
                _SYMBOL,
                _EXCHANGE,
                _time("since", "Only alerts at or after this time (inclusive)."),
                _time("until", "Only alerts before this time (exclusive); later than `since`."),
                _limit(DEFAULT_PAGE, MAX_PAGE, "alerts"),
                _CURSOR,
            ],
        ),
        "/api/bars": _get(
            "Recent one-second bars",
            "One-second OHLCV bars of a configured symbol (default: the first) on `exchange` "
            "(default: the one served), by exchange time, oldest first; the last one is still "
            "forming. A symbol the server does not watch is a 400.",
            {"200": _json(_ref("BarList"), "The bars."), "400": _BAD_REQUEST},
            tag="market",
            operation_id="listBars",
            parameters=[_SYMBOL, _EXCHANGE, _limit(DEFAULT_BARS, MAX_BARS, "bars")],
        ),
        "/api/symbols": _get(
            "Every watched symbol's state",
            "Each watched symbol of `exchange` (default: the one served), by symbol: its "
            "connection state, last price (quote asset), trades and trade rate (over the "
            "last minute of exchange time), signals since start and latest signal. Paged by "
            "`offset` and `limit` (the list is the watch list, ordered by symbol: it changes "
            "only when the watch list does); `next_offset` is the next page's offset, null "
            "on the last page. `q`, `quote` and `state` narrow it.",
            {"200": _json(_ref("SymbolList"), "One page of symbols."), "400": _BAD_REQUEST},
            tag="market",
            operation_id="listSymbols",
            parameters=[
                _SEARCH,
                _EXCHANGE,
                _QUOTE,
                _query(
                    "state",
                    {"type": "string", "enum": list(STATES)},
                    "Only the symbols whose connection is in this state.",
                ),
                _query(
                    "offset",
                    {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
                    "How many matching symbols to skip.",
                ),
                _limit(DEFAULT_SYMBOLS, MAX_SYMBOLS, "symbols"),
            ],
        ),
        "/api/top": _get(
            "The market leaderboard",
            "The watched symbols of `exchange` (default: the one served), the most active "
            "in the last `window` first, ranked `by` signals, alerts opened, the largest USD "
            "value of one signal, or the largest ratio (ties by the others, then by "
            "symbol); quiet symbols come last with zeros. Windows count by exchange time, "
            "read at the latest trade seen: `5m` is 30 buckets of 10 s, `1h` 60 of a "
            "minute (`bucket_s`), and `spark` is the signals per bucket, oldest first. The "
            "board is seeded from the store (the last hour of signals) and the alert log "
            "at start-up. `q` and `quote` narrow it (a search, then the ranking).",
            {"200": _json(_ref("TopList"), "The leaderboard."), "400": _BAD_REQUEST},
            tag="market",
            operation_id="listTop",
            parameters=[
                _query(
                    "window",
                    {"type": "string", "enum": list(WINDOWS), "default": "5m"},
                    "The window: the last 5 minutes or the last hour.",
                ),
                _query(
                    "by",
                    {"type": "string", "enum": list(BY), "default": "signals"},
                    "What to rank by.",
                ),
                _limit(DEFAULT_TOP, MAX_TOP, "rows"),
                _SEARCH,
                _EXCHANGE,
                _QUOTE,
            ],
        ),
        "/api/gaps": _get(
            "Recorded gaps",
            "Trades missed for good (the stream dropped them and REST could not fill them), "
            "newest first, `since <= time < until`; the symbol's detectors warmed up again "
            "after each. See docs/RELIABILITY.md.",
            {"200": _json(_ref("GapList"), "The gap records."), "400": _BAD_REQUEST},
            tag="signals",
            operation_id="listGaps",
            parameters=[
                _SYMBOL,
                _EXCHANGE,
                _time("since", "Only gaps at or after this time (inclusive)."),
                _time("until", "Only gaps before this time (exclusive); later than `since`."),
                _limit(DEFAULT_PAGE, MAX_PAGE, "gaps"),
            ],
        ),
        "/api/status": _get(
            "Engine status and counters",
            "Connection state and counters, per symbol and in total. Takes no parameters.",
            {"200": _json(_ref("EngineStatus"), "The status."), "400": _BAD_REQUEST},
            tag="operations",
            operation_id="getStatus",
        ),
        "/api/stream": _get(
            "Live signals, alerts and status (Server-Sent Events)",
            _STREAM_DESCRIPTION,
            {
                "200": {
                    "description": "The event stream.",
                    "headers": {
                        "Cache-Control": {
                            "description": "`no-cache`",
                            "schema": {"type": "string"},
                        }
                    },
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string"},
                            "x-events": {
                                "signal": {"id": "delivery number", "data": signal_ref},
                                "status": {"data": {"type": "array", "items": _ref("LiveSymbol")}},
                                "totals": {"data": _ref("LiveTotals")},
                                "alert": {"data": _ref("AlertEvent")},
                            },
                        }
                    },
                },
                "400": _BAD_REQUEST,
                "503": _json(error, "Too many live-stream clients; try again later."),
            },
            tag="signals",
            operation_id="streamSignals",
            parameters=[
                _SYMBOL,
                _EXCHANGE,
                _query(
                    "last_event_id",
                    {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "Resume after this delivery number (for clients that cannot set headers).",
                ),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "Resume after this delivery number (the last `id` seen).",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                },
            ],
        ),
        "/api/reconnect": _get(
            "Reconnect to the exchange now",
            "Opens a fresh exchange connection, gap-free (like a planned rotation: the new "
            "connection is open before the old one closes). State-changing: when `api_token` "
            "is set it needs `Authorization: Bearer <api_token>`; without one it answers only "
            "while the server listens on loopback. Takes no parameters.",
            {
                "202": _json(
                    {
                        "type": "object",
                        "properties": {"status": {"const": "reconnecting"}},
                        "required": ["status"],
                    },
                    "The new connection is being opened.",
                ),
                "400": _BAD_REQUEST,
                "401": _json(error, "Missing or wrong bearer token."),
                "403": _json(
                    error,
                    "No `api_token` is set and the server is not on loopback; or a "
                    "cross-site request (foreign `Host` or `Origin`).",
                ),
                "409": _json(
                    error,
                    "The engine is not running, or this process has no exchange connection "
                    "(`spikewatch serve`).",
                ),
            },
            tag="operations",
            operation_id="reconnect",
            method="post",
            # the token is optional on loopback: either no credentials or the bearer token
            extra={"security": [{}, {"bearerToken": []}]},
        ),
        "/healthz": _get(
            "Liveness",
            '`{"status": "ok"}` while the web server answers.',
            {"200": _json(_ref("Health"), "The server is up.")},
            tag="operations",
            operation_id="healthz",
        ),
        "/readyz": _get(
            "Readiness",
            "200 only when the engine is connected to the exchange and every symbol's "
            "detector window is full (detection is live); otherwise 503 with the reasons. "
            "`spikewatch serve`: 200 when its NATS connection is up and PostgreSQL answers.",
            {
                "200": _json(_ref("Readiness"), 'Ready: `{"status": "ready"}`.'),
                "503": _json(
                    _ref("Readiness"),
                    'Not ready, e.g. `{"status": "not ready", "reasons": '
                    '["not connected (state: connecting)", '
                    '"BTCUSDT warming up 37/200"]}`.',
                ),
            },
            tag="operations",
            operation_id="readyz",
        ),
        "/metrics": _get(
            "Prometheus metrics",
            "Counters, gauges and histograms in the Prometheus text format 0.0.4 (see "
            "docs/API.md for the list): frames, trades, malformed frames, reconnects, "
            "signals, ingest lag (buckets "
            f"{', '.join(f'{b:g}' for b in LAG_BUCKETS_MS)} ms), queue depths, live-stream "
            "clients, store write latency, and the process's own.",
            {
                "200": {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            tag="operations",
            operation_id="metrics",
        ),
        OPENAPI_PATH: _get(
            "This document",
            "The OpenAPI 3.1 description of the API.",
            {"200": _json({"type": "object"}, "The OpenAPI document.")},
            tag="operations",
            operation_id="openapi",
        ),
        "/": _get(
            "The dashboard",
            "The browser dashboard: an HTML page (chart, signals or alerts table, per-symbol "
            "status) "
            "that reads the endpoints above; its files come from `/assets/`.",
            {
                "200": {
                    "description": "The dashboard page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
            tag="dashboard",
            operation_id="dashboard",
        ),
        "/assets/{filename}": _get(
            "A file of the dashboard",
            "The dashboard's scripts, styles and images (served from the package, never a "
            "CDN). A name outside the dashboard's folder is a 404.",
            {
                "200": {
                    "description": "The file.",
                    "content": {"*/*": {"schema": {"type": "string"}}},
                },
                "404": _json(error, "No such file."),
            },
            tag="dashboard",
            operation_id="dashboardAsset",
            parameters=[
                {
                    "name": "filename",
                    "in": "path",
                    "required": True,
                    "description": "The file's path, e.g. `app.js`.",
                    "schema": {"type": "string", "minLength": 1},
                }
            ],
        ),
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "spikewatch",
            "version": spikewatch.__version__,
            "summary": "Real-time crypto volume-spike detector",
            "description": "Volume spikes detected in live exchange trades: the latest, the "
            "history, the alerts they raised, a live stream, and the service's own status. "
            "Every JSON error is "
            '`{"error": "...", "param": "..."}` (`param` only for a bad request parameter); '
            "unknown query parameters are rejected.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "signals", "description": "Detected spikes."},
            {"name": "alerts", "description": "What the alert rules raised from the signals."},
            {"name": "market", "description": "Market data the detectors see."},
            {"name": "operations", "description": "Health, readiness, metrics, status."},
            {"name": "dashboard", "description": "The browser UI."},
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The `api_token` setting.",
                }
            },
            "responses": {
                "BadRequest": _json(
                    error,
                    "A query parameter (or header) is unknown, malformed or out of range; "
                    "`param` names it.",
                ),
                "ServerError": _json(error, "An unexpected error (logged by the server)."),
            },
        },
    }


@openapi.record_once
def _build(state: BlueprintSetupState) -> None:
    state.app.extensions[_EXTENSION] = msgspec.json.encode(build_document())


@openapi.get(OPENAPI_PATH)
def document() -> Response:
    """The OpenAPI 3.1 document of this API."""
    body: bytes = current_app.extensions[_EXTENSION]
    return Response(body, mimetype="application/json")
