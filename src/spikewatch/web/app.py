"""The Flask application factory."""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from spikewatch.config import Settings
from spikewatch.status import EngineView
from spikewatch.web.alerts import alerts
from spikewatch.web.api import api
from spikewatch.web.dashboard import dashboard
from spikewatch.web.fastpath import LatestSignalFastPath
from spikewatch.web.guard import check_state_change
from spikewatch.web.market import install as install_market
from spikewatch.web.metrics import metrics
from spikewatch.web.openapi import openapi
from spikewatch.web.params import BadRequest
from spikewatch.web.responses import json_response
from spikewatch.web.stream import stream


def create_app(settings: Settings, engine: EngineView) -> Flask:
    """Build the web app around an engine; it does not start the engine."""
    app = Flask("spikewatch")
    app.extensions["spikewatch.settings"] = settings
    app.extensions["spikewatch.engine"] = engine
    app.register_blueprint(api)
    app.register_blueprint(alerts)
    install_market(app, engine)  # /api/symbols, /api/top (seeds the board, follows the engine)
    app.register_blueprint(stream)
    app.register_blueprint(metrics)
    app.register_blueprint(openapi)
    app.register_blueprint(dashboard)
    app.wsgi_app = LatestSignalFastPath(app.wsgi_app, engine)  # type: ignore[method-assign]
    app.before_request(check_state_change)  # cross-site POSTs: 403 (web/guard.py)

    @app.after_request
    def no_sniffing(response: Response) -> Response:
        # a browser must take every answer for what its Content-Type says (JSON is
        # never run as a script or shown as HTML)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Response:
        return json_response({"error": str(exc), "param": exc.param}, 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = json_response({"error": exc.description or exc.name}, exc.code or 500)
        # Keep the error's own headers, such as a 405's Allow (RFC 9110 requires it).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        app.logger.exception("unhandled error on %s", request.path)
        return json_response({"error": "internal server error"}, 500)

    return app
