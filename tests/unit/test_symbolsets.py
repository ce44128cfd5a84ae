"""Symbol sets (``--symbols ALL:USDT``...), the listing they are resolved against, the
connection-attempt budget and how symbols are spread over connections (issue 12)."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.config import ConfigError, load_settings
from spikewatch.core.symbolsets import SymbolInfo, SymbolSet, changes, parse_symbol_set
from spikewatch.exchanges import BinanceSpot, BinanceUsdm
from spikewatch.exchanges.base import MalformedFrame
from spikewatch.ingest.listing import unknown_message
from spikewatch.ingest.pool import AttemptBudget, ConnectionPool

LISTING = [
    SymbolInfo("BTCUSDT", "TRADING", "BTC", "USDT"),
    SymbolInfo("ETHUSDT", "TRADING", "ETH", "USDT"),
    SymbolInfo("ETHBTC", "TRADING", "ETH", "BTC"),
    SymbolInfo("XRPETH", "TRADING", "XRP", "ETH"),
    SymbolInfo("LUNAUSDT", "BREAK", "LUNA", "USDT"),
]


def test_all_and_quote_filters_resolve_to_trading_pairs() -> None:
    assert parse_symbol_set(["ALL"]).resolve(LISTING).symbols == (
        "BTCUSDT",
        "ETHBTC",
        "ETHUSDT",
        "XRPETH",
    )
    assert parse_symbol_set(["ALL:USDT"]).resolve(LISTING).symbols == ("BTCUSDT", "ETHUSDT")
    assert parse_symbol_set(["ALL:USDT,BTC"]).resolve(LISTING).symbols == (
        "BTCUSDT",
        "ETHBTC",
        "ETHUSDT",
    )
    named = parse_symbol_set(["ETHUSDT", "NOPEUSDT", "LUNAUSDT"]).resolve(LISTING)
    assert named.symbols == ("ETHUSDT",)
    assert named.unknown == ("NOPEUSDT",)
    assert named.halted == ("LUNAUSDT",)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "at least one symbol"),
        (["ALL", "BTCUSDT"], "stands alone"),
        (["BTCUSDT", "ALL:USDT"], "stands alone"),
        (["ALL:"], "at least one quote asset"),
        (["ALL:US-DT"], "not an asset"),
        (["ALL:USDT,USDT"], "repeated"),
        (["BTC-USD"], "not a symbol"),
        (["B"], "1 character long"),
        (["BTCUSDT", "BTCUSDT"], "repeated"),
    ],
)
def test_bad_symbol_sets_say_what_is_wrong(items: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_symbol_set(items)


def test_settings_take_all_as_one_set_and_name_the_key() -> None:
    settings = load_settings({"symbols": "all:usdt, btc"}, env={})
    assert settings.symbols == ("ALL:USDT,BTC",)
    assert settings.symbol_set() == SymbolSet(quotes=("USDT", "BTC"))
    assert settings.named_symbols == ()
    assert settings.symbol_set().describe() == "ALL:USDT,BTC"
    with pytest.raises(ConfigError, match=r"symbols.*ALL stands alone"):
        load_settings({"symbols": ["ALL", "ETHUSDT"]}, env={})
    with pytest.raises(ConfigError, match="streams_per_connection"):
        load_settings({"streams_per_connection": 5000}, env={})


def test_an_unknown_symbol_is_named_with_close_matches() -> None:
    line = unknown_message("binance", ["BTCUSTD", "QQQQQQ"], LISTING)
    assert line == (
        "symbols: BTCUSTD (did you mean BTCUSDT?), QQQQQQ are not listed on binance "
        "(its exchangeInfo)"
    )


@given(
    before=st.lists(st.sampled_from([f"S{i}USDT" for i in range(30)]), unique=True),
    after=st.lists(st.sampled_from([f"S{i}USDT" for i in range(30)]), unique=True),
)
def test_changes_add_and_remove_exactly_the_difference(before: list[str], after: list[str]) -> None:
    added, removed = changes(before, after)
    assert set(added) == set(after) - set(before)
    assert set(removed) == set(before) - set(after)
    assert [s for s in before if s not in removed] + list(added) == [
        *[s for s in before if s in after],
        *[s for s in after if s not in before],
    ]


@pytest.mark.parametrize("venue", [BinanceSpot(), BinanceUsdm()])
def test_binance_listings_parse_and_bad_ones_are_refused(venue: BinanceSpot) -> None:
    body = json.dumps(
        {
            "timezone": "UTC",
            "serverTime": 1,
            "rateLimits": [],
            "symbols": [
                {
                    "symbol": "BTCUSDT",
                    "status": "TRADING",
                    "baseAsset": "BTC",
                    "quoteAsset": "USDT",
                },
                {"symbol": "OLDUSDT", "status": "BREAK", "baseAsset": "OLD", "quoteAsset": "USDT"},
            ],
        }
    ).encode()
    pairs = venue.parse_listing(body)
    assert pairs == [
        SymbolInfo("BTCUSDT", "TRADING", "BTC", "USDT"),
        SymbolInfo("OLDUSDT", "BREAK", "OLD", "USDT"),
    ]
    assert venue.listing().path.endswith("/exchangeInfo")
    for bad in (b"<html>", b'{"symbols": 3}', b"[]"):
        with pytest.raises(MalformedFrame):
            venue.parse_listing(bad)


def test_the_attempt_budget_spaces_attempts_and_keeps_to_the_limit() -> None:
    now = [0.0]
    budget = AttemptBudget(limit=3, per_s=300.0, spacing=0.5, clock=lambda: now[0])
    assert budget.delay() == 0
    budget.take()
    assert budget.delay() == 0.5  # the spacing
    now[0] = 0.5
    budget.take()
    now[0] = 1.0
    budget.take()
    now[0] = 10.0
    assert budget.delay() == 290.0  # three in the window: the oldest must age out
    now[0] = 300.0
    assert budget.delay() == 0


@given(arrivals=st.lists(st.floats(0, 50), min_size=1, max_size=60))
def test_attempts_granted_never_exceed_the_limit_in_any_window(arrivals: list[float]) -> None:
    """Attempts asked for at any times, each made when the budget allows: never more
    than ``limit`` within ``per_s``, never two closer than ``spacing``."""
    now = [0.0]
    budget = AttemptBudget(limit=5, per_s=10.0, spacing=0.25, clock=lambda: now[0])
    made = []
    for at in sorted(arrivals):
        now[0] = max(now[0], at)
        now[0] += budget.delay()
        budget.take()
        made.append(now[0])
    for i, t in enumerate(made):
        assert sum(1 for u in made[i:] if u < t + 10.0) <= 5
    assert all(b - a >= 0.25 - 1e-9 for a, b in itertools.pairwise(made))


def test_the_pool_spreads_symbols_and_fills_connections_with_room() -> None:
    async def plan() -> None:
        pool = ConnectionPool(
            BinanceSpot(), "ws://127.0.0.1:9", lambda frames, ns: False, per_connection=3
        )
        pool.add([f"S{i}USDT" for i in range(7)])
        assert [s.symbols for s in pool.statuses()] == [3, 3, 1]
        assert pool.connection_of("S6USDT") == 2
        assert pool.remove(["S0USDT", "S1USDT", "S2USDT", "NOTUSDT"]) == [
            "S0USDT",
            "S1USDT",
            "S2USDT",
        ]
        assert [s.id for s in pool.statuses()] == [1, 2]  # the empty one is closed
        pool.add(["N1USDT", "N2USDT", "N3USDT"])  # the emptied one first, then room
        assert pool.connection_of("N1USDT") == 0
        assert sorted(pool.symbols()) == sorted(
            ["S3USDT", "S4USDT", "S5USDT", "S6USDT", "N1USDT", "N2USDT", "N3USDT"]
        )
        assert "n1usdt@trade" in pool.statuses()[0].client.url
        with pytest.raises(ValueError, match="per_connection"):
            ConnectionPool(BinanceSpot(), "ws://x", lambda f, n: False, per_connection=2000)

    asyncio.run(plan())
