"""``/api/get_signal`` latency while the app ingests the whole market (issue 12, item 4).

The real command line as processes: ``spikewatch simulate --market 2000 --quotes USDT
--speed S --loop`` on the two recordings, ``python app.py --symbols ALL:USDT`` against it,
then rounds of ``wrk --latency`` on ``/api/get_signal``: while the simulator sends (the
load), then as many with the simulator stopped (SIGSTOP: the same app,
its 2,000 symbols and its memory, ingest idle; the baseline), so the ratio shows what the
load costs. The trade rate is read from ``/metrics`` around each loaded round; the app's
CPU time from ``/proc``. The loaded rounds come first, then the idle ones (after a pause
the app catches up over REST, which no steady load does). Prints one line a round and
the medians.

    .venv/bin/python bench/bench_api_market.py [--speed 0.4] [--rounds 3] [--seconds 20]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
RECORDINGS = (
    FIXTURES / "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz",
    FIXTURES / "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz",
)
_TRADES = re.compile(rb"^spikewatch_trades_total\{[^}]*\} (\S+)$", re.M)


def get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        body: bytes = reply.read()
        if reply.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body


def trades(base: str) -> tuple[float, int]:
    """(monotonic time, trades counted over every symbol) from /metrics."""
    body = get(base + "metrics")
    return time.monotonic(), int(sum(float(v) for v in _TRADES.findall(body)))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    value = float(
        text[:-2] if text.endswith("ms") else text[:-2] if text.endswith("us") else text[:-1]
    )
    if text.endswith("us"):
        return value / 1000
    if text.endswith("ms"):
        return value
    return value * 1000  # seconds


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, requests/s) of ``wrk -t1 -c<connections> --latency``."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)$", out, re.M)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)$", out, re.M)[1])  # type: ignore[index]
    rps = float(re.search(r"^Requests/sec:\s+(\S+)$", out, re.M)[1])  # type: ignore[index]
    if "Non-2xx" in out or "Socket errors" in out:
        print(
            "  wrk:",
            " ".join(line.strip() for line in out.splitlines() if "rror" in line or "Non" in line),
        )
    return p50, p99, rps


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", default="0.4", help="the simulator's --speed")
    parser.add_argument("--symbols", type=int, default=2000, help="the simulator's --market")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20, help="each wrk run")
    parser.add_argument("--connections", type=int, default=4, help="wrk -c")
    parser.add_argument("--warmup", type=float, default=40.0, help="seconds before round 1")
    parser.add_argument("--sim-port", type=int, default=19453)
    parser.add_argument("--port", type=int, default=15010)
    parser.add_argument("--app-arg", action="append", default=[], help="more flags for app.py")
    parser.add_argument("--app", default=str(ROOT / "app.py"), help="the script to run")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-market-"))
    py = ROOT / ".venv" / "bin" / "python"
    sim_url = f"127.0.0.1:{args.sim_port}"
    sim = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "spikewatch"), "simulate",
            "--market", str(args.symbols), "--quotes", "USDT", "--speed", args.speed,
            "--loop", "--port", str(args.sim_port), *map(str, RECORDINGS),
        ],
        stdout=(tmp / "sim.log").open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(4)
    app = subprocess.Popen(
        [
            str(py), args.app, "--symbols", "ALL:USDT",
            "--ws-url", f"ws://{sim_url}", "--rest-url", f"http://{sim_url}",
            "--port", str(args.port), "--db", str(tmp / "m.db"), *args.app_arg,
        ],
        stdout=(tmp / "app.log").open("w"),
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )  # fmt: skip
    base = f"http://127.0.0.1:{args.port}/"
    url = base + "api/get_signal"
    loaded: list[tuple[float, float]] = []
    idle: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "healthz", 2)
                break
            except OSError:
                if time.monotonic() > deadline or app.poll() is not None:
                    print("the app did not start; see", tmp / "app.log")
                    return 1
                time.sleep(0.5)
        time.sleep(args.warmup)
        print(f"speed {args.speed}, {args.symbols} symbols, wrk -t1 -c{args.connections} "
              f"-d{args.seconds}s on /api/get_signal; logs in {tmp}")  # fmt: skip
        # every loaded round first: after a pause the app reconnects and fetches what it
        # missed over REST (a burst of work no steady load has)
        for n in range(1, args.rounds + 1):
            t0, n0 = trades(base)
            c0 = cpu_s(app.pid)
            p50, p99, rps = wrk(url, args.seconds, args.connections)
            c1 = cpu_s(app.pid)
            t1, n1 = trades(base)
            rate = (n1 - n0) / (t1 - t0)
            loaded.append((p50, p99))
            print(
                f"round {n} loaded: {rate:8,.0f} trades/s  p50 {p50:6.2f} ms  p99 {p99:7.2f} ms"
                f"  {rps:7,.0f} req/s  app cpu {(c1 - c0) / (t1 - t0):4.0%}  load {load()}"
            )
        sim.send_signal(signal.SIGSTOP)
        time.sleep(2)
        for n in range(1, args.rounds + 1):
            c0, w0 = cpu_s(app.pid), time.monotonic()
            p50, p99, rps = wrk(url, args.seconds, args.connections)
            c1, w1 = cpu_s(app.pid), time.monotonic()
            idle.append((p50, p99))
            print(
                f"round {n} idle:   {0:8,.0f} trades/s  p50 {p50:6.2f} ms  p99 {p99:7.2f} ms"
                f"  {rps:7,.0f} req/s  app cpu {(c1 - c0) / (w1 - w0):4.0%}  load {load()}"
            )
        lp50 = statistics.median(p for p, _ in loaded)
        lp99 = statistics.median(p for _, p in loaded)
        ip50 = statistics.median(p for p, _ in idle)
        ip99 = statistics.median(p for _, p in idle)
        print(
            f"median loaded p50 {lp50:.2f} ms p99 {lp99:.2f} ms; idle p50 {ip50:.2f} ms "
            f"p99 {ip99:.2f} ms; p99 ratio {lp99 / ip99:.1f}x"
        )
    finally:
        app.send_signal(signal.SIGINT)
        try:
            app.wait(10)
        except subprocess.TimeoutExpired:
            app.kill()
        sim.send_signal(signal.SIGCONT)
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:  # (seen: the simulator ignoring SIGTERM under load)
            sim.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
