"""Retention in ``spikewatch run``'s shape: the store's writer prunes, after its writes,
the signals and the delivered alerts stored more than ``retention_days`` ago, in chunks
that catch up a backlog without one long lock; ``retention_days = 0`` keeps everything.
The clock is the test's (days pass in a line); the store and outbox are real SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikewatch.alerting.outbox import Outbox
from spikewatch.config import ConfigError, load_settings
from spikewatch.core.alerts import AlertEvent
from spikewatch.core.model import Signal
from spikewatch.store import SQLiteSignalStore
from spikewatch.store.retention import DAY_S, Retention
from spikewatch.store.writer import StoreWriter

from helpers import a_stored_alert, spike_signal, wait_until

T0_US = 1_723_161_600_000_000  # the trades' own time: 2024, long "expired" by any clock


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


def signals(first: int, count: int) -> list[Signal]:
    return [spike_signal("binance", first + i, T0_US + (first + i) * 1000) for i in range(count)]


def test_the_writer_prunes_what_is_older_than_the_retention_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = SQLiteSignalStore(tmp_path / "s.db")
    outbox = Outbox(tmp_path / "s.db", ["hook"], clock=clock)
    retention = Retention(30 * DAY_S, store, [outbox], every_s=0.0, chunk=7, clock=clock)
    writer = StoreWriter(store, retention=retention)
    try:
        old_alert = AlertEvent(a_stored_alert("binance", 1), opened=True)
        waiting = AlertEvent(a_stored_alert("binance", 2), opened=True)
        outbox.add([old_alert, waiting])
        outbox.mark_sent("hook", [old_alert.alert.id], "m1")
        for s in signals(0, 20):  # stored on day 0 (their trades are from 2024)
            writer.put(s)
        writer.flush(10)
        assert store.count() == 20  # a replay of old trades is not "old"
        # a signal is aged from the first mark at or above its number (marks are made
        # by the prunes, at most one a minute): a later write of day 0 makes one
        clock.now += 120
        writer.put(signals(50, 1)[0])
        writer.flush(10)
        clock.now += 31 * DAY_S
        for s in signals(100, 5):  # day 31: each write lets the prune go a chunk on
            writer.put(s)
            writer.flush(10)
        wait_until(lambda: retention.signals_removed == 21, 10)
        ids = {s.id for s in store.page(limit=100).signals}
        assert ids == {s.id for s in signals(100, 5)}
        assert retention.alerts_removed == 1
        assert outbox.alert(old_alert.alert.id) is None
        assert outbox.alert(waiting.alert.id) is not None  # never an undelivered one
    finally:
        writer.close()
        outbox.close()
        store.close()


def test_a_failed_prune_is_counted_and_never_fails_a_write(tmp_path: Path) -> None:
    store = SQLiteSignalStore(tmp_path / "s.db")
    outbox = Outbox(tmp_path / "s.db", ["hook"])
    outbox.close()  # its prune now fails
    retention = Retention(DAY_S, store, [outbox], every_s=0.0)
    writer = StoreWriter(store, retention=retention)
    try:
        writer.put(signals(0, 1)[0])
        writer.flush(10)
        wait_until(lambda: retention.failures >= 1, 10)
        assert store.count() == 1
        assert writer.stats().healthy
    finally:
        writer.close()
        store.close()


def test_retention_days_is_off_by_default_and_checked() -> None:
    assert load_settings({}, env={}).retention_days == 0
    assert Retention.of(0, SQLiteSignalStore(":memory:")) is None
    assert load_settings({}, env={"SPIKEWATCH_RETENTION_DAYS": "90"}).retention_days == 90
    for bad in ("0.5", "-1", "nan", "inf", "40000"):
        with pytest.raises(ConfigError, match="retention_days"):
            load_settings({}, env={"SPIKEWATCH_RETENTION_DAYS": bad})
