"""End-to-end latency: from the simulator sending a trade frame to an SSE client of
``/api/stream`` receiving the signal that trade raised, through the real app.

    python bench/bench_latency.py [--rates 2000,50000] [--seconds 20]

Baseline, measured in the same run: the same path with the app polled instead of pushed —
an original-style client calling ``/api/get_signal`` every 100 ms (what a bot without a
live stream does), at the lowest rate.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

from common import machine
from common_live import get, simulator_at, start_app


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


READER = r"""
import http.client, json, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
conn.request("GET", "/api/stream")
response = conn.getresponse()
deadline = time.monotonic() + seconds
kind = ""
while time.monotonic() < deadline:
    line = response.fp.readline()
    now = time.time_ns()
    if line.startswith(b"event: "):
        kind = line[7:].strip().decode()
    elif line.startswith(b"data: ") and kind == "signal":
        print(json.loads(line[6:])["trade_id"], now, flush=True)
"""


def sse_latencies(port: int, sent_at: dict[int, int], seconds: float) -> list[float]:
    """Milliseconds from frame sent to signal received, for each signal in ``seconds``.

    The SSE client runs in a process of its own, so that neither the app nor the
    simulator (in this process) delays its reading."""
    out = subprocess.run(
        [sys.executable, "-c", READER, str(port), str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    latencies = []
    for line in out.splitlines():
        trade_id, received = (int(x) for x in line.split())
        sent = sent_at.get(trade_id)
        if sent is not None:
            latencies.append((received - sent) / 1e6)
    return latencies


def polled_latencies(port: int, sent_at: dict[int, int], seconds: float) -> list[float]:
    """The same, for a client polling /api/get_signal every 100 ms."""
    out: list[float] = []
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        signal = get(port, "/api/get_signal")
        now = time.time_ns()
        trade_id = signal.get("trade_id")
        if trade_id is not None and trade_id not in seen:
            seen.add(trade_id)
            sent = sent_at.get(trade_id)
            if sent is not None:
                out.append((now - sent) / 1e6)
        time.sleep(0.1)
    return out


def measure(rate: float, seconds: float, polled: bool) -> tuple[list[float], list[float], float]:
    sim = simulator_at(rate)
    sim.simulator.sent_at = {}
    app, port = start_app(sim)
    try:
        time.sleep(3)  # connected and warmed up
        before = get(port, "/api/status")["symbols"]["BTCUSDT"]["trades"]
        started = time.monotonic()
        results: dict[str, list[float]] = {}
        pusher = threading.Thread(
            target=lambda: results.__setitem__(
                "sse", sse_latencies(port, sim.simulator.sent_at or {}, seconds)
            )
        )
        pusher.start()
        if polled:
            results["poll"] = polled_latencies(port, sim.simulator.sent_at or {}, seconds)
        pusher.join()
        trades = get(port, "/api/status")["symbols"]["BTCUSDT"]["trades"] - before
        ingest = trades / (time.monotonic() - started)
    finally:
        app.terminate()
        app.wait(10)
        sim.stop()
    return results["sse"], results.get("poll", []), ingest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="2000,50000")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    # this process runs the simulator and the client: let the client's thread get the GIL
    # promptly, or the measurement itself adds up to 5 ms per hand-over
    sys.setswitchinterval(0.0005)
    rates = [float(r) for r in args.rates.split(",")]
    print(f"frame sent -> signal received over SSE, {args.seconds:g} s per rate ({machine()})")
    for index, rate in enumerate(rates):
        sse, poll, ingest = measure(rate, args.seconds, polled=index == 0)
        if not sse:
            print(f"  {rate:>8,.0f} trades/s: no signal received")
            continue
        print(
            f"  {rate:>8,.0f} trades/s (ingested {ingest:,.0f}/s): {len(sse):>5} signals, "
            f"p50 {percentile(sse, 50):7.2f} ms  p99 {percentile(sse, 99):7.2f} ms  "
            f"max {max(sse):7.2f} ms"
        )
        if poll:
            ratio = percentile(poll, 50) / percentile(sse, 50)
            print(
                f"  {'':>8}  baseline, polling get_signal every 100 ms: {len(poll):>5} signals, "
                f"p50 {percentile(poll, 50):7.2f} ms  p99 {percentile(poll, 99):7.2f} ms "
                f"({ratio:.1f}x the push p50)"
            )


if __name__ == "__main__":
    main()
