"""Helpers for tests that run the real app as a process: ports, HTTP, waiting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> Any:
    """GET a JSON endpoint of the app on ``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.load(response)


def wait_until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` (connection errors count as not yet) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the app did not get there in time")
        time.sleep(0.05)


def start_app(
    port: int, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python app.py --port PORT ARGS...``, its log going to ``log``; no SPIKEWATCH_*
    variable of the caller leaks in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
    clean.update(env or {})
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--port", str(port), *args],
            env=clean,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
