"""The alert side of ``spikewatch detect``: every alert event its kernels raise goes into
the PostgreSQL outbox before the fetch that raised it is acknowledged, and a delivery
worker (one thread per destination, as in ``spikewatch run``) sends what is due.

Every detect worker runs both; they share the one outbox (docs/DISTRIBUTED.md, "Alerts"):

* an alert is stored once whichever worker raised it, and however often (its id is
  deterministic: a partition taken over replays trades and raises the same alerts);
* each send is claimed first (``FOR UPDATE SKIP LOCKED``), so one worker sends it; a
  worker that dies mid-send leaves it due again when its claim ends, for any worker;
* no alert waits for the partition's holder: a worker's partitions and the alerts it
  sends are unrelated, so delivery goes on while partitions move.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg
from psycopg.rows import TupleRow

from spikewatch.alerting.pg_outbox import PostgresOutbox
from spikewatch.alerting.worker import DeliveryStats, DeliveryWorker
from spikewatch.config import Settings
from spikewatch.core.alerts import AlertEvent
from spikewatch.store.postgres import PostgresSignalStore

log = logging.getLogger(__name__)


class DetectAlerts:
    """A detect worker's outbox and delivery: :meth:`start`, :meth:`add` (from the
    worker's write thread), :meth:`stop`."""

    def __init__(self, settings: Settings, store: PostgresSignalStore) -> None:
        destinations = settings.destinations
        #: the alerts of every worker, and their deliveries
        self.outbox = PostgresOutbox(store.connection, [d.name for d in destinations])
        self._delivery = DeliveryWorker(self.outbox, destinations) if destinations else None
        #: alert events handed in, and of them alerts new to the outbox (the rest were
        #: stored already: by another worker, or before a replay)
        self.events = 0
        self.stored = 0

    def start(self) -> None:
        """Deliver from now on (what is pending, whoever stored it, first)."""
        if self._delivery is not None:
            self._delivery.start()

    def add(self, events: Sequence[AlertEvent]) -> None:
        """Store these events (one transaction) and wake the delivery lanes for a new one.
        Blocking: call it off the event loop, before the fetch is acknowledged."""
        if not events:
            return
        self.committed(events, self.outbox.add(events))

    def add_in(self, conn: psycopg.Connection[TupleRow], events: Sequence[AlertEvent]) -> int:
        """Store these events in the caller's transaction ``conn`` (detect: with the
        fetch's signals); returns the alerts new to the outbox. Call :meth:`committed`
        once it has committed."""
        return self.outbox.add(events, conn) if events else 0

    def committed(self, events: Sequence[AlertEvent], added: int) -> None:
        """Events stored (``added`` alerts new): count them, log the opened ones, and wake
        the delivery lanes (after the commit, so a lane finds them)."""
        self.events += len(events)
        if added:
            self.stored += added
            for event in events:
                if event.opened:
                    log.info("alert: %s", event.alert.summary)
            if self._delivery is not None:
                self._delivery.notify()

    def stats(self) -> DeliveryStats | None:
        """Delivery counters per destination (None: no destination configured)."""
        return None if self._delivery is None else self._delivery.stats()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop delivering after the sends under way; what is pending stays for the
        other workers, or the next start."""
        if self._delivery is not None:
            self._delivery.stop(timeout)
