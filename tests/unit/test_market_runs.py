"""A market's reads: each symbol gets a few trades in a row, which the kernel gathers and
runs through the detectors together (``Kernel._feed``). That must give exactly what the
trades give one at a time: the same signals in the same order, alerts, gaps, counters
and bars, on a real recorded market and on any interleaving of irregular streams."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from itertools import chain
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikewatch.config import load_settings, resolve_profile
from spikewatch.core.alerts import AlertRules
from spikewatch.core.detectors import VolumeSpikeDetector
from spikewatch.core.kernel import GapPolicy, Kernel, Step
from spikewatch.core.model import Side, Trade
from spikewatch.core.notional import NotionalDetector
from spikewatch.core.profile import DEFAULT_RULES
from spikewatch.core.surge import SurgeDetector
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.market import Source, market_tape, sources_of_tape
from spikewatch.replay.readers import read_trades
from spikewatch.replay.tape import tape_from_frames
from spikewatch.wiring import build_kernel

from helpers import ETH_CSV


class Record:
    """Everything a run of steps produced, in order per symbol, as bytes (so floats
    compare exactly): signals, alerts, lost trades and gaps to fetch. (Per symbol: the
    end of the input flushes open orders of the symbols in no fixed order.)"""

    def __init__(self) -> None:
        self.signals: dict[str, list[bytes]] = defaultdict(list)
        self.alerts: dict[str, list[bytes]] = defaultdict(list)
        self.lost: dict[str, list[bytes]] = defaultdict(list)
        self.fetch: dict[str, list[bytes]] = defaultdict(list)
        self.state: list[bytes] = []

    def add(self, step: Step) -> None:
        assert not step.failures
        for signal in step.signals:
            self.signals[signal.symbol].append(msgspec.json.encode(signal))
        for event in step.alerts:
            self.alerts[event.alert.symbol].append(msgspec.json.encode(event))
        for lost in step.lost:
            self.lost[lost.symbol].append(msgspec.json.encode(lost))
        for gap in step.fetch:
            self.fetch[gap.symbol].append(msgspec.json.encode(gap))

    def finish(self, kernel: Kernel, symbols: Sequence[str]) -> Record:
        """The end of the input, then every counter and bar."""
        self.add(kernel.end())
        kernel.settle()
        self.state += [msgspec.json.encode(s) for s in kernel.stats()]
        for symbol in symbols:
            self.state.append(msgspec.json.encode(kernel.bars("binance", symbol)))
        self.state.append(msgspec.json.encode(kernel.counters()))
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and vars(self) == vars(other)


@pytest.fixture(scope="module")
def market(btc_frames: list[bytes], fixtures_dir: Path) -> tuple[list[str], list[bytes]]:
    """40 symbols re-labelled from the real BTCUSDT and ETHUSDT recordings (each its own
    ids, phase and price scale; USDT, BTC and FDUSD quotes), in time order."""
    btc = sources_of_tape(tape_from_frames(btc_frames))
    sources = [*btc, Source.of(read_trades([fixtures_dir / ETH_CSV]))]
    tape = market_tape(sources, 40, ("USDT", "BTC", "FDUSD"), seed=5)
    frames = []
    for entry, _ in tape.entries():
        frames.append(entry.payload)
        if len(frames) == 60_000:
            break
    return tape.symbols, frames


def profile_kernel(symbols: Sequence[str]) -> Kernel:
    """The live app's kernel: the alert profile on (whale, whale_order, surge, rules)."""
    config = resolve_profile(
        load_settings({"symbols": ",".join(symbols), "db": ":memory:"}, env={}), live=True
    )
    return build_kernel(config, venues=(BinanceSpot(),), watch={"binance": symbols})


@pytest.mark.parametrize("read", [50, 300])
def test_a_real_market_in_reads_gives_exactly_frame_by_frame(
    market: tuple[list[str], list[bytes]], read: int
) -> None:
    symbols, frames = market
    by_frame, in_reads = Record(), Record()
    one = profile_kernel(symbols)
    for frame in frames:
        by_frame.add(one.feed_frames("binance", [frame]))
    many = profile_kernel(symbols)
    for start in range(0, len(frames), read):
        in_reads.add(many.feed_frames("binance", frames[start : start + read]))
    want = by_frame.finish(one, symbols)
    got = in_reads.finish(many, symbols)
    assert sum(map(len, want.signals.values())) > 100  # the comparison means something
    assert sum(map(len, want.alerts.values())) > 5
    assert got.signals == want.signals
    assert got.alerts == want.alerts
    assert got.state == want.state
    assert got.lost == want.lost == {}
    assert got.fetch == want.fetch == {}


# -- any interleaving of irregular streams --------------------------------------------

SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCFDUSD")

#: id steps: mostly the next id, sometimes a repeat, a small gap, a jump the guard holds,
#: or ids going back (a restart, or junk the guard rejects)
_STEP = st.sampled_from([1] * 12 + [0, 2, 5, 1500, -3, -50])
_TRADE = st.tuples(
    st.sampled_from(SYMBOLS),
    _STEP,
    st.integers(0, 900_000),  # µs since the symbol's last trade (0: the same order)
    st.sampled_from([1, 2, 3, 5, 8, 40, 200]),  # qty in whole units
    st.integers(95, 105),  # price
    st.booleans(),  # buyer is maker
)


def small_kernel(policy: GapPolicy) -> Kernel:
    """Detectors small enough to fire on short streams (every kind of the profile)."""

    def detectors(exchange: str, symbol: str) -> tuple[object, ...]:
        return (
            VolumeSpikeDetector(5, Decimal(3)),
            NotionalDetector((2_000, 10_000), unit="trade", name="whale"),
            NotionalDetector((3_000,), unit="order", name="whale_order"),
            SurgeDetector(bucket_s=1, baseline=3, factor=2, name="surge"),
        )

    return Kernel(
        detectors,  # type: ignore[arg-type]
        venues=(BinanceSpot(),),
        gap_policy=policy,
        warm_window=5,
        rules=AlertRules(DEFAULT_RULES),
    )


def stream(drawn: list[tuple[str, int, int, int, int, bool]]) -> list[Trade]:
    ids = dict.fromkeys(SYMBOLS, 1000)
    times = dict.fromkeys(SYMBOLS, 1_700_000_000_000_000)
    trades = []
    for symbol, step, dt, qty, price, maker in drawn:
        ids[symbol] = max(ids[symbol] + step, 1)
        times[symbol] += dt
        side = Side.SELL if maker else Side.BUY
        trades.append(
            Trade("binance", symbol, ids[symbol], price * 10**8, qty * 10**8, times[symbol], side)
        )
    return trades


@settings(max_examples=150, deadline=None)
@given(
    drawn=st.lists(_TRADE, min_size=1, max_size=120),
    policy=st.sampled_from([GapPolicy.RESET, GapPolicy.CONTINUE, GapPolicy.FETCH]),
)
def test_lone_trades_gathered_into_runs_give_exactly_one_at_a_time(
    drawn: list[tuple[str, int, int, int, int, bool]], policy: GapPolicy
) -> None:
    trades = stream(drawn)
    one_by_one, together = Record(), Record()
    single = small_kernel(policy)
    for trade in trades:
        one_by_one.add(single.feed([trade]))
    gathered = small_kernel(policy)
    together.add(gathered.feed(trades))
    assert vars(together.finish(gathered, SYMBOLS)) == vars(one_by_one.finish(single, SYMBOLS))


def test_the_interleavings_fire_every_kind_of_signal() -> None:
    # the property above compares something: a plain interleaving fires each detector
    drawn = [
        (symbol, 1, 300_000, qty, 100, i % 3 == 0)
        for i in range(60)
        for symbol, qty in zip(SYMBOLS, (1, 2, 3 if i % 20 else 200), strict=True)
    ]
    record = Record()
    kernel = small_kernel(GapPolicy.RESET)
    record.add(kernel.feed(stream(drawn)))
    record.finish(kernel, SYMBOLS)
    kinds = {msgspec.json.decode(s)["signal_type"] for s in chain(*record.signals.values())}
    assert kinds == {"VolumeSpike", "Notional", "Surge"}
    assert record.alerts
