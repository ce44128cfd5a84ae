"""``/metrics`` and ``/readyz`` over a real engine fed the real recorded Binance frames.

The offline tests hand frames to ``Engine.handle_frame`` (with a receive time, as the
WebSocket client does) and read the Prometheus text back with prometheus_client's own
parser. The live tests run the engine against the simulator and the app behind waitress.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from spikewatch.config import load_settings
from spikewatch.engine import LAG_BUCKETS_MS, Engine
from spikewatch.replay.simulator import SimulatorThread
from spikewatch.store import SQLiteSignalStore
from spikewatch.web import create_app

from helpers import served_engine

#: Ingest lags (ms) given to the fed trades in turn: below, on and above bucket bounds.
LAGS_MS = (0.5, 1.0, 3.0, 40.0, 700.0, 9000.0)
WINDOW = 200


@dataclass
class Offline:
    engine: Engine
    app: Flask
    client: FlaskClient
    signals: list[str]  # detector of each signal raised

    def feed(self, frames: list[bytes], lags_ms: tuple[float, ...] = ()) -> None:
        """Hand frames to the engine; the i-th trade frame arrives ``lags_ms[i % n]`` late."""
        for i, frame in enumerate(frames):
            recv_ns = 0
            if lags_ms:
                try:
                    exchange_ms = json.loads(frame)["data"]["T"]
                except (ValueError, KeyError, TypeError):
                    exchange_ms = 1_723_161_600_000  # a malformed frame: any time will do
                recv_ns = int((exchange_ms + lags_ms[i % len(lags_ms)]) * 1_000_000)
            self.engine.handle_frame(frame, recv_ns)

    def metrics(self) -> dict[str, list[Sample]]:
        """Scrape /metrics; the samples of each family, parsed as Prometheus would."""
        response = self.client.get("/metrics")
        assert response.status_code == 200
        assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
        return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample called ``name`` with exactly ``labels`` (le aside)."""
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def buckets(samples: list[Sample], name: str, **labels: str) -> dict[float, float]:
    """A histogram's cumulative buckets: upper bound (seconds) -> count."""
    return {
        float(s.labels["le"]): s.value
        for s in samples
        if s.name == f"{name}_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels
    }


@pytest.fixture
def make_offline(tmp_path: Path) -> Iterator[Callable[..., Offline]]:
    stores: list[SQLiteSignalStore] = []

    def make(exchange: str = "binance", symbols: str = "BTCUSDT,ETHUSDT") -> Offline:
        settings = load_settings(
            {"db": str(tmp_path / f"m{len(stores)}.db"), "symbols": symbols, "exchange": exchange},
            env={},
        )
        store = SQLiteSignalStore(settings.db)
        stores.append(store)
        engine = Engine(settings, store)
        signals: list[str] = []
        engine.add_listener(lambda signal: signals.append(signal.detector))
        app = create_app(settings, engine)
        app.config["TESTING"] = True
        return Offline(engine, app, app.test_client(), signals)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def offline(make_offline: Callable[..., Offline]) -> Offline:
    return make_offline()


def malformed_frames(good: bytes) -> list[bytes]:
    zero_price = json.loads(good)
    zero_price["data"]["p"] = "0.00000000"
    return [
        b"not json",
        b"also not json",
        b'{"stream":"btcusdt@trade","data":{"e":"trade"}}',
        json.dumps(zero_price).encode(),
    ]


def test_metrics_count_trades_malformed_frames_signals_and_ingest_lag(
    offline: Offline, btc_frames: list[bytes]
) -> None:
    good = btc_frames[:5000]
    frames = [*good[:2500], *malformed_frames(good[100]), *good[2500:]]

    offline.feed(frames, LAGS_MS)
    m = offline.metrics()

    assert value(m["spikewatch_frames"], "spikewatch_frames_total") == len(frames)
    trades = m["spikewatch_trades"]
    assert value(trades, "spikewatch_trades_total", exchange="binance", symbol="BTCUSDT") == 5000
    assert value(trades, "spikewatch_trades_total", exchange="binance", symbol="ETHUSDT") == 0
    malformed = m["spikewatch_malformed_frames"]
    assert {s.labels["kind"]: s.value for s in malformed if s.name.endswith("_total")} == {
        "not_json": 2,
        "bad_schema": 1,
        "bad_value": 1,
    }
    assert offline.signals, "5000 trades of the recording raise signals"
    by_detector = {
        s.labels["detector"]: s.value
        for s in m["spikewatch_signals"]
        if s.name == "spikewatch_signals_total"
    }
    assert by_detector == {offline.signals[0]: len(offline.signals)}
    assert offline.signals[0].startswith("volume_spike-w200-")
    assert value(
        m["spikewatch_symbol_signals"],
        "spikewatch_symbol_signals_total",
        exchange="binance",
        symbol="BTCUSDT",
    ) == len(offline.signals)

    # The lag histogram holds every trade fed with a receive time, in the right buckets.
    lag = m["spikewatch_ingest_lag_seconds"]
    good_frames = set(good)
    trade_lags = [LAGS_MS[i % len(LAGS_MS)] for i, f in enumerate(frames) if f in good_frames]
    assert len(trade_lags) == 5000
    assert (
        value(lag, "spikewatch_ingest_lag_seconds_count", exchange="binance", symbol="BTCUSDT")
        == 5000
    )
    assert value(
        lag, "spikewatch_ingest_lag_seconds_sum", exchange="binance", symbol="BTCUSDT"
    ) == pytest.approx(sum(trade_lags) / 1000)
    expected = {bound / 1000: sum(x <= bound for x in trade_lags) for bound in LAG_BUCKETS_MS}
    expected[float("inf")] = 5000
    assert (
        buckets(lag, "spikewatch_ingest_lag_seconds", exchange="binance", symbol="BTCUSDT")
        == expected
    )
    assert (
        value(lag, "spikewatch_ingest_lag_seconds_count", exchange="binance", symbol="ETHUSDT") == 0
    )

    # Nothing connected, started or streaming.
    assert value(m["spikewatch_connected"], "spikewatch_connected") == 0
    assert value(m["spikewatch_reconnects"], "spikewatch_reconnects_total") == 0
    assert value(m["spikewatch_sse_clients"], "spikewatch_sse_clients") == 0
    assert value(m["spikewatch_store_queue_depth"], "spikewatch_store_queue_depth") == 0
    assert value(m["spikewatch_store_write_seconds"], "spikewatch_store_write_seconds_count") == 0
    warmed = m["spikewatch_warmed_up"]
    assert value(warmed, "spikewatch_warmed_up", exchange="binance", symbol="BTCUSDT") == 1
    assert value(warmed, "spikewatch_warmed_up", exchange="binance", symbol="ETHUSDT") == 0


def test_trades_without_a_receive_time_are_left_out_of_the_lag_histogram(
    offline: Offline, btc_frames: list[bytes]
) -> None:
    offline.feed(btc_frames[:300])  # recv_ns=0: a replay, not a live receive
    m = offline.metrics()

    assert (
        value(
            m["spikewatch_trades"], "spikewatch_trades_total", exchange="binance", symbol="BTCUSDT"
        )
        == 300
    )
    lag = m["spikewatch_ingest_lag_seconds"]
    assert (
        value(lag, "spikewatch_ingest_lag_seconds_count", exchange="binance", symbol="BTCUSDT") == 0
    )


def test_each_app_reports_its_own_engine(
    make_offline: Callable[..., Offline], btc_frames: list[bytes]
) -> None:
    first, second = make_offline(), make_offline()
    first.feed(btc_frames[:10])
    second.feed(btc_frames[:20])

    assert value(first.metrics()["spikewatch_frames"], "spikewatch_frames_total") == 10
    assert value(second.metrics()["spikewatch_frames"], "spikewatch_frames_total") == 20


FUTURES_FRAMES = "binance-usdm-BTCUSDT-trade-combined.hftbacktest-2024-08-08T2354Z_first-300.jsonl"


def test_btcusdt_futures_and_btcusdt_spot_are_two_series_told_apart_by_the_exchange_label(
    make_offline: Callable[..., Offline], btc_frames: list[bytes], fixtures_dir: Path
) -> None:
    futures_frames = (fixtures_dir / FUTURES_FRAMES).read_bytes().splitlines()
    spot, futures = make_offline(symbols="BTCUSDT"), make_offline("binance-usdm", "BTCUSDT")
    spot.feed(btc_frames[:500], LAGS_MS)
    futures.feed(futures_frames, LAGS_MS)

    s, f = spot.metrics(), futures.metrics()

    for name in ("spikewatch_trades_total", "spikewatch_ingest_lag_seconds_count"):
        family = name.removesuffix("_total").removesuffix("_count")
        assert value(s[family], name, exchange="binance", symbol="BTCUSDT") == 500
        assert value(f[family], name, exchange="binance-usdm", symbol="BTCUSDT") == 300
    # every per-symbol sample carries its exchange: the futures app has no spot series
    per_symbol = [x for samples in f.values() for x in samples if "symbol" in x.labels]
    assert per_symbol
    assert {x.labels["exchange"] for x in per_symbol} == {"binance-usdm"}


@pytest.mark.skipif(sys.platform != "linux", reason="process metrics are read from /proc")
def test_process_metrics_are_exported(offline: Offline) -> None:
    m = offline.metrics()

    assert value(m["process_resident_memory_bytes"], "process_resident_memory_bytes") > 0


def test_readyz_is_503_with_reasons_until_the_engine_runs_and_warms_up(
    offline: Offline, btc_frames: list[bytes]
) -> None:
    response = offline.client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "not ready",
        "reasons": [
            "engine not running",
            f"BTCUSDT warming up 0/{WINDOW}",
            f"ETHUSDT warming up 0/{WINDOW}",
        ],
    }

    offline.feed(btc_frames[:150])
    assert offline.client.get("/readyz").get_json()["reasons"] == [
        "engine not running",
        f"BTCUSDT warming up 150/{WINDOW}",
        f"ETHUSDT warming up 0/{WINDOW}",
    ]

    offline.feed(btc_frames[150:1000])  # BTCUSDT warm; but never connected
    response = offline.client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reasons"] == [
        "engine not running",
        f"ETHUSDT warming up 0/{WINDOW}",
    ]


# -- live: the engine connected to the simulator, the app behind waitress ------------


@dataclass
class Live:
    engine: Engine
    sim: SimulatorThread
    port: int

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def metrics(self) -> dict[str, list[Sample]]:
        status, text = self.get("/metrics")
        assert status == 200
        return {f.name: f.samples for f in text_string_to_metric_families(text)}


LIVE_FRAMES = 1000


def restamped(frames: list[bytes]) -> list[bytes]:
    """The frames with their exchange times moved to now (same spacing): the lag
    histogram counts live trades only, not recorded history served as if live."""
    docs = [json.loads(f) for f in frames]
    shift = time.time_ns() // 1_000_000 - docs[0]["data"]["T"]
    for doc in docs:
        doc["data"]["T"] += shift
        doc["data"]["E"] += shift
    return [json.dumps(d, separators=(",", ":")).encode() for d in docs]


@pytest.fixture
def live(tmp_path: Path, btc_frames: list[bytes]) -> Iterator[Live]:
    """The simulator at 20x the recorded pace (200 trades in about half a second), the
    recorded trades stamped as of now."""
    frames = restamped(btc_frames[:LIVE_FRAMES])
    with served_engine(frames, tmp_path / "s.db", speed=20) as served:
        yield Live(served.engine, served.sim, served.port)


@pytest.mark.slow
def test_readyz_turns_200_once_connected_and_warmed_up(live: Live) -> None:
    status, body = live.get("/readyz")
    assert (status, json.loads(body)["reasons"][0]) == (503, "engine not running")

    live.engine.start()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, f"never ready; last answers {seen[-3:]}"
        status, body = live.get("/readyz")
        if status == 200:
            break
        assert status == 503
        seen.append(json.loads(body))
        time.sleep(0.01)

    assert json.loads(body) == {"status": "ready"}
    trades = live.engine.status().symbols["BTCUSDT"].trades
    assert trades >= WINDOW
    # On the way: connected, the window filling up, the reason saying how far.
    warming = [b["reasons"] for b in seen if b["reasons"][0].startswith("BTCUSDT warming up")]
    assert warming, seen
    counts = [int(r[0].split()[-1].split("/")[0]) for r in warming]
    assert counts == sorted(counts)
    assert all(0 <= n < WINDOW for n in counts)


@pytest.mark.slow
def test_live_metrics_show_the_connection_the_trades_and_the_store_writes(live: Live) -> None:
    live.engine.start()
    assert live.sim.wait_done(30), "the simulator did not play the tape"
    deadline = time.monotonic() + 10
    while live.engine.status().symbols["BTCUSDT"].trades < LIVE_FRAMES:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert live.engine.flush(5)
    stream = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    stream.request("GET", "/api/stream")
    assert stream.getresponse().status == 200

    m = live.metrics()
    stream.close()

    assert value(m["spikewatch_connected"], "spikewatch_connected") == 1
    since = live.engine.status().connection.connected_since  # ISO, as every status time
    assert since is not None
    assert since.endswith("Z")
    assert abs(datetime.fromisoformat(since).timestamp() - time.time()) < 600
    assert value(m["spikewatch_connections"], "spikewatch_connections_total") == 1
    trades = value(
        m["spikewatch_trades"], "spikewatch_trades_total", exchange="binance", symbol="BTCUSDT"
    )
    assert trades == LIVE_FRAMES
    lag = m["spikewatch_ingest_lag_seconds"]
    # every live trade has its receive time: the histogram counts each one
    assert (
        value(lag, "spikewatch_ingest_lag_seconds_count", exchange="binance", symbol="BTCUSDT")
        == LIVE_FRAMES
    )
    status = live.engine.status()
    assert status.store.written > 0
    writes = m["spikewatch_store_write_seconds"]
    batches = value(writes, "spikewatch_store_write_seconds_count")
    assert 1 <= batches <= status.store.written
    assert value(writes, "spikewatch_store_write_seconds_sum") > 0
    assert buckets(writes, "spikewatch_store_write_seconds")[float("inf")] == batches
    assert value(m["spikewatch_store_written"], "spikewatch_store_written_total") == (
        status.store.written
    )
    assert value(m["spikewatch_sse_clients"], "spikewatch_sse_clients") == 1
    signals = sum(s.value for s in m["spikewatch_signals"] if s.name == "spikewatch_signals_total")
    assert signals == status.symbols["BTCUSDT"].signals > 0


def test_store_health_is_exported_as_healthy_while_writes_succeed(offline: Offline) -> None:
    m = offline.metrics()

    assert value(m["spikewatch_store_healthy"], "spikewatch_store_healthy") == 1
    assert (
        value(m["spikewatch_store_failing_since_seconds"], "spikewatch_store_failing_since_seconds")
        == 0
    )
    assert value(m["spikewatch_store_dropped"], "spikewatch_store_dropped_total") == 0
