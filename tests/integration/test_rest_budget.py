"""The REST weight budget against a real local HTTP server that counts request weight per
rolling minute as Binance does and answers 429 past its limit: two thousand symbols' warm
starts, another process's weight on the same IP, gaps that overtake a queue of warm
starts, deadlines, and a Retry-After that holds every look-up back.

The limit is scaled down (600 a minute) and the minutes are virtual: the budget's clock
and the server's are one :class:`VirtualTime`, which moves on to the next sleeper only
while no request is in flight, so a request arrives at the virtual time it was sent and
an hour and a half of look-ups takes seconds."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

from spikewatch.core.model import Side, Trade
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.ingest.backfill import fetch_range, fetch_recent
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.budget import WARM_START, Priority
from spikewatch.ingest.rest import Dropped, RestClient

pytestmark = pytest.mark.slow

T = TypeVar("T")

LIMIT = 600  # request weight per minute, a tenth of spot's
WEIGHTS = {"/api/v3/trades": 25, "/api/v3/historicalTrades": 25, "/api/v3/exchangeInfo": 20}
SPOT = BinanceSpot()


class VirtualTime:
    """A clock for the budget and the server: it jumps to the earliest sleeper whenever
    nothing else can run and no request is in flight."""

    def __init__(self) -> None:
        self._now = 0.0
        self._lock = threading.Lock()  # read by the server's threads
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self() + max(0.0, seconds), next(self._seq), future))
        await future

    async def run(self, busy: Callable[[], bool]) -> None:
        """Move time on, forever (cancel it): ``busy`` says a request is in flight."""
        while True:
            for _ in range(50):  # let everything that can run, run
                await asyncio.sleep(0)
            if busy():
                await asyncio.sleep(0.0005)  # a real request: wait for it in real time
                continue
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # a cancelled sleep
            if not self._sleepers:
                await asyncio.sleep(0.0005)
                continue
            at, _, future = heapq.heappop(self._sleepers)
            with self._lock:
                self._now = max(self._now, at)
            future.set_result(None)


def trade(symbol: str, trade_id: int) -> Trade:
    return Trade("binance", symbol, trade_id, 10**8, 10**6, 1_700_000_000_000_000, Side.BUY)


@dataclass
class Arrival:
    at: float
    path: str
    symbol: str
    weight: int
    refused: bool


@dataclass
class Exchange:
    """Binance's REST weight accounting, on ``clock``: a rolling minute per IP, 429 with
    ``Retry-After`` past ``limit``, ``X-MBX-USED-WEIGHT-1M`` on every reply. ``others``:
    weight another process on the IP sends every virtual second."""

    clock: VirtualTime
    limit: int = LIMIT
    others: int = 0
    refuse_first: float = 0.0  # answer the first request 429 with this Retry-After
    arrivals: list[Arrival] = field(default_factory=list)
    max_used: int = 0
    _window: deque[tuple[float, int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def used(self, now: float) -> int:
        while self._window and self._window[0][0] + 60.0 <= now:
            self._window.popleft()
        ours = sum(weight for _, weight in self._window)
        # the other process's sends at whole seconds 1, 2, ... inside (now - 60, now]
        seconds = int(now) - max(int(now - 60.0), 0)
        return ours + self.others * seconds

    def answer(self, target: str) -> tuple[int, bytes, dict[str, str]]:
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query))
        weight = WEIGHTS.get(url.path, 1)
        with self._lock:
            now = self.clock()
            used = self.used(now)
            refused = used + weight > self.limit or (self.refuse_first > 0 and not self.arrivals)
            self.arrivals.append(Arrival(now, url.path, query.get("symbol", ""), weight, refused))
            if refused:
                retry = self.refuse_first or 60.0
                body = json.dumps({"code": -1003, "msg": "Too much request weight used."})
                return 429, body.encode(), {"Retry-After": str(int(retry))}
            self._window.append((now, weight))
            used += weight
            self.max_used = max(self.max_used, used)
        headers = {"X-MBX-USED-WEIGHT-1M": str(used), "Content-Type": "application/json"}
        symbol = query.get("symbol", "BTCUSDT")
        first = int(query.get("fromId", "1000"))
        codec = SPOT.simulator_codec()
        rows = [codec.rest_trade(trade(symbol, first + i)) for i in range(3)]
        return 200, json.dumps(rows).encode(), headers

    @property
    def refused(self) -> int:
        return sum(a.refused for a in self.arrivals)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a minute's requests may connect at once


@contextlib.contextmanager
def serving(exchange: Exchange) -> Iterator[str]:
    """``exchange`` on a real HTTP server on 127.0.0.1; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, headers = exchange.answer(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def client(url: str, clock: VirtualTime) -> RestClient:
    return RestClient(
        url,
        weight_limit=LIMIT,
        backoff=lambda: Backoff(first=0.5, cap=8.0),
        clock=clock,
        sleep=clock.sleep,
    )


def run(clock: VirtualTime, rest: RestClient, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` with virtual time moving on whenever nothing else can."""

    async def main() -> T:
        mover = asyncio.ensure_future(clock.run(lambda: rest.budget.core.in_flight > 0))
        try:
            return await work
        finally:
            mover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mover

    return asyncio.run(main())


def symbols(count: int) -> list[str]:
    return [f"S{i:04d}USDT" for i in range(count)]


# -- the tests --------------------------------------------------------------------------


def test_a_warm_start_of_two_thousand_symbols_meets_no_429_and_fetches_every_one() -> None:
    clock = VirtualTime()
    exchange = Exchange(clock)
    names = symbols(2000)
    with serving(exchange) as url:
        rest = client(url, clock)

        async def warm_all() -> list[list[Trade] | BaseException]:
            return await asyncio.gather(
                *(fetch_recent(rest, SPOT, name, 3) for name in names), return_exceptions=True
            )

        results = run(clock, rest, warm_all())
    # every symbol's trades came, none was refused, and no minute came near the limit
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert [r[0].symbol for r in results if not isinstance(r, BaseException)] == names
    assert exchange.refused == 0
    assert exchange.max_used <= LIMIT * 0.9
    assert len(exchange.arrivals) == 2000
    stats = rest.stats()
    assert stats.rate_limited == 0
    assert stats.successes == 2000
    assert stats.weight_sent == 2000 * 25
    assert stats.queued == stats.in_flight == stats.dropped == 0
    assert stats.waits > 1900  # all but the first minute's waited their turn
    # it took as many minutes as the limit asks: 21 look-ups of 25 in 540 a minute
    assert clock() >= 60.0 * (2000 // 21)


def test_weight_another_process_uses_on_the_ip_is_left_to_it() -> None:
    clock = VirtualTime()
    exchange = Exchange(clock, others=5)  # 300 a minute, every second
    names = symbols(300)
    with serving(exchange) as url:
        rest = client(url, clock)

        async def warm_all() -> list[list[Trade]]:
            return await asyncio.gather(*(fetch_recent(rest, SPOT, name, 3) for name in names))

        results = run(clock, rest, warm_all())
        stats = rest.stats()
    assert len(results) == 300
    assert exchange.refused == 0
    assert exchange.max_used <= LIMIT * 0.9  # ours and theirs
    assert stats.rate_limited == 0
    # ours alone would have taken 15 minutes; with theirs, the budget left room
    assert clock() > 60.0 * (300 // 21) * 1.5


def test_gaps_overtake_queued_warm_starts_and_one_past_its_deadline_is_dropped() -> None:
    clock = VirtualTime()
    exchange = Exchange(clock)
    names = symbols(200)
    with serving(exchange) as url:
        rest = client(url, clock)

        async def gap(name: str, deadline: float | None) -> list[Trade]:
            pages: list[Trade] = []

            def on_page(page: list[Trade]) -> bool:
                pages.extend(page)
                return True

            await fetch_range(
                rest, SPOT, name, 5000, 5001, on_page, priority=Priority.gap(0.1), deadline=deadline
            )
            return pages

        async def scenario() -> tuple[list[list[Trade]], list[list[Trade]], BaseException]:
            warm = [
                asyncio.ensure_future(fetch_recent(rest, SPOT, name, 3, priority=WARM_START))
                for name in names
            ]
            await clock.sleep(1.0)  # the first minute's weight is spent by now
            gaps = [asyncio.ensure_future(gap(f"GAP{i}USDT", None)) for i in range(5)]
            hurried = asyncio.ensure_future(gap("LATEUSDT", rest.deadline_in(10.0)))
            with pytest.raises(Dropped) as dropped:
                await hurried
            return await asyncio.gather(*gaps), await asyncio.gather(*warm), dropped.value

        gaps, warm, dropped = run(clock, rest, scenario())
    assert all(len(pages) == 3 for pages in gaps)
    assert len(warm) == 200
    assert exchange.refused == 0
    gap_times = [a.at for a in exchange.arrivals if a.path == "/api/v3/historicalTrades"]
    warm_times = [a.at for a in exchange.arrivals if a.path == "/api/v3/trades"]
    # the gaps went as soon as the window had room, before warm starts asked a minute
    # earlier, which went later
    assert gap_times == [60.0] * 5
    assert max(warm_times) >= 300.0
    # the one that could not be sent within 10s was dropped at its deadline, never sent
    assert "past its deadline" in str(dropped)
    assert "LATEUSDT" in str(dropped)
    assert not [a for a in exchange.arrivals if a.symbol == "LATEUSDT"]
    assert rest.stats().dropped == 1


def test_a_retry_after_holds_every_look_up_back_until_it_has_passed() -> None:
    clock = VirtualTime()
    exchange = Exchange(clock, refuse_first=30.0)
    names = symbols(50)
    with serving(exchange) as url:
        rest = client(url, clock)

        async def warm_all() -> list[list[Trade]]:
            return await asyncio.gather(*(fetch_recent(rest, SPOT, name, 3) for name in names))

        results = run(clock, rest, warm_all())
    assert len(results) == 50
    first, *others = exchange.arrivals
    assert first.refused
    assert first.at == 0.0
    # nothing was sent while the exchange asked for quiet, and nothing was refused after
    assert min(a.at for a in others) >= 30.0
    assert not [a for a in others if a.refused]
    assert rest.stats().rate_limited == 1
