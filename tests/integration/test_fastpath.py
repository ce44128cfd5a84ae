"""The WSGI fast path for ``GET /api/get_signal`` answers exactly as the Flask route does."""

from __future__ import annotations

from pathlib import Path

from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.web.app import create_app


def test_fast_path_sends_the_bytes_the_flask_route_sends(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    settings = load_settings({"db": str(tmp_path / "s.db")}, env={})
    store = SQLiteSignalStore(settings.db)
    try:
        engine = Engine(settings, store)
        client = create_app(settings, engine).test_client()
        before = client.get("/api/get_signal")
        assert before.get_json() == {"status": "Awaiting first signal..."}  # falls through
        for frame in btc_frames[:5000]:
            engine.handle_frame(frame)
        assert engine.latest_signal_json() is not None
        fast = client.get("/api/get_signal")  # no query string: the fast path
        routed = client.get("/api/get_signal?symbol=BTCUSDT")  # the Flask route
        assert fast.status_code == routed.status_code == 200
        assert fast.data == routed.data
        assert fast.headers["Content-Type"] == routed.headers["Content-Type"]
        assert fast.get_json()["trade_id"] == engine.latest_signal().trade_id  # type: ignore[union-attr]
        assert client.post("/api/get_signal").status_code == 405  # other methods: Flask
    finally:
        store.close()
