"""The live hub: fans events out to streaming clients, bounded per client and in total.

The engine thread publishes; it never waits for a client and does no per-client work.
Two kinds of subscriber:

- **Pushed clients** (``/api/stream``): one *push thread* owns them all. It takes every
  event published since its last round, encodes each once, joins what each client wants
  into one write, and hands that to the client's :class:`Outlet` (the web server's
  connection). A client with more than ``max_unsent`` bytes not yet taken, or that has
  taken nothing for ``stall_s`` while bytes wait, is disconnected and counted: its memory
  is freed at once (it held at most ``max_unsent`` and one round's events), and it
  resumes with ``Last-Event-ID`` from the store. The push thread's
  share of the interpreter is bounded (``PUSH_DUTY``): with many clients, events wait a
  little and go out together, rather than the fan-out crowding ingest out.
- **Queue subscribers** (in-process readers, tests): a bounded queue of events each; one
  whose queue is full is dropped with a :data:`DROPPED` marker.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Protocol

import msgspec

from spikewatch.core.model import Signal

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode

#: Bytes queued for a pushed client and not yet taken by it (beyond what the operating
#: system's socket buffers hold), at most: a client further behind is disconnected before
#: the next write. About a minute and a half of status events for 10 symbols.
MAX_UNSENT = 256 * 1024
#: Seconds a pushed client may leave bytes unsent without taking any: then it is
#: disconnected even under ``MAX_UNSENT`` (a stalled reader would hold its thread).
STALL_S = 30.0
#: The push thread's share of wall time, at most: after a round that took ``t``, the
#: next starts ``t * (1 / PUSH_DUTY - 1)`` later at the earliest. With few clients a round
#: takes microseconds and events go out at once; with many, they go out in batches.
#: Measured (bench/bench_push.py, docs/BENCHMARKS.md): with 1,000 clients at 10,000
#: trades/s ingest keeps up at 0.5, and the push p50 is half what 0.25 gives.
PUSH_DUTY = 0.5
#: Events waiting for the push thread, at most; past that it has fallen hopelessly
#: behind and every pushed client is disconnected (counted) to resume from the store.
MAX_PENDING = 100_000
#: Seconds the push thread waits for an event before it checks keep-alives and stalls.
TICK_S = 1.0
#: The keep-alive comment sent on an idle stream.
KEEPALIVE = b": keep-alive\n\n"


class Event(msgspec.Struct, frozen=True):
    """One server-sent event, already encoded."""

    kind: str  # the SSE "event:" field
    data: bytes  # JSON
    id: int | None = None  # the SSE "id:" field (signal sequence number)
    # for streams of one symbol or exchange: None goes to every client
    symbol: str | None = None
    exchange: str | None = None

    @classmethod
    def signal(cls, signal: Signal, seq: int, payload: bytes | None = None) -> Event:
        """The ``signal`` event of a signal with delivery number ``seq`` (``payload``: its
        JSON, when already encoded)."""
        return cls("signal", payload or _encode(signal), seq, signal.symbol, signal.exchange)

    def wanted(self, symbol: str | None, exchange: str | None) -> bool:
        """Whether a stream of ``symbol`` on ``exchange`` (None: any) gets this event."""
        return (symbol is None or self.symbol is None or self.symbol == symbol) and (
            exchange is None or self.exchange is None or self.exchange == exchange
        )

    def encode(self) -> bytes:
        """The event in text/event-stream framing."""
        head = f"event: {self.kind}\n" + (f"id: {self.id}\n" if self.id is not None else "")
        return head.encode() + b"data: " + self.data + b"\n\n"


#: Put in a client's queue when it is dropped, so its reader wakes up and ends.
DROPPED = Event("dropped", b"{}")


class HubStats(msgspec.Struct, frozen=True):
    """Counters of the hub."""

    clients: int
    connected_total: int
    dropped_slow: int
    events_published: int


class Outlet(Protocol):
    """Where a pushed client's bytes go: its connection, as the web server holds it.

    The hub's push thread calls everything but :meth:`close` only from that thread."""

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the client without blocking; False if it is gone."""
        ...

    def unsent(self) -> int:
        """Bytes queued for the client and not yet handed to the operating system."""
        ...

    def stalled(self) -> float:
        """Seconds since the client last took bytes while some wait (0: none wait)."""
        ...

    def cut(self) -> None:
        """Disconnect now, throwing away what is unsent (the client is too slow)."""
        ...

    def close(self) -> None:
        """The stream is over (after :meth:`cut`, or gracefully): release its reader."""
        ...


class Client:
    """A pushed client: its outlet, its filters and where it stands."""

    __slots__ = (
        "after",
        "ended",
        "exchange",
        "held",
        "held_bytes",
        "keepalive",
        "last_write",
        "live",
        "outlet",
        "symbol",
    )

    def __init__(
        self, outlet: Outlet, symbol: str | None, exchange: str | None, keepalive: float
    ) -> None:
        self.outlet = outlet
        self.symbol = symbol
        self.exchange = exchange
        self.keepalive = keepalive
        self.after = 0  # signal ids up to this one were sent from the store
        self.live = False  # False while its stream still replays from the store
        self.held: list[tuple[Event, bytes]] = []  # events meanwhile
        self.held_bytes = 0
        self.last_write = time.monotonic()
        self.ended = False


class Subscription:
    """One queue subscriber's queue."""

    __slots__ = ("closed", "dropped", "queue")

    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=size)
        self.dropped = False
        self.closed = False

    def get(self, timeout: float) -> Event | None:
        """The next event, or None after ``timeout`` seconds."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[Event]:
        """Every event queued now, without waiting."""
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.queue.get_nowait())
        return out


class Hub:
    """One publisher, many subscribers; every buffer bounded, slow clients dropped."""

    def __init__(
        self,
        queue_size: int = 1024,
        max_clients: int = 1000,
        max_unsent: int = MAX_UNSENT,
        stall_s: float = STALL_S,
    ) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.max_unsent = max_unsent
        self.stall_s = stall_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the push thread waits on it
        self._subs: set[Subscription] = set()
        self._clients: set[Client] = set()
        self._pending: list[Event] = []  # published, not yet pushed
        self._closing: list[Client] = []  # to end (the hub was closed)
        self._kicked = False  # a client went live: push its held events
        self._overflow = False  # events were published with MAX_PENDING waiting
        self._pusher: threading.Thread | None = None  # running while there are clients
        self._tick_s = TICK_S  # the push thread's wait for events, at most
        self._connected = 0
        self._dropped = 0
        self._published = 0
        self._open = 0  # subscribers not yet gone (their streams still running)

    # -- subscribers ---------------------------------------------------------------------

    def subscribe(self) -> Subscription | None:
        """A new queue subscriber, or None when ``max_clients`` are connected."""
        sub = Subscription(self.queue_size)
        with self._lock:
            if len(self._subs) + len(self._clients) >= self.max_clients:
                return None
            self._subs.add(sub)
            self._connected += 1
            self._open += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a queue subscriber (idempotent): its stream has ended."""
        with self._lock:
            self._subs.discard(sub)
            if not sub.closed:
                sub.closed = True
                self._open -= 1

    def attach(
        self,
        outlet: Outlet,
        symbol: str | None = None,
        exchange: str | None = None,
        keepalive: float = 15.0,
    ) -> Client | None:
        """A new pushed client, or None when ``max_clients`` are connected. It gets
        nothing until :meth:`go_live` (events meanwhile are held for it)."""
        client = Client(outlet, symbol, exchange, keepalive)
        with self._lock:
            if len(self._subs) + len(self._clients) >= self.max_clients:
                return None
            self._clients.add(client)
            self._connected += 1
            self._open += 1
            self._tick_s = min(self._tick_s, keepalive)
            if self._pusher is None:
                self._pusher = threading.Thread(
                    target=self._push_loop, name="spikewatch-push", daemon=True
                )
                self._pusher.start()
        return client

    def go_live(self, client: Client, after: int) -> None:
        """``client``'s replay from the store is written, up to signal id ``after``: from
        now on the push thread writes to it (first what was held for it)."""
        client.after = after
        client.live = True
        with self._lock:
            self._kicked = True
            self._wake.notify()

    def detach(self, client: Client) -> None:
        """Forget a pushed client (idempotent): its response is over."""
        with self._lock:
            self._clients.discard(client)
            if not client.ended:
                client.ended = True
                self._open -= 1
            else:
                return
        client.outlet.close()

    def wait_closed(self, timeout: float) -> bool:
        """After :meth:`close`: wait until every stream has ended (False on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._open == 0:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # -- publishing ----------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every subscriber; never waits."""
        with self._lock:
            subs = tuple(self._subs)
            self._published += 1
            if self._clients:
                if len(self._pending) < MAX_PENDING:
                    self._pending.append(event)
                else:
                    self._overflow = True
                self._wake.notify()
        if not subs:
            return
        slow = []
        for sub in subs:
            try:
                sub.queue.put_nowait(event)
            except queue.Full:
                slow.append(sub)
        if slow:
            with self._lock:
                for sub in slow:
                    if sub in self._subs:
                        self._subs.discard(sub)
                        self._dropped += 1
            for sub in slow:
                sub.dropped = True
                _force(sub.queue, DROPPED)

    def close(self) -> None:
        """End every client's stream now (at shutdown); later clients are refused.
        Quick and lock-light: safe to call from a signal handler."""
        with self._lock:
            subs, self._subs = tuple(self._subs), set()
            self._closing.extend(self._clients)  # the push thread ends them
            self._clients = set()
            self._pending = []
            self._overflow = False
            self.max_clients = 0
            self._wake.notify()
        for sub in subs:
            _force(sub.queue, DROPPED)

    def stats(self) -> HubStats:
        """A copy of the counters."""
        with self._lock:
            return HubStats(
                len(self._subs) + len(self._clients),
                self._connected,
                self._dropped,
                self._published,
            )

    # -- the push thread -----------------------------------------------------------------

    def _push_loop(self) -> None:
        while True:
            with self._wake:
                while not (self._pending or self._closing or self._kicked):
                    if not self._clients:
                        self._pusher = None  # the next attach starts another
                        return
                    if not self._wake.wait(self._tick_s):
                        break  # time for keep-alives and stall checks
                batch, self._pending = self._pending, []
                closing, self._closing = self._closing, []
                overflow, self._overflow = self._overflow, False
                self._kicked = False
                clients = tuple(self._clients)
            started = time.perf_counter()
            for client in closing:
                self._end(client)
            if overflow:  # fell hopelessly behind: what was not pushed is lost to all
                for client in clients:
                    self._drop(client)
                log.warning("live push fell %d events behind: every client dropped", MAX_PENDING)
            else:
                self._round(batch, clients)
            took = time.perf_counter() - started
            if took > 0.001:  # bound the push thread's share (see PUSH_DUTY)
                time.sleep(took * (1 / PUSH_DUTY - 1))

    def _round(self, batch: Sequence[Event], clients: Sequence[Client]) -> None:
        """One round: every client gets what was published since the last, in one write."""
        wires = [(event, event.encode()) for event in batch]  # each encoded once
        first_id = min((e.id for e in batch if e.id is not None), default=None)
        shared: dict[tuple[str | None, str | None], bytes] = {}  # by filter
        now = time.monotonic()
        for client in clients:
            if client.ended:
                continue
            try:
                self._serve(client, wires, first_id, shared, now)
            except Exception:
                log.exception("live push to a client failed: it is dropped")
                self._drop(client)

    def _serve(
        self,
        client: Client,
        wires: list[tuple[Event, bytes]],
        first_id: int | None,
        shared: dict[tuple[str | None, str | None], bytes],
        now: float,
    ) -> None:
        outlet = client.outlet
        if not client.live:  # still replaying from the store: hold what comes
            if wires:
                client.held.extend(wires)
                client.held_bytes += sum(len(wire) for _, wire in wires)
            if client.held_bytes > self.max_unsent or outlet.stalled() > self.stall_s:
                self._drop(client)
            return
        if client.held:
            wires, client.held, client.held_bytes = client.held + wires, [], 0
            data = _select(wires, client)
        elif first_id is None or first_id > client.after:  # nothing to skip: shared
            key = (client.symbol, client.exchange)
            cached = shared.get(key)
            data = cached if cached is not None else shared.setdefault(key, _select(wires, client))
        else:
            data = _select(wires, client)
        if not data:
            if now - client.last_write < client.keepalive:
                if outlet.stalled() > self.stall_s:
                    self._drop(client)
                return
            data = KEEPALIVE
        if outlet.unsent() > self.max_unsent or outlet.stalled() > self.stall_s:
            self._drop(client)  # it is not taking what it was sent
        elif outlet.write(data):
            client.last_write = now
        else:
            self._end(client)  # it went away

    def _drop(self, client: Client) -> None:
        """Disconnect a client that fell too far behind (counted)."""
        client.outlet.cut()
        with self._lock:
            if client in self._clients:
                self._dropped += 1
        self._end(client)

    def _end(self, client: Client) -> None:
        """Stop pushing to ``client`` and release its reader."""
        with self._lock:
            self._clients.discard(client)
        client.held, client.held_bytes = [], 0
        client.outlet.close()


def _select(wires: Sequence[tuple[Event, bytes]], client: Client) -> bytes:
    """What of ``wires`` goes to ``client``, as one write."""
    after, symbol, exchange = client.after, client.symbol, client.exchange
    return b"".join(
        wire
        for event, wire in wires
        if (event.id is None or event.id > after) and event.wanted(symbol, exchange)
    )


def _force(q: queue.Queue[Event], event: Event) -> None:
    """Empty a (full) queue, then put ``event`` in it: the client is gone anyway, and what
    it was sent must end without a hole (it resumes after the last id it got, from the
    store), so nothing queued may go out after an event was thrown away."""
    while True:
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        try:
            q.put_nowait(event)
            return
        except queue.Full:  # filled again meanwhile: empty it again
            continue
