"""``GET /api/stream``: the live push as Server-Sent Events.

Events: ``signal`` (a signal, ``id:`` its delivery number), ``status`` (every second:
per-symbol connection, price, trade rate, the forming one-second bar), and ``:`` comments
as keep-alive. A client that reconnects with ``Last-Event-ID`` (browsers do so by
themselves) first gets the signals it missed, from the store. ``symbol`` and ``exchange``
narrow both the live signals and that replay.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request

from spikewatch.hub import DROPPED, Event
from spikewatch.status import EngineView
from spikewatch.web import params
from spikewatch.web.api import served
from spikewatch.web.responses import json_response

stream = Blueprint("stream", __name__)

#: Seconds between keep-alive comments on an idle stream (proxies close silent ones).
KEEPALIVE_S = 15.0
#: Signals replayed from the store to a resuming client, at most.
MAX_RESUME = 10_000


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise params.BadRequest("Last-Event-ID", f"{raw[:40]!r} is not an event id")
    return int(raw)


@stream.get("/api/stream")
def live() -> Response:
    """Server-Sent Events: signals as they happen, status every second."""
    params.reject_unknown(request.args, ("symbol", "exchange", "last_event_id"))
    engine: EngineView = current_app.extensions["spikewatch.engine"]
    symbol = params.symbol(request.args)
    exchange = params.exchange(request.args, served(engine))
    last_id = _last_event_id()
    keepalive: float = current_app.config.get("SPIKEWATCH_KEEPALIVE_S", KEEPALIVE_S)
    sub = engine.hub.subscribe()  # before reading the store, so nothing falls in between
    subscribed_at = engine.last_seq()
    if sub is None:
        return json_response({"error": "too many live-stream clients; try again later"}, 503)

    def events() -> Iterator[bytes]:
        try:
            yield b"retry: 2000\n: spikewatch live stream\n\n"
            replayed = last_id or 0
            if last_id is not None and last_id > subscribed_at:
                replayed = subscribed_at  # an id from before a restart: nothing to resume
            elif last_id is not None:
                # everything delivered up to our subscription comes from the store, page
                # by page; what comes after it, from the queue
                until = subscribed_at
                while replayed < until:
                    page = engine.signals_after(replayed, MAX_RESUME)
                    if not page:
                        break
                    for seq, signal in page:
                        replayed = seq
                        if (symbol is None or signal.symbol == symbol) and (
                            exchange is None or signal.exchange == exchange
                        ):
                            yield Event.signal(signal, seq).encode()
            while True:
                first = sub.get(keepalive)
                if first is None:
                    yield b": keep-alive\n\n"
                    continue
                # what else is queued goes out in the same write: a burst of signals
                # costs one wake-up and one send, not one each
                chunk: list[bytes] = []
                for event in (first, *sub.drain()):
                    if event is DROPPED:
                        if chunk:
                            yield b"".join(chunk)
                        return  # too slow: the client reconnects and resumes from the store
                    if event.id is not None and event.id <= replayed:
                        continue  # already sent from the store
                    if event.wanted(symbol, exchange):
                        chunk.append(event.encode())
                if chunk:
                    yield b"".join(chunk)
        finally:
            engine.hub.unsubscribe(sub)

    return Response(
        events(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
