"""Many connections to one exchange: symbols spread over as many as they need.

Each connection is a :class:`~spikewatch.ingest.client.StreamClient` of its own (it
reconnects, backs off and rotates without a gap by itself) carrying at most
``per_connection`` streams. Its URL names its streams, so a connection that reconnects
subscribes to exactly its symbols again; a symbol listed while running is subscribed on a
connection with room (a paced ``SUBSCRIBE``, and in that connection's URL from then on),
or on a new connection; a symbol let go is unsubscribed the same way. The other
connections are never touched.

Connection attempts of all connections go through one :class:`AttemptBudget`: the
exchange limits them per IP (Binance spot: 300 per 5 minutes), and when many connections
drop at once (a network blip) they come back spread out, not as a storm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

import msgspec

from spikewatch.exchanges.base import Exchange
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.client import ClientStatus, FrameHandler, StreamClient

log = logging.getLogger(__name__)


class AttemptBudget:
    """At most ``limit`` connection attempts in any ``per_s`` seconds, and at least
    ``spacing`` seconds between two; ``acquire()`` waits for a turn (FIFO)."""

    def __init__(
        self,
        limit: int = 300,
        per_s: float = 300.0,
        spacing: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or per_s <= 0 or spacing < 0:
            raise ValueError("need limit >= 1, per_s > 0 and spacing >= 0")
        self.limit = limit
        self.per_s = per_s
        self.spacing = spacing
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock: asyncio.Lock | None = None
        self.waited = 0  # attempts that had to wait for their turn

    def delay(self) -> float:
        """Seconds until an attempt may be made (0: now)."""
        now = self._clock()
        # (aged out when ``time + per_s <= now``: the very sum the wait below is made of,
        # so rounding cannot let an attempt through that the window still holds)
        while self._times and self._times[0] + self.per_s <= now:
            self._times.popleft()
        wait = 0.0
        if self._times:
            wait = max(wait, self._times[-1] + self.spacing - now)
        if len(self._times) >= self.limit:
            wait = max(wait, self._times[0] + self.per_s - now)
        return max(wait, 0.0)

    def take(self) -> None:
        """Count an attempt made now."""
        self._times.append(self._clock())

    async def acquire(self) -> None:
        """Wait for a turn, then count the attempt."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            wait = self.delay()
            if wait > 0:
                self.waited += 1
                await asyncio.sleep(wait)
            self.take()


class ConnectionStatus(msgspec.Struct, frozen=True):
    """One connection of the pool: its number, its symbols and its client's status."""

    id: int
    symbols: int
    client: ClientStatus


class ConnectionPool:
    """The symbols of one exchange over as many connections as needed (see the module
    docstring). ``on_connect(symbols, reconnect)`` is called when a connection opens, with
    the symbols it carries (after a lost connection: catch up on those). Everything runs
    on the event loop that calls :meth:`run`."""

    def __init__(
        self,
        exchange: Exchange,
        base_url: str,
        handler: FrameHandler,
        *,
        per_connection: int = 200,
        on_connect: Callable[[Sequence[str], bool], None] | None = None,
        attempts: AttemptBudget | None = None,
        backoff: Callable[[], Backoff] = Backoff,
        rotate_after: float = 23.5 * 3600,
        stable_after: float = 10.0,
    ) -> None:
        caps = exchange.capabilities
        if not 1 <= per_connection <= caps.max_streams_per_connection:
            raise ValueError(
                f"per_connection must be between 1 and {caps.max_streams_per_connection}"
            )
        self.exchange = exchange
        self.base_url = base_url
        self.per_connection = per_connection
        self._handler = handler
        self._on_connect = on_connect
        self.attempts = attempts or AttemptBudget()
        self._backoff = backoff
        self._rotate_after = min(rotate_after, caps.max_connection_age_s)
        self._stable_after = stable_after
        # pongs count too: leave room for them under the venue's message rate
        self._rate = max(1.0, caps.max_messages_per_second - 2.0)
        self._symbols: list[list[str]] = []  # per connection, in order
        self._clients: list[StreamClient] = []
        self._tasks: list[asyncio.Task[None] | None] = []
        self._retired: list[asyncio.Task[None]] = []  # of connections closed while running
        self._where: dict[str, int] = {}  # symbol -> connection
        self._request_id = 0
        self._running = False
        self._stopped = asyncio.Event()

    # -- planning (no I/O) ---------------------------------------------------------------

    def symbols(self) -> list[str]:
        """Every symbol carried, connection by connection."""
        return [s for group in self._symbols for s in group]

    def connection_of(self, symbol: str) -> int | None:
        """The connection carrying ``symbol`` (None: not carried)."""
        return self._where.get(symbol)

    def _url(self, index: int) -> str:
        return self.exchange.stream_url(self.base_url, self._symbols[index])

    def _new_client(self, index: int) -> StreamClient:
        exchange = self.exchange
        group = self._symbols[index]

        def connected(reconnect: bool) -> None:
            if self._on_connect is not None:
                self._on_connect(tuple(self._symbols[index]), reconnect)

        return StreamClient(
            self._url(index),
            self._handler,
            rotate_after=self._rotate_after,
            backoff=self._backoff(),
            stable_after=self._stable_after,
            on_connect=connected,
            greeting=exchange.greeting(group),
            heartbeat=exchange.heartbeat(),
            heartbeat_interval=exchange.capabilities.heartbeat_interval_s,
            before_attempt=self.attempts.acquire,
            messages_per_second=self._rate,
        )

    def add(self, symbols: Sequence[str]) -> list[str]:
        """Carry ``symbols`` too (those carried already are left as they are): on
        connections with room first, then on new ones. Returns the ones added."""
        new = [s for s in dict.fromkeys(symbols) if s not in self._where]
        pending = list(new)
        for index, group in enumerate(self._symbols):
            room = self.per_connection - len(group)
            if room <= 0 or not pending:
                continue
            take, pending = pending[:room], pending[room:]
            if not group:  # a connection emptied by removals: a fresh client takes it
                group.extend(take)
                self._place(index, take)
                self._clients[index] = self._new_client(index)
                self._start(index)
                continue
            group.extend(take)
            self._place(index, take)
            client = self._clients[index]
            client.set_url(self._url(index))
            if self._running:
                self._request_id += 1
                client.send(self.exchange.subscribe(take, self._request_id))
        while pending:
            take, pending = pending[: self.per_connection], pending[self.per_connection :]
            index = len(self._symbols)
            self._symbols.append(list(take))
            self._clients.append(self._new_client(index))
            self._tasks.append(None)
            self._place(index, take)  # last: another thread may look its symbols up now
            self._start(index)
        return new

    def remove(self, symbols: Sequence[str]) -> list[str]:
        """Stop carrying ``symbols``; a connection left with none is closed. Returns the
        ones removed."""
        gone = [s for s in dict.fromkeys(symbols) if s in self._where]
        by_conn: dict[int, list[str]] = {}
        for symbol in gone:
            by_conn.setdefault(self._where.pop(symbol), []).append(symbol)
        for index, leaving in by_conn.items():
            group = self._symbols[index]
            group[:] = [s for s in group if s not in set(leaving)]
            client = self._clients[index]
            if not group:
                client.stop()
                task, self._tasks[index] = self._tasks[index], None
                if task is not None:
                    self._retired.append(task)
                continue
            client.set_url(self._url(index))
            if self._running:
                self._request_id += 1
                client.send(self.exchange.unsubscribe(leaving, self._request_id))
        return gone

    def _place(self, index: int, symbols: Sequence[str]) -> None:
        for symbol in symbols:
            self._where[symbol] = index

    # -- running -------------------------------------------------------------------------

    def _start(self, index: int) -> None:
        if not self._running:
            return  # run() starts every connection
        task = self._tasks[index]
        if task is not None and not task.done():
            return
        self._tasks[index] = asyncio.get_running_loop().create_task(self._clients[index].run())

    async def run(self) -> None:
        """Run every connection until :meth:`stop`; connections added meanwhile start as
        they are added."""
        self._running = True
        self._stopped.clear()
        for index, group in enumerate(self._symbols):
            if group:
                self._start(index)
        try:
            await self._stopped.wait()
        finally:
            self._running = False
            for client in self._clients:
                client.stop()
            tasks = [t for t in self._tasks if t is not None] + self._retired
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Ask :meth:`run` to close every connection and return (on the loop's thread)."""
        for client in self._clients:
            client.stop()
        self._stopped.set()

    def rotate(self, symbol: str | None = None) -> None:
        """A fresh connection, without a gap, for the one carrying ``symbol`` (None: for
        every connection)."""
        if symbol is None:
            for index, client in enumerate(self._clients):
                if self._symbols[index]:
                    client.request_rotation()
            return
        at = self._where.get(symbol)
        if at is not None:
            self._clients[at].request_rotation()

    def state_of(self, symbol: str) -> str:
        """The state of the connection carrying ``symbol`` ("stopped": none carries it)."""
        index = self._where.get(symbol)
        return self._clients[index].status.state if index is not None else "stopped"

    def client_status(self, symbol: str) -> ClientStatus | None:
        """The status of the connection carrying ``symbol``."""
        index = self._where.get(symbol)
        return self._clients[index].status if index is not None else None

    def summary(self) -> ClientStatus:
        """The connections as one: "connected" when all are, else the state of the
        worst; counters summed; the latest error."""
        # zip: read from another thread while a connection is added, its symbols may be
        # in place before its client (an index read raised IndexError)
        live = [c.status for c, group in zip(self._clients, self._symbols, strict=False) if group]
        if not live:
            return ClientStatus(url=self.base_url)
        order = ("stopped", "waiting", "connecting", "starting", "connected")
        worst = min(live, key=lambda s: order.index(s.state))
        errors = [s.last_error for s in live if s.last_error]
        since = [s.connected_since for s in live if s.connected_since]
        return ClientStatus(
            url=live[0].url if len(live) == 1 else self.base_url,
            state=worst.state,
            connections=sum(s.connections for s in live),
            reconnects=sum(s.reconnects for s in live),
            rotations=sum(s.rotations for s in live),
            failed_attempts=sum(s.failed_attempts for s in live),
            last_error=errors[-1] if errors else None,
            connected_since=max(since) if len(since) == len(live) else None,
            next_attempt_in=worst.next_attempt_in,
            oversized_frames=sum(s.oversized_frames for s in live),
            ever_connected=any(s.ever_connected for s in live),
            unreachable=all(s.unreachable for s in live),
        )

    def statuses(self) -> list[ConnectionStatus]:
        """Every connection that carries symbols, with its client's status."""
        return [
            ConnectionStatus(index, len(group), self._clients[index].status)
            for index, group in enumerate(self._symbols)
            if group
        ]
