"""What a runtime does with the alert events of its kernel's steps: they go to live-stream
clients (``event: alert``), into the outbox (through a sink worker, in order, off the
ingest thread) and to any extra sinks, and a delivery worker sends them on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec

from spikewatch.alerting.outbox import Outbox
from spikewatch.alerting.worker import DeliveryWorker
from spikewatch.config import Settings
from spikewatch.core.alerts import AlertEvent, AlertRules
from spikewatch.hub import Event, Hub
from spikewatch.sinks import Overflow, SinkWorker
from spikewatch.status import AlertStatus

log = logging.getLogger("spikewatch.engine")

_encode = msgspec.json.Encoder().encode

AlertSink = Callable[[Sequence[AlertEvent]], None]


class AlertPipeline:
    """The alert side of one runtime: built with the kernel's rules, started and stopped
    with the runtime."""

    def __init__(self, settings: Settings, rules: AlertRules, hub: Hub) -> None:
        self._settings = settings
        self._rules = rules
        self._hub = hub
        #: every alert and its deliveries
        self.outbox = Outbox(settings.db, [d.name for d in settings.destinations])
        self._delivery: DeliveryWorker | None = None
        self._queue: SinkWorker[AlertEvent] | None = None
        self._sinks: tuple[AlertSink, ...] = ()
        self.opened = 0

    def start(self) -> None:
        """Deliver from now on (what an earlier run left pending first)."""
        self._delivery = DeliveryWorker(self.outbox, self._settings.destinations)
        self._delivery.start()
        self._queue = SinkWorker(
            "alerts", self._delivery.sink(), retry=True, overflow=Overflow.BLOCK_UNLESS_FAILING
        )

    def handle(self, events: Sequence[AlertEvent]) -> None:
        """A step's alert events, in order (on the ingest thread: nothing slow here)."""
        for event in events:
            alert = event.alert
            self._hub.publish(Event("alert", _encode(event), None, alert.symbol, alert.exchange))
            if event.opened:
                self.opened += 1
                log.info("alert: %s", alert.summary)
        if self._queue is not None:
            self._queue.put_many(events)
        else:  # not started (frames fed by hand): stored at once
            self.outbox.add(events)
        for sink in self._sinks:
            try:
                sink(events)
            except Exception:  # a sink's bug must not stop the stream
                log.exception("an alert sink failed")

    def add_sink(self, sink: AlertSink) -> None:
        """Also hand each step's alert events to ``sink`` (it must only queue them)."""
        self._sinks = (*self._sinks, sink)

    def flush(self, timeout: float) -> None:
        """Wait until the alerts handed so far are in the outbox (before a checkpoint)."""
        if self._queue is not None:
            self._queue.flush(timeout)

    def stop(self, timeout: float) -> None:
        """Store what is queued and stop delivering (the next run sends what is pending)."""
        if self._queue is not None:
            self._queue.close(timeout)
        if self._delivery is not None:
            self._delivery.stop(timeout)
        self.outbox.close()

    def status(self) -> AlertStatus:
        """What ``/api/status`` says about alerts."""
        delivery = self._delivery.stats() if self._delivery is not None else None
        return AlertStatus([r.name for r in self._rules.rules], self.opened, delivery)
