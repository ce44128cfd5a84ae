"""Alert events out: ``<prefix>-alerts.<exchange>.<symbol>``, one message per event (its
:class:`~spikewatch.core.alerts.AlertEvent` JSON, as the live stream's ``alert`` event
carries it).

A detect worker announces each fetch's alert events here once they are in the PostgreSQL
outbox, and ``spikewatch serve`` pushes them to live clients. These are plain (core) NATS
messages, not a stream: the outbox is the record (the alert log, delivery), and serve
also reads what changed there every second, so a message lost while NATS is away only
delays an alert's push. Repeats (a partition taken over replays trades and raises the
same events) are dropped by serve, which pushes an alert's fold once: an event whose
``(last_time_us, signals)`` is not past what it pushed for that id is a repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import msgspec
from nats.aio.client import Client

from spikewatch.bus.subjects import check_token, signal_subject
from spikewatch.core.alerts import AlertEvent

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
decode_alert_event: Final = msgspec.json.Decoder(AlertEvent).decode


def alert_subject(exchange: str, symbol: str, prefix: str) -> str:
    """The subject the alert events of ``(exchange, symbol)`` are published on."""
    return signal_subject(exchange, symbol, prefix)  # the same shape as the signals'


def alert_wildcard(exchange: str, prefix: str) -> str:
    """Every symbol's alert events on ``exchange``."""
    return f"{check_token('subject prefix', prefix)}.{check_token('exchange', exchange)}.*"


class AlertAnnouncer:
    """Publishes alert events on the bus (best effort: see the module docstring)."""

    def __init__(self, nc: Client, *, prefix: str) -> None:
        self._nc = nc
        self.prefix = check_token("subject prefix", prefix)
        self.published = 0
        #: events not handed to the connection (closed, or its buffer full)
        self.failed = 0

    async def publish(self, events: Sequence[AlertEvent]) -> None:
        """Hand ``events`` to the connection, in order; never raises (the events are
        stored already, and serve finds them in the store)."""
        for event in events:
            alert = event.alert
            try:
                await self._nc.publish(
                    alert_subject(alert.exchange, alert.symbol, self.prefix), _encode(event)
                )
            except Exception as exc:
                self.failed += 1
                log.debug("alert %s not announced on the bus: %s", alert.id, exc)
            else:
                self.published += 1
