"""The signal store's contract, checked on every implementation: SQLite and PostgreSQL.

Each test runs once per store (``[sqlite]``, ``[postgres]``): SQLite on a fresh file under
``tmp_path``, PostgreSQL on a real server (never a mock) in a fresh schema of its own,
``sw_test_<random>``, dropped afterwards. The stores are opened the way the app opens
them, with :func:`spikewatch.store.open_store` (the PostgreSQL URL sets the connection's
``search_path`` to the test's schema through the ``options`` parameter).

The server is ``SPIKEWATCH_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it does not answer, the PostgreSQL
tests fail in CI (``CI`` is set; ``.ci/run`` starts the server first) and are skipped, with
the reason, elsewhere. What only one store has (SQLite's WAL, its file errors and full
disk, its old schema versions) is tested in test_store.py.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikewatch.core.model import GapRecord, Signal, VolumeSpikeSignal, iso_utc
from spikewatch.store import (
    Cursor,
    PostgresSignalStore,
    SignalStore,
    SQLiteSignalStore,
    StoreWriter,
    open_store,
)
from spikewatch.store import postgres as pg_module
from spikewatch.store import sqlite as sqlite_module
from spikewatch.store.base import Checkpoint, encode_checkpoint
from spikewatch.store.postgres import redact_url
from spikewatch.store.sqlite import SchemaTooNew, StoreOpenError

from helpers import spike_signal

POSTGRES_URL = os.environ.get(
    "SPIKEWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
#: 2024-08-09T00:00:00Z, the middle of the recorded fixtures.
T0_US = 1_723_161_600_000_000
SPOT, FUTURES = "binance", "binance-usdm"
T = TypeVar("T")


# -- the two stores ------------------------------------------------------------------


class Backend(Protocol):
    """One kind of store, and raw access to its database (what a test cannot do through
    the port: change the schema version, write a payload another version wrote)."""

    name: str
    #: what open_store is given: a file path or a postgresql:// URL
    target: str
    #: the schema version this spikewatch writes
    current_version: int

    def open(self) -> SignalStore: ...

    def schema_version(self) -> int: ...

    def set_schema_version(self, version: int) -> None: ...

    def put_raw_checkpoint(self, exchange: str, symbol: str, payload: bytes) -> None: ...

    def clear(self) -> None: ...


class SQLiteBackend:
    name = "sqlite"
    current_version = sqlite_module.SCHEMA_VERSION

    def __init__(self, path: Path) -> None:
        self.target = str(path)

    def open(self) -> SignalStore:
        return open_store(self.target)

    def _raw(self) -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(sqlite3.connect(self.target, isolation_level=None))

    def schema_version(self) -> int:
        with self._raw() as raw:
            return int(raw.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        with self._raw() as raw:
            raw.execute(f"PRAGMA user_version = {int(version)}")

    def put_raw_checkpoint(self, exchange: str, symbol: str, payload: bytes) -> None:
        with self._raw() as raw:
            raw.execute(
                "INSERT OR REPLACE INTO checkpoints (exchange, symbol, payload) VALUES (?, ?, ?)",
                (exchange, symbol, payload),
            )

    def clear(self) -> None:
        with self._raw() as raw:
            raw.execute("DELETE FROM signals")


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (libpq's ``options`` URL parameter)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-c search_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class PostgresBackend:
    name = "postgres"
    current_version = pg_module.SCHEMA_VERSION

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self.target = with_search_path(url, schema)

    def execute(self, query: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.target, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []

    def create(self) -> None:
        self.execute(f"CREATE SCHEMA {self.schema}")

    def drop(self) -> None:
        self.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def open(self) -> SignalStore:
        return open_store(self.target)

    def schema_version(self) -> int:
        rows = self.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(str(rows[0][0]))

    def set_schema_version(self, version: int) -> None:
        self.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    def put_raw_checkpoint(self, exchange: str, symbol: str, payload: bytes) -> None:
        self.execute(
            "INSERT INTO checkpoints (exchange, symbol, payload) VALUES (%s, %s, %s) "
            "ON CONFLICT (exchange, symbol) DO UPDATE SET payload = EXCLUDED.payload",
            (exchange, symbol, payload),
        )

    def clear(self) -> None:
        self.execute("TRUNCATE signals")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL, once it answers: in CI a server that does not is a failure
    (the PostgreSQL half of the contract would go untested), elsewhere a skip."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=5):
            pass
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        where = redact_url(POSTGRES_URL)
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {where} is not answering ({reason}): .ci/run starts it")
        pytest.skip(
            f"PostgreSQL at {where} is not answering ({reason}); start it, or point "
            "SPIKEWATCH_TEST_POSTGRES at one"
        )
    return POSTGRES_URL


def new_schema_name() -> str:
    return f"sw_test_{secrets.token_hex(6)}"


@pytest.fixture
def pg_backend(postgres_url: str) -> Iterator[PostgresBackend]:
    backend = PostgresBackend(postgres_url, new_schema_name())
    backend.create()
    try:
        yield backend
    finally:
        backend.drop()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "signals.db")
    pg: PostgresBackend = request.getfixturevalue("pg_backend")
    return pg


@pytest.fixture
def store(backend: Backend) -> Iterator[SignalStore]:
    store = backend.open()
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def reopened(backend: Backend) -> Iterator[SignalStore]:
    """The same database opened again, as after a restart."""
    store = backend.open()
    try:
        yield store
    finally:
        store.close()


# -- signals -------------------------------------------------------------------------


def make_signal(symbol: str, trade_id: int, time_us: int, exchange: str = SPOT) -> Signal:
    return spike_signal(exchange, trade_id, time_us, symbol)


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


def shuffled(signals: list[T]) -> list[T]:
    """The same signals (or records) in an order unrelated to their times."""
    out = list(signals)
    random.Random(20240809).shuffle(out)
    return out


def spot_and_futures() -> list[Signal]:
    """BTCUSDT on spot and on USD-M futures, and ETHUSDT spot: 30 signals whose trade times
    interleave (futures trade ids are of another range, as on Binance)."""
    out = []
    for i in range(10):
        out.append(make_signal("BTCUSDT", 3_735_683_259 + i, T0_US + i * 1000, SPOT))
        out.append(make_signal("BTCUSDT", 5_266_583_935 + i, T0_US + i * 1000 + 500, FUTURES))
        out.append(make_signal("ETHUSDT", 1_518_000_000 + i, T0_US + i * 1000, SPOT))
    return out


def gap(exchange: str, symbol: str, first_id: int, time_us: int, missing: int = 10) -> GapRecord:
    return GapRecord(
        exchange=exchange,
        symbol=symbol,
        first_id=first_id,
        last_id=first_id + missing - 1,
        missing=missing,
        time_us=time_us,
        timestamp=iso_utc(time_us),
        reason="REST down",
    )


def checkpoint(exchange: str, symbol: str, last_id: int) -> Checkpoint:
    return Checkpoint(
        exchange=exchange,
        symbol=symbol,
        last_id=last_id,
        detectors=[{"kind": "volume_spike", "window": [1, 2, 3], "sum": 6}],
        saved_at=1_723_161_600.25,
        last_time_us=T0_US + last_id,
        alerts=[{"key": "notional", "until_us": T0_US + 60_000_000}],
    )


@pytest.fixture
def filled_store(store: SignalStore) -> SignalStore:
    assert store.add(shuffled(sample_signals())) == 25
    return store


def walk_pages(
    store: SignalStore,
    limit: int,
    *,
    exchange: str | None = None,
    symbol: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
) -> list[list[str]]:
    """Follow ``next_cursor`` from the first page to the last; the ids of each page."""
    pages: list[list[str]] = []
    after: Cursor | None = None
    while True:
        page = store.page(
            exchange=exchange,
            symbol=symbol,
            since_us=since_us,
            until_us=until_us,
            limit=limit,
            after=after,
        )
        pages.append([s.id for s in page.signals])
        if page.next_cursor is None:
            return pages
        assert len(page.signals) == limit, "a page before the last one is full"
        after = page.next_cursor
        assert len(pages) <= 1000, "paging does not terminate"


# -- opening: schema versions --------------------------------------------------------


def test_a_new_store_is_empty_at_the_current_schema_version(
    backend: Backend, store: SignalStore
) -> None:
    assert backend.schema_version() == backend.current_version
    assert store.count() == 0
    assert store.latest() is None
    assert store.max_seq() == 0
    assert store.after_seq(0) == []
    assert store.page() == store.page(exchange=SPOT, symbol="BTCUSDT")
    assert store.page().signals == []
    assert store.page().next_cursor is None
    assert store.page_json() == ([], None)
    assert store.gaps() == []
    assert store.checkpoints(SPOT) == {}
    assert store.last_trade_ids(SPOT) == {}


def test_reopening_migrates_nothing_twice_and_keeps_everything(backend: Backend) -> None:
    signals = sample_signals()
    gaps = [gap(SPOT, "BTCUSDT", 3_735_690_000, T0_US + 1), gap(SPOT, "ETHUSDT", 1_500, T0_US)]
    saved = [checkpoint(SPOT, "BTCUSDT", 3_735_683_283), checkpoint(FUTURES, "BTCUSDT", 77)]
    with reopened(backend) as first:
        first.add(shuffled(signals))
        for record in gaps:
            first.add_gap(record)
        first.save_checkpoints(saved)
        delivered = first.after_seq(0)

    for _ in range(3):  # every restart finds the schema current and changes nothing
        with reopened(backend) as again:
            assert backend.schema_version() == backend.current_version
            assert again.count() == 25
            assert again.count("ETHUSDT") == 8
            assert again.after_seq(0) == delivered
            assert again.max_seq() == 25
            assert again.gaps() == gaps
            assert again.checkpoints(SPOT) == {"BTCUSDT": saved[0]}
            assert again.checkpoints(FUTURES) == {"BTCUSDT": saved[1]}
            stored = again.page(limit=100).signals
    # Every field comes back exactly as it went in.
    assert sorted(stored, key=lambda s: s.id) == sorted(signals, key=lambda s: s.id)


def test_stores_opened_together_on_a_new_database_all_come_up_current(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    # several processes starting at once: one creates the tables, the others wait for it
    if backend.name == "sqlite":
        # A known defect of the SQLite store, not of this test: SQLiteSignalStore._connect
        # switches a new file to WAL, and SQLite can answer a connection that does so
        # while another holds the file with "database is locked" despite the 10 s busy
        # timeout (3 times in 100 with 4 starters here). PostgreSQL takes an advisory lock.
        request.applymarker(
            pytest.mark.xfail(strict=False, reason="SQLite: WAL switch of a new file races")
        )
    starters = 4
    barrier = threading.Barrier(starters)
    opened: list[SignalStore] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            barrier.wait()
            store = backend.open()
            with lock:
                opened.append(store)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert errors == []
        assert len(opened) == starters
        assert backend.schema_version() == backend.current_version
        assert opened[0].add([make_signal("BTCUSDT", 1, T0_US)]) == 1
        assert all(store.count() == 1 for store in opened)
    finally:
        for store in opened:
            store.close()


def test_a_database_from_a_newer_spikewatch_is_refused_untouched(backend: Backend) -> None:
    with reopened(backend) as store:
        store.add(sample_signals())
    newer = backend.current_version + 1
    backend.set_schema_version(newer)

    with pytest.raises(SchemaTooNew, match="newer than this spikewatch") as caught:
        backend.open()
    assert isinstance(caught.value, StoreOpenError), "the command line tells it in one line"
    assert "\n" not in str(caught.value)

    assert backend.schema_version() == newer


def test_open_store_picks_the_store_by_the_target(tmp_path: Path, postgres_url: str) -> None:
    sqlite_store = open_store(str(tmp_path / "signals.db"))
    try:
        assert isinstance(sqlite_store, SQLiteSignalStore)
    finally:
        sqlite_store.close()
    for other in (":memory:", tmp_path / "as-a-path.db"):
        opened = open_store(other)
        try:
            assert isinstance(opened, SQLiteSignalStore)
        finally:
            opened.close()
    schema = new_schema_name()
    backend = PostgresBackend(postgres_url, schema)
    backend.create()
    try:
        for url in (backend.target, backend.target.replace("postgresql://", "postgres://", 1)):
            pg_store = open_store(url)
            try:
                assert isinstance(pg_store, PostgresSignalStore)
                assert pg_store.add([make_signal("BTCUSDT", 1, T0_US)]) in (0, 1)
            finally:
                pg_store.close()
        assert backend.execute("SELECT count(*) FROM signals") == [(1,)], "in its schema"
    finally:
        backend.drop()


# -- adding and reading --------------------------------------------------------------


def test_adding_the_same_signal_twice_keeps_one(store: SignalStore) -> None:
    signal = make_signal("BTCUSDT", 3_735_683_259, T0_US)

    assert store.add([signal]) == 1
    assert store.add([signal]) == 0
    assert store.add([signal, make_signal("BTCUSDT", 3_735_683_260, T0_US)]) == 1
    twice = make_signal("ETHUSDT", 1, T0_US)
    assert store.add([twice, twice]) == 1, "twice in one batch too"
    assert store.add([]) == 0

    assert store.count() == 3
    assert store.count("BTCUSDT") == 2


def test_latest_is_the_latest_by_trade_time_not_by_insertion(store: SignalStore) -> None:
    late = make_signal("ETHUSDT", 100, T0_US + 5_000_000)
    early = make_signal("BTCUSDT", 200, T0_US)
    store.add([late])
    store.add([early])  # added last, but traded first

    assert store.latest() == late
    assert store.latest("BTCUSDT") == early
    assert store.latest("ETHUSDT") == late
    assert store.latest("SOLUSDT") is None


def test_latest_per_symbol_over_equal_trade_times(filled_store: SignalStore) -> None:
    signals = sample_signals()
    for symbol in (None, "BTCUSDT", "ETHUSDT"):
        latest = filled_store.latest(symbol)
        assert latest is not None
        assert latest.id == newest_first([s for s in signals if symbol in (None, s.symbol)])[0]


def test_page_is_newest_first_and_its_json_is_the_signals_encoding(
    filled_store: SignalStore,
) -> None:
    page = filled_store.page(limit=100)
    payloads, cursor = filled_store.page_json(limit=100)

    assert [s.id for s in page.signals] == newest_first(sample_signals())
    assert page.next_cursor is None
    assert cursor is None
    assert payloads == [msgspec.json.encode(s) for s in page.signals], "byte for byte"


def test_page_filters_by_symbol_and_time_range(filled_store: SignalStore) -> None:
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


def test_ids_at_one_trade_time_are_ordered_by_code_point_whatever_the_locale(
    store: SignalStore,
) -> None:
    # SQLite compares text byte by byte; PostgreSQL would use the database's locale
    # (en-US puts "a" before "B" and ignores "-"), unless the columns say "C"
    ids = ["a", "A", "B", "b", "a-b", "aB", "ab", "a_b", "Z", "é", "e", "f", "0", " ", "~"]
    signals: list[Signal] = [
        VolumeSpikeSignal(**{**msgspec.structs.asdict(make_signal("BTCUSDT", n, T0_US)), "id": i})
        for n, i in enumerate(ids)
    ]
    store.add(shuffled(signals))

    expected = sorted(ids, reverse=True)
    assert [s.id for s in store.page(limit=100).signals] == expected
    assert [i for page in walk_pages(store, 2) for i in page] == expected


@pytest.mark.parametrize("limit", [1, 3, 7, 5, 25, 100])
def test_paging_with_next_cursor_visits_every_signal_once(
    filled_store: SignalStore, limit: int
) -> None:
    pages = walk_pages(filled_store, limit)

    walked = [signal_id for page in pages for signal_id in page]
    assert walked == newest_first(sample_signals())
    assert len(set(walked)) == 25
    # No empty page at the end, even when 25 divides evenly by the limit.
    assert len(pages) == -(-25 // limit)


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_paging_a_filtered_view_visits_every_matching_signal_once(
    filled_store: SignalStore, limit: int
) -> None:
    since = T0_US + 1000
    pages = walk_pages(filled_store, limit, symbol="BTCUSDT", since_us=since)

    walked = [signal_id for page in pages for signal_id in page]
    assert walked == newest_first(
        [s for s in sample_signals() if s.symbol == "BTCUSDT" and s.time_us >= since]
    )


def test_a_cursor_survives_its_trip_through_a_url(filled_store: SignalStore) -> None:
    first = filled_store.page(limit=4)
    assert first.next_cursor is not None
    token = first.next_cursor.encode()

    second = filled_store.page(limit=4, after=Cursor.decode(token))
    assert [s.id for s in first.signals + second.signals] == newest_first(sample_signals())[:8]


def test_signals_added_while_paging_do_not_shift_later_pages(filled_store: SignalStore) -> None:
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


def test_last_trade_ids_are_the_highest_stored_by_symbol_and_detector(store: SignalStore) -> None:
    store.add(shuffled(spot_and_futures()))

    assert store.last_trade_ids(SPOT) == {
        ("BTCUSDT", "volume_spike-w200-x10"): 3_735_683_268,
        ("ETHUSDT", "volume_spike-w200-x10"): 1_518_000_009,
    }
    assert store.last_trade_ids(FUTURES) == {("BTCUSDT", "volume_spike-w200-x10"): 5_266_583_944}
    assert store.last_trade_ids("binance-coinm") == {}


# -- (exchange, symbol) is the key ---------------------------------------------------


def test_btcusdt_spot_and_btcusdt_futures_are_read_apart(store: SignalStore) -> None:
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
    store: SignalStore, limit: int
) -> None:
    signals = spot_and_futures()
    store.add(shuffled(signals))

    for exchange, symbol in ((SPOT, None), (SPOT, "BTCUSDT"), (FUTURES, "BTCUSDT")):
        pages = walk_pages(store, limit, exchange=exchange, symbol=symbol)
        walked = [signal_id for page in pages for signal_id in page]
        assert walked == newest_first(
            [s for s in signals if s.exchange == exchange and symbol in (None, s.symbol)]
        )


# -- delivery order ------------------------------------------------------------------


def test_after_seq_delivers_in_the_order_added_and_resumes_where_a_client_left(
    store: SignalStore,
) -> None:
    signals = spot_and_futures()
    batches = [signals[:7], signals[7:8], signals[8:30]]
    for batch in batches:
        store.add(batch)

    delivered = store.after_seq(0)
    assert delivered == list(enumerate(signals, 1))
    assert store.max_seq() == 30
    # a live client that saw event 12 (Last-Event-ID: 12) gets the rest, and only that
    assert store.after_seq(12) == delivered[12:]
    assert store.after_seq(12, limit=5) == delivered[12:17]
    assert store.after_seq(30) == []
    assert store.after_seq(0, symbol="ETHUSDT") == [
        (n, s) for n, s in delivered if s.symbol == "ETHUSDT"
    ]
    assert store.after_seq(10, exchange=SPOT, symbol="BTCUSDT") == [
        (n, s) for n, s in delivered[10:] if (s.exchange, s.symbol) == (SPOT, "BTCUSDT")
    ]


def test_delivery_numbers_given_by_the_engine_are_kept_and_the_store_numbers_after_them(
    store: SignalStore,
) -> None:
    signals = sample_signals()
    assert store.add(signals[:3], [5, 6, 9]) == 3
    assert store.add(signals[:3], [10, 11, 12]) == 0, "a duplicate is skipped, number and all"
    assert store.max_seq() == 9
    assert [n for n, _ in store.after_seq(0)] == [5, 6, 9]
    assert store.after_seq(6) == [(9, signals[2])]

    assert store.add(signals[3:5]) == 2  # numbered by the store: after the highest
    assert store.after_seq(9) == [(10, signals[3]), (11, signals[4])]
    # as many numbers as signals, or none
    with pytest.raises(ValueError, match=r"shorter than|sequence numbers"):
        store.add(signals[5:7], [20])


def test_a_duplicate_skipped_by_the_store_takes_no_later_signal_s_place(
    store: SignalStore,
) -> None:
    signals = sample_signals()
    store.add(signals[:2])
    store.add([signals[1], signals[2]])

    numbers = [n for n, _ in store.after_seq(0)]
    assert [s for _, s in store.after_seq(0)] == signals[:3]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 3


def test_several_writers_and_a_reader_polling_after_seq_see_every_signal_exactly_once(
    backend: Backend,
) -> None:
    # The distributed mode: several detect processes write to one database, each with its
    # own connections, and numbers its signals itself; a live client resumes with
    # after_seq(last seen) and never looks back. A number that became visible after a
    # higher one would be skipped for good: the reader must see each signal exactly once.
    writers_n, batches_per_writer = 4, 40
    writers = [backend.open() for _ in range(writers_n)]
    reader_store = backend.open()
    start = threading.Barrier(writers_n + 1)
    done = threading.Event()
    errors: list[BaseException] = []
    seen: list[tuple[int, str]] = []
    written: list[list[str]] = [[] for _ in range(writers_n)]

    def write(worker: int) -> None:
        rng = random.Random(worker)
        try:
            start.wait()
            for batch in range(batches_per_writer):
                size = rng.randint(1, 6)
                signals = [
                    make_signal(
                        ("BTCUSDT", "ETHUSDT")[worker % 2],
                        worker * 1_000_000 + batch * 10 + k,
                        T0_US + rng.randrange(1_000_000),
                        (SPOT, FUTURES)[worker // 2 % 2],
                    )
                    for k in range(size)
                ]
                assert writers[worker].add(signals) == size
                written[worker] += [s.id for s in signals]
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        last = 0
        try:
            start.wait()
            while True:
                finished = done.is_set()  # read once more after the writers have finished
                rows = reader_store.after_seq(last, limit=7)
                seen.extend((n, s.id) for n, s in rows)
                if rows:
                    last = rows[-1][0]
                elif finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers_n)]
    reader = threading.Thread(target=read)
    try:
        reader.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        done.set()
        reader.join(60)
        assert not reader.is_alive()
        assert errors == []
        numbers = [n for n, _ in seen]
        assert numbers == sorted(numbers), "in delivery order"
        assert len(numbers) == len(set(numbers))
        ids = [signal_id for _, signal_id in seen]
        assert len(ids) == len(set(ids)), "none twice"
        expected = {signal_id for ids_of_one in written for signal_id in ids_of_one}
        assert len(expected) > writers_n * batches_per_writer
        assert set(ids) == expected, "none skipped"
        assert reader_store.count() == len(expected)
    finally:
        for store in [*writers, reader_store]:
            store.close()


# -- gaps and checkpoints ------------------------------------------------------------


def test_gaps_are_read_by_exchange(store: SignalStore) -> None:
    spot_gap = gap(SPOT, "BTCUSDT", 3_735_690_000, T0_US + 2_000_000)
    futures_gap = gap(FUTURES, "BTCUSDT", 5_266_590_000, T0_US + 1_000_000)
    store.add_gap(spot_gap)
    store.add_gap(futures_gap)

    assert store.gaps() == [spot_gap, futures_gap]
    assert store.gaps(exchange=FUTURES) == [futures_gap]
    assert store.gaps(exchange=SPOT, symbol="BTCUSDT") == [spot_gap]
    assert store.gaps(exchange=SPOT, symbol="ETHUSDT") == []


def test_a_gap_recorded_twice_is_kept_once_as_last_recorded(store: SignalStore) -> None:
    first = gap(SPOT, "BTCUSDT", 3_735_690_000, T0_US, missing=10)
    again = gap(SPOT, "BTCUSDT", 3_735_690_000, T0_US + 5, missing=12)  # same hole, wider
    other_symbol = gap(SPOT, "ETHUSDT", 3_735_690_000, T0_US + 1)
    store.add_gap(first)
    store.add_gap(first)
    store.add_gap(again)
    store.add_gap(other_symbol)

    assert store.gaps() == [again, other_symbol]


def test_gaps_are_newest_first_within_a_time_range_and_a_limit(store: SignalStore) -> None:
    records = [gap(SPOT, "BTCUSDT", 1000 * i, T0_US + i * 1000) for i in range(10)]
    for record in shuffled(records):
        store.add_gap(record)

    assert store.gaps(limit=3) == records[::-1][:3]
    assert store.gaps(since_us=T0_US + 2000, until_us=T0_US + 5000) == records[4:1:-1]
    assert store.gaps(exchange=SPOT, symbol="BTCUSDT", since_us=T0_US + 8000) == records[:7:-1]


def test_checkpoints_round_trip_and_replace_those_of_the_same_symbol(store: SignalStore) -> None:
    btc, eth = checkpoint(SPOT, "BTCUSDT", 100), checkpoint(SPOT, "ETHUSDT", 200)
    futures = checkpoint(FUTURES, "BTCUSDT", 300)
    store.save_checkpoints([btc, eth, futures])
    assert store.checkpoints(SPOT) == {"BTCUSDT": btc, "ETHUSDT": eth}
    assert store.checkpoints(FUTURES) == {"BTCUSDT": futures}

    newer = checkpoint(SPOT, "BTCUSDT", 150)
    store.save_checkpoints([newer])
    store.save_checkpoints([])
    assert store.checkpoints(SPOT) == {"BTCUSDT": newer, "ETHUSDT": eth}
    assert store.checkpoints("binance-coinm") == {}


def test_a_checkpoint_encoded_when_it_was_taken_reads_back_as_the_checkpoint(
    store: SignalStore,
) -> None:
    # the engine encodes each symbol's checkpoint as it takes it (objects of 2,000
    # symbols' states waiting for the writer were 20 MB); the two kinds mix in one call
    btc, eth = checkpoint(SPOT, "BTCUSDT", 100), checkpoint(SPOT, "ETHUSDT", 200)
    store.save_checkpoints([encode_checkpoint(btc), eth])
    assert store.checkpoints(SPOT) == {"BTCUSDT": btc, "ETHUSDT": eth}

    newer = checkpoint(SPOT, "ETHUSDT", 250)
    store.save_checkpoints([encode_checkpoint(newer)])
    assert store.checkpoints(SPOT) == {"BTCUSDT": btc, "ETHUSDT": newer}


def test_a_checkpoint_another_version_wrote_is_skipped_and_that_symbol_starts_afresh(
    backend: Backend, store: SignalStore
) -> None:
    kept = checkpoint(SPOT, "ETHUSDT", 200)
    store.save_checkpoints([checkpoint(SPOT, "BTCUSDT", 100), kept])
    backend.put_raw_checkpoint(SPOT, "BTCUSDT", b'{"exchange": "binance", "symbol": 7}')

    assert store.checkpoints(SPOT) == {"ETHUSDT": kept}


# -- threads and the writer ----------------------------------------------------------


def test_store_is_usable_from_several_threads_at_once(store: SignalStore) -> None:
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
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert store.count() == threads_n * per_thread
    assert store.count("BTCUSDT") == store.count("ETHUSDT") == 2 * per_thread
    assert len(walk_pages(store, 1000)[0]) == threads_n * per_thread


@pytest.fixture
def writer(store: SignalStore) -> Iterator[StoreWriter]:
    writer = StoreWriter(store)
    yield writer
    writer.close()


def test_writer_has_written_everything_put_once_flush_returns(
    store: SignalStore, writer: StoreWriter
) -> None:
    for signal in sample_signals():
        writer.put(signal)

    assert writer.flush(timeout=10)

    assert store.count() == 25
    stats = writer.stats()
    assert (stats.queued, stats.written, stats.duplicates, stats.failures) == (0, 25, 0, 0)
    assert stats.last_write_ms is not None


def test_writer_counts_the_same_signal_twice_as_a_duplicate(
    store: SignalStore, writer: StoreWriter
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


def test_writer_close_writes_what_was_still_pending(backend: Backend) -> None:
    with reopened(backend) as store:
        writer = StoreWriter(store)
        for n, signal in enumerate(sample_signals(), 1):
            writer.put(signal, n)
        writer.close()  # no flush first
        assert writer.stats().written == 25

    with reopened(backend) as again:
        assert again.count() == 25
        assert [n for n, _ in again.after_seq(0)] == list(range(1, 26))


def test_signals_stored_before_a_restart_are_not_delivered_again(
    backend: Backend, tmp_path: Path, btc_frames: list[bytes]
) -> None:
    from spikewatch.config import load_settings
    from spikewatch.engine import Engine

    settings = load_settings({"db": str(tmp_path / "settings.db")}, env={})
    with reopened(backend) as first_store:
        before: list[Signal] = []
        first = Engine(settings, first_store)
        first.add_listener(before.append)
        for frame in btc_frames[:6000]:
            first.handle_frame(frame)
        first_store.add(before)
    with reopened(backend) as store:
        after: list[Signal] = []
        second = Engine(settings, store)  # a restart that processes the same trades again
        second.add_listener(after.append)
        for frame in btc_frames[:9000]:
            second.handle_frame(frame)
        assert before
        assert after
        assert {s.id for s in after}.isdisjoint(s.id for s in before)
        assert min(s.trade_id for s in after) > max(s.trade_id for s in before)


# -- both stores, any input: the same pages, byte for byte ---------------------------


@pytest.fixture
def both_stores(
    tmp_path: Path, pg_backend: PostgresBackend
) -> Iterator[tuple[tuple[SQLiteBackend, SignalStore], tuple[PostgresBackend, SignalStore]]]:
    lite = SQLiteBackend(tmp_path / "signals.db")
    with reopened(lite) as lite_store, reopened(pg_backend) as pg_store:
        yield (lite, lite_store), (pg_backend, pg_store)


def any_signal(signal_id: str, exchange: str, symbol: str, trade_id: int, time_us: int) -> Signal:
    return VolumeSpikeSignal(
        id=signal_id,
        exchange=exchange,
        symbol=symbol,
        detector="volume_spike-w200-x10",
        trade_id=trade_id,
        timestamp="2024-08-09T00:00:00.000Z",
        time_us=time_us,
        price=61_837.63,
        volume=0.5,
        quote_volume=30_918.815,
        side="buy",
        average_volume=0.02,
        ratio=25.0,
        window=200,
        threshold=10.0,
    )


#: Ids of any text PostgreSQL can hold (no NUL): the order must be the code points' order
#: (SQLite's BINARY) whatever the server's locale; "a-b" sorts before "aB" and "ab" here,
#: not where a natural-language collation ignores punctuation and case.
IDS = st.text(
    alphabet=st.one_of(
        st.sampled_from("aAbB-_:.09 "), st.characters(exclude_categories=["Cs"], min_codepoint=1)
    ),
    min_size=1,
    max_size=12,
)
SIGNALS = st.lists(
    st.builds(
        any_signal,
        IDS,
        st.sampled_from([SPOT, FUTURES]),
        st.sampled_from(["BTCUSDT", "ETHUSDT"]),
        st.integers(0, 2**62),
        st.one_of(st.integers(T0_US, T0_US + 3), st.integers(0, 2**63 - 1)),
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda s: s.id,
)


@pytest.fixture(autouse=True)
def _pool_jitter_off_the_global_random(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg_pool jitters connection lifetimes with the global ``random`` from its own
    threads; hypothesis takes a change of the global random state while it draws for
    flaky data generation. The pool gets a private generator here."""
    import psycopg_pool.base

    monkeypatch.setattr(psycopg_pool.base, "random", random.Random(0).random)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(signals=SIGNALS, data=st.data())
def test_any_signals_added_in_any_batches_page_the_same_from_both_stores(
    both_stores: tuple[tuple[SQLiteBackend, SignalStore], tuple[PostgresBackend, SignalStore]],
    signals: list[Signal],
    data: st.DataObject,
) -> None:
    # the same calls on both: any order, any batch cuts, any signal again (in one batch or
    # in another)
    order = data.draw(
        st.lists(st.integers(0, len(signals) - 1), min_size=1, max_size=3 * len(signals))
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=8)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if a < b]
    limit = data.draw(st.integers(1, 12))
    exchange = data.draw(st.sampled_from([None, SPOT, FUTURES]))
    symbol = data.draw(st.sampled_from([None, "BTCUSDT", "ETHUSDT"]))
    since = data.draw(st.one_of(st.none(), st.integers(T0_US, T0_US + 3)))
    until = data.draw(st.one_of(st.none(), st.integers(T0_US + 1, 2**63 - 1)))

    stored = [signals[i] for i in dict.fromkeys(order)]  # each once, in first-added order
    by_id = {s.id: s for s in stored}
    expected = newest_first(
        [
            s
            for s in stored
            if exchange in (None, s.exchange)
            and symbol in (None, s.symbol)
            and (since is None or s.time_us >= since)
            and (until is None or s.time_us < until)
        ]
    )
    results = []
    for backend, store in both_stores:
        backend.clear()
        added = [store.add([signals[i] for i in batch]) for batch in batches]
        ids: list[str] = []
        payloads: list[bytes] = []
        after: Cursor | None = None
        while True:
            page, after = store.page_json(
                exchange=exchange,
                symbol=symbol,
                since_us=since,
                until_us=until,
                limit=limit,
                after=after,
            )
            payloads += page
            ids += [msgspec.json.decode(p)["id"] for p in page]
            if after is None:
                break
        assert ids == expected, backend.name
        assert payloads == [msgspec.json.encode(by_id[i]) for i in ids], backend.name
        results.append((added, ids, payloads, store.after_seq(0, limit=10_000)))
    assert results[0] == results[1]
    assert sum(results[0][0]) == len(stored)


# -- PostgreSQL only -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "postgresql://postgres:s3cret-pw@127.0.0.1:1/test",
            'connection to server at "127.0.0.1", port 1 failed: Connection refused',
        ),
        ("postgresql://postgres:s3cret-pw@[127.0.0.1/test", "IPv6"),
        ("postgres://postgres:s3cret-pw@127.0.0.1:99999/test", "invalid port number"),
        ("postgresql://postgres:s3cret-pw@127.0.0.1:5432/test?sslmode=nonsense", "sslmode"),
    ],
)
def test_a_postgresql_database_that_cannot_be_opened_is_refused_in_one_line_without_password(
    url: str, reason: str
) -> None:
    with pytest.raises(StoreOpenError) as caught:
        open_store(url)

    message = str(caught.value)
    shown = url.replace("s3cret-pw", "***")
    assert message.startswith(f"cannot open the database {shown}: "), message
    assert reason in message
    assert "s3cret" not in message
    assert "\n" not in message


def test_a_database_that_does_not_exist_is_named_in_the_reason(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    url = urlunsplit(parts._replace(path="/spikewatch_no_such_database"))

    with pytest.raises(StoreOpenError, match='database "spikewatch_no_such_database" does not'):
        open_store(url)


def test_a_search_path_naming_no_schema_is_refused_naming_it(postgres_url: str) -> None:
    url = with_search_path(postgres_url, "sw_test_missing_schema")

    with pytest.raises(StoreOpenError, match=r"sw_test_missing_schema.*create it first"):
        open_store(url)


def test_passwords_are_left_out_of_urls_shown_to_users() -> None:
    assert redact_url("postgresql://u:pw@h:5432/db?password=x&sslmode=require") == (
        "postgresql://u:***@h:5432/db?password=***&sslmode=require"
    )
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("host=h password='a b' user=u") == "host=h password=*** user=u"


def test_the_schema_option_creates_its_schema_and_keeps_the_tables_there(
    postgres_url: str,
) -> None:
    names = [new_schema_name(), new_schema_name()]
    drop = PostgresBackend(postgres_url, names[0])
    stores: list[PostgresSignalStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start(name: str) -> None:  # two processes each on a new schema, starting together
        try:
            barrier.wait()
            stores.append(PostgresSignalStore(postgres_url, schema=name))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in names * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert errors == []
        by_schema = {s.schema: s for s in stores}
        assert by_schema[names[0]].add(sample_signals()) == 25
        assert by_schema[names[1]].count() == 0, "schemas are databases apart"
        rows = drop.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = ANY(%s) ORDER BY 1, 2",
            (names,),
        )
        assert {(str(s), str(t)) for s, t in rows} == {
            (name, table)
            for name in names
            for table in ("checkpoints", "gaps", "schema_version", "signals")
        }
        assert drop.execute("SELECT version FROM schema_version") == [
            (v,) for v in range(1, pg_module.SCHEMA_VERSION + 1)
        ], "each migration once"
    finally:
        for store in stores:
            store.close()
        for name in names:
            PostgresBackend(postgres_url, name).drop()
    with pytest.raises(ValueError, match="lower-case identifier"):
        PostgresSignalStore(postgres_url, schema="Robert'); DROP TABLE signals;--")


def test_connections_the_server_dropped_are_replaced_without_a_failed_call(
    pg_backend: PostgresBackend,
) -> None:
    # a PostgreSQL restart or failover drops every connection the pool holds; the next
    # calls must get new ones, not fail once per dropped connection
    name = f"sw_drop_{pg_backend.schema}"
    parts = urlsplit(pg_backend.url)
    query = urlencode([*parse_qsl(parts.query), ("application_name", name)])
    url = urlunsplit(parts._replace(query=query))
    store = PostgresSignalStore(url, schema=pg_backend.schema, check_after_idle_s=0)
    try:
        signals = sample_signals()
        assert store.add(signals[:10]) == 10
        dropped = pg_backend.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (name,),
        )
        assert dropped
        assert all(ok for (ok,) in dropped)

        assert store.count() == 10
        assert store.add(signals[10:]) == 15
        assert [s.id for s in store.page(limit=100).signals] == newest_first(signals)
    finally:
        store.close()


def test_pages_of_one_exchange_and_symbol_are_read_in_order_from_an_index(
    pg_backend: PostgresBackend,
) -> None:
    with reopened(pg_backend) as store:
        store.add(spot_and_futures())
    after = "(time_us, id) < (%s, %s)"
    for where, args in (
        ("TRUE", ()),
        ("exchange = %s", (FUTURES,)),
        ("exchange = %s AND symbol = %s", (FUTURES, "BTCUSDT")),
        ("symbol = %s", ("BTCUSDT",)),
        (f"exchange = %s AND {after}", (SPOT, T0_US + 5000, "z")),
        (f"exchange = %s AND symbol = %s AND {after}", (SPOT, "ETHUSDT", T0_US + 5000, "z")),
    ):
        with psycopg.connect(pg_backend.target, autocommit=True) as conn:
            # on a table this small a scan and a sort would win: forbid both, and see
            # that an index gives the order (no Sort node in the plan)
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_sort = off")
            plan = conn.execute(
                f"EXPLAIN SELECT payload FROM signals WHERE {where} "
                "ORDER BY time_us DESC, id DESC LIMIT 100",
                args,
            ).fetchall()
        steps = " / ".join(str(row[0]) for row in plan)
        assert "Index Scan Backward using signals_by" in steps, steps
        assert "Sort" not in steps, steps


# -- retention -----------------------------------------------------------------------


def test_prune_forgets_signals_stored_before_the_retention_and_keeps_the_numbering(
    store: SignalStore, backend: Backend
) -> None:
    """Signals are aged by when they were stored (marks of the delivery number), never by
    their trade time: a replay of 2024's trades stored today stays. The newest signal
    always stays, so delivery numbers go on after it, also after a restart."""
    day = 86_400.0
    old, recent = sample_signals()[:10], sample_signals()[10:]
    store.add(old)
    assert store.prune(30 * day, now=1000.0) == 0  # the first mark: nothing is older
    store.add(recent)
    assert store.prune(30 * day, now=1000.0 + 10 * day) == 0  # nothing 30 days old yet
    assert store.count() == 25
    # 31 days after the first mark: what was stored before it goes, the rest stays
    assert store.prune(30 * day, now=1000.0 + 31 * day) == 10
    assert store.prune(30 * day, now=1000.0 + 31 * day) == 0  # idempotent
    assert sorted(s.id for s in store.page(limit=100).signals) == sorted(s.id for s in recent)
    # years later everything but the newest goes; numbering continues after it
    top = store.max_seq()
    assert store.prune(30 * day, now=1000.0 + 400 * day, limit=10) == 10  # a chunk
    assert store.prune(30 * day, now=1000.0 + 400 * day, limit=10) == 4  # the rest
    assert [seq for seq, _ in store.after_seq(0, 100)] == [top]
    with reopened(backend) as again:
        again.add([make_signal("BTCUSDT", 1, T0_US)])
        assert again.max_seq() == top + 1
