"""The names of one deployment's streams, subjects and buckets, from the settings. Pure.

Everything a deployment puts on the server starts with ``bus_prefix`` (default
``spikewatch``), so that several deployments (tests, staging beside live) share one
server without touching each other's data:

=====================  ==============================  ==========================
what                   name                             subjects / keys
=====================  ==============================  ==========================
trade stream           ``<prefix>-trades``              ``<prefix>-trades.<p>.<exchange>.<symbol>``
signal stream          ``<prefix>-signals``             ``<prefix>-signals.<exchange>.<symbol>``
alert events (core)    (no stream)                      ``<prefix>-alerts.<exchange>.<symbol>``
lease bucket (KV)      ``<prefix>-leases``              ``p<partition>``, ``w-<worker>``
snapshot bucket (KV)   ``<prefix>-snapshots``           ``p<partition>``
=====================  ==============================  ==========================

Every role (ingest, detect, serve) takes its names from here, never spells them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spikewatch.bus.subjects import TradeSubjects, check_token


class _BusSettings(Protocol):
    @property
    def bus_prefix(self) -> str: ...

    @property
    def bus_partitions(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BusNames:
    """The stream, subject and bucket names of a deployment (see the module docstring)."""

    prefix: str
    partitions: int

    def __post_init__(self) -> None:
        check_token("bus prefix", self.prefix)

    @property
    def trade_stream(self) -> str:
        return f"{self.prefix}-trades"

    @property
    def trade_subjects(self) -> TradeSubjects:
        return TradeSubjects(self.partitions, prefix=f"{self.prefix}-trades")

    @property
    def signal_stream(self) -> str:
        return f"{self.prefix}-signals"

    @property
    def signal_prefix(self) -> str:
        """Signals of ``(exchange, symbol)`` go on ``<signal_prefix>.<exchange>.<symbol>``."""
        return f"{self.prefix}-signals"

    @property
    def alert_prefix(self) -> str:
        """Alert events of ``(exchange, symbol)`` go on ``<alert_prefix>.<exchange>.<symbol>``
        (core NATS: :mod:`spikewatch.bus.alerts`)."""
        return f"{self.prefix}-alerts"

    @property
    def lease_bucket(self) -> str:
        return f"{self.prefix}-leases"

    @property
    def snapshot_bucket(self) -> str:
        return f"{self.prefix}-snapshots"


def bus_names(settings: _BusSettings) -> BusNames:
    """The names the settings' ``bus_prefix`` and ``bus_partitions`` give."""
    return BusNames(settings.bus_prefix, settings.bus_partitions)
