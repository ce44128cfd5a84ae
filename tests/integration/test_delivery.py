"""Alert delivery over real sockets to a local receiver: every alert arrives, signed, once
(or, after a crash in the one unavoidable window, once more with the same idempotency id);
outages, errors, Retry-After and hangs are retried; dead letters; the rate cap; restarts,
kill -9; Apprise's own code path."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from spikewatch.alerting import (
    DeliveryWorker,
    Destination,
    DestinationStats,
    Outbox,
    verify,
)
from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.sinks import SinkWorker

from helpers import ROOT, free_port, wait_until
from receiver import HANG, Received, Receiver, Reply

SECRET = "test-secret"
T0_US = 1_723_161_600_000_000  # 2024-08-09T00:00:00Z


def alert(n: int, signals: int = 1) -> Alert:
    time_us = T0_US + n * 1_000_000
    return Alert(
        id=f"whale:binance:BTCUSDT:{5000 + n}",
        rule="whale",
        severity="critical" if n % 7 == 0 else "warning",
        exchange="binance",
        symbol="BTCUSDT",
        side="sell",
        timestamp="2024-08-09T00:00:00.000000Z",
        time_us=time_us,
        last_time_us=time_us + signals - 1,
        price=60_000.0,
        usd_value=300_000.0,
        usd_total=300_000.0 * signals,
        signals=signals,
        detectors=["notional"],
        first_signal=f"notional:{5000 + n}",
        summary=f"BTCUSDT whale: notional sell $300.00k at 60,000 on binance #{n}",
    )


def opened(count: int, start: int = 1) -> list[AlertEvent]:
    return [AlertEvent(alert(n), opened=True) for n in range(start, start + count)]


def ids(count: int, start: int = 1) -> set[str]:
    return {alert(n).id for n in range(start, start + count)}


def webhook(url: str, **options: Any) -> Destination:
    """A webhook with test-sized timeouts and backoff (50 ms doubling up to 0.5 s)."""
    fields: dict[str, Any] = {
        "name": "hook",
        "url": url,
        "kind": "webhook",
        "secret": SECRET,
        "timeout_s": 2.0,
        "backoff_first_s": 0.05,
        "backoff_cap_s": 0.5,
        "max_per_minute": 0,
        "max_attempts": 100,
    }
    fields.update(options)
    return Destination(**fields)


@contextlib.contextmanager
def delivering(
    db: Path,
    destinations: Sequence[Destination],
    events: Sequence[AlertEvent] = (),
    **options: Any,
) -> Iterator[tuple[Outbox, DeliveryWorker]]:
    """An outbox on ``db`` holding ``events``, and a started worker; both closed at exit."""
    outbox = Outbox(db, [d.name for d in destinations])
    outbox.add(events)
    worker = DeliveryWorker(outbox, destinations, **options)
    worker.start()
    try:
        yield outbox, worker
    finally:
        worker.stop()
        outbox.close()


def stats(worker: DeliveryWorker, name: str = "hook") -> DestinationStats:
    (found,) = [d for d in worker.stats().destinations if d.name == name]
    return found


def check_signed(receiver: Receiver) -> None:
    """Every request carries a valid signature and the body's id as its idempotency id."""
    for request in receiver.requests:
        assert verify(SECRET, request.body, request.headers["x-spikewatch-signature"])
        assert request.alert_id == request.json()["id"]
        assert request.headers["content-type"] == "application/json"


def states(outbox: Outbox) -> Counter[str]:
    return Counter(row.state for row in outbox.deliveries())


# -- the webhook ------------------------------------------------------------------------


def test_each_alert_reaches_the_webhook_once_signed(tmp_path: Path) -> None:
    with Receiver().start() as receiver:
        hook = webhook(receiver.url())
        with delivering(tmp_path / "a.db", [hook], opened(5)) as (_, worker):
            assert worker.wait_idle(30)
            wait_until(lambda: stats(worker).sent == 5, 30)
            got = stats(worker)
    assert sorted(receiver.alert_ids()) == sorted(ids(5))
    assert receiver.duplicates() == Counter()
    check_signed(receiver)
    first = receiver.requests[0].json()
    assert first["type"] == "alert"
    assert first["count"] == 1
    assert msgspec.convert(first["alerts"][0], Alert) == alert(1)  # oldest first
    assert (got.messages, got.pending, got.dead, got.failed_attempts) == (5, 0, 0, 0)
    assert got.last_sent_at is not None
    assert got.failing_since is None


def test_a_receiver_that_was_down_gets_every_alert_once_it_is_back(tmp_path: Path) -> None:
    receiver = Receiver(free_port())  # not listening: connections are refused
    hook = webhook(receiver.url())
    try:
        with delivering(tmp_path / "a.db", [hook], opened(4)) as (outbox, worker):
            down = wait_until(lambda: (s := stats(worker)).failed_attempts >= 2 and s, 30)
            assert down.failing_since is not None
            assert down.last_error == "connection refused"
            assert down.pending == 4
            receiver.start()
            assert worker.wait_idle(30)
            wait_until(lambda: stats(worker).failing_since is None, 30)
            assert states(outbox) == Counter(sent=4)
    finally:
        receiver.stop()
    assert sorted(receiver.alert_ids()) == sorted(ids(4))
    assert receiver.duplicates() == Counter()


def test_server_errors_are_retried_and_retry_after_is_honoured(tmp_path: Path) -> None:
    with Receiver().start() as receiver:
        receiver.plan(500, Reply(429, retry_after="1"))
        hook = webhook(receiver.url(), backoff_cap_s=5.0)  # first retries within 0.1 s
        with delivering(tmp_path / "a.db", [hook], opened(1)) as (outbox, worker):
            assert worker.wait_idle(30)
            (row,) = outbox.deliveries()
    _, second, third = receiver.requests
    assert [r.status for r in receiver.requests] == [500, 429, 200]
    assert {r.alert_id for r in receiver.requests} == {alert(1).id}
    # backoff alone would have retried within 0.1 s; the receiver asked for a second
    assert third.at - second.at >= 1.0
    assert (row.state, row.attempts, row.last_error) == ("sent", 3, None)


def test_a_retry_after_beyond_the_cap_waits_only_the_cap(tmp_path: Path) -> None:
    with Receiver().start() as receiver:
        receiver.plan(Reply(503, retry_after="3600"))
        hook = webhook(receiver.url(), backoff_cap_s=0.3)
        with delivering(tmp_path / "a.db", [hook], opened(1)) as (_, worker):
            assert worker.wait_idle(30)  # not an hour
    assert [r.status for r in receiver.requests] == [503, 200]


def test_a_hanging_receiver_times_out_and_gets_the_alert_again_with_the_same_id(
    tmp_path: Path,
) -> None:
    with Receiver().start() as receiver:
        receiver.plan(HANG)
        hook = webhook(receiver.url(), timeout_s=1.0)
        with delivering(tmp_path / "a.db", [hook], opened(2)) as (outbox, worker):
            assert worker.wait_idle(30)
            assert states(outbox) == Counter(sent=2)
            assert stats(worker).failed_attempts == 1
            assert stats(worker).last_error is None  # delivered since
    hung, *rest = receiver.requests
    assert hung.status == HANG.status
    assert [r.status for r in rest] == [200, 200]
    # the receiver had the hung request: it gets it again, under the same idempotency id
    assert receiver.duplicates() == Counter({alert(1).id: 1})
    check_signed(receiver)


def test_an_alert_is_dead_lettered_after_max_attempts_and_can_be_requeued(
    tmp_path: Path,
) -> None:
    with Receiver().start() as receiver:
        receiver.answer(Reply(500))
        hook = webhook(receiver.url(), max_attempts=3)
        with delivering(tmp_path / "a.db", [hook], opened(1)) as (outbox, worker):
            dead = wait_until(lambda: (s := stats(worker)).dead == 1 and s, 30)
            assert len(receiver.requests) == 3
            assert (dead.pending, dead.failed_attempts) == (0, 3)
            assert dead.last_error == "HTTP 500 Internal Server Error"
            assert worker.wait_idle(1)  # dead is not pending
            # the receiver is fixed; an operator sends the dead letters again
            receiver.answer(Reply(200))
            assert outbox.requeue_dead("hook") == 1
            worker.notify()
            wait_until(lambda: stats(worker).sent == 1, 30)
    assert [r.status for r in receiver.requests] == [500, 500, 500, 200]


def test_the_rate_cap_summarises_a_burst_and_marks_every_alert_sent(tmp_path: Path) -> None:
    with Receiver().start() as receiver:
        hook = webhook(receiver.url(), max_per_minute=5)
        with delivering(tmp_path / "a.db", [hook], opened(50)) as (outbox, worker):
            assert worker.wait_idle(30)
            rows = outbox.deliveries()
            wait_until(lambda: stats(worker).sent == 50, 30)
            # the cap is used up for this minute: a 51st alert waits (it is not dropped)
            outbox.add(opened(1, start=51))
            worker.notify()
            late = wait_until(lambda: (s := stats(worker)).pending == 1 and s, 30)
    assert len(receiver.requests) == 5
    kinds = [r.json()["type"] for r in receiver.requests]
    assert kinds == ["alert"] * 4 + ["summary"]
    summary = receiver.requests[-1].json()
    assert summary["count"] == 46
    assert summary["text"].startswith("46 more alerts: ")
    assert sorted(receiver.alert_ids()) == sorted(ids(50))  # each exactly once
    check_signed(receiver)
    assert {r.state for r in rows} == {"sent"}
    assert {r.message for r in rows if r.alert_id in {a["id"] for a in summary["alerts"]}} == {
        summary["id"]
    }
    assert (late.sent, late.messages, late.summaries) == (50, 5, 1)


# -- restarts and crashes ---------------------------------------------------------------


def test_a_restarted_worker_delivers_what_was_pending(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with Receiver().start() as receiver:
        receiver.answer(Reply(503))
        hook = webhook(receiver.url())
        with delivering(db, [hook], opened(10)) as (_, worker):
            wait_until(lambda: stats(worker).failed_attempts >= 2, 30)
        refused = len(receiver.requests)
        receiver.answer(Reply(200))
        with delivering(db, [hook]) as (outbox, worker):
            assert stats(worker).pending == 10  # the new process sees them at once
            assert worker.wait_idle(30)
            assert states(outbox) == Counter(sent=10)
            (first,) = outbox.deliveries(alert(1).id)
    assert all(r.status == 503 for r in receiver.requests[:refused])
    assert sorted(receiver.alert_ids()) == sorted(ids(10))  # none lost, none twice
    assert first.attempts == refused + 1  # the attempts carried over


def test_an_acknowledged_alert_whose_commit_fails_is_recorded_later_not_sent_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "a.db"
    locks: list[sqlite3.Connection] = []

    def lock_the_database(_: Received) -> None:
        # another writer holds the file while the receiver answers 200: the commit fails
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        locks.append(conn)

    with Receiver().start() as receiver:
        receiver.on_request = lock_the_database
        hook = webhook(receiver.url())
        outbox = Outbox(db, [hook.name], busy_timeout_s=0.2)
        outbox.add(opened(2))
        worker = DeliveryWorker(outbox, [hook])
        worker.start()
        try:
            wait_until(lambda: "the outbox failed" in caplog.text, 30)
            receiver.on_request = None
            (lock,) = locks
            lock.execute("COMMIT")
            lock.close()
            assert worker.wait_idle(30)
            rows = outbox.deliveries()
        finally:
            worker.stop()
            outbox.close()
    assert sorted(receiver.alert_ids()) == sorted(ids(2))  # the first was not sent again
    assert [(r.state, r.attempts) for r in rows] == [("sent", 1), ("sent", 1)]


CHILD = """
import json, os, signal, sys
import msgspec
from spikewatch.alerting import DeliveryWorker, Destination, Outbox, build_sender

config = json.loads(sys.argv[1])
destination = msgspec.convert(config["destination"], Destination)
outbox = Outbox(config["db"], [destination.name])


class DieAfterAck:
    # kills this process right after the receiver's n-th 2xx, before it is committed
    def __init__(self, inner, n):
        self.inner, self.n, self.acks = inner, n, 0

    def send(self, message):
        result = self.inner.send(message)
        if result.ok:
            self.acks += 1
            if self.acks == self.n:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    def close(self):
        self.inner.close()


senders = None
if config.get("die_after"):
    senders = {destination.name: DieAfterAck(build_sender(destination), config["die_after"])}
worker = DeliveryWorker(outbox, [destination], senders=senders, lease_s=config["lease_s"])
worker.start()
done = worker.wait_idle(60)
worker.stop()
outbox.close()
sys.exit(0 if done else 3)
"""


def deliver_in_child(db: Path, hook: Destination, **config: Any) -> subprocess.Popen[bytes]:
    """A separate process delivering the outbox in ``db`` to ``hook`` until none is
    pending; its leases last 0.3 s (only one process runs at a time here)."""
    config.update(db=str(db), destination=msgspec.to_builtins(hook), lease_s=0.3)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(config)], cwd=ROOT, stderr=subprocess.PIPE
    )


def finish(child: subprocess.Popen[bytes]) -> None:
    _, err = child.communicate(timeout=90)
    assert child.returncode == 0, err.decode()


def check_database(db: Path, count: int) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT state, COUNT(*) FROM alert_deliveries GROUP BY state")
        assert dict(rows.fetchall()) == {"sent": count}


def test_kill_9_mid_burst_then_a_second_process_delivers_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with Receiver().start() as receiver:
        hook = webhook(receiver.url(), timeout_s=10.0)  # the held send waits for the kill
        outbox = Outbox(db, [hook.name])
        outbox.add(opened(60))
        outbox.close()
        receiver.hold_from(25)  # the 25th send reaches the receiver and gets no answer
        child = deliver_in_child(db, hook)
        try:
            receiver.wait_for(25)
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
        finally:
            child.kill()
        assert child.returncode == -signal.SIGKILL
        receiver.release()
        finish(deliver_in_child(db, hook))
    assert set(receiver.alert_ids()) == ids(60)  # none lost
    duplicates = receiver.duplicates()
    assert sum(duplicates.values()) <= 1  # at most the one in flight, with its own id
    assert set(duplicates) <= {alert(25).id}
    check_signed(receiver)
    check_database(db, 60)


def test_a_crash_between_the_receivers_2xx_and_the_commit_resends_just_that_alert(
    tmp_path: Path,
) -> None:
    db = tmp_path / "a.db"
    with Receiver().start() as receiver:
        hook = webhook(receiver.url())
        outbox = Outbox(db, [hook.name])
        outbox.add(opened(40))
        outbox.close()
        crashed = deliver_in_child(db, hook, die_after=20)
        crashed.communicate(timeout=90)
        assert crashed.returncode == -signal.SIGKILL
        assert len(receiver.requests) == 20
        finish(deliver_in_child(db, hook))
    assert set(receiver.alert_ids()) == ids(40)
    # the 20th was acknowledged but not recorded: it comes again, once, with the same id
    assert receiver.duplicates() == Counter({alert(20).id: 1})
    check_database(db, 40)


# -- more than one destination; the engine's side ---------------------------------------


def test_a_failing_destination_does_not_hold_up_another(tmp_path: Path) -> None:
    down = webhook(f"http://127.0.0.1:{free_port()}/hook", name="down")
    with Receiver().start() as receiver:
        up = webhook(receiver.url(), name="up")
        with delivering(tmp_path / "a.db", [down, up], opened(5)) as (_, worker):
            wait_until(lambda: stats(worker, "up").sent == 5, 30)
            failing = stats(worker, "down")
            assert failing.sent == 0
            assert failing.pending == 5
            assert failing.failing_since is not None
    assert sorted(receiver.alert_ids()) == sorted(ids(5))


def test_alert_events_from_the_engine_go_through_a_sink_worker(tmp_path: Path) -> None:
    with Receiver().start() as receiver:
        hook = webhook(receiver.url())
        with delivering(tmp_path / "a.db", [hook]) as (outbox, worker):
            sink = SinkWorker("alerts", worker.sink(), retry=True)
            try:
                sink.put_many([*opened(2), AlertEvent(alert(1, signals=3), opened=False)])
                assert sink.flush(10)
                assert worker.wait_idle(30)
            finally:
                sink.close()
            stored = outbox.alert(alert(1).id)
    assert stored is not None
    assert stored.signals == 3
    assert sorted(receiver.alert_ids()) == sorted(ids(2))  # an update sends nothing new


# -- Apprise ----------------------------------------------------------------------------


def test_an_apprise_url_delivers_the_alert_through_apprise(tmp_path: Path) -> None:
    with Receiver().start() as receiver:
        receiver.plan(500)  # Apprise reports the failure; the alert is retried
        chat = Destination(
            name="chat",
            url=f"json://127.0.0.1:{receiver.port}/notify",
            timeout_s=5.0,
            backoff_first_s=0.05,
            backoff_cap_s=0.5,
        )
        with delivering(tmp_path / "a.db", [chat], opened(1, start=7)) as (outbox, worker):
            assert worker.wait_idle(30)
            (row,) = outbox.deliveries()
            got = stats(worker, "chat")
    failed, delivered = receiver.requests
    assert (failed.status, delivered.status) == (500, 200)
    assert delivered.path == "/notify"
    body = delivered.json()
    assert body["title"] == "CRITICAL BTCUSDT whale"
    assert alert(7).summary in body["message"]
    assert alert(7).id in body["message"]
    assert body["type"] == "failure"  # Apprise's name for the critical severity
    assert (row.state, row.attempts) == ("sent", 2)
    assert (got.sent, got.failed_attempts, got.kind) == (1, 1, "apprise")
