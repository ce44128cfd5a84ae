"""``GET /api/stream``: the live push as Server-Sent Events.

Events: ``signal`` (a signal, ``id:`` its delivery number), ``status`` (every second:
per-symbol connection, price, trade rate, the forming one-second bar), ``alert`` (with
alert rules configured: an alert opened or updated, published by the engine with its
symbol and exchange; no ``id:``, so not replayed: ``/api/alerts`` has what was missed),
and ``:`` comments as keep-alive. A client that reconnects with ``Last-Event-ID``
(browsers do so by themselves) first gets the signals it missed, from the store.
``symbol`` and ``exchange`` narrow the live signals and alerts, and that replay.

The request thread writes the replay; then the hub's push thread writes the live events
(see ``spikewatch.hub`` and ``web/outlets.py``) and the request thread sleeps until the
stream ends. A client that falls too far behind is disconnected and resumes the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request

from spikewatch.hub import Event
from spikewatch.status import EngineView
from spikewatch.web import params
from spikewatch.web.api import served
from spikewatch.web.outlets import outlet_for
from spikewatch.web.responses import json_response

stream = Blueprint("stream", __name__)

#: Seconds between keep-alive comments on an idle stream (proxies close silent ones).
KEEPALIVE_S = 15.0
#: Signals replayed from the store to a resuming client, at most.
MAX_RESUME = 10_000
#: Bytes of replayed signals per write, about (a write waits while the client is slow).
RESUME_WRITE = 64 * 1024


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise params.BadRequest("Last-Event-ID", f"{raw[:40]!r} is not an event id")
    return int(raw)


@stream.get("/api/stream")
def live() -> Response:
    """Server-Sent Events: signals and alerts as they happen, status every second."""
    params.reject_unknown(request.args, ("symbol", "exchange", "last_event_id"))
    engine: EngineView = current_app.extensions["spikewatch.engine"]
    symbol = params.symbol(request.args)
    exchange = params.exchange(request.args, served(engine))
    params.watched(symbol, engine.symbols(), exchange or engine.exchange.name)
    last_id = _last_event_id()
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # no body is sent: no stream to open
        return Response(mimetype="text/event-stream", headers=headers)
    keepalive: float = current_app.config.get("SPIKEWATCH_KEEPALIVE_S", KEEPALIVE_S)
    outlet = outlet_for(request.environ)
    # before reading the store, so nothing falls in between
    client = engine.hub.attach(outlet, symbol, exchange, keepalive)
    subscribed_at = engine.last_seq()
    if client is None:
        return json_response({"error": "too many live-stream clients; try again later"}, 503)

    def events() -> Iterator[bytes]:
        yield b"retry: 2000\n: spikewatch live stream\n\n"
        replayed = last_id or 0
        if last_id is not None and last_id > subscribed_at:
            replayed = subscribed_at  # an id from before a restart: nothing to resume
        elif last_id is not None:
            # everything delivered up to our subscription comes from the store, page by
            # page; what comes after it, from the hub
            until = subscribed_at
            while replayed < until:
                page = engine.signals_after(replayed, MAX_RESUME)
                if not page:
                    break
                chunk: list[bytes] = []
                size = 0
                for seq, signal in page:
                    replayed = seq
                    if (symbol is None or signal.symbol == symbol) and (
                        exchange is None or signal.exchange == exchange
                    ):
                        chunk.append(Event.signal(signal, seq).encode())
                        size += len(chunk[-1])
                        if size >= RESUME_WRITE:
                            yield b"".join(chunk)
                            chunk, size = [], 0
                if chunk:
                    yield b"".join(chunk)
        # from here on the hub's push thread writes this stream (signals after
        # ``replayed`` only), and drops it if the client falls too far behind: it then
        # reconnects and resumes from the store
        engine.hub.go_live(client, replayed)
        yield from outlet.stream()

    response = Response(events(), mimetype="text/event-stream", headers=headers)
    # also when the body is never read (the client went away before it started)
    response.call_on_close(lambda: engine.hub.detach(client))
    return response
