"""The whole market in one process (issue 12, item 4): memory and ingest over N symbols.

A market of N symbols re-labelled from the real BTCUSDT and ETHUSDT recordings
(``replay/market.py``: each symbol its own ids, phase and price scale), fed to the live
engine (``Engine.handle_frames``: the alert profile on, as ``python app.py`` runs it;
bars, checkpoints' state, everything) in reads of ``--read`` frames, in time order.

1. Memory: the process's resident set (VmRSS) once every symbol has traded at least
   ``--trades`` times (windows full, bars, orders, surge baselines), in a fresh process;
   baseline in the same run: the same process with the engine watching one symbol fed the
   same number of trades.
2. Ingest on one core: trades/s through ``handle_frames`` over the N-symbol market,
   against the same count of frames of one symbol (the BTCUSDT recording itself), best
   of ``--repeat``; by wall time and by the process's CPU time (on a shared machine the
   wall rate counts other processes' turns on the core too).

    python bench/bench_market.py                 # 2,000 symbols
    python bench/bench_market.py --symbols 400
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from common import machine

CHILD = r"""
import gc, sys, time
sys.path.insert(0, sys.argv[1])
from common import FIXTURES, read_frames
from spikewatch.config import load_settings, resolve_profile
from spikewatch.engine import Engine
from spikewatch.replay.market import Source, market_tape, sources_of_tape
from spikewatch.replay.readers import read_trades
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

n, per_symbol, read, mode, repeat = (
    int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
)
btc = read_frames()
eth = FIXTURES / "binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
sources = sources_of_tape(tape_from_frames(btc)) + [Source.of(read_trades([eth]))]
market = market_tape(sources, n, ("USDT", "BTC", "FDUSD"), seed=12)
symbols = market.symbols

def market_frames():
    # in time order until every symbol has per_symbol trades; made as they are fed
    seen = dict.fromkeys(symbols, 0)
    short = n
    for entry, _ in market.entries():
        yield entry.payload
        seen[entry.symbol] += 1
        if seen[entry.symbol] == per_symbol:
            short -= 1
            if not short:
                return

def one_frames(count):
    for i in range(count):
        yield btc[i % len(btc)]

def engine(watch):
    settings = resolve_profile(
        load_settings({"symbols": ",".join(watch), "db": ":memory:"}, env={}), live=True
    )
    return Engine(settings, SQLiteSignalStore(":memory:"))

def feed(e, frames):
    handle = e.handle_frames
    count = 0
    read_now = []
    for frame in frames:
        read_now.append(frame)
        if len(read_now) == read:
            handle(read_now, 0)
            count += read
            read_now = []
    if read_now:
        handle(read_now, 0)
        count += len(read_now)
    return count

if mode in ("memory-market", "memory-one"):
    total = sum(1 for _ in market_frames())
    del btc[20_000:]
    gc.collect()
    before = rss_kb()
    e = engine(symbols if mode == "memory-market" else ["BTCUSDT"])
    fed = feed(e, market_frames() if mode == "memory-market" else one_frames(total))
    e.kernel.settle()
    gc.collect()
    print(fed, rss_kb(), rss_kb() - before)
else:
    count = sum(1 for _ in market_frames())
    data = list(market_frames() if mode == "speed-market" else one_frames(count))
    best = best_cpu = 0.0
    for _ in range(repeat):
        e = engine(symbols if mode == "speed-market" else ["BTCUSDT"])
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        count = feed(e, data)
        best = max(best, count / (time.perf_counter() - started))
        best_cpu = max(best_cpu, count / (time.process_time() - cpu))
    print(len(data), best, best_cpu)
"""


def child(*args: object) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(Path(__file__).parent), *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--trades", type=int, default=400, help="trades per symbol, at least")
    parser.add_argument("--read", type=int, default=50, help="frames per network read")
    parser.add_argument("--repeat", type=int, default=3)
    ns = parser.parse_args()
    n = ns.symbols
    print(f"the whole market: {n:,} symbols, alert profile on ({machine()})")
    total, rss, grown = map(int, child(n, ns.trades, ns.read, "memory-market", 1))
    _, rss_one, grown_one = map(int, child(n, ns.trades, ns.read, "memory-one", 1))
    print(f"  memory after {total:,} trades (every symbol >= {ns.trades}), frames made as fed:")
    print(
        f"    {n:,} symbols: process RSS {rss / 1024:6.1f} MB, engine {grown / 1024:6.1f} MB "
        f"({(grown - grown_one) / n:.1f} KB/symbol beyond one)"
    )
    print(
        f"    1 symbol:      process RSS {rss_one / 1024:6.1f} MB, "
        f"engine {grown_one / 1024:6.1f} MB"
    )
    _, market, market_cpu = child(n, ns.trades, ns.read, "speed-market", ns.repeat)
    _, one, one_cpu = child(n, ns.trades, ns.read, "speed-one", ns.repeat)
    rate_market, rate_one = float(market), float(one)
    cpu_market, cpu_one = float(market_cpu), float(one_cpu)
    # per second of the process's own CPU time too: on a shared machine the wall rate also
    # counts the time other processes hold the core (the engine yields it after each read
    # with signals, for the live-stream threads), which a core of its own would not
    print(f"  ingest, reads of {ns.read} frames, best of {ns.repeat} (wall | per CPU second):")
    print(
        f"    {n:,} symbols: {rate_market / 1e3:8.1f} k trades/s  ({rate_market / rate_one:.2f}x)"
        f" | {cpu_market / 1e3:8.1f} k  ({cpu_market / cpu_one:.2f}x)"
    )
    print(f"    1 symbol:      {rate_one / 1e3:8.1f} k trades/s  (1.00x) | {cpu_one / 1e3:8.1f} k")


if __name__ == "__main__":
    main()
