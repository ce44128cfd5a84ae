"""Replay throughput, end to end.

1. A full day of trades, in process (decompression, CSV parsing, detection): the Binance
   USD-M BTCUSDT trades of 2020-02-22 (137,988 trades). Baseline, measured in the same
   run: ``csv.reader`` over ``gzip.open``, ``float()`` quantities, ``deque(maxlen=200)``
   and ``sum()/len()`` per trade. Measured: ``replay(read_trades(...))`` as
   ``spikewatch replay`` runs it (column-wise batches), the same trades fed one ``Trade``
   at a time (the per-trade path), and the readers alone.

2. Recorded frames, each run a whole process (interpreter start and imports included):
   ``python -m spikewatch replay FILE`` against a seed-style script (``json.loads`` per
   line, the combined-stream wrapper's ``data``, ``float(q)``, ``deque(maxlen=200)`` and
   ``sum()/len()``, a spike counted), on the same ``.gz`` recordings of about a million
   lines, made in a temporary folder from the real recordings in ``shared/data``:

   * ``trade-msgs``: the BTCUSDT ``@trade`` frames of 2024-08-08 23:54 to 00:05 UTC
     (19,904 frames), 50 times: 995,200 trade frames;
   * ``wsraw``: the hftbacktest captures of BTCUSDT spot from 23:54 and 00:00 (``<recv_ns>
     <frame>`` lines of trade, depth and bookTicker frames), 10 times: 995,740 lines,
     199,040 of them trades.

   Each copy's trade ids and times follow the previous copy's, so that nothing is dropped
   as a repeat. The runs alternate (seed, spikewatch, seed...); the median wall time of
   each is reported.

    python bench/bench_replay.py [FILE] [--repeat N] [--frames-only] [--src DIR]

``--src DIR`` runs ``spikewatch`` from another checkout's ``src`` (e.g. the commit before
a change, from ``git archive``) against the same inputs and the same baseline.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from common import best_rate, data_file, machine
from spikewatch.config import load_settings
from spikewatch.core import accel
from spikewatch.core.kernel import GapPolicy, Kernel
from spikewatch.replay.readers import read_batches, read_trades
from spikewatch.replay.runner import replay
from spikewatch.wiring import build_exchange, build_kernel

DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"
TRADE_MSGS = ("binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz",)
WSRAW = (
    "binance-spot-BTCUSDT-wsraw-2024-08-08T2354Z.hftbacktest.gz",
    "binance-spot-BTCUSDT-wsraw-2024-08-09T0000Z.hftbacktest.gz",
)

#: The seed-style replay of a recording, run as its own process.
SEED = """\
import gzip, json, sys
from collections import deque

window = deque(maxlen=200)
trades = spikes = 0
with gzip.open(sys.argv[1], "rb") as handle:
    for line in handle:
        if line[:1].isdigit():  # "<recv_ns> <frame>" (hftbacktest captures)
            line = line.split(b" ", 1)[1]
        msg = json.loads(line)
        data = msg.get("data", msg)  # the combined stream's wrapper
        if data.get("e") != "trade":
            continue
        qty = float(data["q"])
        if len(window) == 200 and qty > 10 * (sum(window) / len(window)):
            spikes += 1
        window.append(qty)
        trades += 1
print(trades, spikes)
"""


# -- 1. a day of CSV trades, in process -----------------------------------------------------


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


def kernel() -> Kernel:
    """The kernel ``spikewatch replay`` builds with the default settings."""
    settings = load_settings({}, env={})
    venues = (build_exchange(settings),)
    return build_kernel(settings, venues=venues, gap_policy=GapPolicy.RESET, bars=False)


def spikewatch(path: Path) -> int:
    summary = replay(read_trades([path], symbol="BTCUSDT"), kernel(), lambda s: None)
    return summary.trades


def spikewatch_per_trade(path: Path) -> int:
    trades = (t for t in read_trades([path], symbol="BTCUSDT"))  # not a reader: one by one
    return replay(trades, kernel(), lambda s: None).trades


def bench_day(path: Path) -> None:
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


# -- 2. recorded frames, whole processes ----------------------------------------------------

_TRADE_ID = re.compile(rb'"t":(\d+)')
_TRADE_TIMES = re.compile(rb'"([ET])":(\d+)')
_TRADE = b'"e":"trade"'


def repeat_recording(sources: Sequence[Path], copies: int, target: Path) -> int:
    """Write ``copies`` of the recordings' lines to ``target`` (gzip), each copy's trade
    ids and times moved past the previous copy's; returns the number of lines."""
    lines: list[bytes] = []
    for source in sources:
        with gzip.open(source, "rb") as handle:
            lines += [line if line.endswith(b"\n") else line + b"\n" for line in handle]
    trades = [line for line in lines if _TRADE in line]
    ids = [int(m.group(1)) for line in trades if (m := _TRADE_ID.search(line))]
    times = [int(m.group(2)) for line in trades for m in _TRADE_TIMES.finditer(line)]
    id_step = max(ids) - min(ids) + 1
    time_step = max(times) - min(times) + 1
    with gzip.open(target, "wb", compresslevel=6) as out:
        for copy in range(copies):
            if not copy:
                out.writelines(lines)
                continue
            ids_by, times_by = copy * id_step, copy * time_step

            def move_id(m: re.Match[bytes], by: int = ids_by) -> bytes:
                return b'"t":%d' % (int(m.group(1)) + by)

            def move_time(m: re.Match[bytes], by: int = times_by) -> bytes:
                return b'"%s":%d' % (m.group(1), int(m.group(2)) + by)

            out.writelines(
                _TRADE_TIMES.sub(move_time, _TRADE_ID.sub(move_id, line))
                if _TRADE in line
                else line
                for line in lines
            )
    return len(lines) * copies


def wall_time(command: list[str], env: dict[str, str]) -> float:
    """Seconds the command takes to run, as a process of its own."""
    started = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - started


def bench_process(folder: Path, repeat: int, src: Path | None) -> None:
    seed = folder / "seed.py"
    seed.write_text(SEED)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    inputs = {
        "trade-msgs": (folder / "btcusdt-trade-msgs-x50.jsonl.gz", TRADE_MSGS, 50),
        "wsraw": (folder / "btcusdt-wsraw-x10.hftbacktest.gz", WSRAW, 10),
    }
    where = f"from {src}" if src is not None else "this checkout"
    print(f"\nwhole process, median of {repeat} (spikewatch: {where}; {machine()})")
    for name, (path, sources, copies) in inputs.items():
        lines = repeat_recording([data_file(s) for s in sources], copies, path)
        ours = [sys.executable, "-m", "spikewatch", "replay", str(path), "--out", "-", "--quiet"]
        base = [sys.executable, str(seed), str(path)]
        # the same spikes? (the seed's floats and spikewatch's exact decimals may differ)
        seed_says = subprocess.run(base, check=True, capture_output=True, text=True).stdout
        signals = subprocess.run(ours, check=True, capture_output=True, env=env).stdout
        seed_times: list[float] = []
        our_times: list[float] = []
        for _ in range(repeat):
            seed_times.append(wall_time(base, env))
            our_times.append(wall_time(ours, env))
        seed_s, ours_s = statistics.median(seed_times), statistics.median(our_times)
        trades, spikes = map(int, seed_says.split())
        size = path.stat().st_size / 1e6
        found = signals.count(b"\n")
        print(
            f"  {name}: {lines:,} lines, {trades:,} trades, {size:.0f} MB gzip; "
            f"spikes: seed {spikes:,}, spikewatch {found:,}"
        )
        print(f"    seed-style script:   {seed_s:6.2f} s  (runs: {_runs(seed_times)})")
        print(f"    spikewatch replay:   {ours_s:6.2f} s  (runs: {_runs(our_times)})")
        print(f"    ratio seed / spikewatch: {seed_s / ours_s:5.2f}x")


def _runs(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help=f"a trades CSV (default {DAY})")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each process")
    parser.add_argument("--frames-only", action="store_true", help="only the processes")
    parser.add_argument("--src", type=Path, help="run spikewatch from this src folder")
    args = parser.parse_args()
    if not args.frames_only:
        bench_day(Path(args.file) if args.file else data_file(DAY))
    with tempfile.TemporaryDirectory(prefix="spikewatch-bench-") as folder:
        bench_process(Path(folder), args.repeat, args.src)


if __name__ == "__main__":
    main()
