"""The dashboard's page and static files as the app serves them (Flask test client; the
browser itself is in tests/browser/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web.app import create_app
from spikewatch.web.dashboard import CHART_LIBRARY


@pytest.fixture
def app_and_client(tmp_path: Path) -> Iterator[tuple[Flask, FlaskClient]]:
    settings = load_settings({"db": str(tmp_path / "s.db")}, env={})
    store = SQLiteSignalStore(settings.db)
    app = create_app(settings, Engine(settings, store))  # never started: no network
    try:
        yield app, app.test_client()
    finally:
        store.close()


@pytest.fixture
def client(app_and_client: tuple[Flask, FlaskClient]) -> FlaskClient:
    return app_and_client[1]


def test_the_page_is_html_that_loads_only_from_the_app(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.mimetype_params["charset"] == "utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "connect-src 'self'" in csp
    page = response.get_data(as_text=True)
    assert '<script src="/assets/app.js"></script>' in page
    assert "http://" not in page
    assert "https://" not in page


@pytest.mark.parametrize(
    ("path", "mimetype"),
    [
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
        ("/assets/index.html", "text/html"),
    ],
)
def test_static_files_have_their_mime_types(client: FlaskClient, path: str, mimetype: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    response.close()


def test_the_chart_library_is_served_when_installed(
    app_and_client: tuple[Flask, FlaskClient], tmp_path: Path
) -> None:
    app, client = app_and_client
    library = tmp_path / "lightweight-charts.standalone.production.js"
    library.write_text("window.LightweightCharts = {};\n")
    app.config["SPIKEWATCH_CHART_LIBRARY"] = str(library)
    page = client.get("/").get_data(as_text=True)
    assert f'<script src="/assets/{CHART_LIBRARY}?v=' in page
    response = client.get(f"/assets/{CHART_LIBRARY}")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.get_data() == library.read_bytes()
    response.close()


def test_without_the_chart_library_the_page_has_no_script_for_it(
    app_and_client: tuple[Flask, FlaskClient], tmp_path: Path
) -> None:
    app, client = app_and_client
    app.config["SPIKEWATCH_CHART_LIBRARY"] = str(tmp_path / "missing.js")
    page = client.get("/").get_data(as_text=True)
    assert "vendor/" not in page  # no 404 in the browser's console: app.js shows a note
    assert client.get(f"/assets/{CHART_LIBRARY}").status_code == 404


@pytest.mark.parametrize(
    "path", ["/assets/../dashboard.py", "/assets/%2e%2e/dashboard.py", "/assets/nothing.js"]
)
def test_nothing_outside_the_static_folder_is_served(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 404
