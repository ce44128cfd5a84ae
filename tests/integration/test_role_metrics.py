"""``/metrics`` and ``/healthz`` of ``spikewatch ingest`` and ``spikewatch detect`` (the
real command line, as processes, with ``--metrics-port``), scraped over HTTP while they
carry the recorded trades from the simulator through NATS JetStream to PostgreSQL: the
figures are what was done (every trade published and processed, the signals the embedded
mode finds, nothing pending), in the Prometheus text format.

Without the servers these tests skip on a developer's machine and FAIL under CI."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames

from helpers import free_port, wait_until
from roles_kit import deployment, embedded_ids, stop

pytestmark = pytest.mark.slow

FRAMES = 4000


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


def healthz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ingest_and_detect_serve_what_they_did_as_prometheus_metrics(
    btc_frames: list[bytes], tmp_path: Path
) -> None:
    frames = btc_frames[:FRAMES]
    trades = len(frames)  # one trade a frame in this recording
    expected = embedded_ids(frames)
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=None))
    sim.start()
    ingest_port, detect_port = free_port(), free_port()
    try:
        with deployment(tmp_path, partitions=4) as dep:
            btc = str(dep.names.trade_subjects.partition("binance", "BTCUSDT"))
            detect = dep.start("detect", "--metrics-port", str(detect_port))
            ingest = dep.start(
                "ingest",
                "--symbols",
                "BTCUSDT",
                "--ws-url",
                sim.ws_url,
                "--rest-url",
                sim.rest_url,
                "--metrics-port",
                str(ingest_port),
            )
            try:
                wait_until(lambda: set(dep.stored()) >= expected, timeout=60)

                def done() -> bool:
                    i, d = scrape(ingest_port), scrape(detect_port)
                    return (
                        value(i, "spikewatch_ingest_published_trades_total") == trades
                        and value(d, "spikewatch_detect_trades_total", partition=btc) == trades
                        and value(d, "spikewatch_detect_consumer_pending", partition=btc) == 0
                        and value(d, "spikewatch_detect_lease_renewals_total") > 0
                    )

                wait_until(done, timeout=60)
            except BaseException:
                print(dep.logs())
                raise
            i, d = scrape(ingest_port), scrape(detect_port)
            # ingest: the exchange side (web/metrics.py's names) and the publisher's
            assert value(i, "spikewatch_connected") == 1
            assert value(i, "spikewatch_bus_connected") == 1
            assert value(i, "spikewatch_trades_total", exchange="binance", symbol="BTCUSDT") == (
                trades
            )
            assert value(i, "spikewatch_ingest_released_trades_total") == trades
            batches = value(i, "spikewatch_ingest_publish_batches_total")
            assert 1 <= batches <= trades
            assert value(i, "spikewatch_ingest_publish_seconds_count") == batches
            assert value(i, "spikewatch_ingest_publish_seconds_bucket", le="+Inf") == batches
            assert value(i, "spikewatch_ingest_publish_seconds_sum") > 0
            assert value(i, "spikewatch_ingest_pending_trades") == 0
            assert value(i, "spikewatch_ingest_publish_failures_total") == 0
            assert (
                value(i, "spikewatch_gap_records_total", exchange="binance", symbol="BTCUSDT") == 0
            )
            # detect: one worker holds every partition
            assert value(d, "spikewatch_bus_connected") == 1
            assert value(d, "spikewatch_detect_partitions_owned") == 4
            for p in range(4):
                assert value(d, "spikewatch_detect_partition_owned", partition=str(p)) == 1
                assert value(d, "spikewatch_detect_takeovers_total", partition=str(p)) == 1
                assert value(d, "spikewatch_detect_snapshot_age_seconds", partition=str(p)) >= 0
            assert value(d, "spikewatch_detect_signals_total", partition=btc) == len(expected)
            assert value(d, "spikewatch_detect_signals_stored_total", partition=btc) == len(
                expected
            )
            assert value(d, "spikewatch_detect_stream_seq", partition=btc) >= batches
            assert value(d, "spikewatch_detect_leases_lost_total") == 0
            assert value(d, "spikewatch_detect_alert_events_total") >= 0
            assert ("process_cpu_seconds_total", ()) in d
            assert healthz(ingest_port) == (200, {"status": "ok"})
            assert healthz(detect_port) == (200, {"status": "ok"})
            assert stop(ingest) == 0
            assert stop(detect) == 0
    finally:
        sim.stop()


def test_a_metrics_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for role in ("ingest", "detect"):
            args = [role, "--metrics-port", str(port), "--postgres", "postgresql://u@h/db"]
            proc = subprocess.run(
                [sys.executable, "-m", "spikewatch", *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 2, proc.stderr
            assert f"metrics_port {port}" in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_bad_metrics_port_names_the_key() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spikewatch", "ingest", "--metrics-port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "metrics_port" in proc.stderr
