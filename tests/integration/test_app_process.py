"""``python app.py`` as a user starts it: a real process, real sockets, real recorded trades."""

from __future__ import annotations

import http.client
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames

from helpers import free_port, get, start_app, wait_until
from reference import reference_spikes

pytestmark = pytest.mark.slow


@pytest.fixture
def simulator(btc_frames: list[bytes]) -> Iterator[SimulatorThread]:
    sim = SimulatorThread(Simulator(tape_from_frames(btc_frames)))
    sim.start()
    yield sim
    sim.stop()


def test_app_serves_exactly_the_recorded_spikes_and_keeps_them_across_a_restart(
    simulator: SimulatorThread, btc_frames: list[bytes], tmp_path: Path
) -> None:
    port, db = free_port(), str(tmp_path / "spikewatch.db")
    app = start_app(
        port,
        tmp_path / "app.log",
        "--ws-url",
        simulator.ws_url,
        "--rest-url",
        simulator.rest_url,
        "--db",
        db,
    )
    try:
        assert wait_until(lambda: get(port, "/healthz"))["status"] == "ok"
        total = len(btc_frames)
        wait_until(lambda: get(port, "/api/status")["symbols"]["BTCUSDT"]["trades"] == total)
        expected = reference_spikes(btc_frames)

        def all_signals() -> list[dict[str, Any]]:
            out, cursor = [], ""
            while True:
                page = get(port, f"/api/signals?limit=100{cursor}")
                out.extend(page["signals"])
                if not page["next_cursor"]:
                    return out
                cursor = f"&cursor={page['next_cursor']}"

        def spikes() -> list[dict[str, Any]]:  # the live app's alert profile adds others
            return [s for s in all_signals() if s["signal_type"] == "VolumeSpike"]

        signals = wait_until(lambda: (s := spikes()) and len(s) == len(expected) and s)
        assert [(s["symbol"], s["trade_id"]) for s in reversed(signals)] == expected
        latest = get(port, "/api/get_signal")
        assert latest == signals[0]
        assert latest["signal_type"] == "VolumeSpike"
        assert latest["timestamp"].endswith("Z")
        # a live-stream client stays connected while the app is told to stop
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        stream.request("GET", "/api/stream")
        assert stream.getresponse().status == 200
    finally:
        app.send_signal(signal.SIGTERM)
        started = time.monotonic()
        app.wait(10)
        stopped_in = time.monotonic() - started
    stream.close()
    assert app.returncode == 0
    assert stopped_in < 2  # SIGTERM: a clean shutdown within 2 s, streams and all

    # restarted with no exchange reachable: the stored signals are still served
    port = free_port()
    app = start_app(
        port,
        tmp_path / "app.log",
        "--ws-url",
        "ws://127.0.0.1:9",
        "--rest-url",
        "http://127.0.0.1:9",
        "--db",
        db,
    )
    try:
        again = wait_until(lambda: get(port, "/api/get_signal"))
        assert again == latest
        status = get(port, "/api/status")
        assert status["connection"]["state"] in ("connecting", "waiting")
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(10)


def test_a_bad_setting_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    app = start_app(free_port(), log, "--threshold", "-3", "--db", str(tmp_path / "x.db"))
    app.wait(30)
    err = log.read_bytes()
    assert app.returncode == 2
    assert b"threshold" in err
    assert b"--threshold" in err


def test_a_port_in_use_is_one_line_and_status_2_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "app.log"
        app = start_app(port, log, "--db", str(tmp_path / "x.db"))
        app.wait(30)
    assert app.returncode == 2
    assert log.read_text().splitlines() == [
        f"spikewatch: port {port} is in use; try --port {port + 1}"
    ]


def test_a_host_that_is_not_this_machine_is_one_line_and_status_2(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    # 192.0.2.1 is reserved for documentation (RFC 5737): never an address of this
    # machine, and binding to it fails at once, with no lookup and no traffic
    app = start_app(free_port(), log, "--host", "192.0.2.1", "--db", str(tmp_path / "x.db"))
    app.wait(30)
    assert app.returncode == 2
    assert log.read_text().splitlines() == [
        "spikewatch: cannot listen on host '192.0.2.1': not an address of this machine"
    ]


def test_health_answers_while_hundreds_of_idle_connections_are_held(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    port = free_port()
    args = ("--ws-url", simulator.ws_url, "--rest-url", simulator.rest_url)
    app = start_app(port, tmp_path / "app.log", *args, "--db", str(tmp_path / "x.db"))
    idle: list[socket.socket] = []
    try:
        assert wait_until(lambda: get(port, "/healthz"))["status"] == "ok"
        # connected, never sending a request: more than the server once allowed at all
        idle.extend(socket.create_connection(("127.0.0.1", port)) for _ in range(600))
        for _ in range(5):
            assert get(port, "/healthz") == {"status": "ok"}
        assert get(port, "/api/status")["symbols"]["BTCUSDT"]["trades"] >= 0
    finally:
        for sock in idle:
            sock.close()
        app.send_signal(signal.SIGTERM)
        app.wait(10)
    assert app.returncode == 0
