"""PostgreSQL signal store: the distributed mode's shared database.

Several ``detect`` processes write to one database and several web processes read it, so
this store differs from the SQLite one in two ways, both explained where they happen:

* **Delivery numbers in commit order.** A writer that numbers its own signals takes a
  transaction-level advisory lock before it reads the highest number, and keeps it until
  it commits (:meth:`PostgresSignalStore.add`).
* **Migrations under a lock.** Two processes starting together must not both create the
  tables: the schema is brought up to date under an advisory lock too.

Everything else is the SQLite store's contract, row for row: the same keyset order
(``time_us DESC, id DESC``, ids compared byte by byte: the text columns are ``COLLATE
"C"``, SQLite's BINARY), the same payload bytes (``msgspec.json`` of the signal), the
same delivery numbers for the same calls. Connections come from a
:class:`psycopg_pool.ConnectionPool` in autocommit mode: a read is one statement, and a
write is an explicit transaction. Reads that return payloads ask for results in binary
format: a ``bytea`` then arrives as its bytes, not as hex text to decode.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from spikewatch.core.model import Signal, decode_signal
from spikewatch.store.base import (
    MARK_EVERY_S,
    Checkpoint,
    Cursor,
    EncodedCheckpoint,
    GapRecord,
    SignalPage,
    checkpoint_rows,
)
from spikewatch.store.sql import filters
from spikewatch.store.sqlite import SchemaTooNew, StoreOpenError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresSignalStore", "redact_url"]

#: Each entry moves the schema from version i to i + 1; append, never edit. Version 1 is
#: SQLite's version 4 at once (the PostgreSQL store has no older databases to carry).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE signals (
        id text COLLATE "C" PRIMARY KEY,
        exchange text COLLATE "C" NOT NULL,
        symbol text COLLATE "C" NOT NULL,
        detector text COLLATE "C" NOT NULL,
        trade_id bigint NOT NULL,
        time_us bigint NOT NULL,
        seq bigint NOT NULL,
        payload bytea NOT NULL
    );
    CREATE UNIQUE INDEX signals_by_seq ON signals (seq);
    CREATE INDEX signals_by_time ON signals (time_us, id);
    CREATE INDEX signals_by_symbol_time ON signals (symbol, time_us, id);
    CREATE INDEX signals_by_exchange_symbol_time ON signals (exchange, symbol, time_us, id);
    CREATE INDEX signals_by_exchange_time ON signals (exchange, time_us, id);
    CREATE TABLE gaps (
        exchange text COLLATE "C" NOT NULL,
        symbol text COLLATE "C" NOT NULL,
        first_id bigint NOT NULL,
        last_id bigint NOT NULL,
        time_us bigint NOT NULL,
        payload bytea NOT NULL,
        PRIMARY KEY (exchange, symbol, first_id)
    );
    CREATE INDEX gaps_by_time ON gaps (time_us);
    CREATE INDEX gaps_by_exchange_symbol_time ON gaps (exchange, symbol, time_us);
    CREATE TABLE checkpoints (
        exchange text COLLATE "C" NOT NULL,
        symbol text COLLATE "C" NOT NULL,
        payload bytea NOT NULL,
        PRIMARY KEY (exchange, symbol)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

#: First keys of the two-key advisory locks (the second is the schema's own key): one
#: for migrations, one for numbering signals. "SW" and a number, to stay clear of other
#: applications' locks in a shared database.
_MIGRATE_LOCK = 0x5357_0001
_SEQ_LOCK = 0x5357_0002

#: A schema name this store accepts: a plain lower-case identifier, which reads the same
#: First key of the retention's advisory lock (SW, 4)
_PRUNE_LOCK = 0x5357_0004
#: quoted (CREATE SCHEMA) and unquoted (search_path in the connection options).
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_encode = msgspec.json.Encoder().encode
_decode = decode_signal
_decode_gap = msgspec.json.Decoder(GapRecord).decode
_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode

_COLUMNS = "id, exchange, symbol, detector, trade_id, time_us, payload"
# The columns travel as arrays in binary (%b): about half the time of the same insert with
# its arrays as text (measured here on batches of 100), where every payload is hex text.
_UNNEST = (
    "unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bytea[]"
)
# The store numbers the rows: after the highest number (read under the seq lock, see
# add), in the order given. A duplicate id is skipped and leaves a hole in the numbers,
# as in SQLite; a clash on seq would be a bug, so only the id may conflict silently.
_INSERT_NUMBERED = (
    f"INSERT INTO signals ({_COLUMNS}, seq) "
    "SELECT r.id, r.exchange, r.symbol, r.detector, r.trade_id, r.time_us, r.payload, "
    "top.seq + r.n "
    f"FROM {_UNNEST}) WITH ORDINALITY "
    "AS r(id, exchange, symbol, detector, trade_id, time_us, payload, n) "
    "CROSS JOIN (SELECT COALESCE(MAX(seq), 0) AS seq FROM signals) AS top "
    "ORDER BY r.n "
    "ON CONFLICT (id) DO NOTHING"
)
# The caller numbers the rows (the single-process engine): like SQLite's INSERT OR IGNORE,
# a row that clashes with a stored one on id or seq is skipped.
_INSERT_GIVEN = (
    f"INSERT INTO signals ({_COLUMNS}, seq) "
    "SELECT r.id, r.exchange, r.symbol, r.detector, r.trade_id, r.time_us, r.payload, r.seq "
    f"FROM {_UNNEST}, %b::bigint[]) WITH ORDINALITY "
    "AS r(id, exchange, symbol, detector, trade_id, time_us, payload, seq, n) "
    "ORDER BY r.n "
    "ON CONFLICT DO NOTHING"
)


def _filters(
    exchange: str | None, symbol: str | None, since_us: int | None, until_us: int | None
) -> tuple[list[str], list[str | int]]:
    """WHERE clauses and their arguments for the optional exchange, symbol and time range."""
    return filters(
        (
            ("exchange = %s", exchange),
            ("symbol = %s", symbol),
            ("time_us >= %s", since_us),
            ("time_us < %s", until_us),
        )
    )


def _lock_key(name: str) -> int:
    """A signed 32-bit advisory-lock key for a schema name (stable across processes)."""
    key = zlib.crc32(name.encode())
    return key - 2**32 if key >= 2**31 else key


_PASSWORD_IN_DSN = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_IN_NETLOC = re.compile(r"(://[^/@:]*:)[^/@]*@")
_PASSWORD_IN_QUERY = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` (or a ``key=value`` connection string) with its password replaced by
    ``***``, fit for a message or a log."""
    if "://" not in url:
        return _PASSWORD_IN_DSN.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:  # not even a URL (an unclosed IPv6 bracket): drop what may be one
        return _PASSWORD_IN_NETLOC.sub(r"\1***@", url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = _PASSWORD_IN_QUERY.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _one_line(exc: BaseException, url: str, secret: str | None) -> str:
    """libpq's message on one line (it spreads a reason and a hint over several), with
    no password in it (libpq may quote the connection string it could not parse)."""
    lines = (" ".join(line.split()) for line in str(exc).splitlines())
    text = "; ".join(line for line in lines if line)
    text = text.removeprefix("connection failed: ")
    text = _PASSWORD_IN_DSN.sub(r"\1***", text.replace(url, redact_url(url)))
    text = _PASSWORD_IN_NETLOC.sub(r"\1***@", text)
    if secret and len(secret) >= 4:  # a shorter one would mangle the words around it
        text = text.replace(secret, "***")
    return text or type(exc).__name__


class PostgresSignalStore:
    """A :class:`~spikewatch.store.base.SignalStore` in a PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_connections: int = 1,
        max_connections: int = 8,
        connect_timeout: float = 10.0,
        pool_timeout: float = 10.0,
        check_after_idle_s: float = 1.0,
    ) -> None:
        """Connect, and bring the schema up to date (creating ``schema`` if it is given
        and missing; without it the tables go to the connection's ``search_path``).

        Raises :class:`~spikewatch.store.sqlite.StoreOpenError` (``cannot open the database
        <url without password>: <reason>``) when the database cannot be reached or used,
        and :class:`~spikewatch.store.sqlite.SchemaTooNew` when a newer spikewatch wrote it.
        ``pool_timeout`` is how long a call waits for a free connection (seconds); a
        connection that sat in the pool for ``check_after_idle_s`` seconds or more is
        checked (one empty query) before a call gets it.
        """
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lower-case identifier ([a-z_][a-z0-9_]*): {schema!r}"
            )
        self.url = redact_url(url)
        self.schema = schema
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] | None = None
        self._check_after_idle_s = check_after_idle_s
        self._idle_since: weakref.WeakKeyDictionary[psycopg.Connection[TupleRow], float] = (
            weakref.WeakKeyDictionary()
        )
        self._idle_lock = threading.Lock()
        secret: str | None = None
        try:
            params = conninfo_to_dict(url)
            secret = str(params["password"]) if params.get("password") else None
            extra: dict[str, Any] = {}
            if schema is not None:
                options = str(params.get("options") or "")
                extra["options"] = f"{options} -c search_path={schema}".strip()
            if "connect_timeout" not in params:
                extra["connect_timeout"] = max(1, round(connect_timeout))
            if "application_name" not in params:
                extra["application_name"] = "spikewatch"
            self._conninfo = make_conninfo(url, **extra)
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                _configure(conn)
                self._seq_key = self._migrate(conn)
            self._pool = ConnectionPool(
                self._conninfo,
                min_size=min_connections,
                max_size=max_connections,
                kwargs={"autocommit": True},
                configure=_configure,
                check=self._check,
                reset=self._returned,
                open=False,
                timeout=pool_timeout,
                name="spikewatch-store",
            )
            self._pool.open(wait=True, timeout=connect_timeout)
        except StoreOpenError:
            self.close()
            raise
        except psycopg.Error as exc:
            self.close()
            raise StoreOpenError(self.url, _one_line(exc, url, secret)) from None
        except BaseException:
            self.close()
            raise

    def _migrate(self, conn: psycopg.Connection[TupleRow]) -> int:
        """Create or update the schema under the migration lock; the schema's lock key."""
        name = self.schema
        if name is None:
            row = conn.execute("SELECT current_schema(), current_setting('search_path')").fetchone()
            name = row[0] if row else None
            if name is None:
                path = row[1] if row else ""
                raise StoreOpenError(
                    self.url,
                    f"no schema of its search_path ({path}) exists to keep the tables in; "
                    "create it first",
                )
        key = _lock_key(name)
        with conn.transaction():
            # Two processes starting together on a new database would both see no tables
            # and both try to create them: the second waits here until the first commits,
            # then finds the schema at the current version.
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_MIGRATE_LOCK, key))
            if self.schema is not None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            version = _current_version(conn)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    self.url,
                    f"its schema version {version} (schema {name}) is newer than this "
                    f"spikewatch's ({SCHEMA_VERSION}); upgrade spikewatch",
                )
            for step in range(version, SCHEMA_VERSION):
                conn.execute(MIGRATIONS[step])
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (step + 1,))
        return key

    def _returned(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Pool callback: ``conn`` is back in the pool, idle from now."""
        with self._idle_lock:
            self._idle_since[conn] = time.monotonic()

    def _check(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Pool callback, before a call gets ``conn``: one that sat idle for a while is
        asked an empty query first, so a connection the server dropped meanwhile (a
        restart, a failover, an idle timeout) costs the pool a reconnect instead of
        failing the call. One in steady use is handed out unchecked: the check is a
        round trip, and a busy connection's failure shows in the call it serves."""
        with self._idle_lock:
            since = self._idle_since.get(conn)
        if since is None or time.monotonic() - since >= self._check_after_idle_s:
            ConnectionPool.check_connection(conn)

    def _conn(self) -> AbstractContextManager[psycopg.Connection[TupleRow]]:
        """A pooled connection for one call (a context manager)."""
        if self._pool is None:
            raise RuntimeError("the store is closed")
        return self._pool.connection()

    def connection(self) -> AbstractContextManager[psycopg.Connection[TupleRow]]:
        """A pooled connection (autocommit; a context manager) for another part that keeps
        its tables in this database: the distributed mode's alert outbox
        (:class:`~spikewatch.alerting.pg_outbox.PostgresOutbox`)."""
        return self._conn()

    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._conn() as conn:
            return _current_version(conn)

    def add(self, signals: Sequence[Signal], seqs: Sequence[int] | None = None) -> int:
        """Insert ``signals`` in one transaction; ids already stored are skipped.

        ``seqs`` are their delivery sequence numbers (increasing); without them the store
        numbers the signals after the highest stored one, in commit order.
        """
        if seqs is not None and len(seqs) != len(signals):
            raise ValueError(f"{len(signals)} signals but {len(seqs)} sequence numbers")
        if not signals:
            return 0
        with self._conn() as conn, conn.transaction():
            return self._insert(conn, signals, seqs)

    def transaction(self) -> AbstractContextManager[psycopg.Connection[TupleRow]]:
        """A pooled connection in a transaction, committed when the block ends (rolled
        back on an exception): for writes that must commit together, one WAL flush for
        all (detect's signals and alert events of a fetch: :meth:`add_in` and the
        outbox's ``add(..., conn=)``)."""
        return _in_transaction(self._conn())

    def add_in(self, conn: psycopg.Connection[TupleRow], signals: Sequence[Signal]) -> int:
        """:meth:`add` (numbered by the store) inside the caller's transaction ``conn``
        (from :meth:`transaction`): the numbers' lock is held until that commits."""
        return self._insert(conn, signals, None) if signals else 0

    def _insert(
        self,
        conn: psycopg.Connection[TupleRow],
        signals: Sequence[Signal],
        seqs: Sequence[int] | None,
    ) -> int:
        args: list[Any] = [
            [s.id for s in signals],
            [s.exchange for s in signals],
            [s.symbol for s in signals],
            [s.detector for s in signals],
            [s.trade_id for s in signals],
            [s.time_us for s in signals],
            [_encode(s) for s in signals],
        ]
        if seqs is None:
            # Readers resume with after_seq(n) and never look below n again, so a
            # number may only become visible after every smaller one. Drawn from a
            # SEQUENCE without a lock, two writers can commit out of order: A draws
            # 5..6, B draws 7..8 and commits, a reader sees 7..8 and moves past 6,
            # then A commits 5..6, never to be delivered (the conformance suite's
            # several-writers test catches exactly this). MAX + 1 without a lock
            # would hand both the same numbers. This transaction-level lock is held
            # to COMMIT, and PostgreSQL releases it only after the commit is visible,
            # so the numbers become visible in the order they were drawn. It must be
            # a statement of its own: the INSERT below then takes its snapshot (READ
            # COMMITTED) after the wait, and sees the previous holder's rows. The key
            # is the schema's: stores in other schemas do not wait for this one.
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_SEQ_LOCK, self._seq_key))
            cur = conn.execute(_INSERT_NUMBERED, args)
        else:
            # Numbered by the caller: the single-process engine, the only writer, whose
            # order is its own.
            cur = conn.execute(_INSERT_GIVEN, [*args, list(seqs)])
        return max(cur.rowcount, 0)

    def latest(self, symbol: str | None = None, exchange: str | None = None) -> Signal | None:
        """The stored signal with the latest trade time (of ``symbol`` and ``exchange``,
        where given)."""
        page = self.page(exchange=exchange, symbol=symbol, limit=1)
        return page.signals[0] if page.signals else None

    def page(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 100,
        after: Cursor | None = None,
    ) -> SignalPage:
        """Signals newest first (by trade time, then id), one page at a time."""
        payloads, cursor = self.page_json(
            exchange=exchange,
            symbol=symbol,
            since_us=since_us,
            until_us=until_us,
            limit=limit,
            after=after,
        )
        return SignalPage([_decode(p) for p in payloads], cursor)

    def page_json(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 100,
        after: Cursor | None = None,
    ) -> tuple[list[bytes], Cursor | None]:
        """Like :meth:`page`, but the signals as their stored JSON (for the web API, which
        sends them on as they are)."""
        where, args = _filters(exchange, symbol, since_us, until_us)
        if after is not None:
            # a row comparison: one range condition on the (…, time_us, id) indexes
            where.append("(time_us, id) < (%s, %s)")
            args.extend((after.time_us, after.id))
        query = "SELECT payload, time_us, id FROM signals"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY time_us DESC, id DESC LIMIT %s"
        args.append(limit + 1)
        with self._conn() as conn:
            rows = conn.execute(query, args, binary=True).fetchall()
        page = rows[:limit]
        cursor = Cursor(int(page[-1][1]), str(page[-1][2])) if len(rows) > limit else None
        return [bytes(row[0]) for row in page], cursor

    def last_trade_ids(self, exchange: str) -> dict[tuple[str, str], int]:
        """The highest trade id with a stored signal, by (symbol, detector)."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT symbol, detector, MAX(trade_id) FROM signals WHERE exchange = %s "
                "GROUP BY symbol, detector",
                (exchange,),
            ).fetchall()
        return {(str(symbol), str(detector)): int(top) for symbol, detector, top in rows}

    def max_seq(self) -> int:
        """The highest delivery sequence number stored (0 when empty)."""
        with self._conn() as conn:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM signals").fetchone()
        return int(row[0]) if row else 0

    def after_seq(
        self,
        seq: int,
        limit: int = 1000,
        symbol: str | None = None,
        exchange: str | None = None,
    ) -> list[tuple[int, Signal]]:
        """Signals delivered after ``seq``, in delivery order, with their numbers."""
        where, args = _filters(exchange, symbol, None, None)
        query = "SELECT seq, payload FROM signals WHERE " + " AND ".join(["seq > %s", *where])
        query += " ORDER BY seq LIMIT %s"
        with self._conn() as conn:
            rows = conn.execute(query, [seq, *args, limit], binary=True).fetchall()
        return [(int(n), _decode(payload)) for n, payload in rows]

    def prune(self, keep_s: float, now: float | None = None, limit: int = 10_000) -> int:
        """Forget up to ``limit`` of the signals stored more than ``keep_s`` seconds ago,
        as :meth:`spikewatch.store.sqlite.SQLiteSignalStore.prune` does (marks of the
        highest delivery number, the newest signal kept). Idempotent and cheap (by
        ``seq``), so every detect worker may run it: concurrent calls take turns."""
        now = time.time() if now is None else now
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_PRUNE_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS retention_marks "
                "(at double precision NOT NULL, seq bigint NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM signals").fetchone()
            top = int(row[0]) if row else 0
            newest = conn.execute("SELECT MAX(at) FROM retention_marks").fetchone()
            if newest is None or newest[0] is None or now - float(newest[0]) >= MARK_EVERY_S:
                conn.execute("INSERT INTO retention_marks (at, seq) VALUES (%s, %s)", (now, top))
            mark = conn.execute(
                "SELECT at, seq FROM retention_marks WHERE at <= %s ORDER BY at DESC LIMIT 1",
                (now - keep_s,),
            ).fetchone()
            if mark is None:
                return 0
            conn.execute("DELETE FROM retention_marks WHERE at < %s", (mark[0],))
            cur = conn.execute(
                "DELETE FROM signals WHERE seq IN (SELECT seq FROM signals "
                "WHERE seq <= %s AND seq < %s ORDER BY seq LIMIT %s)",
                (mark[1], top, limit),
            )
            return max(cur.rowcount, 0)

    def add_gap(self, gap: GapRecord) -> None:
        """Record a hole in the trade record (idempotent by exchange, symbol, first id: a
        second record of the same hole replaces the first, as in SQLite)."""
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO gaps (exchange, symbol, first_id, last_id, time_us, payload) "
                "VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (exchange, symbol, first_id) DO UPDATE SET "
                "last_id = EXCLUDED.last_id, time_us = EXCLUDED.time_us, "
                "payload = EXCLUDED.payload",
                (gap.exchange, gap.symbol, gap.first_id, gap.last_id, gap.time_us, _encode(gap)),
            )

    def gaps(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 100,
    ) -> list[GapRecord]:
        """Recorded gaps, newest first."""
        where, args = _filters(exchange, symbol, since_us, until_us)
        query = "SELECT payload FROM gaps"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY time_us DESC LIMIT %s"
        args.append(limit)
        with self._conn() as conn:
            rows = conn.execute(query, args, binary=True).fetchall()
        return [_decode_gap(row[0]) for row in rows]

    def save_checkpoints(self, checkpoints: Sequence[Checkpoint | EncodedCheckpoint]) -> None:
        """Replace the stored checkpoints of these symbols, in one transaction."""
        if not checkpoints:
            return
        rows = checkpoint_rows(checkpoints)
        with self._conn() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO checkpoints (exchange, symbol, payload) "
                "SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[]) "
                "ON CONFLICT (exchange, symbol) DO UPDATE SET payload = EXCLUDED.payload",
                (
                    [r.exchange for r in rows],
                    [r.symbol for r in rows],
                    [r.payload for r in rows],
                ),
            )

    def checkpoints(self, exchange: str) -> dict[str, Checkpoint]:
        """The stored checkpoints of ``exchange``, by symbol."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT payload FROM checkpoints WHERE exchange = %s", (exchange,)
            ).fetchall()
        out = {}
        for (payload,) in rows:
            try:
                checkpoint = _decode_checkpoint(payload)
            except msgspec.DecodeError:
                continue  # written by another version: start that symbol afresh
            out[checkpoint.symbol] = checkpoint
        return out

    def count(self, symbol: str | None = None, exchange: str | None = None) -> int:
        """How many signals are stored (of ``symbol`` and ``exchange``, where given)."""
        where, args = _filters(exchange, symbol, None, None)
        query = "SELECT count(*) FROM signals"
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._conn() as conn:
            row = conn.execute(query, args).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the pool and its connections (a second call does nothing)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


@contextmanager
def _in_transaction(
    pooled: AbstractContextManager[psycopg.Connection[TupleRow]],
) -> Iterator[psycopg.Connection[TupleRow]]:
    """The pool's connection, in a transaction for the block."""
    with pooled as conn, conn.transaction():
        yield conn


def _configure(conn: psycopg.Connection[TupleRow]) -> None:
    """Every pooled connection: explicit transactions run at READ COMMITTED whatever the
    server's default (add relies on a fresh snapshot per statement; see there)."""
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED


def _current_version(conn: psycopg.Connection[TupleRow]) -> int:
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0
