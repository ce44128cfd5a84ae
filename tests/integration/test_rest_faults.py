"""REST replies that cannot be used, rate limits past the retry budget, a catch-up after a
reconnect that pages through the whole gap, and an exchange that cannot be reached at all:
on the simulator over real sockets, with real recorded trades."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.sync.client import connect

from spikewatch.config import load_settings
from spikewatch.core.model import Trade
from spikewatch.engine import Engine
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.ingest.backfill import fetch_range
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.rest import RestClient, RestError
from spikewatch.replay.simulator import BAD_REPLIES, Faults, Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore

from helpers import caught_up, free_port, stored_signals, wait_until
from reference import reference_spikes

pytestmark = pytest.mark.slow

Start = Callable[..., Engine]
T = TypeVar("T")


def trade_id(frame: bytes) -> int:
    return int(frame.split(b'"t":', 1)[1].split(b",", 1)[0])


def fast_rest(url: str, attempts: int = 4, max_wait: float = 30.0) -> RestClient:
    """A REST client with short retry delays (the defaults wait seconds)."""
    return RestClient(
        url,
        attempts=attempts,
        max_wait=max_wait,
        backoff=lambda: Backoff(first=0.02, cap=0.05),
    )


@contextlib.contextmanager
def simulator(
    frames: list[bytes], *, speed: float | None = None, faults: Faults | None = None
) -> Iterator[SimulatorThread]:
    """The simulator playing ``frames`` (``speed=None``: as fast as its clients read,
    paused while none is connected)."""
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=speed, faults=faults))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start an engine against ``ws_url`` and ``rest_url`` (empty: Binance's own);
    stopped at the end."""
    running: list[tuple[Engine, SQLiteSignalStore]] = []

    def run(
        ws_url: str,
        rest_url: str,
        *,
        rest: RestClient | None = None,
        backoff: Backoff | None = None,
        **flags: object,
    ) -> Engine:
        urls = {"ws_url": ws_url, "rest_url": rest_url}
        settings = load_settings(
            {**{k: v for k, v in urls.items() if v}, "db": str(tmp_path / "s.db"), **flags},
            env={},
        )
        store = SQLiteSignalStore(settings.db)
        engine = Engine(
            settings,
            store,
            backoff=backoff or Backoff(first=0.02, cap=0.05),
            rest=rest or fast_rest(settings.rest_url),
        )
        engine.start()
        running.append((engine, store))
        return engine

    yield run
    for engine, store in running:
        engine.stop()
        store.close()


def stored(engine: Engine) -> list[tuple[str, int]]:
    return sorted((s.symbol, s.trade_id) for s in stored_signals(engine))


# -- one look-up ------------------------------------------------------------------------


def played(sim: SimulatorThread, count: int) -> None:
    """Have the simulator (paused until a client reads) play ``count`` trades, read by a
    plain WebSocket client, so its REST look-ups can serve them."""
    with connect(f"{sim.ws_url}/stream?streams=btcusdt@trade") as ws:
        for _ in range(count):
            ws.recv(timeout=10)


def fetched(rest: RestClient, first_id: int, last_id: int) -> list[Trade]:
    pages: list[list[Trade]] = []

    def on_page(page: list[Trade]) -> bool:
        pages.append(page)
        return False

    asyncio.run(fetch_range(rest, BinanceSpot(), "BTCUSDT", first_id, last_id, on_page))
    return [t for page in pages for t in page]


@pytest.mark.parametrize("kind", BAD_REPLIES)
def test_an_unusable_reply_to_a_trades_look_up_is_retried(
    btc_frames: list[bytes], kind: str
) -> None:
    frames = btc_frames[:1500]
    with simulator(frames, faults=Faults(bad_replies=(kind,))) as sim:
        played(sim, len(frames))
        rest = fast_rest(sim.rest_url)
        first, last = trade_id(frames[100]), trade_id(frames[1299])
        trades = fetched(rest, first, last)
        # every trade asked for, once, in order, as the stream had them (and the one after
        # the range, which tells a hole at its end from missing trades)
        assert [t.trade_id for t in trades] == [trade_id(f) for f in frames[100:1301]]
        stats = rest.stats()
        assert stats.bad_replies == 1
        assert stats.retries == 1
        assert stats.failures == 0
        assert stats.successes == 2  # two pages of 1,000
        assert stats.calls == 3


def test_a_look_up_gives_up_when_its_retry_budget_is_spent(btc_frames: list[bytes]) -> None:
    frames = btc_frames[:200]
    # the server fails every look-up; retrying would go on for 100 attempts
    with simulator(frames, faults=Faults(rest_failures=(500,) * 100)) as sim:
        played(sim, len(frames))
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(seconds)

        rest = RestClient(
            sim.rest_url,
            attempts=100,
            max_wait=0.35,
            backoff=lambda: Backoff(first=0.1, cap=0.1, rand=lambda: 1.0),
            sleep=sleep,
        )
        with pytest.raises(RestError, match="retry budget"):
            fetched(rest, trade_id(frames[0]), trade_id(frames[-1]))
        assert sum(waits) <= 0.35
        stats = rest.stats()
        assert stats.calls == 4
        assert stats.failures == 1
        assert stats.successes == 0
        assert stats.last_error is not None
        assert "HTTP 500" in stats.last_error


# -- the engine -------------------------------------------------------------------------


def test_unusable_replies_during_recovery_cost_no_trade(
    start: Start, btc_frames: list[bytes]
) -> None:
    frames = btc_frames[:6000]
    # every kind of unusable reply, one after the other, to the first look-ups by id (but
    # an empty list: to a catch-up after a reconnect, that is a fair "nothing new yet")
    bad = tuple(kind for kind in BAD_REPLIES if kind != "empty_list")
    faults = Faults(drop_every=1000, bad_replies=bad)
    with simulator(frames, speed=60, faults=faults) as sim:
        rest = fast_rest(sim.rest_url, attempts=len(bad) + 2)
        engine = start(sim.ws_url, sim.rest_url, rest=rest)
        wait_until(caught_up(engine, trade_id(frames[-1])))
        status = engine.status()
        assert status.symbols["BTCUSDT"].gap_records == 0
        assert stored(engine) == sorted(reference_spikes(frames))
        assert status.rest.bad_replies == len(bad)


def test_a_retry_after_beyond_the_budget_records_the_gap_with_the_reason(
    start: Start, btc_frames: list[bytes]
) -> None:
    frames = btc_frames[:6000]
    # rate limited, and asked to come back in an hour
    faults = Faults(drop_every=2000, rest_failures=(429,) * 100, retry_after=3600)
    with simulator(frames, speed=60, faults=faults) as sim:
        rest = fast_rest(sim.rest_url, max_wait=30)
        engine = start(sim.ws_url, sim.rest_url, rest=rest)
        wait_until(caught_up(engine, trade_id(frames[-1])))
        gaps = engine.store.gaps(symbol="BTCUSDT")
        assert gaps
        for gap in gaps:
            assert "rate limited" in gap.reason
            assert "HTTP 429" in gap.reason
            assert "asked to wait" in gap.reason
            assert "retry budget of 30s" in gap.reason
        # asked to wait an hour, it asked no more: the warm start, then the 429s of the
        # look-ups already on their way when the first 429 came (the catch-up after the
        # reconnect and the backfill of the gap it found may ask at the same moment)
        status = engine.status()
        assert 1 <= status.rest.rate_limited <= 2
        assert sim.stats().rest_calls == 1 + status.rest.rate_limited
        assert status.rest.failures >= len(gaps)
        assert status.rest.last_error is not None


class Door:
    """A TCP forwarder on 127.0.0.1 to ``target``: shut, it cuts every connection through
    it and refuses new ones (a network outage); opened again, it forwards again."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._shut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def __enter__(self) -> Door:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *_: object) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _close(self) -> None:
        await self._set(True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._shut:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
            except OSError:
                writer.transport.abort()
                return
            self._writers |= {writer, up_writer}
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            self._writers -= {writer, up_writer}
        finally:
            self._handlers.discard(task)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(1 << 16):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()

    async def _set(self, shut: bool) -> None:
        self._shut = shut
        if shut:
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()

    def shut(self) -> None:
        self._call(self._set(True))

    def open(self) -> None:
        self._call(self._set(False))


def test_a_catch_up_after_a_reconnect_fetches_every_missed_trade_of_a_quiet_symbol(
    start: Start, btc_frames: list[bytes]
) -> None:
    frames = btc_frames[:4000]
    with simulator(frames, speed=100) as sim, Door(sim.port) as door:
        engine = start(f"ws://127.0.0.1:{door.port}", sim.rest_url)
        wait_until(lambda: engine.status().symbols["BTCUSDT"].trades >= 500)
        door.shut()  # the network goes down; the exchange trades on to the tape's end
        assert sim.wait_done(60)
        missed = len(frames) - engine.status().symbols["BTCUSDT"].trades
        assert missed > 2 * BinanceSpot().capabilities.rest_page  # several pages' worth
        door.open()
        # no live trade comes any more: the catch-up alone must fetch all the missed ones
        wait_until(caught_up(engine, trade_id(frames[-1])), timeout=30)
        status = engine.status()
        symbol = status.symbols["BTCUSDT"]
        assert status.connection.reconnects >= 1
        assert symbol.trades == len(frames)
        assert symbol.backfilled_trades == missed
        assert symbol.gap_records == 0
        assert stored(engine) == sorted(reference_spikes(frames))


@pytest.mark.parametrize("failure", ["refused", "no DNS"])
def test_an_unreachable_exchange_is_one_clear_line_and_a_clear_status(
    start: Start, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    if failure == "refused":  # nothing listens there: every connection is refused
        port = free_port()
        ws_url, rest_url = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    else:  # Binance's own hosts, which no test may look up (conftest): a DNS failure
        ws_url, rest_url = "", ""
    caplog.set_level(logging.DEBUG)
    engine = start(ws_url, rest_url)
    wait_until(lambda: engine.status().connection.failed_attempts >= 5, timeout=30)
    status = engine.status()
    assert status.running
    connection = status.connection
    assert connection.state in ("connecting", "waiting")
    assert connection.unreachable
    assert not connection.ever_connected
    assert connection.last_error is not None
    assert status.rest.successes == 0
    assert status.rest.failures == 1  # the warm start, given up at once
    assert status.rest.reachable is False
    assert status.rest.last_error is not None
    # one line says so, with the way out; no traceback, no warning per attempt
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    line = loud[0].getMessage()
    assert "cannot be reached from this machine" in line
    assert "make demo" in line
    if failure == "no DNS":
        assert line.startswith("stream.binance.com:9443 cannot be reached")
    assert not [r for r in caplog.records if r.exc_info]


def test_a_reachable_exchange_says_so_in_the_status(start: Start, btc_frames: list[bytes]) -> None:
    frames = btc_frames[:300]
    with simulator(frames) as sim:
        engine = start(sim.ws_url, sim.rest_url)
        wait_until(caught_up(engine, trade_id(frames[-1])))
        status = engine.status()
        assert status.connection.ever_connected
        assert not status.connection.unreachable
        assert status.rest.reachable is True
        assert status.rest.successes == status.rest.calls >= 1  # the warm start
        assert status.rest.failures == 0
