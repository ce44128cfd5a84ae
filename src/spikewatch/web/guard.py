"""Checks on requests that change state (POST and the like), against cross-site use.

A web page on another site can make a visitor's browser send a form POST to
``http://127.0.0.1:5000/api/reconnect``; it can also point a name it controls at 127.0.0.1
(DNS rebinding) and send its requests there with its own name in ``Host``. So a request
that changes state is refused (403, JSON) when:

- its ``Host`` names neither the host the server listens on nor a loopback name (not
  checked when the server listens on every address: any name may reach it then, and
  ``api_token`` is required off loopback anyway);
- it carries an ``Origin`` (browsers send one with every cross-origin POST) that is not
  this server, or ``Sec-Fetch-Site: cross-site``.

A request with no ``Origin`` (curl, scripts) is not cross-site. Reading endpoints (GET,
HEAD, OPTIONS) are not checked: a foreign page cannot read their answers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, current_app, request

from spikewatch.config import Settings
from spikewatch.web.responses import json_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Hosts that mean "every address of this machine".
WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


def _split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6]:port`` for IPv6) as a lower-case name and a port."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:  # a malformed port or address
        return "", None


def _same_origin(origin: str, name: str, port: int | None) -> bool:
    """Whether ``origin`` is this server, reached as ``name``:``port`` (the ``Host``)."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:  # a malformed port or address
        return False
    if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() != name:
        return False
    # a Host without a port (the scheme's own) leaves nothing for the Origin to match
    return port is None or port == (origin_port or {"http": 80, "https": 443}[parts.scheme])


def _refuse(why: str) -> Response:
    return json_response({"error": f"refused: {why}"}, 403)


def check_state_change() -> Response | None:
    """A 403 for a cross-site state-changing request (see the module docstring), else
    None. Runs before every request."""
    if request.method in SAFE_METHODS:
        return None
    settings: Settings = current_app.extensions["spikewatch.settings"]
    name, port = _split_host(request.host)
    served = settings.host.strip("[]").lower()
    if served not in WILDCARDS and name not in LOOPBACK_NAMES | {served}:
        return _refuse(f"Host {request.host[:100]!r} is not this server")
    origin = request.headers.get("Origin")
    if origin is not None and not _same_origin(origin, name, port):
        return _refuse(f"cross-origin request from {origin[:100]!r}")
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return _refuse("cross-site request")
    return None
