"""detect's PostgreSQL write per fetch: signals and alert events in two transactions
(``store.add`` then the outbox's ``add``: two commits, two WAL flushes) against one
(``store.transaction()``: ``add_in`` and ``add(..., conn)``, one commit), as detect writes
a fetch that raised alert events. Alternating fetch by fetch on the real server (a fresh
schema, dropped afterwards), a pause between fetches as on a live feed; p50/p90/p99 of
each fetch's write (wall time, the caller's view: what the fetch's ack waits for).

    python bench/bench_detect_write.py [--fetches 400] [--signals 2] [--alerts 1]
        [--pause-ms 5] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Callable

import psycopg

from common import machine
from spikewatch.alerting.pg_outbox import PostgresOutbox
from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.core.model import Signal, VolumeSpikeSignal, iso_utc
from spikewatch.store.postgres import PostgresSignalStore

POSTGRES = os.environ.get("SPIKEWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
T0_US = 1_723_161_600_000_000


def fetch_of(n: int, signals: int, alerts: int) -> tuple[list[Signal], list[AlertEvent]]:
    """Fetch ``n``'s signals (a volume spike each) and the alerts they open."""
    out: list[Signal] = []
    for k in range(signals):
        trade_id = n * 100 + k
        time_us = T0_US + trade_id * 1000
        out.append(
            VolumeSpikeSignal(
                id=f"binance:BTCUSDT:volume_spike-w200-x10:{trade_id}",
                exchange="binance",
                symbol="BTCUSDT",
                detector="volume_spike-w200-x10",
                trade_id=trade_id,
                timestamp=iso_utc(time_us),
                time_us=time_us,
                price=61_800.3,
                volume=2.0,
                quote_volume=123_600.6,
                side="sell",
                average_volume=0.1,
                ratio=20.0,
                window=200,
                threshold=10.0,
            )
        )
    events = [
        AlertEvent(
            Alert(
                id=f"whale:binance:BTCUSDT:{s.trade_id}",
                rule="whale",
                severity="warning",
                exchange="binance",
                symbol="BTCUSDT",
                side="sell",
                timestamp=s.timestamp,
                time_us=s.time_us,
                last_time_us=s.time_us,
                price=s.price,
                usd_value=s.quote_volume,
                usd_total=s.quote_volume,
                signals=1,
                detectors=[s.detector],
                first_signal=s.id,
                summary=f"BTCUSDT whale {s.trade_id}",
            ),
            opened=True,
        )
        for s in out[:alerts]
    ]
    return out, events


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fetches", type=int, default=400)
    parser.add_argument("--signals", type=int, default=2)
    parser.add_argument("--alerts", type=int, default=1)
    parser.add_argument("--pause-ms", type=float, default=5.0)
    parser.add_argument("--postgres", default=POSTGRES)
    args = parser.parse_args()

    schema = f"sw_bench_write_{secrets.token_hex(4)}"
    store = PostgresSignalStore(args.postgres, schema=schema)
    try:
        outbox = PostgresOutbox(store.connection, ["hook"])

        def two(signals: list[Signal], events: list[AlertEvent]) -> None:
            store.add(signals, None)
            outbox.add(events)

        def one(signals: list[Signal], events: list[AlertEvent]) -> None:
            with store.transaction() as conn:
                store.add_in(conn, signals)
                outbox.add(events, conn)

        ways: dict[str, Callable[[list[Signal], list[AlertEvent]], None]] = {
            "two transactions (before)": two,
            "one transaction (detect now)": one,
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        n = 0
        for _ in range(args.fetches):
            for name, write in ways.items():
                signals, events = fetch_of(n, args.signals, args.alerts)
                n += 1
                start = time.perf_counter()
                write(signals, events)
                times[name].append((time.perf_counter() - start) * 1000)
                time.sleep(args.pause_ms / 1000)
    finally:
        store.close()
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    print(machine())
    print(
        f" a fetch's write to PostgreSQL: {args.signals} signals, {args.alerts} alert(s), "
        f"{args.fetches} fetches each way, alternating (load {os.getloadavg()[0]:.2f})"
    )
    base = times["two transactions (before)"]
    for name, values in times.items():
        p50, p90, p99 = pct(values, 0.5), pct(values, 0.9), pct(values, 0.99)
        print(
            f"  {name:30s} p50 {p50:6.2f} ms  p90 {p90:6.2f} ms  p99 {p99:6.2f} ms  "
            f"(p50 x{p50 / pct(base, 0.5):.2f}, p99 x{p99 / pct(base, 0.99):.2f})"
        )


if __name__ == "__main__":
    main()
