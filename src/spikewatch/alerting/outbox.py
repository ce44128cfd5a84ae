"""The alert outbox: alerts and their deliveries, persisted before anything is sent.

It lives in the signals' SQLite file (WAL, ``synchronous=NORMAL``, as the store opens it)
but owns its tables and its schema version (``alerting_schema``), on a connection of its
own, so the store's migrations and this module's never touch each other's tables.

* ``alerts``: one row per alert id, its JSON, replaced when a later signal folds into it;
  its rule, exchange and symbol beside it for :meth:`Outbox.page` (the alert log the API
  and the dashboard read).
* ``alert_deliveries``: one row per (alert id, destination): ``pending``, ``sent`` or
  ``dead``; attempts, the next attempt's time, the last error, when it was sent and the id
  of the message that carried it (a summary carries many).

Times are wall-clock seconds (they must mean the same to the next process). Every method
is safe to call from any thread: one connection, one lock, short transactions. The alert
log (:meth:`Outbox.page`, for the web API) reads on a connection of its own, so a page
never waits behind a write that waits for the store's writer.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, cast

import msgspec

from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.store.base import Cursor
from spikewatch.store.sql import filters

#: A delivery's state.
DeliveryState = Literal["pending", "sent", "dead"]


class _Names(msgspec.Struct):
    """What migration 2 reads of a stored alert's JSON."""

    rule: str
    exchange: str
    symbol: str


_decode_names = msgspec.json.Decoder(_Names).decode


def _v2_columns(conn: sqlite3.Connection) -> None:
    """v2: rule, exchange and symbol as columns (the alert log is filtered by them), filled
    in for the alerts stored before, and indexes for pages newest first."""
    have = {str(row[1]) for row in conn.execute("PRAGMA table_info(alerts)")}
    for column in ("rule", "exchange", "symbol"):
        if column not in have:  # ADD COLUMN has no IF NOT EXISTS: checked, so it can rerun
            conn.execute(f"ALTER TABLE alerts ADD COLUMN {column} TEXT")
    rows = conn.execute("SELECT id, payload FROM alerts WHERE rule IS NULL").fetchall()
    for alert_id, payload in rows:
        try:
            names = _decode_names(payload)
        except msgspec.DecodeError:
            continue  # unreadable (another version's): it stays out of filtered pages
        conn.execute(
            "UPDATE alerts SET rule = ?, exchange = ?, symbol = ? WHERE id = ?",
            (names.rule, names.exchange, names.symbol, alert_id),
        )
    # the API always names an exchange (the one served), often a symbol too
    conn.execute("CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (time_us, id)")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS alerts_by_exchange_time ON alerts (exchange, time_us, id)"
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS alerts_by_exchange_symbol_time "
        "ON alerts (exchange, symbol, time_us, id)"
    )


#: Each entry moves the alerting schema from version i to i + 1; append, never edit. Every
#: step is idempotent, so a migration interrupted half-way simply runs again (each also
#: runs in one transaction with the version's update). SQL, or a function for a step SQL
#: alone cannot make idempotent.
MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (
    """
    CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY,
        time_us INTEGER NOT NULL,
        last_time_us INTEGER NOT NULL,
        signals INTEGER NOT NULL,
        payload BLOB NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS alert_deliveries (
        alert_id TEXT NOT NULL,
        destination TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        sent_at REAL,
        message TEXT,
        PRIMARY KEY (alert_id, destination)
    );
    CREATE INDEX IF NOT EXISTS alert_deliveries_due
        ON alert_deliveries (destination, state, next_attempt_at);
    CREATE INDEX IF NOT EXISTS alert_deliveries_sent ON alert_deliveries (destination, sent_at);
    """,
    _v2_columns,
)
SCHEMA_VERSION = len(MIGRATIONS)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Alert).decode


class OutboxSchemaTooNew(RuntimeError):
    """The database's alerting tables were written by a newer spikewatch."""


class Due(msgspec.Struct, frozen=True):
    """A pending delivery whose time has come."""

    alert_id: str
    attempts: int  # made so far
    alert: Alert | None  # None: its stored JSON no longer decodes (written by another version)


class Delivery(msgspec.Struct, frozen=True):
    """One (alert, destination) row, as stored."""

    alert_id: str
    destination: str
    state: str  # "pending", "sent" or "dead"
    attempts: int
    next_attempt_at: float
    last_error: str | None
    sent_at: float | None
    message: str | None  # the id of the message that delivered it


class Counts(msgspec.Struct, frozen=True):
    """Rows of one destination by state, as stored now."""

    sent: int = 0
    pending: int = 0
    dead: int = 0
    last_sent_at: float | None = None
    last_error: str | None = None  # of the latest failed attempt still on record


class AlertPage(msgspec.Struct, frozen=True):
    """One page of the alert log, newest first, and where the next page starts."""

    alerts: list[Alert]
    next_cursor: Cursor | None  # None on the last page
    #: per alert id on the page: its delivery state per destination (empty: none configured)
    deliveries: dict[str, dict[str, DeliveryState]]


class Failed(msgspec.Struct, frozen=True):
    """What :meth:`Outbox.mark_failed` did."""

    dead: list[str]  # alert ids dead-lettered by this failure
    retry_at: float | None  # the earliest next attempt of the others (None: all dead)


class Outbox:
    """Alerts waiting for delivery to ``destinations`` (their names), in the SQLite file
    ``path``."""

    def __init__(
        self,
        path: str | Path,
        destinations: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 10.0,
    ) -> None:
        """Open (or create) the outbox's tables in ``path``; ``busy_timeout_s`` is how long
        a write waits for another connection's write (the store's writer) to finish."""
        self.path = str(path)
        self.destinations = tuple(destinations)
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None  # the alert log's (opened on use)
        self._reader_lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
                # as the store: durable across process crashes (a kill -9), which is what
                # "never loses one" needs; only an OS crash can undo the last commits
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock up front, no upgrade
        deadlock against the store's writer)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    @contextlib.contextmanager
    def _log_read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction on the alert log's own connection (WAL lets it read while
        the outbox or the store writes); an in-memory outbox has only the one."""
        if self.path == ":memory:":
            with self._read() as conn:
                yield conn
            return
        with self._reader_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._reader.execute("PRAGMA query_only=1")
            conn = self._reader
            conn.execute("BEGIN")  # one snapshot for the page and its delivery states
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS alerting_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM alerting_schema").fetchone()
            version = int(row[0] or 0)
            if version > SCHEMA_VERSION:
                raise OutboxSchemaTooNew(
                    f"the alert outbox in {self.path} has schema version {version}, newer "
                    f"than this spikewatch's ({SCHEMA_VERSION}); upgrade spikewatch"
                )
            for step in range(version, SCHEMA_VERSION):
                migration = MIGRATIONS[step]
                if callable(migration):
                    migration(conn)
                    continue
                for statement in migration.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute("DELETE FROM alerting_schema")
                conn.execute("INSERT INTO alerting_schema (version) VALUES (?)", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        """The alerting schema's version in the file."""
        with self._read() as conn:
            return int(conn.execute("SELECT MAX(version) FROM alerting_schema").fetchone()[0])

    def add(self, events: Iterable[AlertEvent]) -> int:
        """Store these alert events in one transaction; returns how many alerts are new.

        A new alert id gets its alert row and a pending delivery per destination together.
        An id already stored is never added twice (the ids are deterministic: a restart
        that re-processes trades raises the same alerts); its JSON is replaced only by a
        later fold (more signals or a later last signal), never by an older state. An
        update whose opening was never stored is delivered as the alert itself."""
        now = self._clock()
        added = 0
        with self._tx() as conn:
            for event in events:
                alert = event.alert
                payload = _encode(alert)
                cur = conn.execute(
                    "INSERT OR IGNORE INTO alerts (id, time_us, last_time_us, signals, payload, "
                    "created_at, updated_at, rule, exchange, symbol) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert.id,
                        alert.time_us,
                        alert.last_time_us,
                        alert.signals,
                        payload,
                        now,
                        now,
                        alert.rule,
                        alert.exchange,
                        alert.symbol,
                    ),
                )
                if cur.rowcount == 1:
                    added += 1
                    conn.executemany(
                        "INSERT OR IGNORE INTO alert_deliveries (alert_id, destination, "
                        "next_attempt_at) VALUES (?, ?, ?)",
                        [(alert.id, name, now) for name in self.destinations],
                    )
                else:
                    conn.execute(
                        "UPDATE alerts SET payload = ?, last_time_us = ?, signals = ?, "
                        "updated_at = ? WHERE id = ? AND (last_time_us, signals) < (?, ?)",
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
        with self._read() as conn:
            rows = conn.execute(
                "SELECT d.alert_id, d.attempts, a.payload FROM alert_deliveries AS d "
                "JOIN alerts AS a ON a.id = d.alert_id "
                "WHERE d.destination = ? AND d.state = 'pending' AND d.next_attempt_at <= ? "
                "ORDER BY a.time_us, d.alert_id LIMIT ?",
                (destination, now, limit),
            ).fetchall()
        out = []
        for alert_id, attempts, payload in rows:
            try:
                alert: Alert | None = _decode(payload)
            except msgspec.DecodeError:
                alert = None
            out.append(Due(str(alert_id), int(attempts), alert))
        return out

    def lease(self, destination: str, alert_ids: Sequence[str], until: float) -> list[str]:
        """Take these due deliveries for a send: their next attempt moves to ``until``, so
        no other process sends them meanwhile, and a process that dies mid-send leaves
        them due again at ``until``. Returns the ids taken (not those someone else has)."""
        now = self._clock()
        taken = []
        with self._tx() as conn:
            for alert_id in alert_ids:
                cur = conn.execute(
                    "UPDATE alert_deliveries SET next_attempt_at = ? WHERE destination = ? "
                    "AND alert_id = ? AND state = 'pending' AND next_attempt_at <= ?",
                    (until, destination, alert_id, now),
                )
                if cur.rowcount == 1:
                    taken.append(alert_id)
        return taken

    def mark_sent(self, destination: str, alert_ids: Sequence[str], message_id: str) -> int:
        """Record a delivery the receiver acknowledged (committed at once); returns the
        rows changed."""
        now = self._clock()
        changed = 0
        with self._tx() as conn:
            for alert_id in alert_ids:
                changed += conn.execute(
                    "UPDATE alert_deliveries SET state = 'sent', sent_at = ?, message = ?, "
                    "attempts = attempts + 1, last_error = NULL "
                    "WHERE destination = ? AND alert_id = ? AND state = 'pending'",
                    (now, message_id, destination, alert_id),
                ).rowcount
        return changed

    def mark_failed(
        self,
        destination: str,
        alert_ids: Sequence[str],
        error: str,
        *,
        max_attempts: int,
        delay: Callable[[int], float],
    ) -> Failed:
        """Record a failed attempt: each row is retried ``delay(attempts)`` seconds from
        now, or dead-lettered once it has made ``max_attempts``."""
        now = self._clock()
        dead: list[str] = []
        retry_at: float | None = None
        with self._tx() as conn:
            for alert_id in alert_ids:
                row = conn.execute(
                    "SELECT attempts FROM alert_deliveries WHERE destination = ? "
                    "AND alert_id = ? AND state = 'pending'",
                    (destination, alert_id),
                ).fetchone()
                if row is None:
                    continue
                attempts = int(row[0]) + 1
                if attempts >= max_attempts:
                    state, when = "dead", now
                    dead.append(alert_id)
                else:
                    state, when = "pending", now + delay(attempts)
                    retry_at = when if retry_at is None else min(retry_at, when)
                conn.execute(
                    "UPDATE alert_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, "
                    "last_error = ? WHERE destination = ? AND alert_id = ?",
                    (state, attempts, when, error, destination, alert_id),
                )
        return Failed(dead, retry_at)

    def sent_since(self, destination: str, since: float) -> tuple[int, float | None]:
        """Messages sent to ``destination`` after ``since`` (a summary is one), and when
        the oldest of them was sent."""
        with self._read() as conn:
            count, oldest = conn.execute(
                "SELECT COUNT(DISTINCT message), MIN(sent_at) FROM alert_deliveries "
                "WHERE destination = ? AND state = 'sent' AND sent_at > ?",
                (destination, since),
            ).fetchone()
        return int(count), None if oldest is None else float(oldest)

    def next_due_at(self, destination: str) -> float | None:
        """When the next pending delivery to ``destination`` is due (None: none pending)."""
        with self._read() as conn:
            (when,) = conn.execute(
                "SELECT MIN(next_attempt_at) FROM alert_deliveries "
                "WHERE destination = ? AND state = 'pending'",
                (destination,),
            ).fetchone()
        return None if when is None else float(when)

    def counts(self, destination: str) -> Counts:
        """The destination's rows by state, its last delivery and its last error."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT state, COUNT(*), MAX(sent_at) FROM alert_deliveries "
                "WHERE destination = ? GROUP BY state",
                (destination,),
            ).fetchall()
            error = conn.execute(
                "SELECT last_error FROM alert_deliveries WHERE destination = ? "
                "AND state != 'sent' AND last_error IS NOT NULL "
                "ORDER BY next_attempt_at DESC LIMIT 1",
                (destination,),
            ).fetchone()
        by_state = {str(state): (int(n), last) for state, n, last in rows}
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
        now = self._clock()
        sql = "UPDATE alert_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?"
        sql += " WHERE state = 'dead'"
        args: list[float | str] = [now]
        if destination is not None:
            sql += " AND destination = ?"
            args.append(destination)
        with self._tx() as conn:
            return conn.execute(sql, args).rowcount

    def prune(self, before: float) -> int:
        """Forget alerts stored before ``before`` (wall-clock seconds) that have nothing
        pending; returns how many alerts were removed."""
        with self._tx() as conn:
            old = "SELECT id FROM alerts WHERE created_at < ? AND id NOT IN (SELECT alert_id FROM "
            old += "alert_deliveries WHERE state = 'pending')"
            conn.execute(f"DELETE FROM alert_deliveries WHERE alert_id IN ({old})", (before,))
            return conn.execute(f"DELETE FROM alerts WHERE id IN ({old})", (before,)).rowcount

    def alert(self, alert_id: str) -> Alert | None:
        """The stored alert (its latest fold), if any."""
        with self._read() as conn:
            row = conn.execute("SELECT payload FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else _decode(row[0])

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
        """Stored alerts newest first (by the time of their first signal, then id), with
        ``since_us <= time < until_us``, one page at a time, each with its latest fold and
        its delivery states. A row whose JSON no longer decodes (another version's) is left
        out; the cursor still moves past it."""
        where, args = filters(
            (
                ("rule = ?", rule),
                ("exchange = ?", exchange),
                ("symbol = ?", symbol),
                ("time_us >= ?", since_us),
                ("time_us < ?", until_us),
            )
        )
        if after is not None:
            where.append("(time_us, id) < (?, ?)")
            args.extend((after.time_us, after.id))
        sql = "SELECT payload, time_us, id FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_us DESC, id DESC LIMIT ?"
        args.append(limit + 1)
        with self._log_read() as conn:
            rows = conn.execute(sql, args).fetchall()
            page = rows[:limit]
            ids = [str(row[2]) for row in page]
            states: list[tuple[str, str, str]] = []
            # by primary key, a chunk at a time (SQLite's default cap is 999 variables)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                states.extend(
                    conn.execute(
                        "SELECT alert_id, destination, state FROM alert_deliveries "
                        f"WHERE alert_id IN ({','.join('?' * len(chunk))}) "
                        "ORDER BY alert_id, destination",
                        chunk,
                    ).fetchall()
                )
        alerts: list[Alert] = []
        for payload, _, _ in page:
            with contextlib.suppress(msgspec.DecodeError):
                alerts.append(_decode(payload))
        deliveries: dict[str, dict[str, DeliveryState]] = {a.id: {} for a in alerts}
        for alert_id, destination, state in states:
            if alert_id in deliveries:
                deliveries[alert_id][destination] = cast(DeliveryState, state)
        cursor = Cursor(int(page[-1][1]), str(page[-1][2])) if len(rows) > limit else None
        return AlertPage(alerts, cursor, deliveries)

    def deliveries(self, alert_id: str | None = None) -> list[Delivery]:
        """Delivery rows (of one alert, or all), by alert id and destination."""
        sql = (
            "SELECT alert_id, destination, state, attempts, next_attempt_at, last_error, "
            "sent_at, message FROM alert_deliveries"
        )
        args: tuple[str, ...] = ()
        if alert_id is not None:
            sql += " WHERE alert_id = ?"
            args = (alert_id,)
        sql += " ORDER BY alert_id, destination"
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [Delivery(*row) for row in rows]

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            self._conn.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
