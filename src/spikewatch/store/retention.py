"""Retention: forget what is older than ``retention_days`` (docs/CONFIGURATION.md), the
store's signals and the alerts whose every delivery is done, every so often.

One :class:`Retention` runs where a deployment writes: the store's writer thread in
``spikewatch run`` (after a batch of signals), each detect worker in the distributed mode
(PostgreSQL's prunes are idempotent and take turns on a lock, so several workers running
it cost one prune's work between them). A prune is a few short transactions of at most
``chunk`` rows: a backlog (the first prune of a database kept for months) is worked off
0.2 s of chunks every second, never in one long lock of the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from spikewatch.store.base import SignalStore

log = logging.getLogger(__name__)

#: Seconds between prunes once nothing is left to remove.
PRUNE_EVERY_S: Final = 3600.0
#: Seconds to the next chunk while a backlog is worked off.
CATCH_UP_S: Final = 1.0
#: Seconds one prune may take, at most (then it goes on after CATCH_UP_S).
BUDGET_S: Final = 0.2
#: Signals removed per transaction, at most: 0.18-0.34 s wall (17-56 ms CPU) in SQLite on
#: the CI machine at load 14-16; 10,000 took 0.5-1.8 s, holding the writer that long.
CHUNK: Final = 2_000
DAY_S: Final = 86_400.0


class Prunable(Protocol):
    """An alert outbox (SQLite or PostgreSQL): forgets alerts stored before a time whose
    deliveries are all done."""

    def prune(self, before: float) -> int: ...


class Retention:
    """Prunes ``store`` and ``outboxes`` of what was stored more than ``keep_s`` seconds
    ago; call :meth:`run` whenever :meth:`due` (from one thread)."""

    def __init__(
        self,
        keep_s: float,
        store: SignalStore,
        outboxes: Sequence[Prunable] = (),
        *,
        every_s: float = PRUNE_EVERY_S,
        chunk: int = CHUNK,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keep_s = keep_s
        self._store = store
        self._outboxes = tuple(outboxes)
        self.every_s = every_s
        self.chunk = chunk
        self._clock = clock
        self._next = 0.0  # monotonic; the first call is due at once (it records a mark)
        #: removed since start, and failed prunes (retried at the next interval)
        self.signals_removed = 0
        self.alerts_removed = 0
        self.failures = 0

    @classmethod
    def of(
        cls, retention_days: float, store: SignalStore, outboxes: Sequence[Prunable | None] = ()
    ) -> Retention | None:
        """The retention a setting asks for (None: ``retention_days`` 0, keep everything)."""
        if retention_days <= 0:
            return None
        return cls(retention_days * DAY_S, store, [o for o in outboxes if o is not None])

    def due(self) -> bool:
        """Whether a prune should run now."""
        return time.monotonic() >= self._next

    def run(self) -> int:
        """One prune: a chunk of signals, and the old alerts; returns the rows removed.
        Never raises (a failure is logged and counted, and tried again later)."""
        now = self._clock()
        started = time.monotonic()
        try:
            signals = more = 0
            # chunks until one is not full, for BUDGET_S at most: the writer's thread is
            # held that long at worst (run's), and the rest waits CATCH_UP_S
            while time.monotonic() - started < BUDGET_S:
                more = self._store.prune(self.keep_s, now=now, limit=self.chunk)
                signals += more
                if more < self.chunk:
                    break
            alerts = sum(o.prune(now - self.keep_s) for o in self._outboxes)
        except Exception as exc:
            self.failures += 1
            self._next = time.monotonic() + self.every_s
            log.warning("retention: the prune failed (tried again in %g s): %s", self.every_s, exc)
            return 0
        self.signals_removed += signals
        self.alerts_removed += alerts
        left = more >= self.chunk
        self._next = time.monotonic() + (CATCH_UP_S if left else self.every_s)
        if signals or alerts:
            log.info(
                "retention: removed %d signals and %d alerts stored more than %g days ago%s",
                signals,
                alerts,
                self.keep_s / DAY_S,
                " (more to go)" if left else "",
            )
        return signals + alerts
