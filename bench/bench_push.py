"""Push capacity: how many live-stream (``/api/stream``) clients the real app holds while
it ingests a fast stream, with ingest keeping up.

    python bench/bench_push.py [--rate 10000] [--clients 0,100,300,600,1000] [--seconds 15]
                               [--stuck 40]

For each client count N: the simulator (this process) plays the looped real BTCUSDT
recording at ``--rate`` trades/s; a fresh ``python app.py`` (``--web-threads``) ingests
it; N SSE clients in a process of their own read everything they are sent. Over
``--seconds`` it reports the ingest rate, the trades behind at the end, the app's memory
(RSS), the signals each client got against those the app raised, the clients dropped,
and the push latency (frame sent -> signal received) seen by the first few clients.
With ``--stuck K``, K more clients ask for the stream beside the N and never read a byte
(the memory they cost: RSS, waitress's temporary files, and whether they are dropped).

Baseline, measured in the same run: N = 0 (the app with no client at all); each line
gives its ingest rate as a ratio to the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import machine
from common_live import get, pin_process, simulator_at, start_app, unpin_process

#: Clients whose signals are timed (the others only counted: parsing every event of a
#: thousand streams would make the reader the bottleneck).
TIMED = 5

READER = r"""
import json, selectors, socket, sys, time
port, n, timed, stuck = (int(a) for a in sys.argv[1:5])
sel = selectors.DefaultSelector()
held = []  # clients that ask for the stream and never read a byte
for i in range(stuck):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    held.append(s)
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, i)
sel.register(sys.stdin, selectors.EVENT_READ, -1)
print("connected", flush=True)
MARK = b"event: signal\n"
signals, tails, closed, counting = [0] * n, [b""] * n, 0, False
pending = [b""] * n  # partial lines of the timed clients
stamps = []  # (trade_id, receive time ns) of the timed clients' signals
while True:
    for key, _ in sel.select():
        i = key.data
        if i == -1:
            line = sys.stdin.readline()
            if line.strip() == "go":
                counting, signals = True, [0] * n
                continue
            print(json.dumps({"signals": signals, "closed": closed, "stamps": stamps}))
            sys.exit(0)
        try:
            data = key.fileobj.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            closed += 1
            continue
        if not counting:
            continue
        now = time.time_ns()
        both = tails[i] + data
        signals[i] += both.count(MARK) - tails[i].count(MARK)
        tails[i] = both[-16:]
        if i < timed:
            lines = (pending[i] + data).split(b"\n")
            pending[i] = lines.pop()
            for line in lines:
                if line.startswith(b'data: {"') and b'"trade_id"' in line:
                    stamps.append((json.loads(line[6:])["trade_id"], now))
"""


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def temp_files(pid: int) -> int:
    """Deleted temporary files process ``pid`` holds open (waitress spills to them)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).endswith("(deleted)")
    return count


def measure(
    rate: float,
    clients: int,
    seconds: float,
    threads: int,
    app_cpus: set[int] | None,
    stuck: int = 0,
) -> dict[str, Any]:
    """One run: the app with ``clients`` live-stream readers (and ``stuck`` clients that
    never read) at ``rate`` trades/s."""
    if app_cpus is not None:
        pin_process(set(range(os.cpu_count() or 1)) - app_cpus)
    sim = simulator_at(rate)
    sim.simulator.sent_at = {}
    app, port = start_app(sim, "--web-threads", str(threads), cpus=app_cpus)
    reader = None
    try:
        if clients:
            reader = subprocess.Popen(
                [sys.executable, "-c", READER, str(port), str(clients), str(TIMED), str(stuck)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert reader.stdout is not None
            assert reader.stdin is not None
            assert reader.stdout.readline().strip() == "connected"
            deadline = time.monotonic() + 60
            while get(port, "/api/status")["stream"]["clients"] < clients + stuck:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {get(port, '/api/status')['stream']} connected")
                time.sleep(0.2)
        time.sleep(3)  # warmed up: connected, windows full, signals flowing
        status = get(port, "/api/status")
        before = status["symbols"]["BTCUSDT"]["trades"]
        signals_before = status["symbols"]["BTCUSDT"]["signals"]
        played_before = sim.stats().played
        if reader is not None:
            reader.stdin.write("go\n")  # type: ignore[union-attr]
            reader.stdin.flush()  # type: ignore[union-attr]
        started = time.monotonic()
        cpu_before = cpu_s(app.pid), cpu_s(reader.pid) if reader is not None else 0.0
        time.sleep(seconds)
        status = get(port, "/api/status")
        elapsed = time.monotonic() - started
        cpu = cpu_s(app.pid), cpu_s(reader.pid) if reader is not None else 0.0
        trades = status["symbols"]["BTCUSDT"]["trades"]
        result: dict[str, Any] = {
            "clients": clients,
            "offered": (sim.stats().played - played_before) / elapsed,
            "ingest": (trades - before) / elapsed,
            "behind": sim.stats().played - trades,
            "rss": rss_mb(app.pid),
            "temp_files": temp_files(app.pid),
            "app_cpu": (cpu[0] - cpu_before[0]) / elapsed,
            "reader_cpu": (cpu[1] - cpu_before[1]) / elapsed,
            "raised": status["symbols"]["BTCUSDT"]["signals"] - signals_before,
            "stream": status["stream"],
        }
        if reader is not None:
            out, _ = reader.communicate("stop\n", timeout=60)
            got = json.loads(out)
            counts = sorted(got["signals"])
            sent_at = sim.simulator.sent_at or {}
            lags = [(t - sent_at[i]) / 1e6 for i, t in got["stamps"] if i in sent_at]
            result.update(
                got_min=counts[0],
                got_median=counts[len(counts) // 2],
                closed=got["closed"],
                p50=percentile(lags, 50),
                p99=percentile(lags, 99),
            )
        return result
    finally:
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait(10)
        app.terminate()
        app.wait(10)
        sim.stop()
        unpin_process()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--clients", default="0,100,300,600,1000")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--web-threads", type=int, default=1024)
    parser.add_argument("--placement", choices=["shared", "pinned"], default="shared")
    parser.add_argument(
        "--stuck", type=int, default=0, help="also this many clients that never read"
    )
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)  # the simulator's writer gets the GIL promptly
    cpus = os.cpu_count() or 1
    app_cpus = {cpus - 1} if args.placement == "pinned" else None
    counts = [int(n) for n in args.clients.split(",")]
    if counts[0] != 0:
        counts.insert(0, 0)  # the baseline
    print(
        f"live-stream clients at {args.rate:,.0f} trades/s, {args.seconds:g} s each, "
        f"--web-threads {args.web_threads}, {args.placement} placement"
        + (f", {args.stuck} clients that never read beside the N" if args.stuck else "")
        + f" ({machine()})"
    )
    baseline = None
    for n in counts:
        r = measure(args.rate, n, args.seconds, args.web_threads, app_cpus, args.stuck if n else 0)
        baseline = baseline or r["ingest"]
        line = (
            f"  {n:>5} clients: ingest {r['ingest']:>7,.0f} trades/s "
            f"({r['ingest'] / baseline:.2f}x baseline; offered {r['offered']:,.0f}/s), "
            f"{r['behind']:>6,} behind, RSS {r['rss']:6.1f} MB, app CPU {r['app_cpu']:.0%}"
        )
        if n and args.stuck:
            line += f"; {args.stuck} stuck: temp files {r['temp_files']}"
        if n:
            line += (
                f"; signals per client {r['got_min']}-{r['got_median']} "
                f"of {r['raised']} raised, dropped {r['stream']['dropped_slow']}, "
                f"closed {r['closed']}; push p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms; "
                f"readers' CPU {r['reader_cpu']:.0%}"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
