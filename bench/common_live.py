"""Helpers for the live benchmarks: the real app as a subprocess against the simulator."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import BTC_FRAMES, ROOT, read_frames
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.load(response)


def simulator_at(rate: float) -> SimulatorThread:
    """The bundled real BTCUSDT recording, looped, at ``rate`` trades per second."""
    tape = tape_from_frames(read_frames(BTC_FRAMES))
    span_s = (tape[-1].time_ms - tape[0].time_ms) / 1000
    speed = rate / (len(tape) / span_s)
    sim = SimulatorThread(Simulator(tape, speed=speed, loop=True))
    sim.start()
    return sim


def pin_process(cpus: set[int]) -> None:
    """Run every thread of this process (and what it starts later) on ``cpus`` only."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def unpin_process() -> None:
    """Let every thread of this process run on any CPU again."""
    pin_process(set(range(os.cpu_count() or 1)))


def start_app(
    sim: SimulatorThread, *flags: str, cpus: set[int] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """``python app.py`` against ``sim`` (on ``cpus`` only, if given); returns once it
    answers."""
    port = free_port()
    pin = []
    if cpus is not None:
        taskset = shutil.which("taskset")
        if taskset is None:
            raise SystemExit("pinning the app to CPUs needs taskset (Debian: util-linux)")
        pin = [taskset, "-c", ",".join(map(str, sorted(cpus)))]
    folder = Path(tempfile.mkdtemp(prefix="spikewatch-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
    with (folder / "app.log").open("wb") as log:
        app = subprocess.Popen(
            [
                *pin,
                sys.executable,
                str(ROOT / "app.py"),
                "--port",
                str(port),
                "--ws-url",
                sim.ws_url,
                "--rest-url",
                sim.rest_url,
                "--db",
                str(folder / "bench.db"),
                "--log-level",
                "WARNING",
                *flags,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            get(port, "/healthz")
            return app, port
        except OSError:
            if time.monotonic() > deadline:
                app.kill()
                raise
            time.sleep(0.1)
