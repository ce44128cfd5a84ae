"""The whole market (issue 12): ``--symbols ALL:USDT`` against the simulator serving 400
real-shaped symbols (re-labelled real recordings), over several connections, through
drops of several connections at once, a listing and a delisting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spikewatch.config import load_settings, resolve_profile
from spikewatch.engine import Engine
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.rest import RestClient
from spikewatch.replay.market import MarketTape, market_tape, sources_of_tape
from spikewatch.replay.simulator import Faults, Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.store.sqlite import SQLiteSignalStore

from helpers import wait_until

pytestmark = pytest.mark.slow  # seconds of real time: CI runs it, `make check` leaves it out

SYMBOLS = 400
PER_SYMBOL = 600  # trades each symbol plays (its recording's first ones, re-labelled)
PER_CONNECTION = 40


@pytest.fixture(scope="module")
def market(btc_frames: list[bytes]) -> MarketTape:
    """400 symbols, each playing 600 real BTCUSDT trades (one of two stretches of the
    recording), re-labelled, quoted in USDT (about half), BTC or FDUSD."""
    stretches = [btc_frames[:PER_SYMBOL], btc_frames[5000 : 5000 + PER_SYMBOL]]
    sources = [source for part in stretches for source in sources_of_tape(tape_from_frames(part))]
    return market_tape(sources, SYMBOLS, ("USDT", "BTC", "FDUSD"), seed=12)


def run_engine(
    tmp_path: Path, sim: SimulatorThread, **flags: object
) -> tuple[Engine, SQLiteSignalStore]:
    settings = resolve_profile(
        load_settings(
            {
                "ws_url": sim.ws_url,
                "rest_url": sim.rest_url,
                "db": str(tmp_path / "market.db"),
                "symbols": "ALL:USDT",
                "streams_per_connection": PER_CONNECTION,
                **flags,
            },
            env={},
        ),
        live=True,
    )
    store = SQLiteSignalStore(settings.db)
    # the REST weight budget has tests of its own (test_rest_budget.py): here a limit
    # that never holds the test up, as the simulator's (Faults.max_weight_per_min)
    rest = RestClient(
        settings.rest_url, weight_limit=1_000_000, backoff=lambda: Backoff(first=0.02, cap=0.1)
    )
    engine = Engine(settings, store, rest=rest, backoff=Backoff(first=0.05, cap=0.2))
    engine.start()
    return engine, store


@pytest.fixture
def sims() -> Iterator[list[SimulatorThread]]:
    started: list[SimulatorThread] = []
    yield started
    for sim in started:
        sim.stop()


def final_ids(market: MarketTape, symbols: list[str]) -> dict[str, int]:
    """The id of each symbol's last trade in one pass of the market."""
    wanted = set(symbols)
    last: dict[str, int] = {}
    for symbol, played in market.streams(endless=False):
        if symbol in wanted:
            for entry, _ in played:
                last[symbol] = entry.trade_id
    return last


def usdt(market: MarketTape) -> list[str]:
    return sorted(s for s in market.symbols if s.endswith("USDT"))


def test_all_usdt_over_several_connections_survives_mass_drops_losing_nothing(
    tmp_path: Path, market: MarketTape, sims: list[SimulatorThread]
) -> None:
    """Every USDT pair of the listing is watched (and no other), spread over connections
    of at most 40 streams; the simulator cuts every connection after each 3,000 frames it
    sends (several connections drop at once); every trade of every symbol is processed
    once, each gap fetched, none recorded as lost."""
    faults = Faults(drop_every=3000, max_weight_per_min=1_000_000)
    sim = SimulatorThread(Simulator(market, speed=None, faults=faults))
    sim.start()
    sims.append(sim)
    engine, store = run_engine(tmp_path, sim)
    try:
        watched = usdt(market)
        assert len(watched) >= 150
        wait_until(lambda: engine.symbols() == tuple(watched), timeout=30)

        last_ids = final_ids(market, watched)

        def processed() -> bool:  # every symbol's last trade is in
            symbols = engine.status().symbols
            return all(symbols[s].last_trade_id == last_ids[s] for s in watched)

        wait_until(processed, timeout=100)
        status = engine.status()
        assert set(status.symbols) == set(watched)  # BTC and FDUSD pairs are not watched
        for symbol in watched:  # from its first trade to its last, not one missing
            counts = status.symbols[symbol]
            assert (counts.missing_trades, counts.gap_records, counts.gaps) == (0, 0, 0), symbol
        # a connection opened after the market started missed its symbols' first trades
        # (before it subscribed: not lost, never seen), the others have every one
        assert all(0 < status.symbols[s].trades <= PER_SYMBOL for s in watched)
        assert any(status.symbols[s].trades == PER_SYMBOL for s in watched)
        assert len(status.connections) == -(-len(watched) // PER_CONNECTION)
        assert all(c.symbols <= PER_CONNECTION for c in status.connections)
        stats = sim.stats()
        assert stats.drops >= 2 * len(status.connections)  # connections dropped, repeatedly
        assert stats.limit_disconnects == stats.too_many_streams == 0  # Binance's limits kept
        assert stats.refused_connections == 0
        assert status.connection.reconnects >= stats.drops - len(status.connections)
        assert sum(s.backfilled_trades for s in status.symbols.values()) > 0  # really missed
        assert status.listing is not None
        assert status.listing.watched == len(watched)
    finally:
        engine.stop()
        store.close()


def test_a_listing_and_a_delisting_are_followed_without_touching_other_connections(
    tmp_path: Path, market: MarketTape, sims: list[SimulatorThread]
) -> None:
    sim = SimulatorThread(
        Simulator(market, speed=1, loop=True, faults=Faults(max_weight_per_min=1_000_000))
    )
    sim.start()
    sims.append(sim)
    engine, store = run_engine(tmp_path, sim)
    try:
        watched = usdt(market)
        wait_until(lambda: engine.symbols() == tuple(watched), timeout=30)
        wait_until(lambda: engine.status().connection.state == "connected", timeout=30)
        before = {c.id: c.client.connections for c in engine.status().connections}
        gone, like = watched[3], watched[4]
        sim.delist(gone)
        sim.list_symbol("ZZZ9USDT", like=like)
        assert engine.refresh_listing()
        assert "ZZZ9USDT" in engine.symbols()
        assert gone not in engine.symbols()
        wait_until(lambda: engine.status().symbols["ZZZ9USDT"].trades > 0, timeout=30)
        status = engine.status()
        assert gone not in status.symbols
        assert status.listing is not None
        assert (status.listing.listed, status.listing.delisted) == (1, 1)
        after = {c.id: c.client.connections for c in status.connections}
        assert after == before  # subscribed on a connection with room: nobody reconnected
        assert sim.stats().limit_disconnects == 0  # the requests were paced
    finally:
        engine.stop()
        store.close()
