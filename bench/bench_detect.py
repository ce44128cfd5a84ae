"""Detection-path throughput: raw Binance trade frames (in memory) -> signals, one core.

Baseline, measured in the same run: the original request's style — ``json.loads`` per
frame, a ``deque(maxlen=200)`` of float quantities, ``sum()/len()`` per trade.

    python bench/bench_detect.py
"""

from __future__ import annotations

import json
from collections import deque

from common import best_rate, machine, read_frames

from spikewatch.config import load_settings
from spikewatch.core.model import Trade
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.wiring import build_pipeline


def baseline(frames: list[bytes]) -> int:
    window: deque[float] = deque(maxlen=200)
    spikes = 0
    for frame in frames:
        data = json.loads(frame)["data"]
        qty = float(data["q"])
        if len(window) == 200 and qty > 10 * (sum(window) / len(window)):
            spikes += 1
        window.append(qty)
    return len(frames)


def spikewatch(frames: list[bytes]) -> int:
    parse = BinanceSpot().parse
    process = build_pipeline(load_settings({}, env={})).process
    for frame in frames:
        item = parse(frame)
        if type(item) is Trade:
            process(item)
    return len(frames)


def main() -> None:
    frames = read_frames()
    base = best_rate(lambda: baseline(frames))
    ours = best_rate(lambda: spikewatch(frames))
    parse = BinanceSpot().parse
    decode_only = best_rate(lambda: sum(1 for f in frames if parse(f)))
    print(f"detection path, {len(frames):,} recorded BTCUSDT frames, best of 7 ({machine()})")
    print(f"  baseline (json.loads + deque + sum/len): {base / 1e6:6.3f} M frames/s")
    print(f"  spikewatch parse + pipeline:             {ours / 1e6:6.3f} M frames/s")
    print(f"  spikewatch parse only:                   {decode_only / 1e6:6.3f} M frames/s")
    print(f"  ratio spikewatch / baseline:             {ours / base:6.2f}x")


if __name__ == "__main__":
    main()
