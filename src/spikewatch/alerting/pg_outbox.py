"""The alert outbox in PostgreSQL: the distributed mode's, shared by every detect worker.

The same contract as the SQLite :class:`~spikewatch.alerting.outbox.Outbox` (the delivery
worker cannot tell them apart: :class:`~spikewatch.alerting.port.OutboxPort`), on the
PostgreSQL store's connection pool and in its schema, with its own tables and schema
version (``alerting_schema``), as the SQLite outbox keeps its own beside the store's.

What makes several workers deliver each alert once:

* **One row per alert id.** Alert ids are deterministic, so a worker that takes a
  partition over and replays trades raises the same alerts: ``INSERT ... ON CONFLICT DO
  NOTHING`` keeps the first (a later fold only updates its JSON), and the deliveries are
  added only with the alert, once.
* **A claim before each send.** :meth:`PostgresOutbox.lease` moves the rows' next attempt
  to the end of the send's lease in one statement, on rows picked ``FOR UPDATE SKIP
  LOCKED`` and still due: two workers claiming the same row at once, one gets it, the
  other skips it (it neither waits nor sends). A worker that dies mid-send leaves its
  rows due again when the lease ends; any worker then sends them.
* **Marked sent right after the receiver's 2xx**, in its own transaction.

Times are wall-clock seconds of the worker's machine (as in SQLite): the workers' clocks
must agree to well within a lease (``2 x timeout_s + 10`` s), as NTP keeps them.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

import msgspec
import psycopg
from psycopg.rows import TupleRow

from spikewatch.alerting.outbox import (
    AlertPage,
    Counts,
    Delivery,
    DeliveryState,
    Due,
    Failed,
    OutboxSchemaTooNew,
)
from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.store.base import Cursor
from spikewatch.store.sql import filters

#: Each entry moves the alerting schema from version i to i + 1; append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS alerts (
        id text COLLATE "C" PRIMARY KEY,
        rule text COLLATE "C" NOT NULL,
        exchange text COLLATE "C" NOT NULL,
        symbol text COLLATE "C" NOT NULL,
        time_us bigint NOT NULL,
        last_time_us bigint NOT NULL,
        signals integer NOT NULL,
        payload bytea NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE INDEX IF NOT EXISTS alerts_by_exchange_time ON alerts (exchange, time_us, id);
    CREATE TABLE IF NOT EXISTS alert_deliveries (
        alert_id text COLLATE "C" NOT NULL,
        destination text COLLATE "C" NOT NULL,
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision NOT NULL,
        last_error text,
        sent_at double precision,
        message text,
        PRIMARY KEY (alert_id, destination)
    );
    CREATE INDEX IF NOT EXISTS alert_deliveries_due
        ON alert_deliveries (destination, state, next_attempt_at);
    CREATE INDEX IF NOT EXISTS alert_deliveries_sent ON alert_deliveries (destination, sent_at);
    """,
    # v2: serve reads what changed lately (its live push); retention prunes by age
    """
    CREATE INDEX IF NOT EXISTS alerts_by_exchange_updated ON alerts (exchange, updated_at);
    CREATE INDEX IF NOT EXISTS alerts_by_created ON alerts (created_at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

#: First key of the migration's advisory lock ("SW", 3: the store's are 1 and 2)
_MIGRATE_LOCK = 0x5357_0003

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Alert).decode

Connect = Callable[[], AbstractContextManager[psycopg.Connection[TupleRow]]]


class Changed(msgspec.Struct, frozen=True):
    """An alert as stored, and when it was first stored and last folded into (seconds)."""

    alert: Alert
    created_at: float
    updated_at: float


class PostgresOutbox:
    """Alerts waiting for delivery to ``destinations`` (their names), in the database of
    ``connect`` (a pooled connection per call, autocommit, as
    :meth:`~spikewatch.store.postgres.PostgresSignalStore.connection` gives)."""

    def __init__(
        self,
        connect: Connect,
        destinations: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connect = connect
        self.destinations = tuple(destinations)
        self._clock = clock
        self._migrate()

    def _migrate(self) -> None:
        with self._connect() as conn, conn.transaction():
            row = conn.execute("SELECT current_schema()").fetchone()
            schema = str(row[0]) if row and row[0] else "public"
            key = zlib.crc32(schema.encode())
            key = key - 2**32 if key >= 2**31 else key
            # two workers starting together: the second waits, then finds it done
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_MIGRATE_LOCK, key))
            conn.execute("CREATE TABLE IF NOT EXISTS alerting_schema (version integer NOT NULL)")
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM alerting_schema").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise OutboxSchemaTooNew(
                    f"the alert outbox in PostgreSQL (schema {schema}) has version {version}, "
                    f"newer than this spikewatch's ({SCHEMA_VERSION}); upgrade spikewatch"
                )
            for step in range(version, SCHEMA_VERSION):
                conn.execute(MIGRATIONS[step])
            if version != SCHEMA_VERSION:
                conn.execute("DELETE FROM alerting_schema")
                conn.execute("INSERT INTO alerting_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        """The alerting schema's version in the database."""
        with self._connect() as conn:
            row = conn.execute("SELECT MAX(version) FROM alerting_schema").fetchone()
        return int(row[0]) if row else 0

    def add(
        self, events: Iterable[AlertEvent], conn: psycopg.Connection[TupleRow] | None = None
    ) -> int:
        """Store these alert events in one transaction; returns how many alerts are new
        (the contract of :meth:`spikewatch.alerting.outbox.Outbox.add`). With ``conn``,
        in that connection's transaction, committed by its owner (detect: with the
        fetch's signals, :meth:`~spikewatch.store.postgres.PostgresSignalStore.transaction`)."""
        if conn is not None:
            return self._add(conn, events)
        with self._connect() as own, own.transaction():
            return self._add(own, events)

    def _add(self, conn: psycopg.Connection[TupleRow], events: Iterable[AlertEvent]) -> int:
        now = self._clock()
        added = 0
        for event in events:
            alert = event.alert
            payload = _encode(alert)
            cur = conn.execute(
                "INSERT INTO alerts (id, rule, exchange, symbol, time_us, last_time_us, "
                "signals, payload, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (
                    alert.id,
                    alert.rule,
                    alert.exchange,
                    alert.symbol,
                    alert.time_us,
                    alert.last_time_us,
                    alert.signals,
                    payload,
                    now,
                    now,
                ),
            )
            if cur.rowcount == 1:
                added += 1
                if self.destinations:
                    conn.execute(
                        "INSERT INTO alert_deliveries (alert_id, destination, "
                        "next_attempt_at) SELECT %s, unnest(%s::text[]), %s "
                        "ON CONFLICT DO NOTHING",
                        (alert.id, list(self.destinations), now),
                    )
            else:
                conn.execute(
                    "UPDATE alerts SET payload = %s, last_time_us = %s, signals = %s, "
                    "updated_at = %s WHERE id = %s AND (last_time_us, signals) < (%s, %s)",
                    (
                        payload,
                        alert.last_time_us,
                        alert.signals,
                        now,
                        alert.id,
                        alert.last_time_us,
                        alert.signals,
                    ),
                )
        return added

    def due(self, destination: str, now: float, limit: int) -> list[Due]:
        """Pending deliveries to ``destination`` due at ``now``, oldest alert first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT d.alert_id, d.attempts, a.payload FROM alert_deliveries AS d "
                "JOIN alerts AS a ON a.id = d.alert_id "
                "WHERE d.destination = %s AND d.state = 'pending' AND d.next_attempt_at <= %s "
                "ORDER BY a.time_us, d.alert_id LIMIT %s",
                (destination, now, limit),
                binary=True,
            ).fetchall()
        out = []
        for alert_id, attempts, payload in rows:
            try:
                alert: Alert | None = _decode(bytes(payload))
            except msgspec.DecodeError:
                alert = None
            out.append(Due(str(alert_id), int(attempts), alert))
        return out

    def lease(self, destination: str, alert_ids: Sequence[str], until: float) -> list[str]:
        """Claim these due deliveries for a send (see the module docstring): their next
        attempt moves to ``until``; returns the ids taken, in the order given."""
        if not alert_ids:
            return []
        now = self._clock()
        with self._connect() as conn:
            rows = conn.execute(
                "UPDATE alert_deliveries SET next_attempt_at = %s "
                "WHERE (alert_id, destination) IN ("
                "SELECT alert_id, destination FROM alert_deliveries "
                "WHERE destination = %s AND alert_id = ANY(%s) AND state = 'pending' "
                "AND next_attempt_at <= %s FOR UPDATE SKIP LOCKED) "
                "RETURNING alert_id",
                (until, destination, list(alert_ids), now),
            ).fetchall()
        taken = {str(row[0]) for row in rows}
        return [a for a in alert_ids if a in taken]

    def mark_sent(self, destination: str, alert_ids: Sequence[str], message_id: str) -> int:
        """Record a delivery the receiver acknowledged (committed at once)."""
        now = self._clock()
        with self._connect() as conn:
            cur = conn.execute(
                "UPDATE alert_deliveries SET state = 'sent', sent_at = %s, message = %s, "
                "attempts = attempts + 1, last_error = NULL "
                "WHERE destination = %s AND alert_id = ANY(%s) AND state = 'pending'",
                (now, message_id, destination, list(alert_ids)),
            )
            return max(cur.rowcount, 0)

    def mark_failed(
        self,
        destination: str,
        alert_ids: Sequence[str],
        error: str,
        *,
        max_attempts: int,
        delay: Callable[[int], float],
    ) -> Failed:
        """Record a failed attempt: each row retried ``delay(attempts)`` seconds from now,
        or dead-lettered once it has made ``max_attempts``."""
        now = self._clock()
        dead: list[str] = []
        retry_at: float | None = None
        with self._connect() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT alert_id, attempts FROM alert_deliveries WHERE destination = %s "
                "AND alert_id = ANY(%s) AND state = 'pending' ORDER BY alert_id FOR UPDATE",
                (destination, list(alert_ids)),
            ).fetchall()
            for alert_id, done in rows:
                attempts = int(done) + 1
                if attempts >= max_attempts:
                    state, when = "dead", now
                    dead.append(str(alert_id))
                else:
                    state, when = "pending", now + delay(attempts)
                    retry_at = when if retry_at is None else min(retry_at, when)
                conn.execute(
                    "UPDATE alert_deliveries SET state = %s, attempts = %s, "
                    "next_attempt_at = %s, last_error = %s "
                    "WHERE destination = %s AND alert_id = %s",
                    (state, attempts, when, error, destination, alert_id),
                )
        return Failed(dead, retry_at)

    def sent_since(self, destination: str, since: float) -> tuple[int, float | None]:
        """Messages sent to ``destination`` after ``since`` (by any worker; a summary is
        one), and when the oldest of them was sent."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT COUNT(DISTINCT message), MIN(sent_at) FROM alert_deliveries "
                "WHERE destination = %s AND state = 'sent' AND sent_at > %s",
                (destination, since),
            ).fetchone()
        assert row is not None
        return int(row[0]), None if row[1] is None else float(row[1])

    def next_due_at(self, destination: str) -> float | None:
        """When the next pending delivery to ``destination`` is due (None: none)."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT MIN(next_attempt_at) FROM alert_deliveries "
                "WHERE destination = %s AND state = 'pending'",
                (destination,),
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def counts(self, destination: str) -> Counts:
        """The destination's rows by state, its last delivery and its last error."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT state, COUNT(*), MAX(sent_at) FROM alert_deliveries "
                "WHERE destination = %s GROUP BY state",
                (destination,),
            ).fetchall()
            error = conn.execute(
                "SELECT last_error FROM alert_deliveries WHERE destination = %s "
                "AND state != 'sent' AND last_error IS NOT NULL "
                "ORDER BY next_attempt_at DESC LIMIT 1",
                (destination,),
            ).fetchone()
        by_state: dict[str, tuple[int, Any]] = {str(s): (int(n), last) for s, n, last in rows}
        sent, last_sent = by_state.get("sent", (0, None))
        return Counts(
            sent=sent,
            pending=by_state.get("pending", (0, None))[0],
            dead=by_state.get("dead", (0, None))[0],
            last_sent_at=None if last_sent is None else float(last_sent),
            last_error=None if error is None else str(error[0]),
        )

    def requeue_dead(self, destination: str | None = None) -> int:
        """Give dead-lettered deliveries (of one destination, or all) a fresh set of
        attempts, due now; returns how many."""
        query = "UPDATE alert_deliveries SET state = 'pending', attempts = 0, "
        query += "next_attempt_at = %s WHERE state = 'dead'"
        args: list[Any] = [self._clock()]
        if destination is not None:
            query += " AND destination = %s"
            args.append(destination)
        with self._connect() as conn:
            return max(conn.execute(query, args).rowcount, 0)

    def alert(self, alert_id: str) -> Alert | None:
        """The stored alert (its latest fold), if any."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT payload FROM alerts WHERE id = %s", (alert_id,), binary=True
            ).fetchone()
        return None if row is None else _decode(bytes(row[0]))

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
    ) -> AlertPage:
        """The alert log, as :meth:`spikewatch.alerting.outbox.Outbox.page` answers it:
        newest first (by the time of the first signal, then id), one page at a time, each
        alert's latest fold and its delivery states (one snapshot: a repeatable-read
        transaction for both)."""
        where, args = filters(
            (
                ("rule = %s", rule),
                ("exchange = %s", exchange),
                ("symbol = %s", symbol),
                ("time_us >= %s", since_us),
                ("time_us < %s", until_us),
            )
        )
        if after is not None:
            where.append("(time_us, id) < (%s, %s)")
            args.extend((after.time_us, after.id))
        sql = "SELECT payload, time_us, id FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_us DESC, id DESC LIMIT %s"
        args.append(limit + 1)
        with self._connect() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = conn.execute(sql, args, binary=True).fetchall()
            page = rows[:limit]
            ids = [str(row[2]) for row in page]
            states = conn.execute(
                "SELECT alert_id, destination, state FROM alert_deliveries "
                "WHERE alert_id = ANY(%s) ORDER BY alert_id, destination",
                (ids,),
            ).fetchall()
        alerts: list[Alert] = []
        for payload, _, _ in page:
            with contextlib.suppress(msgspec.DecodeError):
                alerts.append(_decode(bytes(payload)))
        deliveries: dict[str, dict[str, DeliveryState]] = {a.id: {} for a in alerts}
        for alert_id, destination, state in states:
            if alert_id in deliveries:
                deliveries[alert_id][str(destination)] = cast(DeliveryState, state)
        cursor = Cursor(int(page[-1][1]), str(page[-1][2])) if len(rows) > limit else None
        return AlertPage(alerts, cursor, deliveries)

    def changed_since(self, exchange: str, since: float, limit: int = 1000) -> list[Changed]:
        """The alerts of ``exchange`` stored or folded into at or after ``since``
        (wall-clock seconds of the workers), oldest change first: what ``spikewatch serve``
        pushes when the bus did not tell it (a message lost while NATS was away)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT payload, created_at, updated_at FROM alerts "
                "WHERE exchange = %s AND updated_at >= %s ORDER BY updated_at, id LIMIT %s",
                (exchange, since, limit),
                binary=True,
            ).fetchall()
        out = []
        for payload, created, updated in rows:
            with contextlib.suppress(msgspec.DecodeError):
                out.append(Changed(_decode(bytes(payload)), float(created), float(updated)))
        return out

    def prune(self, before: float) -> int:
        """Forget alerts stored before ``before`` (wall-clock seconds) that have nothing
        pending, and their deliveries; returns how many alerts were removed. Idempotent,
        so any number of workers may run it: a row another worker removed first is
        simply not counted twice."""
        with self._connect() as conn, conn.transaction():
            rows = conn.execute(
                "DELETE FROM alerts AS a WHERE a.created_at < %s AND NOT EXISTS ("
                "SELECT 1 FROM alert_deliveries AS d WHERE d.alert_id = a.id "
                "AND d.state = 'pending') RETURNING a.id",
                (before,),
            ).fetchall()
            if rows:
                conn.execute(
                    "DELETE FROM alert_deliveries WHERE alert_id = ANY(%s)",
                    ([str(r[0]) for r in rows],),
                )
        return len(rows)

    def deliveries(self, alert_id: str | None = None) -> list[Delivery]:
        """Delivery rows (of one alert, or all), by alert id and destination."""
        query = (
            "SELECT alert_id, destination, state, attempts, next_attempt_at, last_error, "
            "sent_at, message FROM alert_deliveries"
        )
        args: tuple[str, ...] = ()
        if alert_id is not None:
            query += " WHERE alert_id = %s"
            args = (alert_id,)
        query += " ORDER BY alert_id, destination"
        with self._connect() as conn:
            rows = conn.execute(query, args).fetchall()
        return [Delivery(*row) for row in rows]

    def close(self) -> None:
        """The connections belong to the store's pool: nothing to release here."""
