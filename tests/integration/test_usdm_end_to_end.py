"""Binance USD-M futures end to end, offline: the engine against the simulator speaking the
futures routes (live, gaps filled over ``/fapi/v1/historicalTrades`` with an API key and
recorded without one, warm start from ``/fapi/v1/trades``), and ``spikewatch replay`` of a
futures public-data CSV and of recorded futures frames. Every signal is checked against
the independent reference rule on the same real trades."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spikewatch.config import load_settings
from spikewatch.core.model import Trade
from spikewatch.engine import Engine
from spikewatch.exchanges.binance import BinanceUsdm
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.rest import RestClient
from spikewatch.replay.readers import read_trades
from spikewatch.replay.simulator import Faults, Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_trades
from spikewatch.store.sqlite import SQLiteSignalStore

from helpers import caught_up, stored_signals, wait_until
from reference import reference_spikes

pytestmark = pytest.mark.slow

CSV = "binance-usdm-BTCUSDT-trades-2024-08-08T2354Z_2400Z.csv.gz"
FRAMES = "binance-usdm-BTCUSDT-trade-combined.hftbacktest-2024-08-08T2354Z_first-300.jsonl"
KEY = "test-api-key"
usdm = BinanceUsdm()
codec = usdm.simulator_codec()


@pytest.fixture(scope="module")
def trades(fixtures_dir: Path) -> list[Trade]:
    """21,313 real USD-M BTCUSDT futures trades (5.7 minutes), as the futures CSV has them."""
    return list(read_trades([fixtures_dir / CSV], exchange=usdm))


def frames_of(trades: list[Trade]) -> list[bytes]:
    """The futures ``@trade`` events of ``trades``, as the simulator sends them."""
    return [codec.trade_frame(t) for t in trades]


def trade_id(frame: bytes) -> int:
    return int(json.loads(frame)["t"])


Start = Callable[..., tuple[Engine, SimulatorThread]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    running: list[tuple[Engine, SimulatorThread, SQLiteSignalStore]] = []

    def run(
        trades: list[Trade],
        *,
        faults: Faults | None = None,
        speed: float | None = 60,
        **flags: object,
    ) -> tuple[Engine, SimulatorThread]:
        tape = tape_from_trades(trades, codec.trade_frame)
        sim = SimulatorThread(Simulator(tape, codec=codec, speed=speed, faults=faults))
        sim.start()
        settings = load_settings(
            {
                "exchange": "binance-usdm",
                "ws_url": sim.ws_url,
                "rest_url": sim.rest_url,
                "db": str(tmp_path / "futures.db"),
                **flags,
            },
            env={},
        )
        store = SQLiteSignalStore(settings.db)
        rest = RestClient(
            settings.rest_url,
            attempts=2,
            backoff=lambda: Backoff(first=0.02, cap=0.05),
            weight_limit=usdm.capabilities.rest_weight_limit,
        )
        engine = Engine(settings, store, backoff=Backoff(first=0.02, cap=0.05), rest=rest)
        engine.start()
        running.append((engine, sim, store))
        return engine, sim

    yield run
    for engine, sim, store in running:
        engine.stop()
        sim.stop()
        store.close()


def stored(engine: Engine) -> list[tuple[str, int]]:
    signals = stored_signals(engine)
    assert {s.exchange for s in signals} <= {"binance-usdm"}
    assert all(s.id.startswith("binance-usdm:BTCUSDT:") for s in signals)
    return sorted((s.symbol, s.trade_id) for s in signals)


def test_futures_live_with_dropped_connections_fetches_every_gap_and_finds_the_exact_spikes(
    start: Start, trades: list[Trade]
) -> None:
    part = trades[:8000]
    engine, sim = start(part, faults=Faults(drop_every=700), api_key=KEY)
    assert engine.url == f"{sim.ws_url}/public/stream?streams=btcusdt@trade"
    wait_until(caught_up(engine, part[-1].trade_id))
    assert stored(engine) == sorted(reference_spikes(frames_of(part)))
    status = engine.status()
    symbol = status.symbols["BTCUSDT"]
    assert sim.stats().drops >= 5
    assert symbol.backfills > 0  # trades really were missed, and fetched with the key
    assert symbol.gap_records == 0
    assert symbol.trades == len(part)
    assert status.exchange == "binance-usdm"


def test_futures_gaps_without_an_api_key_are_recorded_and_the_window_warms_up_again(
    start: Start, trades: list[Trade]
) -> None:
    part = trades[:6000]
    engine, _ = start(part, faults=Faults(drop_every=2500))
    wait_until(caught_up(engine, part[-1].trade_id))
    gaps = engine.store.gaps(symbol="BTCUSDT")
    assert gaps
    assert all("cannot be fetched" in g.reason for g in gaps)
    # the reference, told which trades never arrived: after each gap a fresh window
    lost = {i for g in gaps for i in range(g.first_id, g.last_id + 1)}
    segments: list[list[bytes]] = [[]]
    cuts = sorted(g.first_id for g in gaps)
    for frame in frames_of([t for t in part if t.trade_id not in lost]):
        if cuts and trade_id(frame) > cuts[0]:
            cuts.pop(0)
            segments.append([])
        segments[-1].append(frame)
    assert stored(engine) == sorted(s for seg in segments for s in reference_spikes(seg))


def test_futures_warm_start_comes_from_the_recent_trades_endpoint(
    start: Start, trades: list[Trade]
) -> None:
    engine, sim = start(trades[:1000], speed=None)
    wait_until(lambda: engine.status().symbols["BTCUSDT"].trades == 1000)
    engine.stop()
    # a second spikewatch on the same (futures) exchange warms up from /fapi/v1/trades
    settings = load_settings(
        {
            "exchange": "binance-usdm",
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "db": ":memory:",
        },
        env={},
    )
    second = Engine(settings, SQLiteSignalStore(":memory:"), backoff=Backoff(first=0.02, cap=0.05))
    second.start()
    try:
        wait_until(lambda: second.status().symbols["BTCUSDT"].warmed_up, timeout=20)
        assert second.status().symbols["BTCUSDT"].trades == 200
        assert second.status().rest.calls >= 1
    finally:
        second.stop()


def run_replay(*args: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "spikewatch", "replay", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_replay_of_a_futures_csv_finds_the_exact_spikes(
    fixtures_dir: Path, trades: list[Trade]
) -> None:
    signals = run_replay("--exchange", "binance-usdm", str(fixtures_dir / CSV))
    assert [(s["symbol"], s["trade_id"]) for s in signals] == reference_spikes(frames_of(trades))
    assert {s["exchange"] for s in signals} == {"binance-usdm"}


def test_replay_of_recorded_futures_frames_finds_the_exact_spikes(fixtures_dir: Path) -> None:
    path = fixtures_dir / FRAMES
    frames = [line for line in path.read_bytes().splitlines() if line]
    signals = run_replay("--exchange", "binance-usdm", "--window", "20", str(path))
    assert signals
    assert [(s["symbol"], s["trade_id"]) for s in signals] == reference_spikes(frames, 20)
    assert {s["exchange"] for s in signals} == {"binance-usdm"}
