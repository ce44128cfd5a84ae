"""Detection-path throughput: raw Binance trade frames (in memory) -> signals, one core.

Baseline, measured in the same run: the original request's style — ``json.loads`` per
frame, a ``deque(maxlen=200)`` of float quantities, ``sum()/len()`` per trade.

Measured: the kernel fed one frame per call (``Kernel.feed_frames``), the same fed
4,096 frames at a time (``parse_batch`` -> ``SymbolState.run_batch``, what replay of a
frame recording does), and the live engine's own path, ``Engine.handle_frames`` on each
network read (sequencer, bars, lag histogram and signal bookkeeping included), for reads
of 1 frame (a quiet market) and of 32 and 300 frames (bursts). Each run starts with a
fresh parser and kernel (cold caches), as the baseline starts with an empty window.

    python bench/bench_detect.py
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import deque

from common import best_rate, machine, read_frames
from spikewatch.config import load_settings
from spikewatch.core import accel
from spikewatch.core.kernel import Kernel
from spikewatch.engine import Engine
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.wiring import build_kernel

BATCH = 4096


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


def _kernel() -> Kernel:
    return build_kernel(load_settings({}, env={}), venues=(BinanceSpot(),), bars=False)


def spikewatch(frames: list[bytes]) -> int:
    """The kernel fed one frame at a time (a quiet market: a read holds one frame)."""
    feed = _kernel().feed_frames
    for frame in frames:
        feed("binance", (frame,))
    return len(frames)


def spikewatch_batch(frames: list[bytes]) -> int:
    """The kernel fed BATCH frames at a time (replay, or a burst)."""
    feed = _kernel().feed_frames
    for start in range(0, len(frames), BATCH):
        feed("binance", frames[start : start + BATCH])
    return len(frames)


def engine_reads(frames: list[bytes], size: int, folder: str, profile: str = "off") -> float:
    """Frames/s of fresh offline engines (no store writer, no network) fed reads of
    ``size``, best of 7; the engines are built (store opened) before the clock starts.
    ``profile``: the alert profile (``default``: the shipped alert detectors and rules)."""
    engines = []
    for run in range(7):
        db = f"{folder}/reads-{size}-{profile}-{run}.db"
        settings = load_settings({"db": db, "alert_profile": profile}, env={})
        engines.append(Engine(settings, SQLiteSignalStore(settings.db)))
    now = time.time_ns()

    def feed() -> int:
        handle = engines.pop().handle_frames
        for start in range(0, len(frames), size):
            handle(frames[start : start + size], now)
        return len(frames)

    return best_rate(feed)


def main() -> None:
    frames = read_frames()
    base = best_rate(lambda: baseline(frames))
    ours = best_rate(lambda: spikewatch(frames))
    batched = best_rate(lambda: spikewatch_batch(frames))
    parse = BinanceSpot().parse_batch
    decode_only = best_rate(lambda: sum(1 for f in frames if parse((f,)).batches))
    with tempfile.TemporaryDirectory() as folder:
        reads = {size: engine_reads(frames, size, folder) for size in (1, 32, 300)}
        alerting = {size: engine_reads(frames, size, folder, "default") for size in (1, 300)}
    numpy = "with numpy" if accel.np is not None else "without numpy"
    print(f"detection path, {len(frames):,} recorded BTCUSDT frames, best of 7 ({machine()})")
    print(f"  baseline (json.loads + deque + sum/len): {base / 1e6:6.3f} M frames/s")
    print(f"  kernel, one frame per call:              {ours / 1e6:6.3f} M frames/s")
    print(f"  parse_batch only, one frame per call:    {decode_only / 1e6:6.3f} M frames/s")
    print(f"  kernel, 4,096 frames per call:           {batched / 1e6:6.3f} M frames/s ({numpy})")
    for size, rate in reads.items():
        label = f"engine.handle_frames, reads of {size}:"
        print(f"  {label:<41}{rate / 1e6:6.3f} M frames/s ({rate / base:.2f}x)")
    for size, rate in alerting.items():
        label = f"  the same with the alert profile, {size}:"
        print(f"{label:<43}{rate / 1e6:6.3f} M frames/s ({rate / base:.2f}x)")
    print(f"  ratio spikewatch / baseline:             {ours / base:6.2f}x")
    print(f"  ratio batch path / baseline:             {batched / base:6.2f}x")


if __name__ == "__main__":
    main()
