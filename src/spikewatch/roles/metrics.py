"""Prometheus ``/metrics`` and ``/healthz`` of ``spikewatch ingest`` and ``spikewatch
detect``, on ``metrics_port`` (0: none) at ``host``.

A small threaded HTTP server of the standard library (the roles have no web app), and
one custom collector per role that reads the role's counters at scrape time, as
``spikewatch run``'s ``/metrics`` does (``web/metrics.py``): no second set of books. The
ingest role's engine is the one-process engine, so its connection, trade and gap metrics
are ``web/metrics.py``'s own, under the same names; the publisher's and the partitions'
are the roles' own (``spikewatch_ingest_*``, ``spikewatch_detect_*``; docs/DEPLOYMENT.md,
"What to monitor").

The collectors run on the server's threads while the role runs on its event loop: they
read plain counters and copies of dicts (``dict(d)`` is one step under the GIL), never
iterate a live one.
"""

from __future__ import annotations

import bisect
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from spikewatch.status import AlertStatus, EngineStatus
from spikewatch.web.metrics import _alerts, _connection, _symbols

if TYPE_CHECKING:
    from spikewatch.roles.detect import DetectWorker
    from spikewatch.roles.ingest import IngestRole

#: Upper bounds (seconds) of the publish latency histogram: a message's first send to
#: JetStream's ack (stored, replicated), retries included.
PUBLISH_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Histogram:
    """Counts of observations per bucket, and their sum (one writer thread)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """The histogram as Prometheus cumulative ``le`` buckets."""
        counts, running = list(self.counts), 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


@dataclass(frozen=True)
class _AlertsOnly:
    """What ``web/metrics.py``'s alert metrics read of a status: its ``alerts``."""

    alerts: AlertStatus


class IngestCollector(Collector):
    """The ingest role's metrics: its engine's (connection, trades, gaps, REST) and its
    publisher's."""

    def __init__(self, role: IngestRole) -> None:
        self._role = role

    def collect(self) -> Iterable[Metric]:
        role = self._role
        yield GaugeMetricFamily(
            "spikewatch_bus_connected",
            "1 while the NATS connection is up, else 0.",
            value=1 if role.bus_connected() else 0,
        )
        engine = role.engine
        if engine is not None:
            status = engine.status()
            yield from _connection(status)
            yield from _symbols(status)
        c = role.counters()
        yield CounterMetricFamily(
            "spikewatch_ingest_released_trades",
            "Trades the kernel released in order, gaps filled, handed to the publisher.",
            value=c.released,
        )
        yield CounterMetricFamily(
            "spikewatch_ingest_published_trades",
            "Trades JetStream acknowledged (stored).",
            value=c.published,
        )
        yield CounterMetricFamily(
            "spikewatch_ingest_publish_batches",
            "Messages (batches of one symbol's trades) JetStream acknowledged.",
            value=c.messages,
        )
        yield CounterMetricFamily(
            "spikewatch_ingest_duplicate_batches",
            "Messages JetStream had stored already (a restart's re-sends), dropped.",
            value=c.duplicates,
        )
        publisher = role.publisher
        if publisher is not None:
            p = publisher.counters()
            yield CounterMetricFamily(
                "spikewatch_ingest_publish_retries",
                "Publishes sent again after a timeout.",
                value=p.retries,
            )
            yield CounterMetricFamily(
                "spikewatch_ingest_publish_failures",
                "Messages given up on (the ingest stops: restart it).",
                value=p.failures,
            )
            yield CounterMetricFamily(
                "spikewatch_ingest_published_bytes",
                "Payload bytes JetStream acknowledged.",
                value=p.bytes,
            )
            yield GaugeMetricFamily(
                "spikewatch_ingest_pending_trades",
                "Trades buffered by the publisher, not yet acknowledged.",
                value=p.pending,
            )
            yield GaugeMetricFamily(
                "spikewatch_ingest_in_flight_batches",
                "Messages awaiting JetStream's acknowledgement.",
                value=p.in_flight,
            )
        handoff = role.handoff
        yield CounterMetricFamily(
            "spikewatch_ingest_handoff_waits",
            "Times the engine thread waited for the publisher (JetStream behind).",
            value=handoff.waits if handoff is not None else 0,
        )
        yield role.publish_latency.family(
            "spikewatch_ingest_publish_seconds",
            "A message's first send to JetStream's acknowledgement, retries included.",
        )


class DetectCollector(Collector):
    """A detect worker's metrics: partitions held, per partition its consumer's pending
    messages, trades, signals, snapshot age and takeovers; lease renewals; alerts."""

    def __init__(self, worker: DetectWorker) -> None:
        self._worker = worker

    def collect(self) -> Iterable[Metric]:
        worker = self._worker
        yield GaugeMetricFamily(
            "spikewatch_bus_connected",
            "1 while the NATS connection is up, else 0.",
            value=1 if worker.bus_connected() else 0,
        )
        held = set(worker.held())
        yield GaugeMetricFamily(
            "spikewatch_detect_partitions_owned",
            "Partitions this worker holds the lease of now.",
            value=len(held),
        )
        owned = GaugeMetricFamily(
            "spikewatch_detect_partition_owned",
            "1 while this worker holds the partition, else 0 (its --partitions).",
            labels=["partition"],
        )
        for p in worker.partitions:
            owned.add_metric([str(p)], 1 if p in held else 0)
        yield owned
        yield from _partitions(worker)
        yield CounterMetricFamily(
            "spikewatch_detect_lease_renewals",
            "Lease renewals that succeeded (every lease TTL / 3 per partition held).",
            value=worker.lease_renewals(),
        )
        yield CounterMetricFamily(
            "spikewatch_detect_leases_lost",
            "Partitions stopped at once because their lease was taken or not renewed.",
            value=worker.leases_lost,
        )
        alerts = worker.alerts
        if alerts is not None:
            yield CounterMetricFamily(
                "spikewatch_detect_alert_events",
                "Alert events (openings and updates) handed to the outbox.",
                value=alerts.events,
            )
            yield CounterMetricFamily(
                "spikewatch_detect_alerts_stored",
                "Alerts new to the shared outbox (the rest were there: a replay, or "
                "another worker).",
                value=alerts.stored,
            )
            status = AlertStatus([], alerts.stored, alerts.stats())
            yield from _alerts(cast(EngineStatus, _AlertsOnly(status)))


def _partitions(worker: DetectWorker) -> Iterator[Metric]:
    labels = ["partition"]
    pending = GaugeMetricFamily(
        "spikewatch_detect_consumer_pending",
        "Messages of the partition not yet delivered to this worker (its consumer's "
        "num_pending, read every few seconds): the lag; it should stay near 0.",
        labels=labels,
    )
    trades = CounterMetricFamily(
        "spikewatch_detect_trades", "Trades fed to the partition's kernel.", labels=labels
    )
    signals = CounterMetricFamily(
        "spikewatch_detect_signals",
        "Signals emitted (written and published; a replay emits some again).",
        labels=labels,
    )
    stored = CounterMetricFamily(
        "spikewatch_detect_signals_stored",
        "Of the signals emitted, those new to PostgreSQL.",
        labels=labels,
    )
    age = GaugeMetricFamily(
        "spikewatch_detect_snapshot_age_seconds",
        "Seconds since this worker last saved the partition's snapshot (or took the "
        "partition, before the first save): a takeover replays about this much.",
        labels=labels,
    )
    seq = GaugeMetricFamily(
        "spikewatch_detect_stream_seq",
        "Stream sequence of the last message the partition handled.",
        labels=labels,
    )
    takeovers = CounterMetricFamily(
        "spikewatch_detect_takeovers", "Times this worker took the partition.", labels=labels
    )
    now = time.monotonic()
    for c in worker.counters():
        series = [str(c.partition)]
        trades.add_metric(series, c.trades)
        signals.add_metric(series, c.signals)
        stored.add_metric(series, c.stored)
        seq.add_metric(series, c.last_seq)
        takeovers.add_metric(series, c.takeovers)
    for p, state in worker.partition_states().items():
        series = [str(p)]
        if state.pending is not None:
            pending.add_metric(series, state.pending)
        age.add_metric(series, max(0.0, now - state.snapshot_at))
    yield from (pending, trades, signals, stored, age, seq, takeovers)


class MetricsServer:
    """``/metrics`` of ``registry`` and ``/healthz`` (200, or 503 with the reasons
    ``problems()`` gives) on ``host:port``, on threads of its own: :meth:`start`,
    :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        collector: Collector,
        problems: Callable[[], list[str]],
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)  # process_* metrics (Linux)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(server.registry), CONTENT_TYPE_PLAIN_0_0_4)
                elif path == "/healthz":
                    reasons = problems()
                    body: dict[str, Any] = {"status": "not ok" if reasons else "ok"}
                    if reasons:
                        body["reasons"] = reasons
                    self._reply(503 if reasons else 200, json.dumps(body).encode(), _JSON)
                else:
                    self._reply(404, b'{"error": "not found: /metrics or /healthz"}', _JSON)

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds: not worth a log line each

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="spikewatch-metrics", daemon=True
        )

    def start(self) -> None:
        """Serve from now on."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


_JSON = "application/json"
