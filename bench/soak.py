"""Soak: the real app (``python app.py``) against the simulator for a long time at a steady
rate; prints resident memory, throughput and how far behind ingest is, over time.

    python bench/soak.py [--minutes 10] [--rate 2000] [--symbols 1]

The simulator loops the bundled real BTCUSDT recording (ids and times moved on each lap)
at ``rate`` trades per second. Memory must stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import BTC_FRAMES, ROOT, machine, read_frames
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="trades per second")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()

    tape = tape_from_frames(read_frames(BTC_FRAMES))
    span_s = (tape[-1].time_ms - tape[0].time_ms) / 1000
    speed = args.rate / (len(tape) / span_s)
    sim = SimulatorThread(Simulator(tape, speed=speed, loop=True))
    sim.start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="spikewatch-soak-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
    log = (folder / "app.log").open("wb")
    app = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "app.py"),
            "--port",
            str(port),
            "--ws-url",
            sim.ws_url,
            "--rest-url",
            sim.rest_url,
            "--db",
            str(folder / "soak.db"),
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
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
        log.close()
    if len(samples) >= 3:
        first, last = samples[1][1], samples[-1][1]  # skip the warm-up sample
        print(
            f"RSS after warm-up {first:.1f} MB, at the end {last:.1f} MB ({last - first:+.1f} MB)"
        )


if __name__ == "__main__":
    main()
