"""Shared by the distributed roles' tests: the real NATS and PostgreSQL servers, a
deployment of our own on them (a unique bus prefix, a fresh schema; removed afterwards),
the roles run as the real command line, and what the embedded mode finds on the same
trades."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError

from spikewatch.bus.names import BusNames
from spikewatch.config import Settings, resolve_profile
from spikewatch.core.kernel import GapPolicy
from spikewatch.core.model import Trade
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.wiring import build_kernel

NATS_URL = "nats://127.0.0.1:4222"
POSTGRES_URL = os.environ.get(
    "SPIKEWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
#: as the engine and detect: an order is complete 2 s after its first fill
ORDER_COMPLETE_US = 2_000_000


def require_servers() -> None:
    """NATS with JetStream and PostgreSQL answer; otherwise skip, or fail under CI."""
    problems = []
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=3) as sock:
            sock.settimeout(3)
            info = sock.recv(4096)
        if not info.startswith(b"INFO ") or not json.loads(info[5:]).get("jetstream"):
            problems.append(f"{NATS_URL} is not NATS with JetStream")
    except (OSError, ValueError) as exc:
        problems.append(f"NATS is not answering at {NATS_URL}: {exc}")
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        problems.append(
            f"PostgreSQL is not answering at {POSTGRES_URL}: {' '.join(str(exc).split())}"
        )
    if problems:
        if os.environ.get("CI"):
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (libpq's ``options`` URL parameter)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-c search_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class Deployment:
    """One test's bus prefix and PostgreSQL schema, and the role processes it started."""

    def __init__(self, tmp: Path, partitions: int) -> None:
        self.tag = secrets.token_hex(5)
        self.prefix = f"t{self.tag}"
        self.partitions = partitions
        self.names = BusNames(self.prefix, partitions)
        self.schema = f"sw_roles_{self.tag}"
        self.postgres = with_search_path(POSTGRES_URL, self.schema)
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def common(self) -> list[str]:
        return [
            "--nats-url",
            NATS_URL,
            "--bus-prefix",
            self.prefix,
            "--bus-partitions",
            str(self.partitions),
        ]

    def start(self, role: str, *args: str, log: str | None = None) -> subprocess.Popen[bytes]:
        """``python -m spikewatch ROLE`` on this deployment; its log in the test's folder."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
        extra = ["--postgres", self.postgres] if role == "detect" else []
        path = self.tmp / (log or f"{role}.log")
        with path.open("ab") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "spikewatch", role, *self.common(), *extra, *args],
                env=clean,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        self.procs.append(proc)
        return proc

    def stored(self) -> list[str]:
        """The signal ids in PostgreSQL (every row; repeats would show twice)."""
        with psycopg.connect(self.postgres, connect_timeout=5) as conn:
            try:
                return [row[0] for row in conn.execute("SELECT id FROM signals")]
            except psycopg.errors.UndefinedTable:
                return []

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.tmp.glob("*.log")
        )

    def query(self, coro_fn: object) -> object:
        """Run ``coro_fn(js)`` on a fresh connection."""

        async def main() -> object:
            nc = await nats.connect(NATS_URL, connect_timeout=5, allow_reconnect=False)
            try:
                return await coro_fn(nc.jetstream())  # type: ignore[operator]
            finally:
                await nc.close()

        return asyncio.run(main())

    def lease_owners(self) -> dict[int, str]:
        """Who holds each partition now."""

        async def read(js: object) -> dict[int, str]:
            kv = await js.key_value(self.names.lease_bucket)  # type: ignore[attr-defined]
            owners = {}
            for p in range(self.partitions):
                with contextlib.suppress(Exception):
                    entry = await kv.get(f"p{p}")
                    if entry.value:
                        owners[p] = entry.value.decode()
            return owners

        try:
            return self.query(read)  # type: ignore[return-value]
        except Exception:
            return {}

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

        async def drop(js: object) -> None:
            names = self.names
            for stream in (names.trade_stream, names.signal_stream):
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(stream)  # type: ignore[attr-defined]
            for bucket in (names.lease_bucket, names.snapshot_bucket):
                with contextlib.suppress(NotFoundError):
                    await js.delete_key_value(bucket)  # type: ignore[attr-defined]

        self.query(drop)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


@contextlib.contextmanager
def deployment(tmp: Path, partitions: int) -> Iterator[Deployment]:
    """A deployment of our own (see :class:`Deployment`), removed afterwards."""
    require_servers()
    made = Deployment(tmp, partitions)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {made.schema}")
    try:
        yield made
    finally:
        made.cleanup()


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM, and the exit status (a clean stop is 0)."""
    proc.terminate()
    return proc.wait(timeout)


def embedded_ids(frames: Sequence[bytes] = (), trades: Iterable[Trade] = ()) -> set[str]:
    """The signal ids the embedded mode finds on these trades: ``build_kernel`` with the
    settings ``spikewatch run`` resolves by default (the live alert profile), orders
    completed by the feed's own clock, as the engine's would be."""
    settings = resolve_profile(Settings(), live=True)
    kernel = build_kernel(settings, venues=(BinanceSpot(),), gap_policy=GapPolicy.RESET)
    ids = [s.id for s in kernel.feed_frames("binance", list(frames)).signals] if frames else []
    ids += [s.id for s in kernel.feed(list(trades)).signals]
    latest = kernel.latest_time_us()
    assert latest is not None
    ids += [s.id for s in kernel.flush(latest - ORDER_COMPLETE_US).signals]
    assert len(ids) == len(set(ids))
    return set(ids)


def last_trade_id(frames: Sequence[bytes]) -> int:
    return int(frames[-1].split(b'"t":', 1)[1].split(b",", 1)[0])


def signal_messages(dep: Deployment) -> int:
    """Messages the signal stream holds (each signal once, if dedup did its work)."""

    async def read(js: object) -> int:
        info = await js.stream_info(dep.names.signal_stream)  # type: ignore[attr-defined]
        return int(info.state.messages)

    return dep.query(read)  # type: ignore[return-value]


def stream_trade_ids(dep: Deployment) -> dict[str, list[int]]:
    """Every trade id the trade stream holds, per symbol, in stream order."""
    from spikewatch.bus.codec import decode_batch

    async def read(js: object) -> dict[str, list[int]]:
        sub = await js.pull_subscribe(  # type: ignore[attr-defined]
            dep.names.trade_subjects.wildcard, stream=dep.names.trade_stream
        )
        out: dict[str, list[int]] = {}
        while True:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except Exception:
                break
            for msg in msgs:
                batch = decode_batch(msg.data)
                out.setdefault(batch.symbol, []).extend(batch.trade_ids)
                await msg.ack()
        await sub.unsubscribe()
        return out

    return dep.query(read)  # type: ignore[return-value]


def start_serve(
    dep: Deployment, *args: str, log: str = "serve.log"
) -> tuple[subprocess.Popen[bytes], int]:
    """``spikewatch serve`` on this deployment and a free port, once ``/readyz`` says
    ready: the process (stopped with the deployment) and its port."""
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEWATCH_")}
    command = [sys.executable, "-m", "spikewatch", "serve", "--postgres", dep.postgres]
    command += ["--nats-url", NATS_URL, "--bus-prefix", dep.prefix, "--port", str(port)]
    with (dep.tmp / log).open("ab") as sink:
        proc = subprocess.Popen(
            [*command, "--web-threads", "32", *args],
            env=clean,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    dep.procs.append(proc)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {dep.logs()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                if json.load(r).get("status") == "ready":
                    return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"serve did not get ready: {dep.logs()}")
        time.sleep(0.1)
