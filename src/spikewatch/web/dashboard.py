"""The dashboard: the page at ``/`` and its static files, all served by the app itself.

The page is plain HTML, CSS and JavaScript (``static/``, no build step). Its one library,
TradingView's lightweight-charts, comes from the npm registry: ``make assets`` copies the
pinned standalone build into ``static/vendor/`` (not committed). Nothing is loaded from a
CDN, so the dashboard works offline. Without the library the page still shows the signals
table and the connection status, and says how to install the chart.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, send_from_directory

STATIC_DIR = Path(__file__).parent / "static"
#: The chart library as ``make assets`` installs it (relative to ``STATIC_DIR``).
CHART_LIBRARY = "vendor/lightweight-charts.standalone.production.js"
#: Where the page's static files are served.
ASSETS_URL = "/assets"
#: Replaced in index.html by the chart library's script tag (or nothing if it is missing).
_PLACEHOLDER = "<!-- chart-library -->"

# Explicit types (Werkzeug adds charset=utf-8 to text ones): Python's mimetypes reads the
# system's tables, which differ by machine (some Windows registries map .js to text/plain,
# which browsers refuse to run under nosniff).
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# Everything from this origin only: the page must not depend on (or leak to) anything else.
# Inline styles are allowed because the chart library sizes its canvases with them.
_CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

dashboard = Blueprint("dashboard", __name__)


def chart_library_path() -> Path:
    """The chart library file the page uses (tests point ``SPIKEWATCH_CHART_LIBRARY`` away)."""
    configured = current_app.config.get("SPIKEWATCH_CHART_LIBRARY")
    return Path(configured) if configured else STATIC_DIR / CHART_LIBRARY


@dashboard.get("/")
def index() -> Response:
    """The dashboard page: chart, signals table, per-symbol status, symbol selector."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    library = chart_library_path()
    if library.is_file():
        version = int(library.stat().st_mtime)
        tag = f'<script src="{ASSETS_URL}/{CHART_LIBRARY}?v={version}"></script>'
    else:
        # No 404 in the console: app.js sees no library and shows how to install it.
        current_app.logger.warning("chart library %s not installed: run make assets", library)
        tag = ""
    response = Response(page.replace(_PLACEHOLDER, tag), mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@dashboard.get(f"{ASSETS_URL}/<path:filename>")
def asset(filename: str) -> Response:
    """A static file of the page (404 outside ``static/``)."""
    if filename == CHART_LIBRARY:
        library = chart_library_path()
        folder, name = library.parent, library.name
    else:
        folder, name = STATIC_DIR, filename
    response = send_from_directory(
        folder, name, mimetype=_TYPES.get(Path(name).suffix.lower()), max_age=0
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    # the page's own policy on its files too: /assets/index.html (or an SVG) opened by
    # itself must not run or load anything more than the page at / may
    response.headers["Content-Security-Policy"] = _CSP
    return response
