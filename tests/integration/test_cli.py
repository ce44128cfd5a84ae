"""The ``spikewatch`` command line as a user runs it: real processes (``python app.py ...``),
real sockets on 127.0.0.1, real recorded Binance trades."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.sync.client import ClientConnection, connect

from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames

from reference import reference_spikes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BTC_FRAMES = "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz"
BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
BTC_TRADES = 19_904

T = TypeVar("T")


# -- helpers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment without SPIKEWATCH_* settings that could change what is tested."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}


def spikewatch(tmp_path: Path, *args: str, timeout: float = 60) -> tuple[int, bytes, str]:
    """Run ``python app.py ARGS`` to the end; its exit status, stdout and stderr."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        done = subprocess.run(
            [sys.executable, str(ROOT / "app.py"), *args],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=clean_env(),
            timeout=timeout,
            check=False,
        )
    return done.returncode, out.read_bytes(), err.read_text(encoding="utf-8")


def start(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``python app.py ARGS`` in the background, stderr to ``log``."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=clean_env(),
        )


def stop(process: subprocess.Popen[bytes], grace: float = 10) -> int:
    """SIGTERM the process, as a service manager would; its exit status, or -9 if it was
    still running ``grace`` seconds later and had to be killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy (connection errors retry)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def accepts_connections(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.load(response)


def json_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def recorded_frames(paths: list[Path]) -> list[bytes]:
    """The frames in ``spikewatch record`` files, read in full (a truncated gzip raises)."""
    frames = []
    for path in paths:
        with gzip.open(path, "rb") as handle:
            for line in handle:
                doc = json.loads(line)
                assert set(doc) == {"recv_ns", "frame"}
                assert isinstance(doc["recv_ns"], int)
                frames.append(doc["frame"].encode())
    return frames


@pytest.fixture(scope="module")
def btc_reference(fixtures_dir: Path) -> list[tuple[str, int]]:
    """The spikes of the BTCUSDT recording at the defaults, by the independent reference."""
    with gzip.open(fixtures_dir / BTC_FRAMES, "rb") as handle:
        return reference_spikes(line for line in handle if line.strip())


# -- replay -------------------------------------------------------------------------------


def test_replay_writes_one_json_signal_per_line_to_stdout(
    fixtures_dir: Path, tmp_path: Path, btc_reference: list[tuple[str, int]]
) -> None:
    status, out, _ = spikewatch(tmp_path, "replay", str(fixtures_dir / BTC_CSV))
    assert status == 0
    signals = json_lines(out)
    assert {s["signal_type"] for s in signals} == {"VolumeSpike"}
    assert [(s["symbol"], s["trade_id"]) for s in signals] == btc_reference


def test_replay_summary_on_stderr_counts_trades_and_signals(
    fixtures_dir: Path, tmp_path: Path, btc_reference: list[tuple[str, int]]
) -> None:
    status, out, err = spikewatch(tmp_path, "replay", str(fixtures_dir / BTC_FRAMES))
    assert status == 0
    assert len(json_lines(out)) == len(btc_reference)
    assert f"{BTC_TRADES:,} trades" in err
    assert f"{len(btc_reference):,} signals" in err


def test_replay_into_a_pipe_closed_early_stops_quietly(fixtures_dir: Path) -> None:
    # `spikewatch replay FILE | head -1`: the reader goes away after one line
    command = ["-m", "spikewatch", "replay", "--quiet", "--window", "20"]
    replay = subprocess.Popen(
        [sys.executable, *command, str(fixtures_dir / BTC_FRAMES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert replay.stdout is not None
    assert replay.stderr is not None
    assert json.loads(replay.stdout.readline())["signal_type"] == "VolumeSpike"
    replay.stdout.close()
    assert replay.wait(60) == 0
    err = replay.stderr.read().decode()
    replay.stderr.close()
    assert "Traceback" not in err
    assert err == ""


def test_replay_quiet_writes_nothing_on_stderr(fixtures_dir: Path, tmp_path: Path) -> None:
    status, out, err = spikewatch(tmp_path, "replay", str(fixtures_dir / BTC_CSV), "--quiet")
    assert status == 0
    assert out
    assert err == ""


def test_replay_to_csv_writes_a_header_and_one_row_per_signal(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "signals.csv"
    path = str(fixtures_dir / BTC_CSV)
    status, _, _ = spikewatch(tmp_path, "replay", path, "--out", str(target), "--quiet")
    assert status == 0
    status, out, _ = spikewatch(tmp_path, "replay", path, "--quiet")
    assert status == 0
    as_json = json_lines(out)

    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    assert len(rows) == len(as_json)
    assert list(rows[0]) == list(as_json[0])  # the header names the signal's fields
    assert [row["id"] for row in rows] == [s["id"] for s in as_json]
    assert {row["signal_type"] for row in rows} == {"VolumeSpike"}
    assert [float(row["volume"]) for row in rows] == [s["volume"] for s in as_json]


def test_replay_refuses_an_output_file_of_unknown_kind(fixtures_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "signals.txt"
    status, out, err = spikewatch(
        tmp_path, "replay", str(fixtures_dir / BTC_CSV), "--out", str(target)
    )
    assert status == 2
    assert "--out" in err
    assert ".csv" in err
    assert "Traceback" not in err
    assert out == b""
    assert not target.exists()


def test_replay_of_a_missing_file_fails_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    status, out, err = spikewatch(tmp_path, "replay", str(missing))
    assert status != 0
    assert "no such file" in err
    assert str(missing) in err
    assert "Traceback" not in err
    assert out == b""


def test_replay_of_a_csv_named_without_its_symbol_asks_for_symbol(
    fixtures_dir: Path, tmp_path: Path, btc_reference: list[tuple[str, int]]
) -> None:
    nameless = tmp_path / "trades.csv.gz"
    shutil.copyfile(fixtures_dir / BTC_CSV, nameless)
    status, out, err = spikewatch(tmp_path, "replay", str(nameless))
    assert status == 2
    assert "--symbol" in err
    assert "Traceback" not in err
    assert out == b""

    # and naming the symbol is all it takes
    status, out, _ = spikewatch(tmp_path, "replay", str(nameless), "--symbol", "btcusdt")
    assert status == 0
    assert [(s["symbol"], s["trade_id"]) for s in json_lines(out)] == btc_reference


def test_replay_refuses_a_negative_threshold_naming_it(fixtures_dir: Path, tmp_path: Path) -> None:
    status, out, err = spikewatch(
        tmp_path, "replay", str(fixtures_dir / BTC_CSV), "--threshold", "-1"
    )
    assert status == 2
    assert "threshold" in err
    assert "Traceback" not in err
    assert out == b""


# -- record ------------------------------------------------------------------------------


def test_record_until_sigterm_leaves_complete_files_that_replay_to_the_reference(
    btc_frames: list[bytes], tmp_path: Path
) -> None:
    # the exchange plays the real recording at 50x its pace, so SIGTERM comes mid-stream
    sim = SimulatorThread(Simulator(tape_from_frames(btc_frames), speed=50))
    sim.start()
    out_dir = tmp_path / "recordings"
    recorder = start(
        tmp_path / "record.log",
        "record",
        "--ws-url",
        sim.ws_url,
        "--out-dir",
        str(out_dir),
        "--symbols",
        "BTCUSDT",
    )
    try:
        wait_until(lambda: sim.stats().frames_sent >= 4000, "the recorder to get 4000 frames")
        assert recorder.poll() is None
    finally:
        status = stop(recorder)
        sim.stop()
    log = (tmp_path / "record.log").read_text()
    assert status == 0, f"record exited {status} after SIGTERM; its log:\n{log}"

    files = sorted(out_dir.glob("*.jsonl.gz"))
    assert files
    frames = recorded_frames(files)
    # byte-exact, in order, none lost or doubled: a prefix of what the exchange played
    assert len(frames) > 1000
    assert frames == btc_frames[: len(frames)]

    expected = reference_spikes(frames)
    assert expected  # the recorded part holds real spikes
    status, out, _ = spikewatch(tmp_path, "replay", *map(str, files), "--quiet")
    assert status == 0
    assert [(s["symbol"], s["trade_id"]) for s in json_lines(out)] == expected


# -- simulate ------------------------------------------------------------------------------


@pytest.fixture
def simulate(fixtures_dir: Path, tmp_path: Path) -> Iterator[int]:
    """``spikewatch simulate`` of the BTCUSDT recording at max speed; yields its port."""
    port = free_port()
    process = start(
        tmp_path / "simulate.log",
        "simulate",
        str(fixtures_dir / BTC_FRAMES),
        "--port",
        str(port),
        "--speed",
        "max",
    )
    try:
        wait_until(lambda: process.poll() is None and accepts_connections(port), "the port")
        yield port
    finally:
        status = stop(process)
    assert status == 0


def receive(ws: ClientConnection, count: int) -> list[bytes]:
    """The next ``count`` messages, as bytes."""
    out = []
    for _ in range(count):
        message = ws.recv(timeout=5)
        out.append(message.encode() if isinstance(message, str) else message)
    return out


def by_trade_id(frames: list[bytes]) -> dict[int, bytes]:
    return {json.loads(f)["data"]["t"]: f for f in frames}


def inner(frame: bytes) -> bytes:
    """The ``data`` object of a combined frame, byte-exact (the recording has no spaces)."""
    head = b'{"stream":"btcusdt@trade","data":'
    assert frame.startswith(head)
    assert frame.endswith(b"}")
    return frame[len(head) : -1]


def test_simulate_serves_raw_trade_frames_on_ws_stream_path(
    simulate: int, btc_frames: list[bytes]
) -> None:
    recorded = by_trade_id(btc_frames)
    with connect(f"ws://127.0.0.1:{simulate}/ws/btcusdt@trade", max_queue=None) as ws:
        frames = receive(ws, 5)
    ids = [json.loads(f)["t"] for f in frames]
    assert ids == list(range(ids[0], ids[0] + 5))
    for trade_id, frame in zip(ids, frames, strict=True):
        assert frame == inner(recorded[trade_id])  # the raw event, as Binance sends it


def test_simulate_serves_combined_frames_on_stream_path(
    simulate: int, btc_frames: list[bytes]
) -> None:
    recorded = by_trade_id(btc_frames)
    with connect(f"ws://127.0.0.1:{simulate}/stream?streams=btcusdt@trade", max_queue=None) as ws:
        frames = receive(ws, 5)
    for frame in frames:
        doc = json.loads(frame)
        assert doc["stream"] == "btcusdt@trade"
        assert frame == recorded[doc["data"]["t"]]


def test_simulate_answers_subscribe_and_then_sends_trades(
    simulate: int, btc_frames: list[bytes]
) -> None:
    recorded = by_trade_id(btc_frames)
    with connect(f"ws://127.0.0.1:{simulate}/ws", max_queue=None) as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}))
        reply, *trades = receive(ws, 4)
    assert json.loads(reply) == {"result": None, "id": 1}
    for frame in trades:
        doc = json.loads(frame)
        assert doc["e"] == "trade"
        assert frame == inner(recorded[doc["t"]])


def test_simulate_serves_recent_trades_over_rest_like_binance(
    simulate: int, btc_frames: list[bytes]
) -> None:
    with connect(f"ws://127.0.0.1:{simulate}/ws/btcusdt@trade", max_queue=None) as ws:
        receive(ws, 20)  # some trades have been played
    url = f"http://127.0.0.1:{simulate}/api/v3/trades?symbol=BTCUSDT&limit=5"
    trades = get_json(url)
    assert isinstance(trades, list)
    assert len(trades) == 5
    recorded = {json.loads(f)["data"]["t"]: json.loads(f)["data"] for f in btc_frames}
    ids = [t["id"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + 5))
    for trade in trades:
        assert set(trade) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker"} | {
            "isBestMatch"
        }
        event = recorded[trade["id"]]
        assert trade["price"] == event["p"]
        assert trade["qty"] == event["q"]
        assert trade["time"] == event["T"]
        assert trade["isBuyerMaker"] == event["m"]


def test_simulate_serves_exchange_info_like_binance(simulate: int) -> None:
    info = get_json(f"http://127.0.0.1:{simulate}/api/v3/exchangeInfo")
    assert info["timezone"] == "UTC"
    assert isinstance(info["serverTime"], int)
    assert info["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT"]
    assert info["symbols"][0]["status"] == "TRADING"


# -- demo -----------------------------------------------------------------------------------


def test_demo_serves_spikes_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = start(
        tmp_path / "demo.log",
        "--demo",
        "--port",
        str(port),
        "--speed",
        "100",
        "--db",
        str(tmp_path / "demo.db"),
    )
    try:
        signal_ = wait_until(
            lambda: (s := get_json(f"{base}/api/get_signal")).get("signal_type") and s,
            "the demo's first signal",
        )
        assert signal_["signal_type"] == "VolumeSpike"
        assert signal_["symbol"] == "BTCUSDT"
        status = get_json(f"{base}/api/status")
        assert status["connection"]["state"] == "connected"
        assert status["symbols"]["BTCUSDT"]["trades"] > 200
    finally:
        code = stop(app)
    assert code == 0, (tmp_path / "demo.log").read_text()
    assert (tmp_path / "demo.db").exists()


# -- a database that cannot be opened ----------------------------------------------------


@pytest.mark.parametrize("command", [(), ("--demo",)], ids=["run", "demo"])
@pytest.mark.parametrize("where", ["/proc", "a directory"])
def test_a_database_that_cannot_be_opened_stops_start_up_in_one_line(
    tmp_path: Path, command: tuple[str, ...], where: str
) -> None:
    db = "/proc/spikewatch.db" if where == "/proc" else str(tmp_path)
    status, out, err = spikewatch(
        tmp_path,
        *command,
        "--db",
        db,
        "--port",
        str(free_port()),
        "--ws-url",
        "ws://127.0.0.1:9",  # never reached: the database comes first
    )

    assert status == 2
    assert out == b""
    assert err.startswith(f"spikewatch: cannot open the database {db}: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


# -- demo -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("demo", "--speed", "max"), ("demo", "--speed", "0"), ("--demo", "--speed", "-2")]
)
def test_demo_refuses_a_speed_that_is_not_a_pace(tmp_path: Path, args: tuple[str, ...]) -> None:
    status, out, err = spikewatch(tmp_path, *args, "--port", str(free_port()))

    assert status == 2
    assert out == b""
    assert err.startswith("spikewatch: configuration error: bad value for speed = ")
    assert "a number > 0" in err
    assert "simulate --speed max" in err
    assert err.count("\n") == 1, err


def test_demo_help_says_where_its_signals_are_kept(tmp_path: Path) -> None:
    status, out, _ = spikewatch(tmp_path, "demo", "--help")

    assert status == 0
    help_text = " ".join(out.decode().split())
    assert "a temporary file, deleted when the demo stops" in help_text
    assert "default ./spikewatch.db" not in help_text


def test_demo_banner_names_the_dashboard_and_the_log_sums_signals_up(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "demo.log"
    app = start(log_path, "demo", "--port", str(port), "--speed", "100")
    try:
        wait_until(
            lambda: "signals in the last 10 s" in log_path.read_text(),
            "a summary line",
            timeout=60,
        )
    finally:
        code = stop(app)
    log = log_path.read_text()
    assert code == 0, log
    assert f"dashboard: http://127.0.0.1:{port}/\n" in log
    summary = next(line for line in log.splitlines() if "signals in the last 10 s" in line)
    assert " INFO " in summary
    assert ", latest BTCUSDT " in summary
    # no line per signal, and no library chatter, at the default level
    assert " VolumeSpike binance BTCUSDT " not in log
    for chatty in ("websockets", "picows", "waitress"):
        assert re.search(rf"(DEBUG|INFO) +{chatty}[.:]", log) is None, log


# -- replay: what it cannot use -----------------------------------------------------------


def test_replay_of_a_directory_says_to_give_its_files(tmp_path: Path) -> None:
    status, out, err = spikewatch(tmp_path, "replay", str(tmp_path))

    assert status == 2
    assert out == b""
    assert (
        err
        == f"spikewatch: {tmp_path} is a directory: give the files in it, e.g. {tmp_path}/*.gz\n"
    )


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("BTCUSDT-trades.csv", bytes(range(256)) * 64, "not a text file"),
        ("BTCUSDT-trades.csv", gzip.compress(b"1,2,3\n"), "rename it BTCUSDT-trades.csv.gz"),
        ("BTCUSDT-trades.csv.gz", b"\x89PNG\r\n\x1a\n" + bytes(500), "not gzip-compressed"),
    ],
    ids=["binary", "gzip-without-gz", "gz-that-is-not"],
)
def test_replay_of_a_file_that_is_not_trades_says_why_without_quoting_its_bytes(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    for extra in ((), ("--format", "trades")):
        status, out, err = spikewatch(tmp_path, "replay", str(path), *extra)
        assert status == 2
        assert out == b""
        assert says in err
        assert err.count("\n") == 1, err
        assert "\\x" not in err
        assert "Traceback" not in err


def test_replay_with_a_wrong_format_names_the_right_one(fixtures_dir: Path, tmp_path: Path) -> None:
    path = str(fixtures_dir / BTC_FRAMES)
    status, out, err = spikewatch(tmp_path, "replay", path, "--format", "trades")

    assert status == 2
    assert out == b""
    # the reader's warning about the first bad row, then the error naming the fix
    *_, last = err.splitlines()
    assert last.startswith(
        f"spikewatch: no trades read from {path}: all {BTC_TRADES:,} rows were bad"
    )
    assert last.endswith(f"{path} looks like frames: drop --format trades (or use --format frames)")
    assert "Traceback" not in err


def test_replay_with_a_symbols_filter_that_leaves_nothing_says_what_the_files_hold(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    path = str(fixtures_dir / BTC_CSV)
    status, out, err = spikewatch(tmp_path, "replay", path, "--symbols", "ethusdt")

    assert status == 2
    assert out == b""
    assert err == f"spikewatch: no trades of ETHUSDT in {path} (only of BTCUSDT): check --symbols\n"


def test_replay_skips_the_depth_lines_of_a_mixed_recording_and_counts_them(
    fixtures_dir: Path,
    tmp_path: Path,
    btc_frames: list[bytes],
    btc_reference: list[tuple[str, int]],
) -> None:
    depth = (
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161835777,'
        b'"s":"BTCUSDT","U":50093645881,"u":50093645881,"b":[["56717.98000000",'
        b'"0.00000000"]],"a":[]}}'
    )
    mixed = tmp_path / "btcusdt-trade-and-depth.jsonl.gz"
    mixed.write_bytes(gzip.compress(b"".join(depth + b"\n" + f + b"\n" for f in btc_frames)))

    status, out, err = spikewatch(tmp_path, "replay", str(mixed))

    assert status == 0
    assert [(s["symbol"], s["trade_id"]) for s in json_lines(out)] == btc_reference
    assert err.count("\n") == 1, err  # the summary only: no warning about the depth lines
    assert f"replayed {BTC_TRADES:,} trades" in err
    assert f"{len(btc_frames):,} other lines (depth, tickers...) skipped" in err


def test_replay_progress_is_plain_lines_when_stderr_is_not_a_terminal(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    path = str(fixtures_dir / BTC_CSV)
    status, _, err = spikewatch(tmp_path, "replay", path, path, path, path)  # 79,616 trades

    assert status == 0
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2, err
    progress, summary = lines
    assert re.fullmatch(r" +[0-9,]+ trades +[0-9,]+ signals  at 2024-08-0\S+Z", progress), err
    assert summary.startswith(f"replayed {BTC_TRADES:,} trades from 4 file(s)")
