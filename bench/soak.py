"""Soak: the real app (``python app.py``) against the simulator for a long time at a steady
rate; prints resident memory, throughput and how far behind ingest is, over time.

    python bench/soak.py [--minutes 10] [--rate 2000] [--symbols 1]

The simulator loops the bundled real BTCUSDT recording (ids and times moved on each lap)
at ``rate`` trades per second. Memory must stay flat.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import machine
from common_live import get, simulator_at, start_app


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="trades per second")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()

    sim = simulator_at(args.rate)
    app, port = start_app(sim)
    print(f"soak: {args.minutes:g} min at {args.rate:,.0f} trades/s ({machine()})")
    print(
        f"{'t (s)':>7} {'RSS (MB)':>9} {'trades':>11} {'trades/s':>9} {'behind':>7} {'signals':>8}"
    )
    started = time.monotonic()
    last_t, last_trades = started, 0
    samples = []
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            try:
                status = get(port, "/api/status")
            except OSError:
                continue
            symbol = status["symbols"]["BTCUSDT"]
            now = time.monotonic()
            trades = symbol["trades"]
            behind = sim.stats().played - trades
            rate = (trades - last_trades) / (now - last_t)
            last_t, last_trades = now, trades
            row = (now - started, rss_kb(app.pid) / 1024, trades, rate, behind, symbol["signals"])
            samples.append(row)
            print(
                f"{row[0]:7.0f} {row[1]:9.1f} {row[2]:11,} {row[3]:9,.0f} {row[4]:7,} {row[5]:8,}"
            )
            sys.stdout.flush()
    finally:
        app.terminate()
        app.wait(10)
        sim.stop()
    if len(samples) >= 3:
        first, last = samples[1][1], samples[-1][1]  # skip the warm-up sample
        print(
            f"RSS after warm-up {first:.1f} MB, at the end {last:.1f} MB ({last - first:+.1f} MB)"
        )


if __name__ == "__main__":
    main()
