"""The distributed roles end to end: ``spikewatch ingest`` -> NATS JetStream ->
``spikewatch detect`` -> PostgreSQL and the signal subjects, the real command line as
processes against the simulator, the NATS server at 127.0.0.1:4222 and PostgreSQL at
``SPIKEWATCH_TEST_POSTGRES`` (default postgresql://postgres@127.0.0.1:5432/test; a fresh
schema each run, dropped at the end).

Throughput from files (``--copies`` re-labelled copies of the recorded USD-M BTCUSDT day,
written as CSV files, one symbol each):

* baseline, no bus: ``spikewatch replay FILES`` (the same kernel, alert profile on), its
  own trades/s (reading included);
* ``spikewatch ingest --replay FILES``: its own figure, from the first read until the last
  trade is acknowledged by JetStream;
* ``spikewatch detect`` with 1 and with 2 workers on that stream: from the first partition
  consumer made until every partition's consumer has nothing pending (kernel, PostgreSQL
  writes of signals and alert events, signal publishes, snapshots); 2 workers share the
  partitions (the rebalance at start included). The CPU seconds the workers used are
  printed beside it: on a 2-core machine shared with nats-server and PostgreSQL (and,
  here, other work) trades per CPU-second says what a core of its own would give.

Throughput live (``--symbols`` re-labelled copies of the recorded BTCUSDT trades, a market
the simulator in this process plays over WebSocket as fast as it is read): ``ingest`` from
the first trade in the stream until the last, and, baseline, the embedded mode
(``python app.py``) on the same market from its first trade until its last.

Latency (``--rate`` trades/s of the recorded BTCUSDT, looped), from the simulator sending
a trade's frame until the signal it raised arrives, through ingest -> JetStream ->
detect -> PostgreSQL -> ``spikewatch serve`` -> ``/api/stream`` (SSE), as a browser gets
it; and, in the same run, at the NATS signal subject (detect's publish; a client
subscribed to ``<prefix>-signals.>``); baseline: the embedded app's ``/api/stream`` at the
same rate.

    python bench/bench_roles.py [--copies 8] [--symbols 8] [--rate 2000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import nats
import nats.errors
import psycopg

from bench_latency import percentile, sse_latencies
from common import machine, read_frames
from common_live import free_port, get, simulator_at, start_app
from spikewatch.bus.names import BusNames
from spikewatch.replay.market import market_tape, sources_of_tape
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames

NATS_URL = "nats://127.0.0.1:4222"
POSTGRES_URL = os.environ.get(
    "SPIKEWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
PARTITIONS = 8
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"

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

    def serve(self, postgres: str) -> tuple[subprocess.Popen[bytes], int]:
        """``spikewatch serve`` on this run's bus and ``postgres``; returns once it answers."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
        log = (self.folder / f"serve-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spikewatch",
                "serve",
                "--nats-url",
                NATS_URL,
                "--bus-prefix",
                self.names.prefix,
                "--postgres",
                postgres,
                "--port",
                str(port),
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                get(port, "/healthz")
                return proc, port
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"serve did not start: see {self.folder}") from None
                time.sleep(0.2)

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def day_files(folder: Path, copies: int) -> list[Path]:
    """``copies`` CSV files of the recorded USD-M BTCUSDT day, one symbol each (the name
    says which: ``AAAUSDT-trades-2020-02-22.csv``)."""
    text = gzip.decompress((DATA / DAY).read_bytes())
    paths = []
    for i in range(copies):
        name = "".join(chr(ord("A") + (i // 26**k) % 26) for k in (2, 1, 0))
        path = folder / f"{name}USDT-trades-2020-02-22.csv"
        path.write_bytes(text)
        paths.append(path)
    return paths


def spikewatch(*args: str) -> str:
    """``python -m spikewatch ARGS``: what it wrote to stderr (it must succeed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "spikewatch", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"spikewatch {args[0]} failed: {done.stderr[-2000:]}")
    return done.stderr


def rate_in(summary: str) -> float:
    """The ``N trades/s`` figure of a summary line."""
    found = re.search(r"([\d,]+) trades/s", summary)
    if found is None:
        raise SystemExit(f"no trades/s in {summary!r}")
    return float(found.group(1).replace(",", ""))


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
    except (AttributeError, nats.errors.Error):  # a consumer deleted while listed: ask again
        return 0, False
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


def detect_run(bench: Bench, workers: int, busy: set[int], trades: int) -> None:
    """detect with ``workers`` processes on the stream ``bench`` holds, until drained."""
    names = bench.names
    bench.reset_detect()
    pg = bench.schema()
    procs = [
        bench.role("detect", "--exchange", "binance-usdm", "--postgres", pg) for _ in range(workers)
    ]
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
    cpu = sum(cpu_seconds(p.pid) for p in procs)
    with psycopg.connect(pg) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM signals").fetchone() or (0,)
    bench.stop_all()
    print(
        f"  detect, {workers} worker{'s' if workers > 1 else ' '}:    {trades / elapsed:>10,.0f} "
        f"trades/s  ({elapsed:.1f} s; {stored:,} signals stored; {cpu:.1f} CPU s: "
        f"{trades / cpu:,.0f} trades per CPU-second)"
    )


def file_throughput(copies: int) -> None:
    bench = Bench()
    names = bench.names
    try:
        files = [str(p) for p in day_files(bench.folder, copies)]
        symbols = [Path(f).name.split("-")[0] for f in files]
        busy = {names.trade_subjects.partition("binance-usdm", s) for s in symbols}
        out = bench.folder / "replayed.jsonl"
        replayed = spikewatch(
            "replay",
            *files,
            "--exchange",
            "binance-usdm",
            "--alert-profile",
            "default",
            "--out",
            str(out),
        )
        trades = int(re.search(r"replayed ([\d,]+) trades", replayed).group(1).replace(",", ""))  # type: ignore[union-attr]
        print(
            f" throughput from files: {copies} copies of the USD-M BTCUSDT day ({trades:,} "
            f"trades), {PARTITIONS} partitions ({len(busy)} with trades)"
        )
        print(
            f"  baseline, replay:    {rate_in(replayed):>10,.0f} trades/s  (spikewatch replay of "
            f"the files, no bus; {sum(1 for _ in out.open()):,} signals)"
        )
        loaded = spikewatch(
            "ingest",
            "--exchange",
            "binance-usdm",
            "--nats-url",
            NATS_URL,
            "--bus-prefix",
            names.prefix,
            "--bus-partitions",
            str(PARTITIONS),
            "--replay",
            *files,
        )
        print(
            f"  ingest --replay:     {rate_in(loaded):>10,.0f} trades/s  (read, published, "
            "acknowledged)"
        )
        for workers in (1, 2):
            detect_run(bench, workers, busy, trades)
    finally:
        bench.cleanup()
        shutil.rmtree(bench.folder, ignore_errors=True)


def throughput(symbols: int) -> None:
    source = sources_of_tape(tape_from_frames(read_frames()))
    market = market_tape(source, symbols, ("USDT", "BTC", "FDUSD"), seed=7)
    names_list = ",".join(market.symbols)
    bench = Bench()
    names = bench.names
    busy = {names.trade_subjects.partition("binance", s) for s in market.symbols}
    print(
        f" throughput live: {symbols} symbols x {len(source[0]):,} recorded BTCUSDT trades "
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
            f"  ingest (WebSocket):  {trades / (last - first):>10,.0f} trades/s  "
            f"({trades:,} trades in the stream)"
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
        _, port = bench.serve(pg)
        time.sleep(4)  # connected, leases taken, windows warm
        heard: list[str] = []

        def bus_reader() -> None:
            heard.append(
                subprocess.run(
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
            )

        reader = threading.Thread(target=bus_reader)
        reader.start()
        sent_at = sim.simulator.sent_at or {}
        served = sse_latencies(port, sent_at, seconds)
        reader.join()
        lat = []
        for line in heard[0].splitlines():
            trade_id, received = (int(x) for x in line.split())
            sent = sent_at.get(trade_id)
            if sent is not None:
                lat.append((received - sent) / 1e6)
        load = Path("/proc/loadavg").read_text().split()[0]
        bench.stop_all()
        sim.stop()
        _report("distributed, serve (SSE)", served)
        _report("  of which to NATS signal", lat)
        print(f"  (load average {load})")
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
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--only", choices=["files", "live", "latency"], action="append", default=None
    )
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)
    print(f"distributed roles, alert profile default ({machine()})")
    only = set(args.only or ["files", "live", "latency"])
    print(f" load average {Path('/proc/loadavg').read_text().split()[0]} at the start")
    if "files" in only:
        file_throughput(args.copies)
    if "live" in only:
        throughput(args.symbols)
    if "latency" in only:
        latency(args.rate, args.seconds)


if __name__ == "__main__":
    main()
