"""The SQLite signal store and its writer thread, on real database files.

Each test gets a fresh database file under ``tmp_path`` (the flaskr tutorial's pattern).
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from spikewatch.core.model import GapRecord, Signal, VolumeSpikeSignal, iso_utc
from spikewatch.store import Cursor, SQLiteSignalStore, StoreWriter
from spikewatch.store.sqlite import SCHEMA_VERSION, SchemaTooNew, StoreOpenError

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


def sample_signals() -> list[Signal]:
    """25 signals over two symbols; every millisecond holds three of them, so equal trade
    times occur both on one symbol and across symbols (as in real bursts of trades)."""
    symbols = ("BTCUSDT", "ETHUSDT", "BTCUSDT")
    return [
        make_signal(symbols[i % 3], 3_735_683_259 + i, T0_US + (i // 3) * 1000) for i in range(25)
    ]


def newest_first(signals: list[Signal]) -> list[str]:
    """Ids in the order the store promises: trade time descending, then id descending."""
    return [s.id for s in sorted(signals, key=lambda s: (s.time_us, s.id), reverse=True)]


def shuffled(signals: list[Signal]) -> list[Signal]:
    """The same signals in an order unrelated to their times."""
    out = list(signals)
    random.Random(20240809).shuffle(out)
    return out


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "signals.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteSignalStore]:
    store = SQLiteSignalStore(db_path)
    yield store
    store.close()


@pytest.fixture
def filled_store(store: SQLiteSignalStore) -> SQLiteSignalStore:
    assert store.add(shuffled(sample_signals())) == 25
    return store


def walk_pages(
    store: SQLiteSignalStore,
    limit: int,
    symbol: str | None = None,
    since_us: int | None = None,
) -> list[list[str]]:
    """Follow ``next_cursor`` from the first page to the last; the ids of each page."""
    pages: list[list[str]] = []
    after: Cursor | None = None
    while True:
        page = store.page(symbol=symbol, since_us=since_us, limit=limit, after=after)
        pages.append([s.id for s in page.signals])
        if page.next_cursor is None:
            return pages
        assert len(page.signals) == limit, "a page before the last one is full"
        after = page.next_cursor
        assert len(pages) <= 100, "paging does not terminate"


# -- the database file ---------------------------------------------------------------


def test_new_database_is_created_at_the_current_schema_version(
    store: SQLiteSignalStore, db_path: Path
) -> None:
    assert db_path.exists()
    assert SCHEMA_VERSION == 4
    assert store.schema_version() == SCHEMA_VERSION
    assert store.count() == 0
    assert store.latest() is None


def test_database_file_is_in_wal_mode_for_other_connections_too(
    store: SQLiteSignalStore, db_path: Path
) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as other:
        (mode,) = other.execute("PRAGMA journal_mode").fetchone()
        (version,) = other.execute("PRAGMA user_version").fetchone()
    assert mode == "wal"
    assert version == SCHEMA_VERSION


def test_database_from_a_newer_spikewatch_is_refused_untouched(db_path: Path) -> None:
    SQLiteSignalStore(db_path).close()
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(SchemaTooNew, match="newer than this spikewatch"):
        SQLiteSignalStore(db_path)

    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        (version,) = raw.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION + 1


# -- adding and reading --------------------------------------------------------------


def test_adding_the_same_signal_twice_keeps_one(store: SQLiteSignalStore) -> None:
    signal = make_signal("BTCUSDT", 3_735_683_259, T0_US)

    assert store.add([signal]) == 1
    assert store.add([signal]) == 0
    assert store.add([signal, make_signal("BTCUSDT", 3_735_683_260, T0_US)]) == 1

    assert store.count() == 2
    assert store.count("BTCUSDT") == 2


def test_signals_survive_a_restart(db_path: Path) -> None:
    signals = sample_signals()
    first = SQLiteSignalStore(db_path)
    try:
        first.add(shuffled(signals))
    finally:
        first.close()

    second = SQLiteSignalStore(db_path)
    try:
        assert second.schema_version() == SCHEMA_VERSION
        assert second.count() == 25
        assert second.count("ETHUSDT") == 8
        stored = second.page(limit=100).signals
    finally:
        second.close()
    # Every field comes back exactly as it went in.
    assert sorted(stored, key=lambda s: s.id) == sorted(signals, key=lambda s: s.id)


def test_latest_is_the_latest_by_trade_time_not_by_insertion(store: SQLiteSignalStore) -> None:
    late = make_signal("ETHUSDT", 100, T0_US + 5_000_000)
    early = make_signal("BTCUSDT", 200, T0_US)
    store.add([late])
    store.add([early])  # added last, but traded first

    assert store.latest() == late
    assert store.latest("BTCUSDT") == early
    assert store.latest("ETHUSDT") == late
    assert store.latest("SOLUSDT") is None


def test_latest_per_symbol_over_equal_trade_times(filled_store: SQLiteSignalStore) -> None:
    signals = sample_signals()
    expected_any = newest_first(signals)[0]
    expected_btc = newest_first([s for s in signals if s.symbol == "BTCUSDT"])[0]
    expected_eth = newest_first([s for s in signals if s.symbol == "ETHUSDT"])[0]

    latest_any = filled_store.latest()
    latest_btc = filled_store.latest("BTCUSDT")
    latest_eth = filled_store.latest("ETHUSDT")
    assert latest_any is not None
    assert latest_btc is not None
    assert latest_eth is not None
    assert latest_any.id == expected_any
    assert latest_btc.id == expected_btc
    assert latest_eth.id == expected_eth
    assert latest_btc.time_us > latest_eth.time_us


def test_page_is_newest_first(filled_store: SQLiteSignalStore) -> None:
    page = filled_store.page(limit=100)

    assert [s.id for s in page.signals] == newest_first(sample_signals())
    assert page.next_cursor is None


def test_page_filters_by_symbol_and_time_range(filled_store: SQLiteSignalStore) -> None:
    signals = sample_signals()
    since, until = T0_US + 2000, T0_US + 5000  # the 3rd..5th milliseconds

    by_symbol = filled_store.page(symbol="ETHUSDT", limit=100).signals
    assert [s.id for s in by_symbol] == newest_first([s for s in signals if s.symbol == "ETHUSDT"])

    in_range = filled_store.page(since_us=since, until_us=until, limit=100).signals
    assert [s.id for s in in_range] == newest_first(
        [s for s in signals if since <= s.time_us < until]
    )
    times = {s.time_us for s in in_range}
    assert since in times, "since is inclusive"
    assert until not in times, "until is exclusive"
    assert len(in_range) == 9

    both = filled_store.page(symbol="BTCUSDT", since_us=since, until_us=until, limit=100).signals
    assert [s.id for s in both] == newest_first(
        [s for s in signals if s.symbol == "BTCUSDT" and since <= s.time_us < until]
    )
    assert len(both) == 6


@pytest.mark.parametrize("limit", [1, 3, 7, 5, 25, 100])
def test_paging_with_next_cursor_visits_every_signal_once(
    filled_store: SQLiteSignalStore, limit: int
) -> None:
    pages = walk_pages(filled_store, limit)

    walked = [signal_id for page in pages for signal_id in page]
    assert walked == newest_first(sample_signals())
    assert len(set(walked)) == 25
    # No empty page at the end, even when 25 divides evenly by the limit.
    assert len(pages) == -(-25 // limit)


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_paging_a_filtered_view_visits_every_matching_signal_once(
    filled_store: SQLiteSignalStore, limit: int
) -> None:
    since = T0_US + 1000
    pages = walk_pages(filled_store, limit, symbol="BTCUSDT", since_us=since)

    walked = [signal_id for page in pages for signal_id in page]
    assert walked == newest_first(
        [s for s in sample_signals() if s.symbol == "BTCUSDT" and s.time_us >= since]
    )


def test_signals_added_while_paging_do_not_shift_later_pages(
    filled_store: SQLiteSignalStore,
) -> None:
    first = filled_store.page(limit=10)
    assert first.next_cursor is not None
    # A new, newer spike arrives between two page requests.
    filled_store.add([make_signal("BTCUSDT", 9_999_999_999, T0_US + 60_000_000)])

    rest = walk_pages(filled_store, 10)
    # Started over, the walk sees 26; continued from the cursor, it sees the other 15.
    assert sum(len(p) for p in rest) == 26
    second = filled_store.page(limit=100, after=first.next_cursor)
    walked = [s.id for s in first.signals] + [s.id for s in second.signals]
    assert walked == newest_first(sample_signals())


# -- threads -------------------------------------------------------------------------


@pytest.mark.parametrize("where", [":memory:", "file"])
def test_store_is_usable_from_several_threads_at_once(where: str, db_path: Path) -> None:
    store = SQLiteSignalStore(":memory:" if where == ":memory:" else db_path)
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
        assert len(walk_pages(store, 1000)[0]) == threads_n * per_thread
    finally:
        store.close()


# -- the writer thread ---------------------------------------------------------------


@pytest.fixture
def writer(store: SQLiteSignalStore) -> Iterator[StoreWriter]:
    writer = StoreWriter(store)
    yield writer
    writer.close()


def test_writer_has_written_everything_put_once_flush_returns(
    store: SQLiteSignalStore, writer: StoreWriter
) -> None:
    for signal in sample_signals():
        writer.put(signal)

    assert writer.flush(timeout=10)

    assert store.count() == 25
    stats = writer.stats()
    assert (stats.queued, stats.written, stats.duplicates, stats.failures) == (0, 25, 0, 0)
    assert stats.last_write_ms is not None


def test_writer_counts_the_same_signal_twice_as_a_duplicate(
    store: SQLiteSignalStore, writer: StoreWriter
) -> None:
    signal = make_signal("BTCUSDT", 3_735_683_259, T0_US)
    writer.put(signal)
    writer.put(signal)
    assert writer.flush(timeout=10)
    writer.put(signal)  # in a later batch too
    assert writer.flush(timeout=10)

    assert store.count() == 1
    stats = writer.stats()
    assert (stats.written, stats.duplicates, stats.failures) == (1, 2, 0)


def test_writer_close_writes_what_was_still_pending(db_path: Path) -> None:
    store = SQLiteSignalStore(db_path)
    try:
        writer = StoreWriter(store)
        for signal in sample_signals():
            writer.put(signal)
        writer.close()  # no flush first
        assert writer.stats().written == 25
    finally:
        store.close()

    reopened = SQLiteSignalStore(db_path)
    try:
        assert reopened.count() == 25
    finally:
        reopened.close()


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


def test_signals_stored_before_a_restart_are_not_delivered_again(
    db_path: Path, btc_frames: list[bytes]
) -> None:
    from spikewatch.config import load_settings
    from spikewatch.engine import Engine

    settings = load_settings({"db": str(db_path)}, env={})
    first_store = SQLiteSignalStore(db_path)
    try:
        before: list[Signal] = []
        first = Engine(settings, first_store)
        first.add_listener(before.append)
        for frame in btc_frames[:6000]:
            first.handle_frame(frame)
        first_store.add(before)
    finally:
        first_store.close()
    store = SQLiteSignalStore(db_path)
    try:
        after: list[Signal] = []
        second = Engine(settings, store)  # a restart that processes the same trades again
        second.add_listener(after.append)
        for frame in btc_frames[:9000]:
            second.handle_frame(frame)
        assert before
        assert after
        assert {s.id for s in after}.isdisjoint(s.id for s in before)
        assert min(s.trade_id for s in after) > max(s.trade_id for s in before)
    finally:
        store.close()


# -- (exchange, symbol) is the key ---------------------------------------------------

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


def test_btcusdt_spot_and_btcusdt_futures_are_read_apart(store: SQLiteSignalStore) -> None:
    signals = spot_and_futures()
    store.add(shuffled(signals))
    futures = [s for s in signals if s.exchange == FUTURES]
    spot_btc = [s for s in signals if s.exchange == SPOT and s.symbol == "BTCUSDT"]

    page = store.page(exchange=FUTURES, limit=100)
    assert [s.id for s in page.signals] == newest_first(futures)
    both = store.page(exchange=SPOT, symbol="BTCUSDT", limit=100).signals
    assert [s.id for s in both] == newest_first(spot_btc)
    payloads, _ = store.page_json(exchange=SPOT, symbol="BTCUSDT", limit=100)
    assert [msgspec.json.decode(p)["id"] for p in payloads] == newest_first(spot_btc)
    assert store.page(symbol="BTCUSDT", limit=100).signals == sorted(
        futures + spot_btc, key=lambda s: (s.time_us, s.id), reverse=True
    ), "no exchange: both"

    latest_futures = store.latest("BTCUSDT", exchange=FUTURES)
    assert latest_futures is not None
    assert latest_futures.id == newest_first(futures)[0]
    assert store.latest(exchange="binance-coinm") is None

    assert (store.count(), store.count("BTCUSDT")) == (30, 20)
    assert store.count(exchange=SPOT) == 20
    assert store.count("BTCUSDT", exchange=FUTURES) == 10
    assert store.count("ETHUSDT", exchange=FUTURES) == 0

    delivered = store.after_seq(0, exchange=FUTURES)
    assert [s for _, s in delivered] == [s for s in shuffled(signals) if s.exchange == FUTURES]
    assert store.after_seq(0, symbol="ETHUSDT", exchange=FUTURES) == []


@pytest.mark.parametrize("limit", [1, 3, 4])
def test_paging_one_exchange_with_next_cursor_visits_its_signals_once(
    store: SQLiteSignalStore, limit: int
) -> None:
    signals = spot_and_futures()
    store.add(shuffled(signals))

    for exchange, symbol in ((SPOT, None), (SPOT, "BTCUSDT"), (FUTURES, "BTCUSDT")):
        walked: list[str] = []
        after: Cursor | None = None
        while True:
            page = store.page(exchange=exchange, symbol=symbol, limit=limit, after=after)
            walked += [s.id for s in page.signals]
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert walked == newest_first(
            [s for s in signals if s.exchange == exchange and symbol in (None, s.symbol)]
        )


def test_gaps_are_read_by_exchange(store: SQLiteSignalStore) -> None:
    spot_gap = gap(SPOT, "BTCUSDT", 3_735_690_000, T0_US + 2_000_000)
    futures_gap = gap(FUTURES, "BTCUSDT", 5_266_590_000, T0_US + 1_000_000)
    store.add_gap(spot_gap)
    store.add_gap(futures_gap)

    assert store.gaps() == [spot_gap, futures_gap]
    assert store.gaps(exchange=FUTURES) == [futures_gap]
    assert store.gaps(exchange=SPOT, symbol="BTCUSDT") == [spot_gap]
    assert store.gaps(exchange=SPOT, symbol="ETHUSDT") == []


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
