"""What the delivery worker needs of an outbox: the SQLite one (the one-process app) and
the PostgreSQL one (the distributed mode's detect workers) both are one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from spikewatch.alerting.outbox import AlertPage, Counts, Due, Failed
from spikewatch.core.alerts import AlertEvent
from spikewatch.store.base import Cursor


class OutboxPort(Protocol):
    """An alert outbox (see :class:`spikewatch.alerting.outbox.Outbox` for the contract)."""

    @property
    def destinations(self) -> tuple[str, ...]: ...

    def add(self, events: Iterable[AlertEvent]) -> int: ...

    def due(self, destination: str, now: float, limit: int) -> list[Due]: ...

    def lease(self, destination: str, alert_ids: Sequence[str], until: float) -> list[str]: ...

    def mark_sent(self, destination: str, alert_ids: Sequence[str], message_id: str) -> int: ...

    def mark_failed(
        self,
        destination: str,
        alert_ids: Sequence[str],
        error: str,
        *,
        max_attempts: int,
        delay: Callable[[int], float],
    ) -> Failed: ...

    def sent_since(self, destination: str, since: float) -> tuple[int, float | None]: ...

    def next_due_at(self, destination: str) -> float | None: ...

    def counts(self, destination: str) -> Counts: ...

    def prune(self, before: float) -> int: ...


class AlertLog(Protocol):
    """What the web layer reads of an outbox: the alert log, a page at a time (the SQLite
    outbox of ``spikewatch run``, the PostgreSQL one ``spikewatch serve`` reads)."""

    def page(
        self,
        *,
        rule: str | None = None,
        exchange: str | None = None,
        symbol: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 100,
        after: Cursor | None = None,
    ) -> AlertPage: ...
