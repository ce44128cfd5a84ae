"""API speed under load: ``wrk`` on loopback against ``/api/get_signal`` and
``/api/signals`` while the app ingests a fast simulated stream (10,000 trades/s).

Baseline, measured in the same run: the original request's style — a Flask app on
Werkzeug's threaded development server returning the latest signal from a dict under a lock.

    python bench/bench_api.py [--rate 10000] [--seconds 15] [--connections 32]
Needs Debian's ``wrk``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import threading
import time

from common import machine
from common_live import free_port, get, simulator_at, start_app


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 latency (ms) of ``wrk`` against ``url``."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, pct("50"), pct("99")


def baseline_server(port: int) -> None:
    """The original style: Flask dev server, a global dict under a lock."""
    from flask import Flask, jsonify

    app = Flask("baseline")
    lock = threading.Lock()
    latest = {
        "signal_type": "VolumeSpike",
        "price": 67500.5,
        "volume": 15.34,
        "timestamp": "2025-07-30T17:20:05Z",
    }

    @app.get("/api/get_signal")
    def get_signal():  # type: ignore[no-untyped-def]
        with lock:
            return jsonify(latest)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.run(host="127.0.0.1", port=port, threaded=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk: apt-get install wrk")

    port = free_port()
    threading.Thread(target=baseline_server, args=(port,), daemon=True).start()
    time.sleep(1.0)
    base = wrk(f"http://127.0.0.1:{port}/api/get_signal", args.seconds, args.connections)

    sim = simulator_at(args.rate)
    app, port = start_app(sim)
    try:
        time.sleep(3)  # warm up: connected, windows full, signals flowing
        before = get(port, "/api/status")["symbols"]["BTCUSDT"]["trades"]
        started = time.monotonic()
        latest = wrk(f"http://127.0.0.1:{port}/api/get_signal", args.seconds, args.connections)
        history = wrk(
            f"http://127.0.0.1:{port}/api/signals?limit=100", args.seconds, args.connections
        )
        status = get(port, "/api/status")
        ingested = (status["symbols"]["BTCUSDT"]["trades"] - before) / (time.monotonic() - started)
        behind = sim.stats().played - status["symbols"]["BTCUSDT"]["trades"]
    finally:
        app.terminate()
        app.wait(10)
        sim.stop()

    print(f"API under load, wrk -t2 -c{args.connections} -d{args.seconds}s ({machine()})")
    print(
        f"  ingest during the runs: {ingested:,.0f} trades/s (target {args.rate:,.0f}), "
        f"{behind:,} trades behind at the end"
    )
    rows = [
        ("baseline Flask dev server, /api/get_signal", base),
        ("spikewatch /api/get_signal", latest),
        ("spikewatch /api/signals?limit=100", history),
    ]
    for name, (rps, p50, p99) in rows:
        print(f"  {name:<44} {rps:>9,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    print(f"  ratio get_signal spikewatch / baseline: {latest[0] / base[0]:.2f}x req/s")


if __name__ == "__main__":
    main()
