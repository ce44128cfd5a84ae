"""Order-aware detectors on real recorded trades: orders folded from their fills, whale
orders and trades by USD value, volume surges in time, and alert rules that make one
alert of one event (issue 11)."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikewatch.core import accel
from spikewatch.core.alerts import AlertEvent, AlertRule, AlertRules
from spikewatch.core.kernel import GapPolicy, Kernel
from spikewatch.core.model import NotionalSignal, Side, Signal, SurgeSignal, Trade, TradeBatch
from spikewatch.core.notional import NotionalDetector
from spikewatch.core.orders import OrderAggregator, UsdValue, split_symbol
from spikewatch.core.profile import DEFAULT_RULES, default_detectors
from spikewatch.core.surge import SurgeDetector
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.runner import replay

from kernel_kit import trades_of


@pytest.fixture(scope="module")
def btc(btc_frames: list[bytes]) -> list[Trade]:
    _BTC[:] = trades_of(btc_frames)
    return _BTC


_BTC: list[Trade] = []  # the recording's trades, for the property test (filled by btc)
_ONE_BY_ONE: list[tuple[list[Signal], list[AlertEvent]]] = []


def test_orders_fold_the_fills_of_one_taker_order(btc: list[Trade]) -> None:
    """Every trade is in exactly one order; an order's fills share time and side; the
    recording's biggest sweep (735 fills in one millisecond) is one order."""
    agg = OrderAggregator()
    orders = [o for t in btc if (o := agg.add(t)) is not None]
    last = agg.flush(1 << 62)
    assert last is not None
    orders.append(last)
    assert sum(o.fills for o in orders) == len(btc)
    assert sum(o.qty for o in orders) == sum(t.qty for t in btc)
    by_time_side = Counter((t.time_us, t.side) for t in btc)
    biggest = max(orders, key=lambda o: o.fills)
    assert biggest.fills == by_time_side[(biggest.time_us, biggest.side)] == 735
    assert biggest.levels > 1
    assert biggest.last_id - biggest.first_id + 1 == biggest.fills
    fills = [t for t in btc if biggest.first_id <= t.trade_id <= biggest.last_id]
    assert biggest.quote_value == sum(t.price * t.qty for t in fills)
    assert {t.side for t in fills} == {biggest.side}


def usd(trade: Trade) -> Decimal:
    return Decimal(trade.price) * Decimal(trade.qty) / Decimal(10**16)


def run(detectors: tuple[object, ...], trades: list[Trade]) -> list[Signal]:
    kernel = Kernel(
        lambda exchange, symbol: detectors,  # type: ignore[arg-type,return-value]
        venues=(BinanceSpot(),),
        gap_policy=GapPolicy.RESET,
    )
    found: list[Signal] = []
    replay(trades, kernel, found.append)
    return found


def test_notional_per_trade_fires_exactly_on_trades_worth_the_tier(btc: list[Trade]) -> None:
    tier = 50_000
    signals = run((NotionalDetector([tier], unit="trade"),), btc)
    expected = [t.trade_id for t in btc if usd(t) >= tier]
    assert expected  # the recording has such trades
    assert [s.trade_id for s in signals] == expected
    assert all(isinstance(s, NotionalSignal) and s.unit == "trade" for s in signals)


def test_notional_per_order_fires_once_per_whale_order(btc: list[Trade]) -> None:
    tier = 100_000
    signals = run((NotionalDetector([tier, 250_000], unit="order"),), btc)
    agg = OrderAggregator()
    orders = [o for t in btc if (o := agg.add(t)) is not None]
    tail = agg.flush(1 << 62)
    orders += [tail] if tail else []
    expected = [o.first_id for o in orders if o.quote_value >= tier * 10**16]
    assert [s.trade_id for s in signals] == expected
    whale = max(signals, key=lambda s: s.quote_volume)
    assert isinstance(whale, NotionalSignal)
    assert whale.fills > 1
    assert whale.tier == (250_000 if whale.quote_volume >= 250_000 else 100_000)


def test_usd_values_of_other_quotes_come_from_the_feed_or_a_rate() -> None:
    assert split_symbol("ETHBTC") == ("ETH", "BTC")
    assert split_symbol("BTCFDUSD") == ("BTC", "FDUSD")
    prices = {("binance", "BTCUSDT"): 60_000 * 10**8}
    value = UsdValue(last_price=lambda ex, sym: prices.get((ex, sym)))
    assert value.of("binance", "ETHBTC", 2.0) == 120_000.0
    assert value.of("binance", "XRPETH", 1.0) is None  # no ETHUSDT price yet
    assert UsdValue({"ETH": 2500}).of("binance", "XRPETH", 2.0) == 5000.0
    assert value.of("binance", "BTCUSDC", 7.5) == 7.5


def minute_trades(volumes: list[int], symbol: str = "PUMPBTC") -> list[Trade]:
    """A quiet pair: each minute's volume in 10 trades, one every 6 s."""
    trades = []
    tid = 1
    start = 1_700_000_040 * 1_000_000  # a minute boundary
    for minute, volume in enumerate(volumes):
        for k in range(10):
            trades.append(
                Trade(
                    "binance",
                    symbol,
                    tid,
                    2_000,  # 0.00002 BTC
                    volume * 10**8 // 10,
                    start + minute * 60_000_000 + k * 6_000_000,
                    Side.BUY,
                )
            )
            tid += 1
    return trades


@pytest.mark.parametrize("jump", [20, 1000])
def test_a_pump_on_a_quiet_pair_surges_within_its_minute(jump: int) -> None:
    """Sixty quiet minutes of 1,000 units (with noise), then a minute of ``jump`` times
    that: the surge fires in that minute, on the trade whose volume crosses 5x."""
    quiet = [1000 + (m * 37) % 200 for m in range(90)]
    trades = minute_trades([*quiet, 1000 * jump, *quiet[:5]])
    signals = run((SurgeDetector(bucket_s=60, baseline=60, factor=5),), trades)
    (signal,) = signals
    assert isinstance(signal, SurgeSignal)
    pump_start = trades[90 * 10].time_us
    assert pump_start <= signal.time_us < pump_start + 60_000_000
    assert signal.ratio >= 5
    # fired on the first trade of the pump minute that took it past 5x the median
    median = statistics.median(quiet[30:90])  # the 60 minutes before the pump
    crossing = next(k for k in range(1, 11) if jump * 1000 * k / 10 >= 5 * median)
    assert signal.trades_in_bucket == crossing


def test_a_quiet_pair_without_a_pump_stays_calm() -> None:
    quiet = [1000 + (m * 37) % 200 for m in range(300)]
    assert run((SurgeDetector(bucket_s=60, baseline=60, factor=5),), minute_trades(quiet)) == []


def test_surge_state_survives_a_snapshot() -> None:
    quiet = [1000 + (m * 37) % 200 for m in range(90)]
    trades = minute_trades([*quiet, 30_000])
    first = SurgeDetector()
    for t in trades[:700]:
        first.update(t)
    second = SurgeDetector()
    second.restore(first.snapshot())
    assert [s for t in trades[700:] if (s := second.update(t))] == [
        s for t in trades[700:] if (s := first.update(t))
    ]


def test_rules_fold_an_event_into_one_alert_and_reopen_after_the_cooldown(
    btc: list[Trade],
) -> None:
    detector = NotionalDetector([20_000], unit="trade")
    signals = run((detector,), btc)
    assert len(signals) > 5
    rules = AlertRules(
        [AlertRule(name="whale", detectors=["notional"], cooldown_s=60, severity="critical")],
        names={detector.key: detector.name},
    )
    events = rules.feed(signals)
    assert len(events) == len(signals)
    opened = [e.alert for e in events if e.opened]
    # an alert opens when the previous signal is more than 60 s before
    gaps = [b.time_us - a.time_us for a, b in itertools.pairwise(signals)]
    assert len(opened) == 1 + sum(1 for g in gaps if g > 60_000_000)
    assert opened[0].id == f"whale:binance:BTCUSDT:{signals[0].trade_id}"
    last = events[-1].alert
    assert sum(a.signals for a in opened) >= len(opened)
    assert last.signals >= 1
    again = AlertRules(rules.rules, names=rules.names)
    again.restore(rules.snapshot())
    assert again.snapshot() == rules.snapshot()


def test_an_alert_counts_each_trade_once_in_its_usd_total(btc: list[Trade]) -> None:
    """A rule listening to big trades and big orders (the shipped ``whale``) sees a big
    trade twice: on its own and inside its order. The alert's ``usd_total`` is the value
    of the distinct trades its signals cover, also across a snapshot."""
    trade_tier = NotionalDetector([20_000], unit="trade", name="big_trade")
    order_tier = NotionalDetector([50_000], unit="order", name="big_order")
    signals = run((trade_tier, order_tier), btc)
    rule = AlertRule(name="whale", detectors=["big_trade", "big_order"], cooldown_s=60)
    names = {d.key: d.name for d in (trade_tier, order_tier)}
    rules = AlertRules([rule], names)
    covered: dict[str, set[int]] = {}
    totals: dict[str, float | None] = {}
    for n, signal in enumerate(signals):
        if n == len(signals) // 2:  # a restart half-way: the counted ranges go on
            again = AlertRules([rule], names)
            again.restore(rules.snapshot())
            rules = again
        (event,) = rules.feed([signal])
        last = int(getattr(signal, "last_trade_id", signal.trade_id))
        covered.setdefault(event.alert.id, set()).update(range(signal.trade_id, last + 1))
        totals[event.alert.id] = event.alert.usd_total
    by_id = {t.trade_id: t for t in btc}
    inside = sum(
        1
        for a, b in itertools.pairwise(signals)
        if isinstance(b, NotionalSignal) and b.unit == "order" and b.trade_id <= a.trade_id
    )
    assert inside > 3  # big trades inside big orders: the case this is about
    # what an alert remembers stays small: the pieces of the last two exchange times
    assert all(len({p.time_us for p in kept}) <= 2 for kept in rules._pieces.values())
    for alert_id, ids in covered.items():
        expected = float(sum(usd(by_id[i]) for i in ids))
        assert totals[alert_id] == pytest.approx(expected, rel=1e-9), alert_id


@pytest.fixture(scope="module")
def big_trades(btc: list[Trade]) -> list[Signal]:
    """The recording's trades worth $20,000 or more."""
    return run((NotionalDetector([20_000], unit="trade"),), btc)


@settings(max_examples=25, deadline=None)
@given(labels=st.lists(st.sampled_from(["AAAUSDT", "BBBUSDT", "CCCUSDT"]), min_size=1))
def test_a_symbols_checkpoint_holds_its_own_open_alerts(
    big_trades: list[Signal], labels: list[str]
) -> None:
    """Each symbol's checkpoint takes its open alerts (looked up by symbol, not found by a
    scan of all: 2,000 symbols checkpoint every few seconds): the same alerts, in the
    same order, as the whole snapshot holds for it, and reopened from the checkpoints
    they give back that snapshot."""
    rules_of = [
        AlertRule(name="whale", detectors=["notional"], cooldown_s=60),
        AlertRule(name="big", detectors=["notional"], min_usd=50_000, cooldown_s=5),
    ]
    names = {NotionalDetector([20_000], unit="trade").key: "notional"}
    rules = AlertRules(rules_of, names)
    # the recording's signals, each given to one of three symbols
    for n, signal in enumerate(big_trades):
        rules.feed([msgspec.structs.replace(signal, symbol=labels[n % len(labels)])])
    snapshot = rules.snapshot()["open"]
    again = AlertRules(rules_of, names)
    for symbol in ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]:
        own = rules.open_alerts("binance", symbol)
        assert own == [a for a in snapshot if a["symbol"] == symbol]
        assert rules.open_alerts("kraken", symbol) == []
        again.reopen(own)
    key = lambda a: (a["symbol"], a["rule"])  # noqa: E731
    assert sorted(again.snapshot()["open"], key=key) == sorted(snapshot, key=key)
    restored = AlertRules(rules_of, names)
    restored.restore(rules.snapshot())
    assert restored.open_alerts("binance", labels[0]) == rules.open_alerts("binance", labels[0])


def test_rules_filter_by_symbol_and_value(btc: list[Trade]) -> None:
    detector = NotionalDetector([20_000], unit="trade")
    signals = run((detector,), btc)
    names = {detector.key: detector.name}
    none = AlertRules([AlertRule(name="w", detectors=["notional"], symbols=["ETHUSDT"])], names)
    assert none.feed(signals) == []
    big = AlertRules([AlertRule(name="w", detectors=["notional"], min_usd=10**9)], names)
    assert big.feed(signals) == []
    with pytest.raises(ValueError, match="severity"):
        AlertRule(name="w", detectors=["notional"], severity="loud")


@pytest.mark.slow  # seconds of examples: CI runs it, `make check` leaves it out
@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(0, 20_000), max_size=12))
def test_batches_give_the_signals_of_trade_by_trade(cuts: list[int]) -> None:
    """The shipped profile's detectors (an order signal comes with the trade after the
    order) fed batches cut anywhere give the very signals, in the very order, of the
    same trades fed one by one, with their alerts."""
    trades = _BTC[:4000]
    if not _ONE_BY_ONE:  # the same for every example: computed once
        one = Kernel(
            lambda e, s: default_detectors(),
            venues=(BinanceSpot(),),
            rules=AlertRules(DEFAULT_RULES),
        )
        for t in trades:
            step = one.feed([t])
            _ONE_BY_ONE.append((step.signals, step.alerts))
    expected = [sig for signals, _ in _ONE_BY_ONE for sig in signals]
    alerts = [a for _, events in _ONE_BY_ONE for a in events]
    many = Kernel(
        lambda e, s: default_detectors(), venues=(BinanceSpot(),), rules=AlertRules(DEFAULT_RULES)
    )
    got = []
    got_alerts = []
    points = sorted({c % len(trades) for c in cuts} | {0, len(trades)})
    for a, b in itertools.pairwise(points):
        if b > a:
            step = many.feed([TradeBatch.from_trades(trades[a:b])])
            got += step.signals
            got_alerts += step.alerts
    assert got == expected
    assert got_alerts == alerts
    assert {s.detector.split("-")[0] for s in expected} >= {"volume_spike", "whale_order"}


@pytest.fixture(autouse=True, scope="module")
def _load(btc: list[Trade]) -> None:
    """Loads the trades before the property test runs."""


def test_a_restart_from_checkpoints_gives_the_alerts_of_an_unbroken_run(
    btc: list[Trade],
) -> None:
    """Detector snapshots and the open alerts (their cooldowns) in the checkpoint: the
    trades after it open exactly the alerts an unbroken run opens, none twice."""

    def kernel() -> Kernel:
        return Kernel(
            lambda e, s: (NotionalDetector([20_000], unit="trade", name="big"),),
            venues=(BinanceSpot(),),
            rules=AlertRules([AlertRule(name="big", detectors=["big"], cooldown_s=120)]),
        )

    def opened(k: Kernel, trades: list[Trade]) -> list[str]:
        return [e.alert.id for e in k.feed([TradeBatch.from_trades(trades)]).alerts if e.opened]

    whole = opened(kernel(), btc)
    first = kernel()
    before = opened(first, btc[:9000])
    saved = first.checkpoint("binance", "BTCUSDT")
    assert saved is not None
    assert first.rules is not None
    alerts = first.rules.open_alerts("binance", "BTCUSDT")
    assert alerts  # an alert's cooldown runs across the cut
    second = kernel()
    assert second.restore("binance", "BTCUSDT", saved[0], saved[2], saved[1])
    assert second.rules is not None
    second.rules.reopen(alerts)
    assert before + opened(second, btc[9000:]) == whole
    forgetful = kernel()  # without the open alerts: the event after the cut alerts again
    assert forgetful.restore("binance", "BTCUSDT", saved[0], saved[2], saved[1])
    assert before + opened(forgetful, btc[9000:]) != whole


def surge_signals(trades: list[Trade], cuts: list[int] | None) -> list[Signal]:
    """A surge detector fed one by one (``cuts`` None) or in batches cut there."""
    detector = SurgeDetector(bucket_s=60, baseline=60, factor=5)
    if cuts is None:
        return [s for t in trades if (s := detector.update(t)) is not None]
    points = sorted({c % (len(trades) + 1) for c in cuts} | {0, len(trades)})
    return [
        s
        for a, b in itertools.pairwise(points)
        if b > a
        for s in detector.update_batch(TradeBatch.from_trades(trades[a:b]))
    ]


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, 2_000), max_size=15), jump=st.sampled_from([5, 20, 1000]))
def test_surge_batches_decide_as_trade_by_trade(cuts: list[int], jump: int) -> None:
    quiet = [1000 + (m * 37) % 200 for m in range(90)]
    trades = minute_trades([*quiet, 1000 * jump, *quiet[:20], 1000 * jump])
    assert surge_signals(trades, cuts) == surge_signals(trades, None)


def test_surge_batches_on_the_real_day(fixtures_dir: Path) -> None:
    """Replay's batches of the futures day: the same 34 surges as trade by trade."""
    from spikewatch.exchanges.binance import BinanceUsdm
    from spikewatch.replay.readers import read_trades

    day = fixtures_dir / "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"
    trades = list(read_trades([day], exchange=BinanceUsdm()))
    one = surge_signals(trades, None)
    assert len(one) == 34
    assert surge_signals(trades, list(range(0, len(trades), 4096))) == one


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 3_000), max_size=15),
    floor=st.sampled_from([0, 10**20, 5 * 10**20]),
    numpy_from=st.sampled_from([0, 10**9]),  # the bulk (numpy) path, or the plain one
)
def test_orders_folded_in_batches_are_those_folded_trade_by_trade(
    cuts: list[int], floor: int, numpy_from: int
) -> None:
    """Batches cut anywhere (an order may span two) give the same orders (those worth
    ``floor`` or more), completed by the same trades, and the same open order after."""
    before = accel.NUMPY_FROM
    accel.NUMPY_FROM = numpy_from
    try:
        _check_folding(cuts, floor)
    finally:
        accel.NUMPY_FROM = before


def _check_folding(cuts: list[int], floor: int) -> None:
    trades = _BTC[:3000]
    one = OrderAggregator()
    expected = [
        (i, o)
        for i, t in enumerate(trades)
        if (o := one.add(t)) is not None and o.quote_value >= floor
    ]
    many = OrderAggregator()
    got = []
    points = sorted({c % len(trades) for c in cuts} | {0, len(trades)})
    for a, b in itertools.pairwise(points):
        got += [(a + i, o) for i, o in many.add_batch(TradeBatch.from_trades(trades[a:b]), floor)]
    assert got == expected
    assert many.flush(1 << 62) == one.flush(1 << 62)
