"""The store's writer thread: the ingest loop hands signals over and never waits on disk."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

import msgspec

from spikewatch.core.model import Signal
from spikewatch.store.base import SignalStore

log = logging.getLogger(__name__)

Job = Callable[[SignalStore], None]

_BATCH = 512


class WriterStats(msgspec.Struct, frozen=True):
    """Counters of the writer thread."""

    queued: int
    written: int
    duplicates: int
    failures: int
    queue_full_waits: int
    last_write_ms: float | None


class StoreWriter:
    """Writes signals to a store in batches from its own thread.

    Overflow policy: the queue is bounded; when it is full (the disk has stalled for
    thousands of signals) :meth:`put` waits for room and counts the wait. A signal is
    never dropped. A failed write is retried until it succeeds or the writer is closed.
    """

    def __init__(
        self,
        store: SignalStore,
        maxsize: int = 10_000,
        on_written: Callable[[float], None] | None = None,
    ) -> None:
        self._store = store
        self._queue: queue.Queue[tuple[int | None, Signal] | Job | None] = queue.Queue(
            maxsize=maxsize
        )
        self._on_written = on_written
        self._lock = threading.Lock()
        self._written = 0
        self._duplicates = 0
        self._failures = 0
        self._full_waits = 0
        self._last_ms: float | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spikewatch-writer", daemon=True)
        self._thread.start()

    def put(self, signal: Signal, seq: int | None = None) -> None:
        """Queue ``signal`` (delivery number ``seq``) for writing; blocks only while the
        queue is full."""
        item = (seq, signal)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._full_waits += 1
            self._queue.put(item)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread; gives up after ``timeout`` seconds
        (a store that keeps failing must not hang shutdown)."""
        self._closing.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def stats(self) -> WriterStats:
        """A copy of the writer's counters."""
        with self._lock:
            return WriterStats(
                queued=self._queue.qsize(),
                written=self._written,
                duplicates=self._duplicates,
                failures=self._failures,
                queue_full_waits=self._full_waits,
                last_write_ms=self._last_ms,
            )

    def put_job(self, job: Job) -> None:
        """Run ``job(store)`` on the writer thread after everything queued before it (gap
        records, checkpoints: they must not overtake the signals they follow)."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._full_waits += 1
            self._queue.put(job)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while len(items) < _BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch: list[tuple[int | None, Signal]] = []
            for item in items:
                if item is None:
                    stopping = True
                elif isinstance(item, tuple):
                    batch.append(item)
                else:  # a job: write the signals before it first
                    if batch:
                        self._write(batch, stopping)
                        batch = []
                    self._run_job(item)
            if batch:
                self._write(batch, stopping)
            for _ in items:
                self._queue.task_done()

    def _run_job(self, job: Job) -> None:
        try:
            job(self._store)
        except Exception:
            with self._lock:
                self._failures += 1
            log.exception("a store job failed")

    def _write(self, batch: list[tuple[int | None, Signal]], stopping: bool) -> None:
        delay = 0.05
        signals = [signal for _, signal in batch]
        numbered = [seq for seq, _ in batch if seq is not None]
        seqs = numbered if len(numbered) == len(batch) else None
        while True:
            started = time.perf_counter()
            try:
                added = self._store.add(signals, seqs)
            except Exception:
                with self._lock:
                    self._failures += 1
                log.exception("writing %d signals failed; retrying", len(batch))
                if stopping or self._closing.is_set():
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            elapsed = time.perf_counter() - started
            with self._lock:
                self._written += added
                self._duplicates += len(batch) - added
                self._last_ms = elapsed * 1000
            if self._on_written is not None:
                self._on_written(elapsed)
            return
