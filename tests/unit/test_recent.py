"""History pages from memory: whenever :class:`RecentSignals` answers, it answers exactly
what the SQLite store answers (signals, order, cursor); it declines only what may reach
below what it holds completely."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikewatch.core.model import Signal, decode_signal
from spikewatch.store.base import Cursor
from spikewatch.store.recent import RecentSignals
from spikewatch.store.sqlite import SQLiteSignalStore

from helpers import spike_signal

T0 = 1_723_161_255_000_000
encode = msgspec.json.Encoder().encode


def signal(symbol: str, trade_id: int, time_us: int, exchange: str = "binance") -> Signal:
    return spike_signal(exchange, trade_id, time_us, symbol)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Signal], list[Signal]]:
    """Signals stored before start-up, and signals delivered after (times mostly rising,
    with ties and some late ones, as backfill gives), of BTCUSDT and ETHUSDT on spot and
    of BTCUSDT on futures (the same symbol on two exchanges)."""
    n = draw(st.integers(0, 60))
    t, out = T0, []
    for trade_id in range(1, n + 1):
        t += draw(st.sampled_from([0, 0, 1000, 250_000, 1_000_000]))
        late = draw(st.integers(0, 9)) == 0
        exchange, symbol = draw(
            st.sampled_from(
                [("binance", "BTCUSDT"), ("binance", "ETHUSDT"), ("binance-usdm", "BTCUSDT")]
            )
        )
        out.append(signal(symbol, trade_id, t - (5_000_000 if late else 0), exchange))
    split = draw(st.integers(0, n))
    return out[:split], out[split:]


queries = st.fixed_dictionaries(
    {
        "exchange": st.sampled_from([None, "binance", "binance-usdm"]),
        "symbol": st.sampled_from([None, "BTCUSDT", "ETHUSDT"]),
        "since_us": st.one_of(st.none(), st.integers(T0 - 6_000_000, T0 + 40_000_000)),
        "until_us": st.one_of(st.none(), st.integers(T0 - 6_000_000, T0 + 40_000_000)),
        "limit": st.integers(1, 12),
    }
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories(), capacity=st.integers(1, 30), query=queries, data=st.data())
def test_every_answer_is_the_stores_answer(
    tmp_path: Path,
    history: tuple[list[Signal], list[Signal]],
    capacity: int,
    query: dict[str, object],
    data: st.DataObject,
) -> None:
    before, after = history
    store = SQLiteSignalStore(":memory:")
    try:
        store.add(before)
        latest = store.latest()
        recent = RecentSignals(capacity, floor=(latest.time_us, latest.id) if latest else None)
        for s in after:  # delivered: into memory and into the store
            recent.add(s, encode(s))
            store.add([s])
        cursor: Cursor | None = None
        for _ in range(data.draw(st.integers(1, 4), label="pages")):
            want = store.page_json(**query, after=cursor)  # type: ignore[arg-type]
            got = recent.page_json(**query, after=cursor)  # type: ignore[arg-type]
            if got is not None:
                assert got == want
            cursor = want[1]
            if cursor is None:
                break
    finally:
        store.close()


def test_the_usual_page_comes_from_memory() -> None:
    recent = RecentSignals(capacity=100, floor=(T0, "binance:BTCUSDT:x:0"))
    signals = [signal("BTCUSDT", i, T0 + i * 1000) for i in range(1, 251)]
    for s in signals:
        recent.add(s, encode(s))
    page = recent.page_json(limit=50)
    assert page is not None
    payloads, cursor = page
    assert [decode_signal(p) for p in payloads] == signals[::-1][:50]
    assert cursor is not None
    assert recent.page_json(limit=50, after=cursor) is not None  # the next page too
    # older than what it holds: the store must answer
    assert recent.page_json(limit=50, until_us=T0 + 50_000) is None


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RecentSignals(0)


def test_btcusdt_on_one_exchange_is_not_btcusdt_on_another() -> None:
    recent = RecentSignals(capacity=100)
    spot = [signal("BTCUSDT", i, T0 + i * 1000) for i in range(1, 6)]
    futures = [signal("BTCUSDT", i, T0 + i * 1000 + 1, "binance-usdm") for i in range(1, 6)]
    for s in spot + futures:
        recent.add(s, encode(s))

    for exchange, expected in (("binance", spot), ("binance-usdm", futures)):
        page = recent.page_json(exchange=exchange, symbol="BTCUSDT", limit=10)
        assert page is not None
        assert [decode_signal(p) for p in page[0]] == expected[::-1]
    both = recent.page_json(symbol="BTCUSDT", limit=10)
    assert both is not None
    assert len(both[0]) == 10
