"""The JSON API: latest signal, signal history, status, liveness."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from spikewatch.engine import Engine
from spikewatch.store.base import Cursor
from spikewatch.web import params
from spikewatch.web.responses import json_response

api = Blueprint("api", __name__)

AWAITING = {"status": "Awaiting first signal..."}
MAX_PAGE = 1000


def _engine() -> Engine:
    engine: Engine = current_app.extensions["spikewatch.engine"]
    return engine


_json = json_response


@api.get("/api/get_signal")
def get_signal() -> Response:
    """The latest spike (over all symbols, or ``?symbol=``), or the awaiting status."""
    params.reject_unknown(request.args, ("symbol",))
    symbol = params.symbol(request.args)
    engine = _engine()
    signal = engine.latest_signal(symbol) or engine.store.latest(symbol)
    return _json(signal if signal is not None else AWAITING)


@api.get("/api/signals")
def signals() -> Response:
    """Stored signals, newest first: ``symbol``, ``since``, ``until``, ``limit``, ``cursor``."""
    args = request.args
    params.reject_unknown(args, ("symbol", "since", "until", "limit", "cursor"))
    symbol = params.symbol(args)
    since = params.time_us(args, "since")
    until = params.time_us(args, "until")
    if since is not None and until is not None and since >= until:
        raise params.BadRequest("until", "must be later than since")
    limit = params.integer(args, "limit", 100, 1, MAX_PAGE)
    cursor = None
    if args.get("cursor"):
        try:
            cursor = Cursor.decode(args["cursor"])
        except ValueError as exc:
            raise params.BadRequest("cursor", str(exc)) from None
    page = _engine().store.page(
        symbol=symbol, since_us=since, until_us=until, limit=limit, after=cursor
    )
    return _json(
        {
            "signals": page.signals,
            "count": len(page.signals),
            "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
        }
    )


@api.get("/api/bars")
def bars() -> Response:
    """Recent one-second OHLCV bars of ``symbol`` (default: the first configured)."""
    params.reject_unknown(request.args, ("symbol", "limit"))
    engine = _engine()
    symbol = params.symbol(request.args) or engine.settings.symbols[0]
    if symbol not in engine.settings.symbols:
        raise params.BadRequest("symbol", f"{symbol} is not one of {list(engine.settings.symbols)}")
    limit = params.integer(request.args, "limit", 600, 1, 3600)
    return _json({"symbol": symbol, "interval": 1, "bars": engine.bars(symbol, limit)})


@api.get("/api/status")
def status() -> Response:
    """Connection state and counters, per symbol and in total."""
    params.reject_unknown(request.args, ())
    return _json(_engine().status())


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the web server answers."""
    return _json({"status": "ok"})
