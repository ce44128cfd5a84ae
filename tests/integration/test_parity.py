"""Parity: for recorded real files, ``spikewatch replay``, the live engine reading the
simulator over a real socket, and the independent reference in tests/reference.py find
exactly the same signals (ids and every other field included).

The reference never sees spikewatch's readers: its frames are the recorded frames as
stored, or JSON frames written here straight from the CSV rows' own strings.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from spikewatch.cli import load_tape, main
from spikewatch.config import load_settings
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.store.base import Cursor
from spikewatch.store.sqlite import SQLiteSignalStore

from reference import reference_spikes

pytestmark = pytest.mark.slow

BTC_FRAMES = "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz"
BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
ETH_CSV = "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"

Signals = list[dict[str, Any]]
RunLive = Callable[[list[Path], str, int, str], Signals]


@dataclass(frozen=True)
class RawTrade:
    """One trade as the recorded file spells it, read without spikewatch's code."""

    symbol: str
    trade_id: int
    price: str
    qty: str
    time_ms: int
    buyer_is_maker: bool


# -- the independent side -----------------------------------------------------------------


def raw_trades_of_frames(path: Path) -> list[RawTrade]:
    """The trades of a recording of combined ``@trade`` frames, parsed with json."""
    out = []
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            data = json.loads(line)["data"]
            assert data["e"] == "trade"
            out.append(RawTrade(data["s"], data["t"], data["p"], data["q"], data["T"], data["m"]))
    return out


def raw_trades_of_csv(path: Path, symbol: str) -> list[RawTrade]:
    """The rows of a data.binance.vision spot ``trades`` CSV (no header), as strings."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return [
            RawTrade(symbol, int(row[0]), row[1], row[2], int(row[4]), row[5] == "True")
            for row in csv.reader(handle)
            if row
        ]


def frames_for_reference(trades: list[RawTrade]) -> list[bytes]:
    """Raw ``@trade`` frames written from the rows' own strings (not by spikewatch)."""
    return [
        json.dumps({"e": "trade", "s": t.symbol, "t": t.trade_id, "q": t.qty}).encode()
        for t in trades
    ]


def check_fields_against_raw(signals: Signals, trades: list[RawTrade]) -> None:
    """Each signal's trade facts are the recorded trade's own values."""
    by_key = {(t.symbol, t.trade_id): t for t in trades}
    for signal in signals:
        trade = by_key[(signal["symbol"], signal["trade_id"])]
        assert signal["signal_type"] == "VolumeSpike"
        assert signal["exchange"] == "binance"
        assert signal["price"] == float(trade.price)
        assert signal["volume"] == float(trade.qty)
        assert signal["time_us"] == trade.time_ms * 1000
        # Binance's m=true: the buyer was the maker, so the taker sold
        assert signal["side"] == ("sell" if trade.buyer_is_maker else "buy")


# -- the replay side ----------------------------------------------------------------------


def replay_signals(out_dir: Path, files: list[Path], *flags: str) -> Signals:
    """``spikewatch replay FILE... --out s.jsonl --quiet`` in-process; its signals in order."""
    out = out_dir / "s.jsonl"
    # main() sets up logging as a process would: undo that, so other tests see no change
    root, websockets_log = logging.getLogger(), logging.getLogger("websockets")
    saved = (root.level, list(root.handlers), websockets_log.level)
    try:
        status = main(["replay", *map(str, files), "--out", str(out), "--quiet", *flags])
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        websockets_log.setLevel(saved[2])
    assert status == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


# -- the live side --------------------------------------------------------------------------


def wait_for_trades(engine: Engine, expected: Counter[str], timeout: float = 60.0) -> None:
    """Poll the engine until it has processed every trade of the tape, symbol by symbol."""
    deadline = time.monotonic() + timeout
    while True:
        symbols = engine.status().symbols
        seen = {symbol: symbols[symbol].trades for symbol in expected}
        if seen == dict(expected):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the engine processed {seen} trades, expected {dict(expected)}")
        time.sleep(0.02)


def stored_signals(store: SQLiteSignalStore) -> Signals:
    """Every stored signal, as the JSON the API would send, paging through the store."""
    out: Signals = []
    after: Cursor | None = None
    while True:
        page = store.page(limit=1000, after=after)
        out.extend(json.loads(msgspec.json.encode(s)) for s in page.signals)
        if page.next_cursor is None:
            return out
        after = page.next_cursor


@pytest.fixture
def live_signals(tmp_path: Path) -> Iterator[RunLive]:
    """Runs the live engine against the simulator serving ``files`` at full speed."""
    cleanup: list[Callable[[], object]] = []

    def run(files: list[Path], symbols: str, window: int, threshold: str) -> Signals:
        # the tape `spikewatch simulate FILE...` serves: several files merged by time
        tape = load_tape([str(f) for f in files], None, None)
        sim = SimulatorThread(Simulator(tape, speed=None))
        cleanup.append(sim.stop)
        sim.start()
        settings = load_settings(
            {
                # REST too (the engine's warm start asks for recent trades): only 127.0.0.1
                "ws_url": sim.ws_url,
                "rest_url": sim.rest_url,
                "db": str(tmp_path / "live.db"),
                "symbols": symbols,
                "window": window,
                "threshold": threshold,
            },
            env={},
        )
        store = SQLiteSignalStore(settings.db)
        cleanup.append(store.close)
        engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.2))
        cleanup.append(engine.stop)
        engine.start()
        wait_for_trades(engine, Counter(entry.symbol for entry in tape))
        assert engine.flush(10)
        return stored_signals(store)

    yield run
    for stop in reversed(cleanup):
        stop()


# -- the cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    files: tuple[str, ...]
    symbols: str
    window: int
    threshold: str


CASES = {
    "btc-frames": Case((BTC_FRAMES,), "BTCUSDT", 200, "10"),
    "btc-csv": Case((BTC_CSV,), "BTCUSDT", 200, "10"),
    "btc-and-eth-csvs": Case((BTC_CSV, ETH_CSV), "BTCUSDT,ETHUSDT", 200, "10"),
    "btc-frames-w50-x7.5": Case((BTC_FRAMES,), "BTCUSDT", 50, "7.5"),
    "btc-and-eth-csvs-w50-x7.5": Case((BTC_CSV, ETH_CSV), "BTCUSDT,ETHUSDT", 50, "7.5"),
}


def raw_trades(path: Path) -> list[RawTrade]:
    if path.name == BTC_FRAMES:
        return raw_trades_of_frames(path)
    return raw_trades_of_csv(path, "BTCUSDT" if path.name == BTC_CSV else "ETHUSDT")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_replay_live_engine_and_reference_find_identical_signals(
    case: Case, fixtures_dir: Path, tmp_path: Path, live_signals: RunLive
) -> None:
    files = [fixtures_dir / name for name in case.files]
    flags = ("--window", str(case.window), "--threshold", case.threshold)
    trades = [t for path in files for t in raw_trades(path)]
    expected = reference_spikes(frames_for_reference(trades), case.window, case.threshold)
    symbols = case.symbols.split(",")
    # real data with real spikes, in every symbol: the comparison below is not vacuous
    assert {symbol for symbol, _ in expected} == set(symbols)
    assert len(expected) > 50

    replayed = replay_signals(tmp_path, files, *flags)
    live = live_signals(files, case.symbols, case.window, case.threshold)

    # the reference's spikes, each once
    assert sorted((s["symbol"], s["trade_id"]) for s in replayed) == sorted(expected)
    assert sorted((s["symbol"], s["trade_id"]) for s in live) == sorted(expected)
    # replay and live agree on every field of every signal
    assert sorted(replayed, key=lambda s: s["id"]) == sorted(live, key=lambda s: s["id"])
    # per symbol, replay reports them in trade order, as the reference does
    for symbol in symbols:
        assert [s["trade_id"] for s in replayed if s["symbol"] == symbol] == [
            tid for sym, tid in expected if sym == symbol
        ]
    # ids are deterministic and say what found the spike
    assert {s["id"] for s in replayed} == {
        f"binance:{sym}:volume_spike-w{case.window}-x{case.threshold}:{tid}"
        for sym, tid in expected
    }
    assert {(s["window"], s["threshold"]) for s in replayed} == {
        (case.window, float(case.threshold))
    }
    check_fields_against_raw(replayed, trades)
