"""The JSON API: latest signal, signal history, status, liveness."""

from __future__ import annotations

import hmac
import threading
from typing import NamedTuple

from flask import Blueprint, Response, current_app, request

from spikewatch.status import EngineView
from spikewatch.store.base import Cursor
from spikewatch.store.spikes import latest_spike
from spikewatch.web import params
from spikewatch.web.responses import BarList, GapList, encode_json, json_response

api = Blueprint("api", __name__)

AWAITING = {"status": "Awaiting first signal..."}
#: Page sizes of /api/signals and /api/bars: default and maximum (the OpenAPI document reads them).
DEFAULT_PAGE, MAX_PAGE = 100, 1000
DEFAULT_BARS, MAX_BARS = 600, 3600


def _engine() -> EngineView:
    engine: EngineView = current_app.extensions["spikewatch.engine"]
    return engine


def served(engine: EngineView) -> tuple[str, ...]:
    """The exchanges ``engine`` serves: an ``exchange`` parameter must name one of them."""
    return (engine.exchange.name,)


_json = json_response


@api.get("/api/get_signal")
def get_signal() -> Response:
    """The latest spike (over all symbols, or ``?symbol=``; of ``?exchange=``, default
    the one served), or the awaiting status."""
    params.reject_unknown(request.args, ("symbol", "exchange"))
    engine = _engine()
    symbol = params.symbol(request.args)
    exchange = params.exchange(request.args, served(engine))
    signal = engine.latest_signal(symbol, exchange) or latest_spike(
        engine.store, exchange=exchange, symbol=symbol
    )
    if signal is None:
        # A symbol watched before a restart still has its stored signals; one neither
        # watched nor stored (a typo) would await its first signal for ever.
        params.watched(symbol, engine.symbols(), exchange or engine.exchange.name)
        return _json(AWAITING)
    return _json(signal)


#: History pages built at once, at most. Every thread that wants the interpreter gets its
#: turn in rotation: 32 clients paging at once would leave ingest 1/33 of it (measured:
#: 9,400 trades behind after 15 s at 10,000 trades/s). Waiting here costs no GIL.
_HISTORY_SLOTS = threading.BoundedSemaphore(2)


class PageQuery(NamedTuple):
    """One history page's filters, as both the recent cache and the store take them."""

    exchange: str | None
    symbol: str | None
    since_us: int | None
    until_us: int | None
    limit: int
    after: Cursor | None


@api.get("/api/signals")
def signals() -> Response:
    """Stored signals, newest first: ``symbol``, ``exchange``, ``since``, ``until``,
    ``limit``, ``cursor``."""
    args = request.args
    params.reject_unknown(args, ("symbol", "exchange", "since", "until", "limit", "cursor"))
    engine = _engine()
    symbol = params.symbol(args)
    exchange = params.exchange(args, served(engine))
    since, until = params.time_range(args)
    limit = params.integer(args, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    cursor = None
    if args.get("cursor"):
        try:
            if not params.CURSOR.fullmatch(args["cursor"]):
                raise ValueError(args["cursor"])
            cursor = Cursor.decode(args["cursor"])
        except ValueError:
            raise params.BadRequest(
                "cursor", "not one this server issued (pass next_cursor as it came)"
            ) from None
    with _HISTORY_SLOTS:  # see _HISTORY_SLOTS
        # recent pages from memory; older history (or a page reaching into it) from the store
        query = PageQuery(exchange, symbol, since, until, limit, cursor)
        answer = engine.recent.page_json(**query._asdict())
        if answer is None:
            answer = engine.store.page_json(**query._asdict())
    payloads, next_cursor = answer
    # the stored JSON goes out as it is: no decode and encode of every signal
    token = encode_json(next_cursor.encode() if next_cursor else None)
    body = b'{"signals":[%s],"count":%d,"next_cursor":%s}' % (
        b",".join(payloads),
        len(payloads),
        token,
    )
    return Response(body, mimetype="application/json")


@api.get("/api/bars")
def bars() -> Response:
    """Recent one-second OHLCV bars of ``symbol`` (default: the first configured) on
    ``exchange`` (default: the one served)."""
    args = request.args
    params.reject_unknown(args, ("symbol", "exchange", "limit"))
    engine = _engine()
    watched = engine.symbols()
    symbol = params.symbol(args) or (watched[0] if watched else "")
    exchange = params.exchange(args, served(engine)) or engine.exchange.name
    params.watched(symbol, watched, exchange)
    limit = params.integer(args, "limit", DEFAULT_BARS, 1, MAX_BARS)
    return _json(
        BarList(
            exchange=exchange,
            symbol=symbol,
            interval=1,
            bars=engine.bars(symbol, limit, exchange),
        )
    )


@api.get("/api/gaps")
def gaps() -> Response:
    """Gap records (trades missed for good), newest first: ``symbol``, ``exchange``,
    ``since``, ``until``, ``limit``."""
    args = request.args
    params.reject_unknown(args, ("symbol", "exchange", "since", "until", "limit"))
    engine = _engine()
    symbol = params.symbol(args)
    exchange = params.exchange(args, served(engine))
    since, until = params.time_range(args)
    limit = params.integer(args, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    records = engine.store.gaps(
        exchange=exchange, symbol=symbol, since_us=since, until_us=until, limit=limit
    )
    return _json(GapList(gaps=records, count=len(records)))


@api.get("/api/status")
def status() -> Response:
    """Connection state and counters, per symbol and in total."""
    params.reject_unknown(request.args, ())
    return _json(_engine().status())


def _require_token() -> Response | None:
    """State-changing endpoints: a bearer token when one is configured; without one,
    they answer only while the server is bound to loopback."""
    settings = _engine().settings
    token = settings.api_token
    if not token:
        if settings.host in ("127.0.0.1", "::1", "localhost"):
            return None
        return _json({"error": "set api_token to use this endpoint off loopback"}, 403)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return _json({"error": "missing or wrong bearer token"}, 401)
    return None


@api.post("/api/reconnect")
def reconnect() -> Response:
    """Open a fresh exchange connection now (gap-free, like a rotation)."""
    params.reject_unknown(request.args, ())
    denied = _require_token()
    if denied is not None:
        return denied
    engine = _engine()
    if not engine.request_reconnect():
        # a runtime without an exchange connection (spikewatch serve) says so
        refusal = getattr(engine, "reconnect_refusal", None) or "the engine is not running"
        return _json({"error": refusal}, 409)
    return _json({"status": "reconnecting"}, 202)


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the web server answers."""
    return _json({"status": "ok"})
