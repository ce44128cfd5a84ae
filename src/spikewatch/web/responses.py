"""JSON responses encoded with msgspec (typed structs go out as they are)."""

from __future__ import annotations

from typing import Any

import msgspec
from flask import Response

_encode = msgspec.json.Encoder().encode


def json_response(body: Any, status: int = 200) -> Response:
    """Encode ``body`` (structs, dicts, lists) as a JSON response."""
    return Response(_encode(body), status=status, mimetype="application/json")
