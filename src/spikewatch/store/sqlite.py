"""SQLite signal store: WAL mode, versioned schema, one connection per thread.

The writer thread adds; web threads read through their own connections, which WAL lets
run while a write is in progress. ``:memory:`` keeps one shared connection under a lock
(an in-memory database cannot be shared between connections in WAL mode).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

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

#: Each entry moves the schema from version i to i + 1; append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE signals (
        id TEXT PRIMARY KEY,
        exchange TEXT NOT NULL,
        symbol TEXT NOT NULL,
        detector TEXT NOT NULL,
        trade_id INTEGER NOT NULL,
        time_us INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX signals_by_time ON signals (time_us, id);
    CREATE INDEX signals_by_symbol_time ON signals (symbol, time_us, id);
    """,
    # v2: a delivery sequence number, for live-stream clients resuming with Last-Event-ID
    """
    ALTER TABLE signals ADD COLUMN seq INTEGER;
    UPDATE signals SET seq = rowid;
    CREATE UNIQUE INDEX signals_by_seq ON signals (seq);
    """,
    # v3: holes in the record that could not be filled, and detector checkpoints
    """
    CREATE TABLE gaps (
        exchange TEXT NOT NULL,
        symbol TEXT NOT NULL,
        first_id INTEGER NOT NULL,
        last_id INTEGER NOT NULL,
        time_us INTEGER NOT NULL,
        payload BLOB NOT NULL,
        PRIMARY KEY (exchange, symbol, first_id)
    );
    CREATE INDEX gaps_by_time ON gaps (time_us);
    CREATE TABLE checkpoints (
        exchange TEXT NOT NULL,
        symbol TEXT NOT NULL,
        payload BLOB NOT NULL,
        PRIMARY KEY (exchange, symbol)
    );
    """,
    # v4: (exchange, symbol) is the key: BTCUSDT spot and BTCUSDT futures are read apart.
    # The exchange-only index serves the usual page (one exchange, all its symbols) in
    # order, without sorting the exchange's whole history.
    """
    CREATE INDEX signals_by_exchange_symbol_time ON signals (exchange, symbol, time_us, id);
    CREATE INDEX signals_by_exchange_time ON signals (exchange, time_us, id);
    CREATE INDEX gaps_by_exchange_symbol_time ON gaps (exchange, symbol, time_us);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_encode = msgspec.json.Encoder().encode
_decode = decode_signal
_decode_gap = msgspec.json.Decoder(GapRecord).decode
_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode


def _filters(
    exchange: str | None, symbol: str | None, since_us: int | None, until_us: int | None
) -> tuple[list[str], list[str | int]]:
    """WHERE clauses and their arguments for the optional exchange, symbol and time range."""
    return filters(
        (
            ("exchange = ?", exchange),
            ("symbol = ?", symbol),
            ("time_us >= ?", since_us),
            ("time_us < ?", until_us),
        )
    )


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already: after SQLITE_FULL or an
    I/O error it may have, and a second ROLLBACK would hide the error behind "no
    transaction is active"."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class StoreOpenError(RuntimeError):
    """The database cannot be opened for writing: ``cannot open the database <path>:
    <reason>`` (the command line prints it as it is, and exits with status 2)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot open the database {path}: {reason}")
        self.path = path
        self.reason = reason


class SchemaTooNew(StoreOpenError):
    """The database was written by a newer spikewatch."""


def _why_not_writable(path: str, exc: BaseException) -> str:
    """What stops ``path`` from being opened for writing, as a user can act on it.

    SQLite says "unable to open database file" whatever the cause: the OS is asked again
    here, only after a failure, for the real one."""
    where = Path(path)
    if where.is_dir():
        return f"it is a directory; give a file name in it, e.g. {where / 'spikewatch.db'}"
    if isinstance(exc, FileExistsError | NotADirectoryError):  # a file in the folders' way
        return f"{exc.filename or where.parent} is not a folder"
    if isinstance(exc, OSError):  # making its folder failed
        return f"cannot make its folder {exc.filename or where.parent}: {exc.strerror or exc}"
    existed = where.exists()
    try:
        fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        doing = "open it for writing" if existed else "create it"
        return f"cannot {doing}: {err.strerror or err}"
    os.close(fd)
    if not existed:
        where.unlink(missing_ok=True)
    folder = where.parent
    if not os.access(folder, os.W_OK):
        return (
            f"its folder {folder} is not writable (SQLite keeps {where.name}-wal and "
            f"{where.name}-shm files beside it)"
        )
    return str(exc)


#: Retention's marks: (wall-clock seconds, the highest delivery number then); made on use.
_MARKS = "CREATE TABLE IF NOT EXISTS retention_marks (at REAL NOT NULL, seq INTEGER NOT NULL)"


class SQLiteSignalStore:
    """A :class:`~spikewatch.store.base.SignalStore` in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the database and bring its schema up to date; raises
        :class:`StoreOpenError` naming the reason when it cannot be written."""
        self.path = str(path)
        self._memory = self.path == ":memory:"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._max_pages: int | None = None  # see limit_pages
        self._limit_gen = 0  # bumped by limit_pages; connections apply it on next use
        self._shared_gen = 0
        self._default_max_pages = 0
        self._shared: sqlite3.Connection | None = None
        try:
            self._shared = self._connect() if self._memory else None
            with self._conn() as conn:
                self._migrate(conn)
        except StoreOpenError:
            self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise StoreOpenError(self.path, _why_not_writable(self.path, exc)) from None
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        if not self._memory:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode (only an OS crash or
            # power loss can undo the last commits).
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        if not self._default_max_pages:
            self._default_max_pages = int(conn.execute("PRAGMA max_page_count").fetchone()[0])
        with self._lock:
            self._all.append(conn)
        return conn

    def limit_pages(self, pages: int | None) -> None:
        """Let the database grow to ``pages`` pages at most (None: SQLite's own limit).

        Beyond it a write fails with SQLITE_FULL ("database or disk is full"), exactly as
        on a full disk: a size cap, and how the tests fill the disk for real. Every
        connection applies it before its next use, on its own thread."""
        with self._lock:
            self._max_pages = pages
            self._limit_gen += 1

    def page_count(self) -> int:
        """Pages the database file holds now (``PRAGMA page_count``)."""
        with self._conn() as conn:
            return int(conn.execute("PRAGMA page_count").fetchone()[0])

    def _apply_limit(self, conn: sqlite3.Connection) -> None:
        pages = self._max_pages if self._max_pages is not None else self._default_max_pages
        conn.execute(f"PRAGMA max_page_count = {int(pages)}")

    class _Use:
        def __init__(self, store: SQLiteSignalStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            store = self.store
            gen = store._limit_gen
            if store._shared is not None:
                store._lock.acquire()
                if store._shared_gen != gen:
                    store._apply_limit(store._shared)
                    store._shared_gen = gen
                return store._shared
            local = store._local
            conn: sqlite3.Connection | None = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = store._connect()
                local.gen = 0
            if local.gen != gen:
                store._apply_limit(conn)
                local.gen = gen
            return conn

        def __exit__(self, *exc: object) -> None:
            if self.store._shared is not None:
                self.store._lock.release()

    def _conn(self) -> SQLiteSignalStore._Use:
        return SQLiteSignalStore._Use(self)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    self.path,
                    f"its schema version {version} is newer than this spikewatch's "
                    f"({SCHEMA_VERSION}); upgrade spikewatch",
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._conn() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def add(self, signals: Sequence[Signal], seqs: Sequence[int] | None = None) -> int:
        """Insert ``signals`` in one transaction; ids already stored are skipped.

        ``seqs`` are their delivery sequence numbers (increasing); without them the store
        numbers the signals after the highest stored one.
        """
        with self._conn() as conn:
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                if seqs is None:
                    top = conn.execute("SELECT IFNULL(MAX(seq), 0) FROM signals").fetchone()[0]
                    seqs = range(top + 1, top + 1 + len(signals))
                rows = [
                    (s.id, s.exchange, s.symbol, s.detector, s.trade_id, s.time_us, _encode(s), n)
                    for s, n in zip(signals, seqs, strict=True)
                ]
                conn.executemany(
                    "INSERT OR IGNORE INTO signals "
                    "(id, exchange, symbol, detector, trade_id, time_us, payload, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return conn.total_changes - before

    def prune(self, keep_s: float, now: float | None = None, limit: int = 10_000) -> int:
        """Forget up to ``limit`` of the signals stored more than ``keep_s`` seconds ago
        (wall clock, ``now`` by default); returns how many (``limit``: call again for the
        rest, each call one short transaction). Signals carry no time of storing, so a
        call records a mark (now, the highest delivery number; at most one a
        :data:`~spikewatch.store.base.MARK_EVERY_S`): the signals up to the newest mark
        older than ``keep_s`` go. The newest signal always stays (delivery numbers go on
        from it, also after a restart). Idempotent and cheap (by ``seq``)."""
        now = time.time() if now is None else now
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_MARKS)
                top = conn.execute("SELECT IFNULL(MAX(seq), 0) FROM signals").fetchone()[0]
                newest = conn.execute("SELECT MAX(at) FROM retention_marks").fetchone()[0]
                if newest is None or now - newest >= MARK_EVERY_S:
                    conn.execute("INSERT INTO retention_marks (at, seq) VALUES (?, ?)", (now, top))
                mark = conn.execute(
                    "SELECT at, seq FROM retention_marks WHERE at <= ? ORDER BY at DESC LIMIT 1",
                    (now - keep_s,),
                ).fetchone()
                removed = 0
                if mark is not None:
                    conn.execute("DELETE FROM retention_marks WHERE at < ?", (mark[0],))
                    before = conn.total_changes
                    conn.execute(
                        "DELETE FROM signals WHERE seq IN (SELECT seq FROM signals "
                        "WHERE seq <= ? AND seq < ? ORDER BY seq LIMIT ?)",
                        (mark[1], top, limit),
                    )
                    removed = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return removed

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
            where.append("(time_us, id) < (?, ?)")
            args.extend((after.time_us, after.id))
        sql = "SELECT payload, time_us, id FROM signals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_us DESC, id DESC LIMIT ?"
        args.append(limit + 1)
        with self._conn() as conn:
            rows = conn.execute(sql, args).fetchall()
        page = rows[:limit]
        cursor = Cursor(int(page[-1][1]), str(page[-1][2])) if len(rows) > limit else None
        return [bytes(row[0]) for row in page], cursor

    def last_trade_ids(self, exchange: str) -> dict[tuple[str, str], int]:
        """The highest trade id with a stored signal, by (symbol, detector)."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT symbol, detector, MAX(trade_id) FROM signals WHERE exchange = ? "
                "GROUP BY symbol, detector",
                (exchange,),
            ).fetchall()
        return {(str(symbol), str(detector)): int(top) for symbol, detector, top in rows}

    def max_seq(self) -> int:
        """The highest delivery sequence number stored (0 when empty)."""
        with self._conn() as conn:
            return int(conn.execute("SELECT IFNULL(MAX(seq), 0) FROM signals").fetchone()[0])

    def after_seq(
        self,
        seq: int,
        limit: int = 1000,
        symbol: str | None = None,
        exchange: str | None = None,
    ) -> list[tuple[int, Signal]]:
        """Signals delivered after ``seq``, in delivery order, with their numbers."""
        sql = "SELECT seq, payload FROM signals WHERE seq > ?"
        args: list[int | str] = [seq]
        if exchange is not None:
            sql += " AND exchange = ?"
            args.append(exchange)
        if symbol is not None:
            sql += " AND symbol = ?"
            args.append(symbol)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._conn() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [(int(n), _decode(payload)) for n, payload in rows]

    def add_gap(self, gap: GapRecord) -> None:
        """Record a hole in the trade record (idempotent by exchange, symbol, first id)."""
        with self._conn() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO gaps (exchange, symbol, first_id, last_id, time_us, "
                "payload) VALUES (?, ?, ?, ?, ?, ?)",
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
        sql = "SELECT payload FROM gaps"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_us DESC LIMIT ?"
        args.append(limit)
        with self._conn() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_decode_gap(row[0]) for row in rows]

    def save_checkpoints(self, checkpoints: Sequence[Checkpoint | EncodedCheckpoint]) -> None:
        """Replace the stored checkpoints of these symbols, in one transaction."""
        rows = checkpoint_rows(checkpoints)
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO checkpoints (exchange, symbol, payload) "
                    "VALUES (?, ?, ?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def checkpoints(self, exchange: str) -> dict[str, Checkpoint]:
        """The stored checkpoints of ``exchange``, by symbol."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT payload FROM checkpoints WHERE exchange = ?", (exchange,)
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
        sql = "SELECT count(*) FROM signals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._conn() as conn:
            row = conn.execute(sql, args).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
