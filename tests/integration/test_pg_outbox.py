"""The PostgreSQL alert outbox (the distributed mode's) against the real server: the same
contract as the SQLite outbox, side by side on the same calls, and claims that hold
between workers: many claimers on the same due rows, each row taken once.

Without PostgreSQL these tests skip on a developer's machine and FAIL under CI."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from spikewatch.alerting.outbox import Outbox
from spikewatch.alerting.pg_outbox import SCHEMA_VERSION, PostgresOutbox
from spikewatch.alerting.port import OutboxPort
from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.store.postgres import PostgresSignalStore

from helpers import spike_signal
from roles_kit import POSTGRES_URL, require_servers, with_search_path

T0 = 1_723_161_600.0  # 2024-08-09T00:00:00Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def alert(n: int, *, signals: int = 1) -> Alert:
    time_us = int(T0 * 1e6) + n * 1_000_000
    return Alert(
        id=f"whale:binance:BTCUSDT:{1000 + n}",
        rule="whale",
        severity="warning",
        exchange="binance",
        symbol="BTCUSDT",
        side="buy",
        timestamp="2024-08-09T00:00:00.000000Z",
        time_us=time_us,
        last_time_us=time_us + (signals - 1) * 1_000_000,
        price=60_000.0,
        usd_value=200_000.0,
        usd_total=200_000.0 * signals,
        signals=signals,
        detectors=["notional"],
        first_signal=f"notional:{1000 + n}",
        summary=f"BTCUSDT whale #{n}",
    )


@pytest.fixture
def store() -> Iterator[PostgresSignalStore]:
    require_servers()
    schema = f"sw_outbox_{secrets.token_hex(5)}"
    made = PostgresSignalStore(POSTGRES_URL, schema=schema, max_connections=16)
    try:
        yield made
    finally:
        made.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def both(tmp: Path, store: PostgresSignalStore, clock: Clock) -> list[OutboxPort]:
    return [
        Outbox(tmp / "spikewatch.db", ["hook", "chat"], clock=clock),
        PostgresOutbox(store.connection, ["hook", "chat"], clock=clock),
    ]


def test_both_outboxes_answer_the_same_calls_alike(
    tmp_path: Path, store: PostgresSignalStore
) -> None:
    clock = Clock()
    results = []
    for box in both(tmp_path, store, clock):
        clock.now = T0
        seen: list[object] = []
        seen.append(box.add([AlertEvent(alert(n), opened=True) for n in range(5)]))
        seen.append(box.add([AlertEvent(alert(2), opened=True)]))  # again: ignored
        seen.append(box.add([AlertEvent(alert(3, signals=3), opened=False)]))  # a fold
        seen.append([(d.alert_id, d.attempts) for d in box.due("hook", T0, 10)])
        seen.append(box.lease("hook", [alert(0).id, alert(1).id], T0 + 30))
        seen.append(box.lease("hook", [alert(0).id, alert(2).id], T0 + 30))  # 0 is taken
        seen.append(box.mark_sent("hook", [alert(0).id], "m0"))
        failed = box.mark_failed(
            "hook", [alert(1).id, alert(2).id], "HTTP 503", max_attempts=2, delay=lambda n: 5.0
        )
        seen.append((failed.dead, failed.retry_at))
        failed = box.mark_failed(
            "hook", [alert(1).id], "HTTP 503", max_attempts=2, delay=lambda n: 5.0
        )
        seen.append((failed.dead, failed.retry_at))
        clock.now = T0 + 1
        seen.append(box.sent_since("hook", T0 - 60))
        seen.append(box.next_due_at("hook"))
        seen.append(box.counts("hook"))
        seen.append(box.counts("chat"))
        due = box.due("chat", T0 + 1, 10)
        seen.append([d.alert.signals if d.alert else None for d in due])
        results.append(seen)
    sqlite, postgres = results
    assert postgres == sqlite
    assert postgres[0] == 5
    assert postgres[1] == 0
    assert postgres[5] == [alert(2).id]
    assert postgres[8] == ([alert(1).id], None)  # dead after 2 attempts
    assert postgres[13] == [1, 1, 1, 3, 1]  # the fold replaced alert 3's JSON


def test_many_workers_claiming_the_same_rows_take_each_once(
    store: PostgresSignalStore,
) -> None:
    clock = Clock()
    boxes = [PostgresOutbox(store.connection, ["hook"], clock=clock) for _ in range(8)]
    ids = [alert(n).id for n in range(200)]
    # every worker stores every alert (replays, takeovers): one row each
    for box in boxes:
        box.add([AlertEvent(alert(n), opened=True) for n in range(200)])
    assert boxes[0].counts("hook").pending == 200
    taken: list[list[str]] = [[] for _ in boxes]
    start = threading.Barrier(len(boxes))

    def claim(i: int) -> None:
        start.wait()
        for chunk in range(0, 200, 10):  # each claims every row, in chunks
            taken[i].extend(boxes[i].lease("hook", ids[chunk : chunk + 10], T0 + 30))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(boxes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = Counter(a for got in taken for a in got)
    assert sorted(counts) == sorted(ids)  # every row claimed
    assert set(counts.values()) == {1}  # by one worker each
    # a claim runs out (the worker died mid-send): due again, for anyone
    assert boxes[0].lease("hook", ids[:5], T0 + 60) == []
    clock.now = T0 + 31
    assert boxes[1].lease("hook", ids[:5], T0 + 60) == ids[:5]


def test_workers_starting_together_make_the_tables_once(store: PostgresSignalStore) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PostgresOutbox(store.connection, ["hook"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    box = PostgresOutbox(store.connection, ["hook"])
    assert box.schema_version() == SCHEMA_VERSION == 2
    with psycopg.connect(with_search_path(POSTGRES_URL, store.schema or "")) as conn:
        rows = conn.execute("SELECT version FROM alerting_schema").fetchall()
    assert rows == [(SCHEMA_VERSION,)]


def test_both_outboxes_prune_old_delivered_alerts_and_never_an_undelivered_one(
    tmp_path: Path, store: PostgresSignalStore
) -> None:
    """Retention: alerts stored before the cut whose every delivery is done (sent or dead)
    go with their deliveries; one still pending to any destination stays, however old;
    a second prune removes nothing more."""
    clock = Clock()
    for box in both(tmp_path, store, clock):
        clock.now = T0
        box.add([AlertEvent(alert(n), opened=True) for n in range(6)])
        ids = [alert(n).id for n in range(6)]
        box.mark_sent("hook", ids[:4], "m1")
        box.mark_sent("chat", ids[:2], "m2")
        box.mark_failed("chat", ids[2:3], "gone", max_attempts=1, delay=float)  # dead
        clock.now = T0 + 100
        box.add([AlertEvent(alert(9), opened=True)])  # new: after the cut
        box.mark_sent("hook", [alert(9).id], "m3")
        box.mark_sent("chat", [alert(9).id], "m3")
        # alerts 0-2: all done; 3: chat pending; 4, 5: both pending; 9: too recent
        assert box.prune(T0 + 50) == 3
        assert box.prune(T0 + 50) == 0
        left = sorted({d.alert_id for d in box.deliveries()})  # type: ignore[attr-defined]
        assert left == sorted([*ids[3:], alert(9).id])
        assert box.alert(ids[0]) is None  # type: ignore[attr-defined]
        assert box.alert(ids[3]) is not None  # type: ignore[attr-defined]
        assert box.prune(T0 + 1000) == 1  # alert 9, delivered everywhere


def test_a_fetchs_signals_and_alerts_commit_together_or_not_at_all(
    store: PostgresSignalStore,
) -> None:
    """detect writes a fetch's signals and alert events in one transaction
    (``store.transaction()``): a failure before the commit leaves neither, a replay of
    the same fetch adds nothing, and a reader on another connection sees both or none."""
    outbox = PostgresOutbox(store.connection, ["hook"])
    signals = [spike_signal("binance", 1000 + n, int(T0 * 1e6) + n) for n in range(3)]
    events = [AlertEvent(alert(n), opened=True) for n in range(2)]

    def fails_before_the_commit() -> None:
        with store.transaction() as conn:
            assert store.add_in(conn, signals) == 3
            assert outbox.add(events, conn) == 2
            raise RuntimeError("the worker fails before the commit")

    with pytest.raises(RuntimeError, match="before the commit"):
        fails_before_the_commit()
    assert store.max_seq() == 0
    assert outbox.alert(alert(0).id) is None

    with store.transaction() as conn:
        store.add_in(conn, signals)
        outbox.add(events, conn)
        # not committed yet: another connection sees neither
        assert store.max_seq() == 0
        assert outbox.alert(alert(0).id) is None
    assert [s.id for _, s in store.after_seq(0, 10)] == [s.id for s in signals]
    assert outbox.alert(alert(1).id) == alert(1)
    assert outbox.counts("hook").pending == 2

    with store.transaction() as conn:  # the fetch again (a redelivery): nothing new
        assert store.add_in(conn, signals) == 0
        assert outbox.add(events, conn) == 0
    assert store.max_seq() == 3
    assert outbox.counts("hook").pending == 2
