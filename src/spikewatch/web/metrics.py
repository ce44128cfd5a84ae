"""``GET /metrics`` (Prometheus text format) and ``GET /readyz`` (readiness).

The metrics are read from the engine at scrape time by one custom collector, so they are
exactly the counters ``/api/status`` shows, with no second set of books to keep in step.
Each app gets its own :class:`CollectorRegistry` (never the process-wide default one): a
process, like the test suite, may build many apps, and each must report its own engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from spikewatch.status import (
    LAG_BUCKETS_MS,
    WRITE_BUCKETS_MS,
    EngineStatus,
    EngineView,
    LagHistogram,
)
from spikewatch.web.responses import Readiness, json_response

metrics = Blueprint("metrics", __name__)

_REGISTRY = "spikewatch.metrics"
#: The labels of every per-symbol metric: a symbol names a series only with its exchange
#: (BTCUSDT spot and BTCUSDT futures are two).
_SERIES = ["exchange", "symbol"]


def _engine() -> EngineView:
    engine: EngineView = current_app.extensions["spikewatch.engine"]
    return engine


def _cumulative(histogram: LagHistogram, bounds_ms: Sequence[float]) -> list[tuple[str, float]]:
    """Per-bucket counts (ms bounds, last one above them all) as Prometheus ``le`` buckets
    in seconds, cumulative, ending with ``+Inf``."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*bounds_ms, float("inf")), histogram.counts, strict=True):
        total += count
        out.append(("+Inf" if bound == float("inf") else repr(bound / 1000), total))
    return out


class EngineCollector(Collector):
    """Reads one engine's counters at every scrape."""

    def __init__(self, engine: EngineView) -> None:
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        """Every spikewatch metric, from one status snapshot."""
        engine = self._engine
        status = engine.status()
        yield from _connection(status)
        yield from _symbols(status)
        yield from _signals(status)
        lag = HistogramMetricFamily(
            "spikewatch_ingest_lag_seconds",
            "Local receive time minus exchange trade time, per trade.",
            labels=_SERIES,
        )
        for symbol, histogram in engine.lag_histograms().items():  # the engine's exchange
            lag.add_metric(
                [status.exchange, symbol],
                _cumulative(histogram, LAG_BUCKETS_MS),
                histogram.sum_ms / 1000,
            )
        yield lag
        yield from _store(status)
        writes = engine.write_latency()
        yield HistogramMetricFamily(
            "spikewatch_store_write_seconds",
            "Time to write one batch of signals to the store.",
            buckets=_cumulative(writes, WRITE_BUCKETS_MS),
            sum_value=writes.sum_ms / 1000,
        )
        yield from _stream(status)
        yield from _alerts(status)


def _alerts(status: EngineStatus) -> Iterator[Metric]:
    """Alert rules' output and delivery (nothing without alert rules)."""
    alerts = status.alerts
    if alerts is None:
        return
    yield CounterMetricFamily(
        "spikewatch_alerts_opened", "Alerts opened since start.", value=alerts.opened
    )
    if alerts.delivery is None:
        return
    labels = ["destination"]
    states = GaugeMetricFamily(
        "spikewatch_alert_deliveries",
        "Alerts in the outbox per destination and state (pending, sent, dead).",
        labels=[*labels, "state"],
    )
    messages = CounterMetricFamily(
        "spikewatch_alert_messages", "Messages a destination acknowledged.", labels=labels
    )
    failed = CounterMetricFamily(
        "spikewatch_alert_failed_attempts", "Sends that failed (retried or dead).", labels=labels
    )
    failing = GaugeMetricFamily(
        "spikewatch_alert_destination_failing",
        "1 while a destination's sends fail.",
        labels=labels,
    )
    for d in alerts.delivery.destinations:
        for state, count in (("pending", d.pending), ("sent", d.sent), ("dead", d.dead)):
            states.add_metric([d.name, state], count)
        messages.add_metric([d.name], d.messages)
        failed.add_metric([d.name], d.failed_attempts)
        failing.add_metric([d.name], 1 if d.failing_since else 0)
    yield from (states, messages, failed, failing)


def _connection(status: EngineStatus) -> Iterator[Metric]:
    conn = status.connection
    yield GaugeMetricFamily(
        "spikewatch_connected",
        "1 while the exchange connection is open, else 0.",
        value=1 if status.running and conn.state == "connected" else 0,
    )
    yield CounterMetricFamily(
        "spikewatch_frames", "Frames received from the exchange.", value=status.frames
    )
    yield CounterMetricFamily(
        "spikewatch_ignored_frames",
        "Frames that carried no trade of a watched symbol (replies, other symbols).",
        value=status.ignored_frames,
    )
    malformed = CounterMetricFamily(
        "spikewatch_malformed_frames",
        "Frames skipped as malformed, by kind.",
        labels=["kind"],
    )
    for kind, count in sorted(status.malformed_frames.items()):
        malformed.add_metric([kind], count)
    yield malformed
    yield CounterMetricFamily(
        "spikewatch_connections", "Connections opened (rotations included).", conn.connections
    )
    yield CounterMetricFamily(
        "spikewatch_reconnects", "Connections opened after one was lost.", conn.reconnects
    )
    yield CounterMetricFamily(
        "spikewatch_rotations", "Planned connection rotations.", conn.rotations
    )


def _symbols(status: EngineStatus) -> Iterator[Metric]:
    trades = CounterMetricFamily(
        "spikewatch_trades", "Trades received and processed (repeats excluded).", labels=_SERIES
    )
    duplicates = CounterMetricFamily(
        "spikewatch_duplicate_trades",
        "Trades received twice (reconnect and rotation overlaps), dropped.",
        labels=_SERIES,
    )
    missing = CounterMetricFamily(
        "spikewatch_missing_trades", "Trades missed (jumps in trade ids).", labels=_SERIES
    )
    warmed = GaugeMetricFamily(
        "spikewatch_warmed_up",
        "1 once the symbol's detector window is full, else 0.",
        labels=_SERIES,
    )
    backfills = CounterMetricFamily(
        "spikewatch_backfills", "Gaps filled over REST.", labels=_SERIES
    )
    backfilled = CounterMetricFamily(
        "spikewatch_backfilled_trades", "Trades fetched over REST to fill gaps.", labels=_SERIES
    )
    gap_records = CounterMetricFamily(
        "spikewatch_gap_records",
        "Gaps that could not be filled (the detectors warmed up again).",
        labels=_SERIES,
    )
    backfilling = GaugeMetricFamily(
        "spikewatch_backfilling", "1 while a gap is being fetched, else 0.", labels=_SERIES
    )
    watchdog = CounterMetricFamily(
        "spikewatch_watchdog_resubscribes",
        "Fresh connections opened because the symbol went silent.",
        labels=_SERIES,
    )
    for s in status.symbols.values():
        series = [s.exchange, s.symbol]
        trades.add_metric(series, s.trades)
        duplicates.add_metric(series, s.duplicates_dropped)
        missing.add_metric(series, s.missing_trades)
        warmed.add_metric(series, 1 if s.warmed_up else 0)
        backfills.add_metric(series, s.backfills)
        backfilled.add_metric(series, s.backfilled_trades)
        gap_records.add_metric(series, s.gap_records)
        backfilling.add_metric(series, 1 if s.backfilling else 0)
        watchdog.add_metric(series, s.watchdog_resubscribes)
    yield from (trades, duplicates, missing, warmed)
    yield from (backfills, backfilled, gap_records, backfilling, watchdog)
    rest = status.rest
    yield CounterMetricFamily("spikewatch_rest_calls", "REST calls made.", value=rest.calls)
    yield CounterMetricFamily(
        "spikewatch_rest_failures", "REST calls that failed for good.", value=rest.failures
    )
    yield CounterMetricFamily(
        "spikewatch_rest_rate_limited",
        "REST replies 429/418 (rate limited).",
        value=rest.rate_limited,
    )
    yield CounterMetricFamily(
        "spikewatch_rest_successes",
        "REST look-ups answered with usable data.",
        value=rest.successes,
    )
    yield CounterMetricFamily(
        "spikewatch_rest_bad_replies",
        "REST 200 replies that were not usable trades (retried).",
        value=rest.bad_replies,
    )


def _signals(status: EngineStatus) -> Iterator[Metric]:
    by_detector = CounterMetricFamily(
        "spikewatch_signals", "Signals raised since start, by detector.", labels=["detector"]
    )
    for detector, count in sorted(status.signals_by_detector.items()):
        by_detector.add_metric([detector], count)
    yield by_detector
    by_symbol = CounterMetricFamily(
        "spikewatch_symbol_signals",
        "Signals raised since start, by exchange and symbol.",
        labels=_SERIES,
    )
    for s in status.symbols.values():
        by_symbol.add_metric([s.exchange, s.symbol], s.signals)
    yield by_symbol


def _store(status: EngineStatus) -> Iterator[Metric]:
    store = status.store
    yield GaugeMetricFamily(
        "spikewatch_store_queue_depth", "Signals waiting for the store writer.", store.queued
    )
    yield CounterMetricFamily(
        "spikewatch_store_written", "Signals written to the store.", store.written
    )
    yield CounterMetricFamily(
        "spikewatch_store_duplicates", "Signals the store already had.", store.duplicates
    )
    yield CounterMetricFamily(
        "spikewatch_store_failures", "Failed store writes (each retried).", store.failures
    )
    yield CounterMetricFamily(
        "spikewatch_store_queue_full_waits",
        "Times the ingest thread waited for room in the full store queue.",
        store.queue_full_waits,
    )
    yield GaugeMetricFamily(
        "spikewatch_store_healthy",
        "1 while the store takes writes, 0 from a failed write (a full disk) until one "
        "succeeds again.",
        value=1 if store.healthy else 0,
    )
    since = store.failing_since
    yield GaugeMetricFamily(
        "spikewatch_store_failing_since_seconds",
        "Unix time when the store's writes began to fail; 0 while it takes writes.",
        value=datetime.fromisoformat(since).timestamp() if since is not None else 0,
    )
    yield CounterMetricFamily(
        "spikewatch_store_dropped",
        "Signals (and gap records, checkpoints) not stored: the store queue was full while "
        "writes kept failing.",
        store.dropped,
    )


def _stream(status: EngineStatus) -> Iterator[Metric]:
    hub = status.stream
    yield GaugeMetricFamily(
        "spikewatch_sse_clients", "Live-stream (/api/stream) clients connected now.", hub.clients
    )
    yield CounterMetricFamily(
        "spikewatch_sse_connections",
        "Live-stream clients connected since start.",
        hub.connected_total,
    )
    yield CounterMetricFamily(
        "spikewatch_sse_dropped_slow_clients",
        "Live-stream clients dropped because they read too slowly.",
        hub.dropped_slow,
    )
    yield CounterMetricFamily(
        "spikewatch_sse_events", "Events published to live-stream clients.", hub.events_published
    )


def not_ready_reasons(engine: EngineView) -> list[str]:
    """Why the engine is not ready, one reason per unmet condition (empty when ready)."""
    own = getattr(engine, "not_ready_reasons", None)
    if callable(own):  # a runtime with other conditions (spikewatch serve) names its own
        return list(own())
    status = engine.status()
    reasons = []
    if not status.running:
        reasons.append("engine not running")
    elif status.connection.state != "connected":
        reasons.append(f"not connected (state: {status.connection.state})")
    window = engine.settings.window
    for symbol, s in status.symbols.items():
        if not s.warmed_up:
            reasons.append(f"{symbol} warming up {min(s.trades, window)}/{window}")
    store = status.store
    if not store.healthy:
        reasons.append(f"store writes failing since {store.failing_since}: {store.last_error}")
    return reasons


@metrics.record_once
def _register(state: BlueprintSetupState) -> None:
    registry = CollectorRegistry()
    registry.register(EngineCollector(state.app.extensions["spikewatch.engine"]))
    ProcessCollector(registry=registry)  # process_* metrics; yields nothing off Linux
    state.app.extensions[_REGISTRY] = registry


@metrics.get("/metrics")
def scrape() -> Response:
    """Every metric in the Prometheus text format (0.0.4)."""
    registry: CollectorRegistry = current_app.extensions[_REGISTRY]
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)


@metrics.get("/readyz")
def readyz() -> Response:
    """Readiness: 200 when connected, warmed up and storing, else 503 with the reasons."""
    engine = _engine()
    if engine.ready():
        return json_response(Readiness("ready"))
    # ready() and the reasons read two snapshots; the state may have moved in between.
    reasons = not_ready_reasons(engine) or ["not ready (state changing; retry)"]
    return json_response(Readiness("not ready", reasons), 503)
