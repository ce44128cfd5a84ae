"""A sink that keeps failing (a full disk): its worker says so once when it begins and once
when it ends, shows it in its stats, and a ``block_unless_failing`` queue stops holding the
producer up while it lasts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest

from spikewatch.sinks import Overflow, SinkWorker

from helpers import wait_until


class Disk:
    """Writes numbers while it has room; full, it fails as a full disk does."""

    def __init__(self) -> None:
        self.room = threading.Event()
        self.room.set()
        self.written: list[int] = []
        self.calls = 0

    def write(self, items: Sequence[int]) -> None:
        self.calls += 1
        if not self.room.is_set():
            raise OSError(28, "No space left on device")
        self.written.extend(items)

    def close(self) -> None:
        pass


def loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "spikewatch.sinks" and r.levelno >= logging.WARNING
    ]


def test_a_retrying_sink_reports_failing_once_and_working_again_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="spikewatch.sinks")
    disk = Disk()
    disk.room.clear()
    worker = SinkWorker("store", disk, retry=True)
    try:
        worker.put(1)
        wait_until(lambda: worker.stats().failures >= 4)
        stats = worker.stats()
        assert not stats.healthy
        assert stats.failing_since is not None
        assert stats.last_error == "OSError: [Errno 28] No space left on device"
        assert [r.levelname for r in loud(caplog)] == ["ERROR"]
        assert all(r.exc_info is None for r in loud(caplog))

        disk.room.set()
        assert worker.flush(10)
    finally:
        worker.close()
    assert disk.written == [1]
    stats = worker.stats()
    assert (stats.healthy, stats.failing_since, stats.last_error) == (True, None, None)
    records = loud(caplog)
    assert [r.levelname for r in records] == ["ERROR", "WARNING"]
    assert "works again" in records[1].getMessage()


def test_a_sink_without_retry_says_once_that_it_skips_while_it_keeps_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = Disk()
    disk.room.clear()
    worker = SinkWorker("recorder", disk, overflow=Overflow.DROP_NEWEST, batch=1)
    try:
        for n in range(20):
            worker.put(n)
        assert worker.flush(10)
        assert worker.stats().failures == 20
        assert not worker.stats().healthy
    finally:
        worker.close()
    assert [r.getMessage() for r in loud(caplog)] == [
        "sink recorder failed on 1 items; they are skipped (OSError: [Errno 28] No space "
        "left on device); further failures are logged at DEBUG until it works again"
    ]


def test_block_unless_failing_waits_while_the_sink_works_and_drops_while_it_fails() -> None:
    disk = Disk()
    disk.room.clear()
    worker = SinkWorker(
        "store", disk, maxsize=5, overflow=Overflow.BLOCK_UNLESS_FAILING, retry=True, batch=1
    )
    try:
        worker.put(0)
        wait_until(lambda: not worker.stats().healthy)
        taken = worker.put_many(list(range(1, 101)))  # returns: the producer never hangs
        stats = worker.stats()
        assert taken == 5
        assert stats.dropped == 95
        assert stats.queued == 5
        disk.room.set()
        assert worker.flush(10)
    finally:
        worker.close()
    assert disk.written == [0, 1, 2, 3, 4, 5]
    assert worker.stats().healthy
