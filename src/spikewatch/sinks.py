"""The sink port: where what the kernel produced goes, off the ingest thread.

A :class:`Sink` is anything that takes items in batches (the SQLite writer, the frame
recorder, replay outputs, alert senders). A :class:`SinkWorker` runs one sink on its own
thread behind a bounded queue, with an explicit :class:`Overflow` policy and counters
that ``/api/status`` and ``/metrics`` show. The ingest thread only ever puts items in a
queue: nothing slow (disk, network) runs on it.

Two consumers of signals stay inline on the ingest thread because they are in memory and
never block: the live-push hub (bounded per-client queues of its own) and the recent
signals cache.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import msgspec

from spikewatch.core.model import iso_utc

log = logging.getLogger(__name__)

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

#: Items handed to a sink in one call, at most.
BATCH = 512


class Overflow(enum.Enum):
    """What a full queue does to the next item."""

    BLOCK = "block"  # the producer waits for room (counted): nothing is ever lost
    DROP_NEWEST = "drop_newest"  # the new item is dropped (counted): the producer never waits
    #: the producer waits for room while the sink works (a slow disk pushes back); while
    #: it keeps failing (a full disk) the new item is dropped (counted) instead, so a
    #: broken sink can never stall the producer (the live engine) for good
    BLOCK_UNLESS_FAILING = "block_unless_failing"


class Sink(Protocol[T_contra]):
    """Takes items in order, in batches, on a worker's thread."""

    def write(self, items: Sequence[T_contra]) -> None:
        """Handle ``items``. Raising counts a failure; with ``retry`` the same list is
        offered again (with backoff) until it succeeds or the worker is closed, so a sink
        deletes from it what it already finished before it raises."""
        ...

    def close(self) -> None:
        """Release what the sink holds (files, connections); called once, on its thread."""
        ...


class SinkStats(msgspec.Struct, frozen=True):
    """Counters of one sink worker."""

    name: str
    queued: int  # items waiting now
    capacity: int
    overflow: str
    delivered: int  # items handed to the sink successfully
    dropped: int  # items dropped by the overflow policy
    full_waits: int  # times the producer waited for room
    failures: int  # sink calls that raised
    last_batch_ms: float | None  # how long the last successful write took
    #: when the current run of failures began (ISO 8601 UTC); None while the sink works
    failing_since: str | None = None
    last_error: str | None = None  # the latest failure, while failing

    @property
    def healthy(self) -> bool:
        """False from a failed write until the next one that succeeds."""
        return self.failing_since is None


class SinkWorker(Generic[T]):
    """One sink on its own thread behind a queue of at most ``maxsize`` items.

    Items go in one at a time (:meth:`put`) or many at once (:meth:`put_many`: one lock
    and one wake-up for a whole step's signals); the worker takes up to ``batch`` items
    per sink call. ``retry=True`` keeps offering a failed batch (backoff up to 5 s) until
    it succeeds or the worker closes, for sinks that must not lose anything (the store);
    otherwise a failed batch is counted, logged and let go.

    A failure starts a *failing* state that lasts until a write succeeds: it is in the
    stats (``failing_since``, ``last_error``) and logged once when it begins and once when
    it ends; the failures in between are logged at DEBUG only (a full disk must not write
    a traceback every few seconds).
    """

    def __init__(
        self,
        name: str,
        sink: Sink[T],
        *,
        maxsize: int = 10_000,
        overflow: Overflow = Overflow.BLOCK,
        retry: bool = False,
        batch: int = BATCH,
    ) -> None:
        if maxsize < 1 or batch < 1:
            raise ValueError("maxsize and batch must be >= 1")
        self.name = name
        self._sink = sink
        self._maxsize = maxsize
        self._overflow = overflow
        self._retry = retry
        self._batch = batch
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._unfinished = 0  # queued or being written
        self._closing = False
        self._delivered = self._dropped = self._full_waits = self._failures = 0
        self._last_ms: float | None = None
        self._failing_since: float | None = None  # wall-clock seconds
        self._last_error: str | None = None
        self._spell_failures = 0  # failed writes since the sink last worked
        self._drops_logged = False  # the first drop of a failing spell was logged
        self._lost = 0  # items given up at close while failing
        self._thread = threading.Thread(target=self._run, name=f"spikewatch-{name}", daemon=True)
        self._thread.start()

    def put(self, item: T) -> bool:
        """Queue ``item``; False when the overflow policy dropped it."""
        return self.put_many((item,)) == 1

    def put_many(self, items: Sequence[T]) -> int:
        """Queue ``items`` in order; how many were taken (the rest were dropped by the
        ``drop_newest`` policy; ``block`` waits for room and takes them all)."""
        taken = 0
        first_drop = False
        with self._cond:
            waited = False
            while taken < len(items):
                room = self._maxsize - len(self._items)
                if room <= 0:
                    failing = (
                        self._overflow is Overflow.BLOCK_UNLESS_FAILING
                        and self._failing_since is not None
                    )
                    if self._overflow is Overflow.DROP_NEWEST or self._closing or failing:
                        self._dropped += len(items) - taken
                        if failing and not self._drops_logged:
                            self._drops_logged = first_drop = True
                        break
                    if not waited:
                        self._full_waits += 1
                        waited = True
                    self._cond.wait()
                    continue
                chunk = items[taken : taken + room]
                self._items.extend(chunk)
                self._unfinished += len(chunk)
                taken += len(chunk)
                self._cond.notify_all()
        if first_drop:
            log.warning(
                "sink %s: its queue is full while it fails; new items are dropped (counted) "
                "until it works again",
                self.name,
            )
        return taken

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far was handled; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Handle what is queued, close the sink, stop the thread; gives up after
        ``timeout`` seconds (a sink that keeps failing must not hang shutdown)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("sink %s did not drain in %.1fs; closing anyway", self.name, timeout)

    def stats(self) -> SinkStats:
        """A copy of the counters."""
        with self._cond:
            return SinkStats(
                name=self.name,
                queued=len(self._items),
                capacity=self._maxsize,
                overflow=self._overflow.value,
                delivered=self._delivered,
                dropped=self._dropped,
                full_waits=self._full_waits,
                failures=self._failures,
                last_batch_ms=self._last_ms,
                failing_since=(
                    iso_utc(int(self._failing_since * 1_000_000))
                    if self._failing_since is not None
                    else None
                ),
                last_error=self._last_error,
            )

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._items or self._closing)
                    if not self._items:  # closing, and everything was written
                        return
                    count = min(self._batch, len(self._items))
                    items = [self._items.popleft() for _ in range(count)]
                    self._cond.notify_all()  # room for a blocked producer
                self._write(items)
                with self._cond:
                    self._unfinished -= count
                    self._cond.notify_all()
        finally:
            if self._lost:
                log.error(
                    "sink %s closed while failing (%s): %d items were not written",
                    self.name,
                    self._last_error,
                    self._lost,
                )
            try:
                self._sink.close()
            except Exception:
                log.exception("closing sink %s failed", self.name)

    def _write(self, items: list[T]) -> None:
        delay = 0.05
        count = len(items)  # a sink may remove what it finished before raising
        while True:
            started = time.perf_counter()
            try:
                self._sink.write(items)
            except Exception as exc:
                if not self._failed(exc, len(items)) or not items:
                    return  # let go (or nothing is left to retry): still failing
                with self._cond:  # back off; a close() cuts the wait short
                    self._cond.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, 5.0)
                continue
            elapsed = time.perf_counter() - started
            with self._cond:
                self._delivered += count
                self._last_ms = elapsed * 1000
                since, self._failing_since = self._failing_since, None
                spell, self._spell_failures = self._spell_failures, 0
                self._last_error = None
                self._drops_logged = False
            if since is not None:
                log.warning(
                    "sink %s works again, after %.1f s and %d failed writes",
                    self.name,
                    time.time() - since,
                    spell,
                )
            return

    def _failed(self, exc: Exception, count: int) -> bool:
        """Count a failed write of ``count`` items; True when it is to be retried."""
        error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            self._failures += 1
            self._spell_failures += 1
            closing = self._closing
            first = self._failing_since is None
            if first:
                self._failing_since = time.time()
                self._cond.notify_all()  # a producer waiting for room may now drop instead
            self._last_error = error
            retry = self._retry and not closing
            if not retry and self._retry:
                self._lost += count
        if first and retry:
            log.error(
                "sink %s failed on %d items (%s); retrying until it works (further failures "
                "are logged at DEBUG)",
                self.name,
                count,
                error,
            )
        elif first and not self._retry:
            log.error(
                "sink %s failed on %d items; they are skipped (%s); further failures are "
                "logged at DEBUG until it works again",
                self.name,
                count,
                error,
            )
        log.debug("sink %s failed on %d items", self.name, count, exc_info=exc)
        return retry
