"""The store's writer: a sink worker that writes signals, gap records and checkpoints in
order, in batches, off the ingest thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import msgspec

from spikewatch.core.model import Signal
from spikewatch.sinks import Overflow, SinkStats, SinkWorker
from spikewatch.store.base import SignalStore
from spikewatch.store.retention import Retention

Job = Callable[[SignalStore], None]
"""Work on the store that must keep its place among the signals (gaps, checkpoints)."""

Item = tuple[int | None, Signal] | Job


class WriterStats(msgspec.Struct, frozen=True):
    """Counters of the writer thread, and whether the store takes writes."""

    queued: int
    written: int
    duplicates: int
    failures: int
    queue_full_waits: int
    last_write_ms: float | None
    #: False from a failed write (a full disk, say) until a write succeeds again
    healthy: bool = True
    failing_since: str | None = None  # ISO 8601 UTC, while failing
    last_error: str | None = None  # the latest failure, while failing
    #: items (signals, gap records, checkpoints) not stored: the queue was full while
    #: the store kept failing
    dropped: int = 0


class StoreSink:
    """Writes queued signals (with their delivery numbers) and runs store jobs, in order."""

    def __init__(
        self,
        store: SignalStore,
        on_written: Callable[[float], None] | None,
        retention: Retention | None = None,
    ) -> None:
        self._store = store
        self._on_written = on_written
        self._retention = retention
        self._lock = threading.Lock()
        self.written = 0
        self.duplicates = 0
        self.job_failures = 0

    def write(self, items: Sequence[Item]) -> None:
        """Signals in runs (one insert each), jobs in their place; a failure raises with
        what was finished removed from ``items``, so a retry does not repeat it. A failed
        job is removed too: it is not retried (the next checkpoint replaces it), but it
        counts as a failure of the store like a failed insert."""
        assert isinstance(items, list)
        while items:
            run = 0
            while run < len(items) and isinstance(items[run], tuple):
                run += 1
            if run:
                self._insert(items[:run])
                del items[:run]
                continue
            job = items.pop(0)
            assert not isinstance(job, tuple)
            try:
                job(self._store)
            except Exception:  # a job (gap record, checkpoint) is not retried
                with self._lock:
                    self.job_failures += 1
                raise
        if self._retention is not None and self._retention.due():
            self._retention.run()  # (never raises: a failed prune is no failed write)

    def _insert(self, batch: list[tuple[int | None, Signal]]) -> None:
        signals = [signal for _, signal in batch]
        numbered = [seq for seq, _ in batch if seq is not None]
        seqs = numbered if len(numbered) == len(batch) else None
        started = time.perf_counter()
        added = self._store.add(signals, seqs)
        elapsed = time.perf_counter() - started
        with self._lock:
            self.written += added
            self.duplicates += len(batch) - added
        if self._on_written is not None:
            self._on_written(elapsed)

    def close(self) -> None:
        """The store belongs to whoever made it: nothing to release here."""


class StoreWriter:
    """Writes signals to a store in batches from its own thread.

    Overflow policy (``block_unless_failing``): the queue is bounded; when it is full
    while writes succeed (a slow disk) :meth:`put` waits for room and counts the wait, so
    nothing is lost. While writes fail (a full disk), a failed write is retried (backoff
    up to 5 s) until it succeeds or the writer is closed, and once the queue is full new
    items are dropped and counted instead of stalling the caller: the live engine keeps
    detecting and pushing signals to live clients, and the store's health is in
    :meth:`stats` (``/api/status``, ``/readyz``, ``/metrics``).
    """

    def __init__(
        self,
        store: SignalStore,
        maxsize: int = 10_000,
        on_written: Callable[[float], None] | None = None,
        retention: Retention | None = None,
    ) -> None:
        self._sink = StoreSink(store, on_written, retention)
        self._worker: SinkWorker[Item] = SinkWorker(
            "writer",
            self._sink,
            maxsize=maxsize,
            overflow=Overflow.BLOCK_UNLESS_FAILING,
            retry=True,
        )

    def put(self, signal: Signal, seq: int | None = None) -> None:
        """Queue ``signal`` (delivery number ``seq``) for writing; blocks only while the
        queue is full and the store works (while it fails, a full queue drops the signal
        and counts it in ``dropped``)."""
        self._worker.put((seq, signal))

    def put_job(self, job: Job) -> None:
        """Run ``job(store)`` on the writer thread after everything queued before it (gap
        records, checkpoints: they must not overtake the signals they follow); dropped
        as :meth:`put` drops."""
        self._worker.put(job)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        return self._worker.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread; gives up after ``timeout`` seconds
        (a store that keeps failing must not hang shutdown)."""
        self._worker.close(timeout)

    def sink_stats(self) -> SinkStats:
        """The worker's counters, as every sink reports them."""
        return self._worker.stats()

    def stats(self) -> WriterStats:
        """A copy of the writer's counters."""
        worker = self._worker.stats()
        sink = self._sink
        return WriterStats(
            queued=worker.queued,
            written=sink.written,
            duplicates=sink.duplicates,
            failures=worker.failures,  # failed jobs included: they raise
            queue_full_waits=worker.full_waits,
            last_write_ms=worker.last_batch_ms,
            healthy=worker.healthy,
            failing_since=worker.failing_since,
            last_error=worker.last_error,
            dropped=worker.dropped,
        )
