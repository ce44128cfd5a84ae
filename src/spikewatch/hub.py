"""The live hub: fans events out to streaming clients, each through a bounded queue.

The engine thread publishes; each client's request thread reads its own queue. A client
whose queue is full (it reads too slowly) is dropped and counted: it never slows ingest
or the other clients. Dropped clients reconnect with ``Last-Event-ID`` and get what they
missed from the store.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import msgspec

from spikewatch.core.model import Signal

_encode = msgspec.json.Encoder().encode


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


class Subscription:
    """One client's queue."""

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
    """Many subscribers, one publisher; bounded per-client queues, slow clients dropped."""

    def __init__(self, queue_size: int = 1024, max_clients: int = 1000) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._connected = 0
        self._dropped = 0
        self._published = 0
        self._open = 0  # subscriptions not yet unsubscribed (their streams still running)

    def subscribe(self) -> Subscription | None:
        """A new client's subscription, or None when ``max_clients`` are connected."""
        sub = Subscription(self.queue_size)
        with self._lock:
            if len(self._subs) >= self.max_clients:
                return None
            self._subs.add(sub)
            self._connected += 1
            self._open += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a client (idempotent): its stream has ended."""
        with self._lock:
            self._subs.discard(sub)
            if not sub.closed:
                sub.closed = True
                self._open -= 1

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

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every client; drop those whose queue is full."""
        with self._lock:
            subs = tuple(self._subs)
            self._published += 1
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
        """End every client's stream now (at shutdown); later clients are refused."""
        with self._lock:
            subs, self._subs = tuple(self._subs), set()
            self.max_clients = 0
        for sub in subs:
            _force(sub.queue, DROPPED)

    def stats(self) -> HubStats:
        """A copy of the counters."""
        with self._lock:
            return HubStats(len(self._subs), self._connected, self._dropped, self._published)


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
