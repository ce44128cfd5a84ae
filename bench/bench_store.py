"""The signal store, SQLite against PostgreSQL, in one run on one machine.

100,000 signals shaped like the detector's (one per real trade of a day of BTCUSDT
futures: its id, time, price, size and side; about 370 bytes of JSON each) are added in
batches of 100, numbered by the store (as the distributed mode's writers do); then read
back as the API and the live stream read them: every page of 100, newest first, by
cursor (``page_json``), and every signal in delivery order, 1,000 at a time
(``after_seq``). Then, on a fresh database, ``--writers`` stores of their own (threads,
each with its own connections: the distributed mode's detect processes) add the same
signals between them, the store numbering them (on PostgreSQL under its advisory lock).
SQLite is a fresh file in a temporary folder; PostgreSQL a fresh schema of the given
server, dropped afterwards. Best of ``--repeat`` runs each.

    python bench/bench_store.py [--count 100000] [--batch 100] [--repeat 3]
        [--writers 4] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import psycopg

from common import data_file, machine
from spikewatch.core.model import Signal, VolumeSpikeSignal, iso_utc
from spikewatch.exchanges.binance import BinanceUsdm
from spikewatch.replay.readers import read_trades
from spikewatch.store import PostgresSignalStore, SignalStore, SQLiteSignalStore

DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"
DETECTOR = "volume_spike-w200-x10"


def real_shaped_signals(count: int) -> list[Signal]:
    """One volume-spike signal per trade of the day's first ``count`` trades."""
    signals: list[Signal] = []
    trades = read_trades([data_file(DAY)], exchange=BinanceUsdm())
    try:
        for trade in islice(trades, count):
            price, volume = trade.price / 1e8, trade.qty / 1e8
            signals.append(
                VolumeSpikeSignal(
                    id=f"{trade.exchange}:{trade.symbol}:{DETECTOR}:{trade.trade_id}",
                    exchange=trade.exchange,
                    symbol=trade.symbol,
                    detector=DETECTOR,
                    trade_id=trade.trade_id,
                    timestamp=iso_utc(trade.time_us),
                    time_us=trade.time_us,
                    price=price,
                    volume=volume,
                    quote_volume=price * volume,
                    side=trade.side.value,
                    average_volume=0.12,
                    ratio=volume / 0.12,
                    window=200,
                    threshold=10.0,
                )
            )
    finally:
        trades.close()
    if len(signals) < count:
        raise SystemExit(f"{DAY} has only {len(signals)} trades")
    return signals


Opener = Callable[[], contextlib.AbstractContextManager[Callable[[], SignalStore]]]
"""Makes a fresh database, and gives a function that opens a store on it."""


@contextlib.contextmanager
def sqlite_db() -> Iterator[Callable[[], SignalStore]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "signals.db"
        yield lambda: SQLiteSignalStore(path)


def postgres_db(url: str) -> Opener:
    @contextlib.contextmanager
    def fresh() -> Iterator[Callable[[], SignalStore]]:
        schema = f"sw_bench_{secrets.token_hex(4)}"
        try:
            yield lambda: PostgresSignalStore(url, schema=schema)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    return fresh


def one_writer(opener: Opener, signals: list[Signal], batch: int) -> tuple[float, float, float]:
    """Seconds to add every signal, to page through them all, to read them in order."""
    with opener() as open_store, contextlib.closing(open_store()) as store:
        started = time.perf_counter()
        for i in range(0, len(signals), batch):
            store.add(signals[i : i + batch])
        added = time.perf_counter() - started
        assert store.count() == len(signals)

        started = time.perf_counter()
        seen, after = 0, None
        while True:
            page, after = store.page_json(limit=100, after=after)
            seen += len(page)
            if after is None:
                break
        paged = time.perf_counter() - started
        assert seen == len(signals)

        started = time.perf_counter()
        seen, last = 0, 0
        while rows := store.after_seq(last, limit=1000):
            seen += len(rows)
            last = rows[-1][0]
        streamed = time.perf_counter() - started
        assert seen == len(signals)
    return added, paged, streamed


def many_writers(opener: Opener, signals: list[Signal], batch: int, writers: int) -> float:
    """Seconds for ``writers`` stores of their own (threads, each with its connections),
    to add every signal between them, a batch in turn, the store numbering them."""
    batches = [signals[i : i + batch] for i in range(0, len(signals), batch)]
    with opener() as open_store:
        stores = [open_store() for _ in range(writers)]
        try:
            start = threading.Barrier(writers + 1)

            def write(n: int) -> None:
                start.wait()
                for chunk in batches[n::writers]:
                    stores[n].add(chunk)

            threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
            for thread in threads:
                thread.start()
            start.wait()
            started = time.perf_counter()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            assert stores[0].count() == len(signals)
            assert [n for n, _ in stores[0].after_seq(0, limit=len(signals))] == list(
                range(1, len(signals) + 1)
            ), "numbered without a gap or a clash"
        finally:
            for store in stores:
                store.close()
    return elapsed


def best(
    opener: Opener, signals: list[Signal], batch: int, writers: int, repeat: int
) -> tuple[float, ...]:
    """The best time of each phase over ``repeat`` runs, each on a fresh database."""
    runs = [
        (*one_writer(opener, signals, batch), many_writers(opener, signals, batch, writers))
        for _ in range(repeat)
    ]
    return tuple(min(times) for times in zip(*runs, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    signals = real_shaped_signals(args.count)
    n = len(signals)
    lite = best(sqlite_db, signals, args.batch, args.writers, args.repeat)
    pg = best(postgres_db(args.postgres), signals, args.batch, args.writers, args.repeat)
    with psycopg.connect(args.postgres) as conn:
        server = conn.info.parameter_status("server_version")
    print(
        f"{n:,} signals, batches of {args.batch}, best of {args.repeat} "
        f"({machine()}; SQLite WAL file, PostgreSQL {server} on 127.0.0.1)"
    )
    print(f"  {'':42}{'SQLite':>12}{'PostgreSQL':>12}{'PG/SQLite':>11}")
    for name, a, b in (
        (f"add, {args.batch} a transaction (signals/s)", lite[0], pg[0]),
        ("page_json by cursor, 100 (signals/s)", lite[1], pg[1]),
        ("after_seq, 1,000 at a time (signals/s)", lite[2], pg[2]),
        (f"add, {args.writers} writers at once (signals/s)", lite[3], pg[3]),
    ):
        print(f"  {name:42}{n / a:12,.0f}{n / b:12,.0f}{a / b:10.2f}x")


if __name__ == "__main__":
    main()
