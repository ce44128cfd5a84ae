"""The alert outbox (SQLite, a fake clock) and the pure delivery policy: what is stored,
once; leases, backoff and dead letters; the rate cap's plan; signatures and Retry-After."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from spikewatch.alerting import Destination, Outbox, OutboxSchemaTooNew, signature, verify
from spikewatch.alerting.messages import (
    Message,
    plan,
    retry_after_seconds,
    retry_delay,
    summary_id,
    text,
    webhook_body,
)
from spikewatch.alerting.outbox import MIGRATIONS, SCHEMA_VERSION
from spikewatch.core.alerts import Alert, AlertEvent

from helpers import wait_until

T0 = 1_723_161_600.0  # 2024-08-09T00:00:00Z


class Clock:
    """Wall-clock seconds that move only when told."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def alert(n: int, *, signals: int = 1, symbol: str = "BTCUSDT") -> Alert:
    """Alert number ``n`` (its id and times follow from ``n``)."""
    time_us = int(T0 * 1e6) + n * 1_000_000
    return Alert(
        id=f"whale:binance:{symbol}:{1000 + n}",
        rule="whale",
        severity="warning",
        exchange="binance",
        symbol=symbol,
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
        summary=f"{symbol} whale: notional buy $200.00k at 60,000 on binance #{n}",
    )


def opened(n: int) -> AlertEvent:
    return AlertEvent(alert(n), opened=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "spikewatch.db", ["telegram", "hook"], clock=clock)
    yield box
    box.close()


# -- storing alerts ---------------------------------------------------------------------


def test_a_new_alert_is_stored_with_a_pending_delivery_per_destination(outbox: Outbox) -> None:
    assert outbox.add([opened(1)]) == 1
    assert outbox.alert(alert(1).id) == alert(1)
    rows = outbox.deliveries(alert(1).id)
    assert [(r.destination, r.state, r.attempts) for r in rows] == [
        ("hook", "pending", 0),
        ("telegram", "pending", 0),
    ]
    assert rows[0].next_attempt_at == T0


def test_an_alert_raised_again_after_a_restart_is_not_added_twice(
    tmp_path: Path, outbox: Outbox, clock: Clock
) -> None:
    outbox.add([opened(1), opened(2)])
    outbox.mark_sent("hook", [alert(1).id], alert(1).id)
    outbox.close()
    # the next process re-processes the same trades: the same ids come again
    again = Outbox(tmp_path / "spikewatch.db", ["telegram", "hook"], clock=clock)
    try:
        assert again.add([opened(1), opened(2), opened(1)]) == 0
        states = {(r.alert_id, r.destination): r.state for r in again.deliveries()}
        assert len(states) == 4
        assert states[(alert(1).id, "hook")] == "sent"  # not pending again
    finally:
        again.close()


def test_a_fold_updates_the_alert_but_an_older_state_never_overwrites_it(
    outbox: Outbox,
) -> None:
    outbox.add([opened(1)])
    outbox.add([AlertEvent(alert(1, signals=3), opened=False)])
    assert outbox.alert(alert(1).id) == alert(1, signals=3)
    assert len(outbox.deliveries(alert(1).id)) == 2  # still one delivery per destination
    # a restart re-raises the opening (one signal): the stored fold stays
    outbox.add([opened(1), AlertEvent(alert(1, signals=2), opened=False)])
    assert outbox.alert(alert(1).id) == alert(1, signals=3)


def test_an_update_whose_opening_was_never_stored_is_delivered(outbox: Outbox) -> None:
    assert outbox.add([AlertEvent(alert(7, signals=2), opened=False)]) == 1
    assert {r.state for r in outbox.deliveries(alert(7).id)} == {"pending"}


def test_adding_is_one_transaction(outbox: Outbox) -> None:
    def events() -> Iterator[AlertEvent]:
        yield opened(1)
        raise RuntimeError("the producer broke half-way")

    with pytest.raises(RuntimeError):
        outbox.add(events())
    assert outbox.alert(alert(1).id) is None
    assert outbox.deliveries() == []


# -- due, leases, failures --------------------------------------------------------------


def test_due_deliveries_come_oldest_alert_first_and_a_lease_hides_them_until_it_ends(
    tmp_path: Path, outbox: Outbox, clock: Clock
) -> None:
    outbox.add([opened(3), opened(1), opened(2)])
    due = outbox.due("hook", clock(), 10)
    assert [d.alert_id for d in due] == [alert(1).id, alert(2).id, alert(3).id]
    assert due[0].alert == alert(1)
    assert due[0].attempts == 0

    assert outbox.lease("hook", [alert(1).id], clock() + 30) == [alert(1).id]
    other = Outbox(tmp_path / "spikewatch.db", ["telegram", "hook"], clock=clock)
    try:  # another process on the same file
        assert [d.alert_id for d in other.due("hook", clock(), 10)] == [
            alert(2).id,
            alert(3).id,
        ]
        assert other.lease("hook", [alert(1).id, alert(2).id], clock() + 30) == [alert(2).id]
    finally:
        other.close()
    # the lease holder died: the rows are due again once the lease is over
    clock.now += 31
    assert len(outbox.due("hook", clock(), 10)) == 3
    assert len(outbox.due("telegram", clock(), 10)) == 3  # destinations are apart


def test_failures_back_off_then_dead_letter_after_max_attempts(
    outbox: Outbox, clock: Clock
) -> None:
    outbox.add([opened(1)])
    ids = [alert(1).id]
    delays = {1: 2.0, 2: 4.0}
    failed = outbox.mark_failed("hook", ids, "HTTP 500", max_attempts=3, delay=delays.__getitem__)
    assert failed.dead == []
    assert failed.retry_at == T0 + 2.0
    assert outbox.due("hook", clock(), 10) == []
    assert outbox.next_due_at("hook") == T0 + 2.0
    clock.now = T0 + 2.0
    failed = outbox.mark_failed("hook", ids, "timed out", max_attempts=3, delay=delays.__getitem__)
    assert failed.retry_at == T0 + 6.0
    clock.now = T0 + 6.0
    failed = outbox.mark_failed("hook", ids, "HTTP 503", max_attempts=3, delay=delays.__getitem__)
    assert failed.dead == ids
    assert failed.retry_at is None
    (row,) = [r for r in outbox.deliveries() if r.destination == "hook"]
    assert (row.state, row.attempts, row.last_error) == ("dead", 3, "HTTP 503")
    counts = outbox.counts("hook")
    assert (counts.sent, counts.pending, counts.dead) == (0, 0, 1)
    assert counts.last_error == "HTTP 503"
    assert outbox.next_due_at("hook") is None
    # an operator gives the dead a fresh set of attempts
    assert outbox.requeue_dead("hook") == 1
    assert [d.attempts for d in outbox.due("hook", clock(), 10)] == [0]


def test_sent_rows_are_counted_by_message_for_the_rate_cap(outbox: Outbox, clock: Clock) -> None:
    outbox.add([opened(n) for n in range(1, 6)])
    outbox.mark_sent("hook", [alert(1).id], alert(1).id)
    clock.now += 10
    ids = [alert(n).id for n in range(2, 6)]
    assert outbox.mark_sent("hook", ids, summary_id(ids)) == 4
    assert outbox.mark_sent("hook", ids, summary_id(ids)) == 0  # already sent: no change
    assert outbox.sent_since("hook", T0 - 60) == (2, T0)
    assert outbox.sent_since("hook", T0 + 1) == (1, T0 + 10)
    assert outbox.sent_since("telegram", T0 - 60) == (0, None)
    counts = outbox.counts("hook")
    assert (counts.sent, counts.pending, counts.last_sent_at) == (5, 0, T0 + 10)


def test_an_alert_stored_by_another_version_comes_back_unreadable(
    tmp_path: Path, outbox: Outbox, clock: Clock
) -> None:
    outbox.add([opened(1)])
    with sqlite3.connect(tmp_path / "spikewatch.db") as conn:
        conn.execute("UPDATE alerts SET payload = ?", (b'{"id": 1}',))
    (due,) = outbox.due("hook", clock(), 10)
    assert due.alert_id == alert(1).id
    assert due.alert is None


def test_prune_forgets_old_alerts_with_nothing_pending(outbox: Outbox, clock: Clock) -> None:
    outbox.add([opened(1), opened(2)])
    for name in ("hook", "telegram"):
        outbox.mark_sent(name, [alert(1).id], alert(1).id)
    clock.now += 86_400
    assert outbox.prune(before=clock.now - 3600) == 1
    assert outbox.alert(alert(1).id) is None
    assert outbox.alert(alert(2).id) is not None
    assert {r.alert_id for r in outbox.deliveries()} == {alert(2).id}


# -- the alert log (Outbox.page) --------------------------------------------------------


def other(
    n: int, *, rule: str = "whale", exchange: str = "binance", symbol: str = "BTCUSDT"
) -> Alert:
    """Alert number ``n`` of another rule, exchange or symbol (its id says which)."""
    base = alert(n, symbol=symbol)
    return msgspec.structs.replace(
        base, id=f"{rule}:{exchange}:{symbol}:{1000 + n}", rule=rule, exchange=exchange
    )


def test_the_alert_log_pages_newest_first_and_every_alert_comes_once(outbox: Outbox) -> None:
    outbox.add([opened(n) for n in (4, 1, 5, 3, 2)])
    seen: list[str] = []
    page = outbox.page(limit=2)
    pages = 1
    seen += [a.id for a in page.alerts]
    while page.next_cursor is not None:
        page = outbox.page(limit=2, after=page.next_cursor)
        seen += [a.id for a in page.alerts]
        pages += 1
    assert seen == [alert(n).id for n in (5, 4, 3, 2, 1)]
    assert pages == 3
    assert outbox.page(limit=5).next_cursor is None  # exactly one page: no cursor


def test_alerts_at_the_same_moment_are_ordered_by_id_across_pages(outbox: Outbox) -> None:
    same = [msgspec.structs.replace(alert(1), id=f"whale:binance:BTCUSDT:{i}") for i in "abc"]
    outbox.add([AlertEvent(a, opened=True) for a in same])
    first = outbox.page(limit=2)
    assert first.next_cursor is not None
    second = outbox.page(limit=2, after=first.next_cursor)
    assert [a.id for a in first.alerts + second.alerts] == [a.id for a in reversed(same)]


def test_the_alert_log_filters_by_rule_exchange_symbol_and_time(outbox: Outbox) -> None:
    outbox.add(
        [
            AlertEvent(other(1), opened=True),
            AlertEvent(other(2, rule="surge"), opened=True),
            AlertEvent(other(3, exchange="binance-usdm"), opened=True),
            AlertEvent(other(4, symbol="ETHUSDT"), opened=True),
            AlertEvent(other(5), opened=True),
        ]
    )

    def ids(**filters: str | int) -> list[int]:
        page = outbox.page(**filters)  # type: ignore[arg-type]
        return [int(a.id.rsplit(":", 1)[1]) - 1000 for a in page.alerts]

    assert ids() == [5, 4, 3, 2, 1]
    assert ids(rule="surge") == [2]
    assert ids(exchange="binance") == [5, 4, 2, 1]
    assert ids(exchange="binance", symbol="ETHUSDT") == [4]
    assert ids(symbol="BTCUSDT", rule="whale") == [5, 3, 1]
    t2, t4 = other(2).time_us, other(4).time_us
    assert ids(since_us=t2, until_us=t4) == [3, 2]  # since inclusive, until exclusive
    assert ids(rule="nothing") == []


def test_a_page_shows_the_latest_fold_and_the_delivery_states(outbox: Outbox, clock: Clock) -> None:
    outbox.add([opened(1), opened(2)])
    outbox.add([AlertEvent(alert(1, signals=4), opened=False)])
    outbox.mark_sent("hook", [alert(1).id], alert(1).id)
    outbox.mark_failed("telegram", [alert(1).id], "HTTP 500", max_attempts=1, delay=float)

    page = outbox.page()

    assert page.alerts == [alert(2), alert(1, signals=4)]
    assert page.deliveries == {
        alert(1).id: {"hook": "sent", "telegram": "dead"},
        alert(2).id: {"hook": "pending", "telegram": "pending"},
    }


def test_reading_the_log_never_waits_behind_a_write(tmp_path: Path, outbox: Outbox) -> None:
    outbox.add([opened(1)])
    with sqlite3.connect(tmp_path / "spikewatch.db", isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")  # another writer (the store's) holds the file
        adding = threading.Thread(target=outbox.add, args=([opened(2)],))
        adding.start()  # waits for that writer, holding the outbox's own lock
        try:
            wait_until(outbox._lock.locked, 10)
            assert outbox.page().alerts == [alert(1)]  # answered meanwhile
            assert adding.is_alive(), "the page came while the write still waited"
        finally:
            other.execute("COMMIT")
            adding.join(10)
    assert [a.id for a in outbox.page().alerts] == [alert(2).id, alert(1).id]


def test_an_alert_another_version_wrote_is_left_out_of_the_log(
    tmp_path: Path, outbox: Outbox
) -> None:
    outbox.add([opened(1), opened(2), opened(3)])
    with sqlite3.connect(tmp_path / "spikewatch.db") as conn:
        conn.execute("UPDATE alerts SET payload = ? WHERE id = ?", (b'{"id": 1}', alert(3).id))
    first = outbox.page(limit=1)
    assert first.alerts == []  # unreadable, but the cursor moves past it
    assert first.next_cursor is not None
    assert outbox.page(limit=5, after=first.next_cursor).alerts == [alert(2), alert(1)]


# -- the schema -------------------------------------------------------------------------


def test_the_outbox_keeps_its_own_schema_beside_the_signal_store(tmp_path: Path) -> None:
    from spikewatch.store.sqlite import SQLiteSignalStore

    db = tmp_path / "spikewatch.db"
    SQLiteSignalStore(db).close()
    with sqlite3.connect(db) as conn:
        store_version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert store_version > 0
    for _ in range(2):  # opening again migrates nothing and changes nothing
        box = Outbox(db, ["hook"])
        assert box.schema_version() == SCHEMA_VERSION == 2
        box.add([opened(1)])
        box.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store_version
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM alerting_schema").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 1
    SQLiteSignalStore(db).close()  # and the store still opens


def test_alerts_stored_by_the_first_schema_are_in_the_log_after_the_upgrade(
    tmp_path: Path,
) -> None:
    db = tmp_path / "spikewatch.db"
    first = MIGRATIONS[0]
    assert isinstance(first, str)
    with sqlite3.connect(db) as conn:  # a database as the first outbox left it
        conn.executescript(first)
        conn.execute("CREATE TABLE alerting_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO alerting_schema VALUES (1)")
        for n, payload in ((1, msgspec.json.encode(alert(1))), (2, b"{}")):
            conn.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, 1, ?, ?, ?)",
                (alert(n).id, alert(n).time_us, alert(n).time_us, payload, T0, T0),
            )
    box = Outbox(db, ["hook"])
    try:
        assert box.schema_version() == 2
        assert box.page(exchange="binance", symbol="BTCUSDT", rule="whale").alerts == [alert(1)]
        assert [a.id for a in box.page().alerts] == [alert(1).id]  # the unreadable one: out
    finally:
        box.close()
    with sqlite3.connect(db) as conn:  # a page of one exchange is read in order, not sorted
        query_plan = str(
            conn.execute(
                "EXPLAIN QUERY PLAN SELECT payload FROM alerts WHERE exchange = ? "
                "ORDER BY time_us DESC, id DESC LIMIT 10",
                ("binance",),
            ).fetchall()
        )
    assert "alerts_by_exchange" in query_plan
    assert "TEMP B-TREE" not in query_plan


def test_an_outbox_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "spikewatch.db"
    Outbox(db, ["hook"]).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alerting_schema SET version = 99")
    with pytest.raises(OutboxSchemaTooNew, match="schema version 99"):
        Outbox(db, ["hook"])


# -- the pure policy --------------------------------------------------------------------


def test_within_the_rate_cap_each_alert_goes_alone() -> None:
    alerts = [alert(n) for n in range(5)]
    for budget in (None, 5, 9):
        messages = plan(alerts, budget)
        assert [m.kind for m in messages] == ["alert"] * 5
        assert [m.id for m in messages] == [a.id for a in alerts]


def test_over_the_rate_cap_the_rest_shares_one_summary() -> None:
    alerts = [alert(n) for n in range(50)]
    messages = plan(alerts, 5)
    assert [m.kind for m in messages] == ["alert"] * 4 + ["summary"]
    assert [a.id for m in messages for a in m.alerts] == [a.id for a in alerts]
    assert messages[-1].id == summary_id([a.id for a in reversed(alerts[4:])])
    assert plan(alerts, 0) == []
    # one message left: the summary holds what fits, the rest waits for the next slot
    (only,) = plan(alerts, 1, summary_max=20)
    assert len(only.alerts) == 20
    assert [m.kind for m in plan(alerts[:3], 2)] == ["alert", "summary"]
    # a "summary" of one alert is just that alert
    assert [m.id for m in plan(alerts[:3], 2, summary_max=1)] == [alerts[0].id, alerts[1].id]


def test_a_summary_tells_how_many_alerts_it_carries() -> None:
    (message,) = plan([alert(n) for n in range(30)], 1)
    title, body = text(message)
    assert "30 more alerts" in title
    assert body.startswith("30 more alerts:\n- BTCUSDT whale")
    assert body.endswith("... and 10 more")
    payload = msgspec.json.decode(webhook_body(message))
    assert payload["type"] == "summary"
    assert payload["count"] == 30
    assert payload["text"].startswith("30 more alerts: BTCUSDT whale")
    assert [a["id"] for a in payload["alerts"]] == [alert(n).id for n in range(30)]


def test_a_single_alert_body_carries_the_alert() -> None:
    message = Message(alert(1).id, "alert", (alert(1),))
    payload = msgspec.json.decode(webhook_body(message))
    assert payload["type"] == "alert"
    assert payload["id"] == alert(1).id
    assert msgspec.convert(payload["alerts"][0], Alert) == alert(1)
    title, body = text(message)
    assert title == "WARNING BTCUSDT whale"
    assert alert(1).summary in body
    assert alert(1).id in body


def test_the_signature_is_the_hmac_sha256_of_the_body() -> None:
    # RFC 4231-style known value (the classic "quick brown fox" HMAC-SHA256 vector)
    body = b"The quick brown fox jumps over the lazy dog"
    expected = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert signature("key", body) == f"sha256={expected}"
    assert verify("key", body, f"sha256={expected}")
    assert not verify("key", body + b" ", f"sha256={expected}")
    assert not verify("other", body, f"sha256={expected}")


def test_retry_delays_double_with_jitter_up_to_the_cap() -> None:
    low = [retry_delay(n, 2.0, 60.0, lambda: 0.0) for n in range(1, 8)]
    high = [retry_delay(n, 2.0, 60.0, lambda: 1.0) for n in range(1, 8)]
    assert low == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert high == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert retry_delay(10_000, 2.0, 60.0, lambda: 0.5) == 45.0  # no overflow


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert retry_after_seconds("120", T0) == 120.0
    assert retry_after_seconds("Fri, 09 Aug 2024 00:00:30 GMT", T0) == 30.0
    assert retry_after_seconds("Thu, 08 Aug 2024 00:00:00 GMT", T0) == 0.0
    for junk in (None, "", "soon", "-5", "1.5"):
        assert retry_after_seconds(junk, T0) is None


def test_a_destination_is_checked_and_never_shows_its_credentials() -> None:
    hook = Destination(name="ops", url="https://example.org/h", kind="webhook", secret="s3cr3t")
    assert "s3cr3t" not in repr(hook)
    assert "example.org" not in f"{hook}"
    with pytest.raises(ValueError, match="needs a secret"):
        Destination(name="ops", url="https://example.org/h", kind="webhook")
    with pytest.raises(ValueError, match=r"http\(s\)"):
        Destination(name="ops", url="tgram://token/chat", kind="webhook", secret="s")
    with pytest.raises(ValueError, match="max_attempts"):
        Destination(name="tg", url="tgram://token/chat", max_attempts=0)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"name": "tg", "url": "tgram://t/c", "retries": 3}, Destination)
    table = {"name": "tg", "url": "tgram://t/c", "max_per_minute": 6}
    assert msgspec.convert(table, Destination).max_per_minute == 6
