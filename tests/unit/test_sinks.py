"""The sink port: a bounded worker per sink, its overflow policy, retries and counters."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from spikewatch.sinks import Overflow, SinkWorker


class Gate:
    """A sink that writes only while its gate is open, and may fail a number of times."""

    def __init__(self, fail: int = 0) -> None:
        self.open = threading.Event()
        self.open.set()
        self.written: list[int] = []
        self.calls = 0
        self.fail = fail
        self.closed = 0

    def write(self, items: Sequence[int]) -> None:
        self.open.wait(5)
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise OSError("disk full")
        self.written.extend(items)

    def close(self) -> None:
        self.closed += 1


def test_everything_put_is_written_in_order_and_closed_once() -> None:
    sink = Gate()
    worker = SinkWorker("numbers", sink, maxsize=10, batch=3)
    for n in range(100):
        assert worker.put(n)
    assert worker.flush(5)
    worker.close()
    assert sink.written == list(range(100))
    assert sink.closed == 1
    stats = worker.stats()
    assert (stats.delivered, stats.dropped, stats.failures, stats.queued) == (100, 0, 0, 0)
    assert stats.name == "numbers"


def test_drop_newest_never_makes_the_producer_wait_and_counts_the_drops() -> None:
    sink = Gate()
    sink.open.clear()  # a stalled disk
    worker = SinkWorker("recorder", sink, maxsize=5, overflow=Overflow.DROP_NEWEST, batch=1)
    accepted = [worker.put(n) for n in range(50)]
    stats = worker.stats()
    assert accepted.count(False) == stats.dropped >= 50 - 5 - 1  # one may be in the sink
    assert stats.full_waits == 0
    sink.open.set()
    worker.close()
    assert sink.written == [n for n, ok in enumerate(accepted) if ok]


def test_block_waits_for_room_and_counts_the_waits() -> None:
    sink = Gate()
    sink.open.clear()
    worker = SinkWorker("store", sink, maxsize=2, overflow=Overflow.BLOCK, batch=1)
    producer = threading.Thread(target=lambda: [worker.put(n) for n in range(10)])
    producer.start()
    producer.join(0.3)
    assert producer.is_alive()  # held back by the full queue
    sink.open.set()
    producer.join(5)
    worker.close()
    assert sink.written == list(range(10))
    assert worker.stats().full_waits >= 1
    assert worker.stats().dropped == 0


def test_a_retrying_sink_gets_the_same_items_again_until_they_are_written() -> None:
    sink = Gate(fail=2)
    worker = SinkWorker("store", sink, retry=True)
    worker.put(7)
    assert worker.flush(5)
    worker.close()
    assert sink.written == [7]
    assert (sink.calls, worker.stats().failures, worker.stats().delivered) == (3, 2, 1)


def test_without_retry_a_failed_batch_is_counted_and_the_next_ones_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Gate(fail=1)
    worker = SinkWorker("output", sink, batch=1)
    worker.put(1)
    assert worker.flush(5)
    worker.put(2)
    worker.close()
    assert sink.written == [2]
    assert worker.stats().failures == 1
    assert "sink output failed on 1 items; they are skipped" in caplog.text


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        SinkWorker("x", Gate(), maxsize=0)
