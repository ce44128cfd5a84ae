"""Resident memory of the detection state with 1, 100 and 2,000 symbols warmed up.

Each count runs in a fresh process: RSS after building a kernel and feeding every
symbol 400 real trades (so each window is full), minus RSS before. Baseline, in the same
run: the original style, one ``deque(maxlen=200)`` of floats per symbol.

    python bench/bench_memory.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import machine

CHILD = r"""
import gc, sys
from collections import deque
sys.path.insert(0, sys.argv[3])
from common import read_frames
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.core.model import Trade
import msgspec

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

parsed = BinanceSpot().parse_batch(read_frames()[:400])
trades = [t for batch in parsed.batches for t in batch.trades()]
n, mode = int(sys.argv[1]), sys.argv[2]
symbols = [f"S{i:05d}USDT" for i in range(n)]
gc.collect()
before = rss_kb()
if mode == "spikewatch":
    from spikewatch.config import load_settings
    from spikewatch.wiring import build_kernel
    kernel = build_kernel(load_settings({}, env={}))  # the live kernel: bars included
    for symbol in symbols:
        kernel.feed([msgspec.structs.replace(t, symbol=symbol) for t in trades])
else:
    windows = {s: deque(maxlen=200) for s in symbols}
    for symbol in symbols:
        w = windows[symbol]
        for t in trades:
            w.append(t.qty / 1e8)
gc.collect()
print(rss_kb() - before)
"""


def measure(count: int, mode: str) -> int:
    bench = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(count), mode, bench],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def main() -> None:
    print(f"detection state memory, window 200, RSS growth ({machine()})")
    for count in (1, 100, 2000):
        ours = measure(count, "spikewatch")
        base = measure(count, "baseline")
        print(
            f"  {count:>5} symbols: spikewatch {ours:>7,} KB ({ours / count:7.2f} KB/symbol)"
            f"   baseline {base:>7,} KB ({base / count:7.2f} KB/symbol)"
        )


if __name__ == "__main__":
    main()
