"""The distributed roles end to end: ``spikewatch ingest`` -> NATS JetStream ->
``spikewatch detect`` -> PostgreSQL and the signal subjects, the real command line as
processes against the simulator, the NATS server at 127.0.0.1:4222 and PostgreSQL at
``SPIKEWATCH_TEST_POSTGRES`` (default postgresql://postgres@127.0.0.1:5432/test; a fresh
schema each run, dropped at the end).

Throughput (``--symbols`` re-labelled copies of the recorded BTCUSDT trades, a market the
simulator plays as fast as it is read):

* ``ingest``: from the first trade in the stream until the last (frames parsed, ordered,
  published, acknowledged);
* ``detect`` with 1 and with 2 workers, on the stream ingest filled: from the first
  partition consumer made until every partition's consumer has nothing pending (kernel,
  PostgreSQL writes, signal publishes, snapshots); 2 workers share the partitions (a
  rebalance at start included);
* baseline, the same run: the embedded mode (``python app.py``) on the same market, from
  its first trade until its last.

Latency (``--rate`` trades/s of the recorded BTCUSDT, looped): from the simulator sending
a trade's frame until a client subscribed to ``<prefix>-signals.>`` receives the signal
it raised (detect publishes after the PostgreSQL write, so that is included); baseline,
the same run: the embedded app's push (``/api/stream``, SSE) at the same rate.

    python bench/bench_roles.py [--symbols 8] [--rate 2000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import nats
import psycopg

from bench_latency import percentile, sse_latencies
from common import machine, read_frames
from common_live import get, simulator_at, start_app
from spikewatch.bus.names import BusNames
from spikewatch.replay.market import market_tape, sources_of_tape
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames

NATS_URL = "nats://127.0.0.1:4222"
POSTGRES_URL = os.environ.get(
    "SPIKEWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
PARTITIONS = 8

READER = r"""
import asyncio, json, sys, time
import nats
async def main(url, subject, seconds):
    nc = await nats.connect(url)
    async def got(msg):
        print(json.loads(msg.data)["trade_id"], time.time_ns(), flush=True)
    await nc.subscribe(subject, cb=got)
    await asyncio.sleep(seconds)
    await nc.close()
asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-c search_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class Bench:
    """A bus prefix and PostgreSQL schemas of this run; the role processes it started."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(4)
        self.names = BusNames(f"bench{self.tag}", PARTITIONS)
        self.schemas: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.folder = Path(tempfile.mkdtemp(prefix="spikewatch-bench-roles-"))

    def schema(self) -> str:
        name = f"sw_bench_{self.tag}_{len(self.schemas)}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        return with_search_path(POSTGRES_URL, name)

    def role(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
        log = (self.folder / f"{role}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spikewatch",
                role,
                "--nats-url",
                NATS_URL,
                "--bus-prefix",
                self.names.prefix,
                "--bus-partitions",
                str(PARTITIONS),
                "--log-level",
                "WARNING",
                *args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs.clear()

    def reset_detect(self) -> None:
        """Forget the detect side's state (leases, snapshots, consumers), keep the trades."""
        names = self.names

        async def drop() -> None:
            nc = await nats.connect(NATS_URL)
            js = nc.jetstream()
            for bucket in (names.lease_bucket, names.snapshot_bucket):
                with contextlib.suppress(Exception):
                    await js.delete_key_value(bucket)
            for consumer in await js.consumers_info(names.trade_stream):
                await js.delete_consumer(names.trade_stream, consumer.name)
            with contextlib.suppress(Exception):
                await js.delete_stream(names.signal_stream)
            await nc.close()

        asyncio.run(drop())

    def cleanup(self) -> None:
        self.stop_all()
        self.reset_detect()

        async def drop() -> None:
            nc = await nats.connect(NATS_URL)
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(self.names.trade_stream)
            await nc.close()

        asyncio.run(drop())
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for name in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


async def _stream_state(names: BusNames) -> tuple[int, int]:
    nc = await nats.connect(NATS_URL)
    try:
        info = await nc.jetstream().stream_info(names.trade_stream)
        return int(info.state.messages), int(info.state.last_seq)
    except Exception:
        return 0, 0
    finally:
        await nc.close()


async def _stream_trades(names: BusNames) -> int:
    from spikewatch.bus.codec import read_header

    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    sub = await js.pull_subscribe(names.trade_subjects.wildcard, stream=names.trade_stream)
    total = 0
    while True:
        try:
            msgs = await sub.fetch(512, timeout=1.0)
        except Exception:
            break
        for msg in msgs:
            total += read_header(msg.data).count
            await msg.ack()  # (each: unacknowledged ones would come again after ack_wait)
    await sub.unsubscribe()
    await nc.close()
    return total


async def _detect_state(names: BusNames, busy: set[int]) -> tuple[int, bool]:
    """(consumers of busy partitions, whether all of them have nothing pending)."""
    nc = await nats.connect(NATS_URL)
    try:
        infos = await nc.jetstream().consumers_info(names.trade_stream)
    finally:
        await nc.close()
    mine = {}
    for info in infos:
        part = int((info.config.filter_subject or "x.-1").split(".")[1])
        if part in busy:
            mine[part] = info
    done = len(mine) == len(busy) and all(
        (i.num_pending or 0) == 0
        and (i.num_ack_pending or 0) == 0
        and i.delivered is not None
        and i.delivered.stream_seq
        for i in mine.values()
    )
    return len(mine), done


def throughput(symbols: int) -> None:
    source = sources_of_tape(tape_from_frames(read_frames()))
    market = market_tape(source, symbols, ("USDT", "BTC", "FDUSD"), seed=7)
    names_list = ",".join(market.symbols)
    bench = Bench()
    names = bench.names
    busy = {names.trade_subjects.partition("binance", s) for s in market.symbols}
    print(
        f" throughput: {symbols} symbols x {len(source[0]):,} recorded BTCUSDT trades "
        f"({len(market):,}), {PARTITIONS} partitions ({len(busy)} with trades)"
    )
    try:
        sim = SimulatorThread(Simulator(market, speed=None))
        sim.start()
        bench.role(
            "ingest", "--symbols", names_list, "--ws-url", sim.ws_url, "--rest-url", sim.rest_url
        )
        first = last = 0.0
        seen = (0, 0)
        while True:
            state = asyncio.run(_stream_state(names))
            now = time.monotonic()
            if state[0] and not first:
                first = now
            if state != seen:
                seen, last = state, now
            if first and now - last > 3.0:
                break
            time.sleep(0.05)
        sim.stop()
        bench.stop_all()
        trades = asyncio.run(_stream_trades(names))
        print(
            f"  ingest:              {trades / (last - first):>10,.0f} trades/s  "
            f"({trades:,} trades in the stream)"
        )
        for workers in (1, 2):
            bench.reset_detect()
            pg = bench.schema()
            for _ in range(workers):
                bench.role("detect", "--postgres", pg)
            start = 0.0
            while True:
                made, done = asyncio.run(_detect_state(names, busy))
                now = time.monotonic()
                if made and not start:
                    start = now
                if done:
                    break
                time.sleep(0.05)
            elapsed = now - start
            with psycopg.connect(pg) as conn:
                (stored,) = conn.execute("SELECT count(*) FROM signals").fetchone() or (0,)
            bench.stop_all()
            print(
                f"  detect, {workers} worker{'s' if workers > 1 else ' '}:    "
                f"{trades / elapsed:>10,.0f} "
                f"trades/s  ({stored:,} signals stored)"
            )
        # baseline: the embedded mode on the same market
        sim = SimulatorThread(Simulator(market, speed=None))
        sim.start()
        app, port = start_app(sim, "--symbols", names_list, "--alert-profile", "default")
        try:
            first = last = 0.0
            seen_count = -1
            while True:
                status = get(port, "/api/status")
                count = sum(s["trades"] for s in status["symbols"].values())
                now = time.monotonic()
                if count and not first:
                    first = now
                if count != seen_count:
                    seen_count, last = count, now
                if first and now - last > 3.0:
                    break
                time.sleep(0.05)
        finally:
            app.terminate()
            app.wait(10)
            sim.stop()
        print(
            f"  baseline, embedded:  {seen_count / (last - first):>10,.0f} trades/s  "
            "(app.py, ingest and detect in one process)"
        )
    finally:
        bench.cleanup()


def latency(rate: float, seconds: float) -> None:
    print(f" latency at {rate:,.0f} trades/s, {seconds:g} s each (frame sent -> signal received):")
    bench = Bench()
    try:
        sim = simulator_at(rate)
        sim.simulator.sent_at = {}
        pg = bench.schema()
        bench.role("detect", "--postgres", pg)
        bench.role(
            "ingest", "--symbols", "BTCUSDT", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url
        )
        time.sleep(4)  # connected, leases taken, windows warm
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                READER,
                NATS_URL,
                f"{bench.names.signal_prefix}.>",
                str(seconds),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        sent_at = sim.simulator.sent_at or {}
        lat = []
        for line in out.splitlines():
            trade_id, received = (int(x) for x in line.split())
            sent = sent_at.get(trade_id)
            if sent is not None:
                lat.append((received - sent) / 1e6)
        bench.stop_all()
        sim.stop()
        _report("ingest -> detect -> NATS", lat)
        sim = simulator_at(rate)
        sim.simulator.sent_at = {}
        app, port = start_app(sim, "--alert-profile", "default")
        try:
            time.sleep(3)
            sse = sse_latencies(port, sim.simulator.sent_at, seconds)
        finally:
            app.terminate()
            app.wait(10)
            sim.stop()
        _report("baseline, embedded (SSE)", sse)
    finally:
        bench.cleanup()


def _report(what: str, lat: list[float]) -> None:
    if not lat:
        print(f"  {what:<26} no signal received")
        return
    print(
        f"  {what:<26} {len(lat):>5} signals, p50 {percentile(lat, 50):7.2f} ms  "
        f"p99 {percentile(lat, 99):7.2f} ms  max {max(lat):7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--skip", choices=["throughput", "latency"], default=None)
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)
    print(f"distributed roles, alert profile default ({machine()})")
    if args.skip != "throughput":
        throughput(args.symbols)
    if args.skip != "latency":
        latency(args.rate, args.seconds)


if __name__ == "__main__":
    main()
