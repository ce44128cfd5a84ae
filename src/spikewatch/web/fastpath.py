"""A WSGI fast path for the endpoint bots poll hardest: ``GET /api/get_signal`` with no
query string is answered from the engine's cached encoding of the latest signal, without
Flask's routing and request objects. The bytes are those the Flask route would send; any
other request (or no signal in memory yet) goes on to Flask."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from spikewatch.status import EngineView

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class LatestSignalFastPath:
    """Wraps a WSGI app; see the module docstring."""

    def __init__(self, app: WSGIApp, engine: EngineView) -> None:
        self.app = app
        self.engine = engine

    def answers(self, method: str, path: str, query: str) -> bool:
        """Whether this request is answered here, from memory (the server's loop may
        then answer it itself: ``web/server.py``)."""
        return (
            method == "GET"
            and path == "/api/get_signal"
            and not query
            and self.engine.latest_signal_json() is not None
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if (
            environ.get("PATH_INFO") == "/api/get_signal"
            and not environ.get("QUERY_STRING")
            and environ.get("REQUEST_METHOD") == "GET"
        ):
            body = self.engine.latest_signal_json()
            if body is not None:
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("X-Content-Type-Options", "nosniff"),  # as the app adds
                    ],
                )
                return [body]
        return self.app(environ, start_response)


def quick_requests(app: Flask) -> Callable[[str, str, str], bool] | None:
    """What ``app``'s fast path answers from memory (for ``create_server(quick=...)``),
    or None if ``app`` has none."""
    fast = app.wsgi_app
    return fast.answers if isinstance(fast, LatestSignalFastPath) else None
