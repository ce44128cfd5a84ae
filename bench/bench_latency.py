"""End-to-end latency: from the simulator sending a trade frame to an SSE client of
``/api/stream`` receiving the signal that trade raised, through the real app.

    python bench/bench_latency.py [--rates 2000,50000] [--seconds 20] [--placement both]

Three processes share the machine: the simulator (this one), the app, and the SSE client.
Two placements are measured: ``shared`` (the OS puts them anywhere) and ``pinned`` (the app
on a CPU of its own, the simulator and the client on the others: as in production, where
the exchange and the clients are not on the app's machine, and as load generators are
kept off the measured server's cores). On 2 cores, ``shared`` mostly measures the
simulator's bursts crowding the app and the client out of the CPU.

Baseline, measured in the same run: the same path with the app polled instead of pushed —
an original-style client calling ``/api/get_signal`` every 100 ms (what a bot without a
live stream does), at the lowest rate.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

from common import machine
from common_live import get, pin_process, simulator_at, start_app, unpin_process


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


def measure(
    rate: float,
    seconds: float,
    polled: bool,
    app_cpus: set[int] | None,
    flags: tuple[str, ...] = (),
) -> tuple[list[float], list[float], float]:
    """Latencies pushed (and polled, if asked) at ``rate``; the app on ``app_cpus`` and
    this process (simulator, client) on the other CPUs, when given."""
    if app_cpus is not None:
        pin_process(set(range(os.cpu_count() or 1)) - app_cpus)
    sim = simulator_at(rate)
    sim.simulator.sent_at = {}
    app, port = start_app(sim, *flags, cpus=app_cpus)
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
        unpin_process()
    return results["sse"], results.get("poll", []), ingest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="2000,50000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--placement", choices=["shared", "pinned", "both"], default="both")
    parser.add_argument(
        "--alert-profile",
        choices=["off", "default"],
        default="off",
        help="run the app with the shipped alert profile (docs/ALERTS.md)",
    )
    args = parser.parse_args()
    flags = ("--alert-profile", args.alert_profile)
    # this process runs the simulator and the client: let the client's thread get the GIL
    # promptly, or the measurement itself adds up to 5 ms per hand-over
    sys.setswitchinterval(0.0005)
    rates = [float(r) for r in args.rates.split(",")]
    placements = ["shared", "pinned"] if args.placement == "both" else [args.placement]
    cpus = os.cpu_count() or 1
    if "pinned" in placements and cpus < 2:
        raise SystemExit("--placement pinned needs at least 2 CPUs")
    print(
        f"frame sent -> signal received over SSE, {args.seconds:g} s per rate, "
        f"alert profile {args.alert_profile} ({machine()})"
    )
    for placement in placements:
        app_cpus = {cpus - 1} if placement == "pinned" else None
        where = f"app on CPU {cpus - 1}, the rest on the others" if app_cpus else "any CPU"
        print(f" {placement} ({where}):")
        for index, rate in enumerate(rates):
            polled = index == 0 and placement == placements[0]
            report(rate, *measure(rate, args.seconds, polled, app_cpus, flags))


def report(rate: float, sse: list[float], poll: list[float], ingest: float) -> None:
    """Print one rate's latencies (and the polled baseline's, when measured)."""
    if not sse:
        print(f"  {rate:>8,.0f} trades/s: no signal received")
        return
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
