"""Trades/s through the bus: TradePublisher -> NATS JetStream -> PartitionConsumers.

Real recorded trades, four series on four partitions (the stream's own partitioning):
the Binance USD-M BTCUSDT day of 2020-02-22 (137,988 trades), and the 2024-08-08
23:54-00:05 UTC spot BTCUSDT and ETHUSDT and USD-M ETHUSDT files. They are read into
batches first (not timed), then, each round on a fresh stream (file storage, one
replica, the server at 127.0.0.1:4222):

* ``publish``: the publisher alone, until every message is acknowledged (stored);
* ``consume``: the consumers alone, draining the stream just filled;
* ``end to end``: publisher and consumers at once, from the first publish until the
  consumers have handed over the last trade. ``--procs`` (default) runs them as two
  processes, as ``spikewatch ingest`` and ``spikewatch detect`` would run, one core each;
  ``--inproc`` on one event loop.

Baselines in the same run: reading the same trades from the files (``read_batches``,
what ``spikewatch replay`` does without a bus), and the codec alone (encode + decode of
every 500-trade batch). ``--kernel`` makes the consumer feed a kernel with the original
rule (what ``spikewatch detect`` adds).

    python bench/bench_bus.py [--rounds N] [--copies N] [--max-batch 500] [--inproc]
                              [--kernel] [--rate TRADES_PER_S]

``--rate`` paces the end-to-end publisher (the micro-batches then show the time-based
flush: a live market's rate, not a firehose).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
from nats.js import JetStreamContext

from common import data_file, machine
from spikewatch.bus.codec import decode_batch, encode_batch
from spikewatch.bus.consumer import PartitionConsumer
from spikewatch.bus.publisher import TradePublisher
from spikewatch.bus.stream import ensure_trade_stream
from spikewatch.bus.subjects import TradeSubjects
from spikewatch.core.detectors import VolumeSpikeDetector
from spikewatch.core.kernel import GapPolicy, Kernel
from spikewatch.core.model import TradeBatch
from spikewatch.exchanges.binance import BinanceSpot, BinanceUsdm
from spikewatch.replay.readers import FrameParser, read_batches

URL = "nats://127.0.0.1:4222"
PARTITIONS = 8  # as `spikewatch detect --partitions 0-7` would read
FILES: tuple[tuple[str, FrameParser], ...] = (
    ("binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz", BinanceUsdm()),
    ("binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz", BinanceSpot()),
    ("binance-spot-ETHUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz", BinanceSpot()),
    ("binance-usdm-ETHUSDT-trades-2024-08-08T2354Z_2400Z.csv.gz", BinanceUsdm()),
)
#: Trades per publish() call: about what one network read of a busy venue brings.
READ_SIZE = 256


def read_all(size: int, copies: int = 1) -> list[TradeBatch]:
    """Every file's trades as batches of ``size``, ``copies`` times over (each copy's ids
    and times after the previous copy's, so nothing is a repeat), the series interleaved
    as they would arrive from several venue connections."""
    series = []
    for name, venue in FILES:
        one = list(read_batches([data_file(name)], size=size, exchange=venue))
        id_span = one[-1].trade_ids[-1] - one[0].trade_ids[0] + 1
        time_span = one[-1].times_us[-1] - one[0].times_us[0] + 1
        series.append([shifted(b, k * id_span, k * time_span) for k in range(copies) for b in one])
    out: list[TradeBatch] = []
    for i in range(max(len(s) for s in series)):
        out.extend(s[i] for s in series if i < len(s))
    return out


def shifted(batch: TradeBatch, ids: int, times: int) -> TradeBatch:
    if not ids:
        return batch
    return TradeBatch.of(
        batch.exchange,
        batch.symbol,
        (i + ids for i in batch.trade_ids),
        batch.prices,
        batch.qtys,
        (t + times for t in batch.times_us),
        batch.buyer_is_maker,
    )


def new_kernel() -> Kernel:
    return Kernel(
        lambda exchange, symbol: (VolumeSpikeDetector(200, Decimal(10)),),
        gap_policy=GapPolicy.RESET,
    )


async def connect() -> tuple[Any, JetStreamContext]:
    nc = await nats.connect(URL, connect_timeout=5, allow_reconnect=False)
    return nc, nc.jetstream()


async def publish_all(
    js: JetStreamContext,
    name: str,
    subjects: TradeSubjects,
    batches: Sequence[TradeBatch],
    max_batch: int,
    rate: float | None = None,
) -> TradePublisher:
    """Publish ``batches`` as fast as the publisher takes them, or at ``rate`` trades/s."""
    publisher = TradePublisher(js, subjects, stream=name, max_batch=max_batch)
    await publisher.start()
    started = time.perf_counter()
    sent = 0
    for batch in batches:
        await publisher.publish((batch,))
        if rate:
            sent += len(batch)
            ahead = started + sent / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
    await publisher.close()
    return publisher


async def consume_all(
    js: JetStreamContext, name: str, subjects: TradeSubjects, total: int, kernel: bool
) -> tuple[int, Counter[int]]:
    """Drain every partition (one consumer each, concurrently) until ``total`` trades."""
    done = 0
    sizes: Counter[int] = Counter()
    finished = asyncio.Event()
    detector = new_kernel() if kernel else None

    def handler(batches: Sequence[TradeBatch], seq: int) -> None:
        nonlocal done
        for batch in batches:
            sizes[len(batch.trade_ids)] += 1
            done += len(batch.trade_ids)
        if detector is not None:
            detector.feed(batches)
        if done >= total:
            finished.set()

    async def drain(part: int) -> None:
        consumer = PartitionConsumer(js, name, subjects, part, batch=128, max_wait=0.05)
        await consumer.run(handler, finished)
        await consumer.close(delete=True)

    await asyncio.gather(*(drain(p) for p in range(subjects.partitions)))
    return done, sizes


def consumer_process(
    name: str, prefix: str, total: int, kernel: bool, ready: Any, out: Any
) -> None:
    async def main() -> None:
        nc, js = await connect()
        subjects = TradeSubjects(PARTITIONS, prefix=prefix)
        ready.set()
        done, _ = await consume_all(js, name, subjects, total, kernel)
        out.put((done, time.perf_counter()))
        await nc.close()

    asyncio.run(main())


async def one_round(batches: Sequence[TradeBatch], args: argparse.Namespace) -> dict[str, float]:
    total = sum(len(b) for b in batches)
    nc, js = await connect()
    rates: dict[str, float] = {}
    tag = uuid.uuid4().hex[:8]
    subjects = TradeSubjects(PARTITIONS, prefix=f"bench{tag}")
    try:
        # publish alone, then consume alone
        name = f"bench-{tag}-a"
        await ensure_trade_stream(js, name, subjects, max_age=3600, max_bytes=1 << 30)
        started = time.perf_counter()
        await publish_all(js, name, subjects, batches, args.max_batch)
        rates["publish"] = total / (time.perf_counter() - started)
        started = time.perf_counter()
        done, _ = await consume_all(js, name, subjects, total, args.kernel)
        rates["consume"] = done / (time.perf_counter() - started)
        assert done == total, (done, total)
        await js.delete_stream(name)

        # end to end, at once
        subjects = TradeSubjects(PARTITIONS, prefix=f"bench{tag}b")
        name = f"bench-{tag}-b"
        await ensure_trade_stream(js, name, subjects, max_age=3600, max_bytes=1 << 30)
        if args.inproc:
            started = time.perf_counter()
            consumed = asyncio.create_task(consume_all(js, name, subjects, total, args.kernel))
            publisher = await publish_all(js, name, subjects, batches, args.max_batch, args.rate)
            done, _ = await consumed
            ended = time.perf_counter()
        else:
            ctx = multiprocessing.get_context("spawn")
            ready, out = ctx.Event(), ctx.Queue()
            proc = ctx.Process(
                target=consumer_process,
                args=(name, subjects.prefix, total, args.kernel, ready, out),
            )
            proc.start()
            await asyncio.get_running_loop().run_in_executor(None, ready.wait)
            started = time.perf_counter()
            publisher = await publish_all(js, name, subjects, batches, args.max_batch, args.rate)
            done, ended = await asyncio.get_running_loop().run_in_executor(None, out.get)
            proc.join()
        assert done == total, (done, total)
        rates["end_to_end"] = total / (ended - started)
        sizes = publisher.sizes
        rates["messages"] = sum(sizes.values())
        rates["batch_mean"] = sum(k * v for k, v in sizes.items()) / rates["messages"]
        rates["batch_full"] = sizes[args.max_batch] / rates["messages"]
        rates["batch_min"] = min(sizes)
        await js.delete_stream(name)
    finally:
        await nc.close()
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--copies", type=int, default=5, help="times the recordings are sent")
    parser.add_argument("--inproc", action="store_true", help="end to end on one event loop")
    parser.add_argument("--kernel", action="store_true", help="the consumer feeds a kernel")
    parser.add_argument(
        "--rate", type=float, help="publish end to end at this many trades/s (default: flat out)"
    )
    args = parser.parse_args(argv)

    batches = read_all(READ_SIZE, args.copies)
    total = sum(len(b) for b in batches)
    keys = sorted({(b.exchange, b.symbol) for b in batches})
    subjects = TradeSubjects(PARTITIONS)
    print(machine())
    print(f"{total:,} real trades ({args.copies} x the recordings), {len(keys)} series:", end="")
    print(", ".join(f" {e} {s} -> partition {subjects.partition(e, s)}" for e, s in keys))

    # baselines: the files read without a bus; the codec alone
    best_read = 0.0
    for _ in range(args.rounds):
        started = time.perf_counter()
        n = sum(
            len(b) for name, venue in FILES for b in read_batches([data_file(name)], exchange=venue)
        )
        best_read = max(best_read, n / (time.perf_counter() - started))
    cut = [
        b.slice(i, i + args.max_batch)
        for b in read_all(65536)
        for i in range(0, len(b), args.max_batch)
    ]
    best_codec = 0.0
    for _ in range(args.rounds):
        started = time.perf_counter()
        n = sum(len(decode_batch(encode_batch(b))) for b in cut)
        best_codec = max(best_codec, n / (time.perf_counter() - started))

    rounds = [asyncio.run(one_round(batches, args)) for _ in range(args.rounds)]
    mode = "in one process" if args.inproc else "publisher and consumer processes"
    paced = f", paced at {args.rate:,.0f}/s" if args.rate else ""
    print(f"\nbaseline, read_batches from the files: {best_read / 1e6:.2f} M trades/s (best)")
    print(
        f"baseline, codec encode+decode of {args.max_batch}-trade batches: "
        f"{best_codec / 1e6:.2f} M trades/s (best)"
    )
    print(f"publish() calls of {READ_SIZE} trades; messages of at most {args.max_batch}")
    for key, label in (
        ("publish", "publish until acked"),
        ("consume", "consume a full stream"),
        ("end_to_end", f"end to end ({mode}{', kernel' if args.kernel else ''}{paced})"),
    ):
        values = sorted(r[key] for r in rounds)
        print(
            f"{label:<48} median {statistics.median(values) / 1e3:8.1f} k trades/s"
            f"  (runs: {', '.join(f'{v / 1e3:.0f}' for v in values)})"
        )
    first = rounds[0]
    print(
        f"end to end, messages a round: {first['messages']:.0f}, mean "
        f"{first['batch_mean']:.1f} trades, {first['batch_full']:.1%} full "
        f"({args.max_batch}), smallest {first['batch_min']:.0f}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
