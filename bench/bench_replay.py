"""Replay throughput, end to end (decompression, CSV parsing, detection): the full day of
Binance USD-M BTCUSDT trades of 2020-02-22 (137,988 trades).

Baseline, measured in the same run: ``csv.reader`` over ``gzip.open``, ``float()``
quantities, ``deque(maxlen=200)`` and ``sum()/len()`` per trade.

Measured: ``replay(read_trades(...))`` as ``spikewatch replay`` runs it (column-wise
batches), the same trades fed one ``Trade`` at a time (the per-trade path), and the
readers alone.

    python bench/bench_replay.py [FILE]
"""

from __future__ import annotations

import csv
import gzip
import sys
from collections import deque
from pathlib import Path

from common import best_rate, data_file, machine
from spikewatch.config import load_settings
from spikewatch.core import accel
from spikewatch.replay.readers import read_batches, read_trades
from spikewatch.replay.runner import replay
from spikewatch.wiring import build_pipeline

DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"


def baseline(path: Path) -> int:
    window: deque[float] = deque(maxlen=200)
    rows = 0
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)  # header
        for row in reader:
            qty = float(row[2])
            if len(window) == 200 and qty > 10 * (sum(window) / len(window)):
                pass
            window.append(qty)
            rows += 1
    return rows


def spikewatch(path: Path) -> int:
    pipeline = build_pipeline(load_settings({}, env={}))
    summary = replay(read_trades([path], symbol="BTCUSDT"), pipeline, lambda s: None)
    return summary.trades


def spikewatch_per_trade(path: Path) -> int:
    pipeline = build_pipeline(load_settings({}, env={}))
    trades = (t for t in read_trades([path], symbol="BTCUSDT"))  # not a reader: one by one
    return replay(trades, pipeline, lambda s: None).trades


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else data_file(DAY)
    base = best_rate(lambda: baseline(path), repeat=5)
    ours = best_rate(lambda: spikewatch(path), repeat=5)
    per_trade = best_rate(lambda: spikewatch_per_trade(path), repeat=3)
    batches_only = best_rate(
        lambda: sum(len(b) for b in read_batches([path], symbol="BTCUSDT")), repeat=5
    )
    read_only = best_rate(lambda: sum(1 for _ in read_trades([path], symbol="BTCUSDT")), 3)
    numpy = "with numpy" if accel.np is not None else "without numpy"
    print(f"replay of {path.name}, best of 5 ({machine()}, {numpy})")
    print(f"  baseline (csv + float + deque + sum/len): {base / 1e6:6.3f} M trades/s")
    print(f"  spikewatch replay (read + detect):        {ours / 1e6:6.3f} M trades/s")
    print(f"  spikewatch replay, one Trade at a time:   {per_trade / 1e6:6.3f} M trades/s")
    print(f"  spikewatch read_batches only:             {batches_only / 1e6:6.3f} M trades/s")
    print(f"  spikewatch read_trades only (per trade):  {read_only / 1e6:6.3f} M trades/s")
    print(f"  ratio spikewatch / baseline:              {ours / base:6.2f}x")


if __name__ == "__main__":
    main()
