"""What only the SQLite signal store has, on real database files: WAL, its file's
schema versions, a full disk, files that cannot be opened, ``:memory:``.

The contract every store keeps (adding, pages and cursors, delivery order, gaps,
checkpoints, restarts, the writer thread) is checked on SQLite and PostgreSQL alike in
test_store_conformance.py. Each test gets a fresh database file under ``tmp_path`` (the
flaskr tutorial's pattern).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from spikewatch.core.model import GapRecord, Signal, VolumeSpikeSignal, iso_utc
from spikewatch.store import SQLiteSignalStore, StoreWriter
from spikewatch.store.sqlite import SCHEMA_VERSION, StoreOpenError

from helpers import wait_until

DETECTOR = "volume_spike-w200-x10"
#: 2024-08-09T00:00:00Z, the middle of the recorded fixtures.
T0_US = 1_723_161_600_000_000


def make_signal(symbol: str, trade_id: int, time_us: int, exchange: str = "binance") -> Signal:
    """A volume-spike signal shaped like the ones the detector raises."""
    price, volume = 61_837.63, 0.5
    return VolumeSpikeSignal(
        id=f"{exchange}:{symbol}:{DETECTOR}:{trade_id}",
        exchange=exchange,
        symbol=symbol,
        detector=DETECTOR,
        trade_id=trade_id,
        timestamp=iso_utc(time_us),
        time_us=time_us,
        price=price,
        volume=volume,
        quote_volume=price * volume,
        side="buy",
        average_volume=0.02,
        ratio=25.0,
        window=200,
        threshold=10.0,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "signals.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteSignalStore]:
    store = SQLiteSignalStore(db_path)
    yield store
    store.close()


# -- the database file ---------------------------------------------------------------


def test_new_database_file_is_created_at_the_current_schema_version(
    store: SQLiteSignalStore, db_path: Path
) -> None:
    assert db_path.exists()
    assert SCHEMA_VERSION == 4
    assert store.schema_version() == SCHEMA_VERSION


def test_database_file_is_in_wal_mode_for_other_connections_too(
    store: SQLiteSignalStore, db_path: Path
) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as other:
        (mode,) = other.execute("PRAGMA journal_mode").fetchone()
        (version,) = other.execute("PRAGMA user_version").fetchone()
    assert mode == "wal"
    assert version == SCHEMA_VERSION


def test_an_in_memory_store_is_usable_from_several_threads_at_once() -> None:
    # ``:memory:`` shares one connection under a lock (a file store, one connection per
    # thread: see the conformance suite)
    store = SQLiteSignalStore(":memory:")
    threads_n, per_thread = 4, 50
    start = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                trade_id = worker * 1000 + i
                signal = make_signal(("BTCUSDT", "ETHUSDT")[worker % 2], trade_id, T0_US + i)
                assert store.add([signal]) == 1
                assert store.add([signal]) == 0
                assert store.latest() is not None
                assert store.count() >= i + 1
                store.page(symbol=signal.symbol, limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert store.count() == threads_n * per_thread
        assert store.count("BTCUSDT") == store.count("ETHUSDT") == 2 * per_thread
        assert len(store.page(limit=1000).signals) == threads_n * per_thread
    finally:
        store.close()


# -- older schema versions -----------------------------------------------------------


def test_a_version_1_database_is_migrated_keeping_its_signals_in_order(db_path: Path) -> None:
    from spikewatch.store.sqlite import MIGRATIONS

    signals = [make_signal("BTCUSDT", 3_735_683_260 + i, T0_US + i) for i in range(3)]
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        raw.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        raw.executemany(
            "INSERT INTO signals (id, exchange, symbol, detector, trade_id, time_us, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    s.id,
                    s.exchange,
                    s.symbol,
                    s.detector,
                    s.trade_id,
                    s.time_us,
                    msgspec.json.encode(s),
                )
                for s in signals
            ],
        )
        raw.commit()
    store = SQLiteSignalStore(db_path)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert [s for _, s in store.after_seq(0)] == signals
        assert store.max_seq() == 3
        new = make_signal("BTCUSDT", 3_735_683_300, T0_US + 100)
        assert store.add([new]) == 1
        assert store.after_seq(3) == [(4, new)]
    finally:
        store.close()


SPOT, FUTURES = "binance", "binance-usdm"


def spot_and_futures() -> list[Signal]:
    """BTCUSDT on spot and on USD-M futures, and ETHUSDT spot: 30 signals whose trade times
    interleave (futures trade ids are of another range, as on Binance)."""
    out = []
    for i in range(10):
        out.append(make_signal("BTCUSDT", 3_735_683_259 + i, T0_US + i * 1000, SPOT))
        out.append(make_signal("BTCUSDT", 5_266_583_935 + i, T0_US + i * 1000 + 500, FUTURES))
        out.append(make_signal("ETHUSDT", 1_518_000_000 + i, T0_US + i * 1000, SPOT))
    return out


def gap(exchange: str, symbol: str, first_id: int, time_us: int) -> GapRecord:
    return GapRecord(
        exchange=exchange,
        symbol=symbol,
        first_id=first_id,
        last_id=first_id + 9,
        missing=10,
        time_us=time_us,
        timestamp=iso_utc(time_us),
        reason="REST down",
    )


#: The schema a spikewatch of schema version 3 created, as it was (not read from
#: MIGRATIONS, so that a change to an old migration cannot go unnoticed here).
V3_SCHEMA = """
CREATE TABLE signals (
    id TEXT PRIMARY KEY,
    exchange TEXT NOT NULL,
    symbol TEXT NOT NULL,
    detector TEXT NOT NULL,
    trade_id INTEGER NOT NULL,
    time_us INTEGER NOT NULL,
    payload BLOB NOT NULL
, seq INTEGER);
CREATE INDEX signals_by_time ON signals (time_us, id);
CREATE INDEX signals_by_symbol_time ON signals (symbol, time_us, id);
CREATE UNIQUE INDEX signals_by_seq ON signals (seq);
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
PRAGMA user_version = 3;
"""


def test_a_version_3_database_migrates_in_place_keeping_its_signals_apart_by_exchange(
    db_path: Path,
) -> None:
    signals = spot_and_futures()
    gaps = [
        gap(SPOT, "BTCUSDT", 3_735_690_000, T0_US),
        gap(FUTURES, "BTCUSDT", 5_266_590_000, T0_US),
    ]
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        raw.executescript(V3_SCHEMA)
        raw.executemany(
            "INSERT INTO signals (id, exchange, symbol, detector, trade_id, time_us, payload, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    s.id,
                    s.exchange,
                    s.symbol,
                    s.detector,
                    s.trade_id,
                    s.time_us,
                    msgspec.json.encode(s),
                    n,
                )
                for n, s in enumerate(signals, 1)
            ],
        )
        raw.executemany(
            "INSERT INTO gaps (exchange, symbol, first_id, last_id, time_us, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (g.exchange, g.symbol, g.first_id, g.last_id, g.time_us, msgspec.json.encode(g))
                for g in gaps
            ],
        )
        raw.commit()

    store = SQLiteSignalStore(db_path)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 4
        assert store.count() == 30
        assert [s for _, s in store.after_seq(0)] == signals, "kept, with their delivery numbers"
        futures = [s for s in signals if s.exchange == FUTURES]
        assert store.page(exchange=FUTURES, symbol="BTCUSDT", limit=100).signals == futures[::-1]
        assert store.latest("BTCUSDT", exchange=SPOT) == signals[-3]
        assert store.gaps(exchange=FUTURES) == [gaps[1]]
        new = make_signal("BTCUSDT", 5_266_583_999, T0_US + 60_000_000, FUTURES)
        assert store.add([new]) == 1
        assert store.after_seq(30) == [(31, new)]
    finally:
        store.close()
    # a page of one exchange (and symbol) is read in order from an index: no sort of the
    # exchange's whole history for every page
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        for where, args in (
            ("exchange = ?", (FUTURES,)),
            ("exchange = ? AND symbol = ?", (FUTURES, "BTCUSDT")),
        ):
            plan = raw.execute(
                f"EXPLAIN QUERY PLAN SELECT payload FROM signals WHERE {where} "
                "ORDER BY time_us DESC, id DESC LIMIT 100",
                args,
            ).fetchall()
            steps = " / ".join(str(row[-1]) for row in plan)
            assert "USING INDEX signals_by_exchange" in steps, steps
            assert "TEMP B-TREE" not in steps, steps
        plan = raw.execute(
            "EXPLAIN QUERY PLAN SELECT payload FROM gaps WHERE exchange = ? AND symbol = ? "
            "ORDER BY time_us DESC LIMIT 100",
            (FUTURES, "BTCUSDT"),
        ).fetchall()
        assert "TEMP B-TREE" not in " / ".join(str(row[-1]) for row in plan)


# -- a full disk, and a database that cannot be opened --------------------------------
# The disk fills up for real: PRAGMA max_page_count (SQLiteSignalStore.limit_pages) makes
# SQLite fail each write that needs one more page with SQLITE_FULL, "database or disk is
# full", as a full file system does (see tests/integration/test_disk_full.py).


@pytest.fixture
def writer(store: SQLiteSignalStore) -> Iterator[StoreWriter]:
    writer = StoreWriter(store)
    yield writer
    writer.close()


def many_signals(count: int) -> list[Signal]:
    return [make_signal("BTCUSDT", 3_735_683_259 + i, T0_US + i * 1000) for i in range(count)]


def test_a_full_disk_fails_writes_as_sqlite_full_until_there_is_room(
    store: SQLiteSignalStore,
) -> None:
    store.limit_pages(store.page_count())

    def fill() -> None:  # a page or two of room may be left: fill it
        for i in range(0, 400, 20):
            store.add(many_signals(400)[i : i + 20])

    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        fill()

    store.limit_pages(None)
    assert store.add(many_signals(400)) > 0
    assert store.count() == 400


def test_writer_reports_a_full_disk_until_a_write_succeeds_and_then_writes_it_all(
    store: SQLiteSignalStore, writer: StoreWriter
) -> None:
    assert writer.stats().healthy
    store.limit_pages(store.page_count())
    signals = many_signals(300)

    for signal in signals:
        writer.put(signal)  # the queue has room: nothing is dropped
    wait_until(lambda: not writer.stats().healthy)
    failing = writer.stats()
    assert failing.failing_since is not None
    assert failing.last_error == "OperationalError: database or disk is full"
    assert failing.dropped == 0

    store.limit_pages(None)
    assert writer.flush(timeout=30)
    done = writer.stats()
    assert (done.healthy, done.failing_since, done.last_error) == (True, None, None)
    assert done.failures >= 1
    assert store.count() == done.written == 300  # nothing lost, nothing written twice


def test_a_failing_store_drops_what_its_full_queue_cannot_take_instead_of_waiting(
    store: SQLiteSignalStore,
) -> None:
    store.limit_pages(store.page_count())
    writer = StoreWriter(store, maxsize=10)
    try:
        for signal in many_signals(300):  # fill the disk: writes begin to fail
            writer.put(signal)
        wait_until(lambda: not writer.stats().healthy)
        dropped = writer.stats().dropped
        # from now on a full queue never makes the caller wait: it drops, and counts
        for signal in many_signals(1000):
            writer.put(signal)
        stats = writer.stats()
        assert stats.queued <= 10
        assert stats.dropped - dropped >= 1000 - 10
    finally:
        writer.close(timeout=1)


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("a directory", "it is a directory; give a file name in it, e.g. "),
        ("a file in the way", " is not a folder"),
        ("/proc", ""),
        ("not a database", "file is not a database"),
    ],
)
def test_a_database_that_cannot_be_opened_is_refused_in_one_line_naming_why(
    tmp_path: Path, where: str, reason: str
) -> None:
    if where == "a directory":
        path = tmp_path
    elif where == "a file in the way":
        (tmp_path / "plain").write_text("a file, not a folder")
        path = tmp_path / "plain" / "signals.db"
    elif where == "/proc":
        path = Path("/proc/spikewatch-test.db")
    else:
        path = tmp_path / "garbage.db"
        path.write_bytes(b"this is not SQLite\n" * 100)

    with pytest.raises(StoreOpenError) as caught:
        SQLiteSignalStore(path)

    message = str(caught.value)
    assert message.startswith(f"cannot open the database {path}: ")
    assert reason in message
    assert "\n" not in message
    assert message != f"cannot open the database {path}: unable to open database file"
