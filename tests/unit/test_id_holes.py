"""USD-M futures trade ids skip the ids of fills the venue does not publish as market
trades (insurance-fund and ADL fills: the stream marks them with ``X`` other than
``MARKET`` and the parser skips them; the public trade files leave the single ids out,
binance/binance-public-data#363). Such a hole is not lost trades: it must neither reset
the windows nor be recorded as a gap, live or replayed; a real gap still is."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from spikewatch.core.detectors import VolumeSpikeDetector
from spikewatch.core.kernel import GapPolicy, Kernel
from spikewatch.core.model import Trade
from spikewatch.exchanges.binance import BinanceSpot, BinanceUsdm
from spikewatch.replay.readers import read_trades

from kernel_kit import Outcome

CSV = "binance-usdm-BTCUSDT-trades-2024-08-08T2354Z_2400Z.csv.gz"


@pytest.fixture
def futures(fixtures_dir: Path) -> list[Trade]:
    """Six minutes of real BTCUSDT futures trades (data.binance.vision CSV)."""
    trades = list(read_trades([fixtures_dir / CSV], exchange=BinanceUsdm()))
    assert len(trades) > 3000
    return trades


def kernel(policy: GapPolicy, venue: BinanceUsdm | BinanceSpot | None = None) -> Kernel:
    return Kernel(
        lambda exchange, symbol: (VolumeSpikeDetector(200, Decimal(10)),),
        venues=(venue or BinanceUsdm(),),
        gap_policy=policy,
        warm_window=200,
    )


def run(k: Kernel, trades: list[Trade]) -> Outcome:
    out = Outcome()
    for trade in trades:
        out.add(k.feed([trade]))
    return out


def test_replay_skips_a_futures_hole_without_a_record_or_a_reset(futures: list[Trade]) -> None:
    holed = futures[:2500] + futures[2501:]  # one id left out, as in the public files
    skipped = kernel(GapPolicy.RESET)
    out = run(skipped, holed)
    # exactly as if the windows had gone on over the hole
    assert out.signals == run(kernel(GapPolicy.CONTINUE), holed).signals
    assert out.lost == []
    (stats,) = skipped.stats()
    assert (stats.skipped_ids, stats.gap_records) == (1, 0)


def test_a_hole_in_spot_ids_is_still_a_gap(futures: list[Trade]) -> None:
    """Spot publishes every id: a missing one is a lost trade, recorded."""
    spot = [
        Trade("binance", t.symbol, t.trade_id, t.price, t.qty, t.time_us, t.side)
        for t in futures[:2500] + futures[2501:]
    ]
    out = run(kernel(GapPolicy.RESET, BinanceSpot()), spot)
    (record,) = out.lost
    assert record.missing == 1


def test_without_a_key_live_skips_the_hole_at_once(futures: list[Trade]) -> None:
    """Without an API key futures gaps cannot be fetched: a hole is skipped at once."""
    k = kernel(GapPolicy.FETCH)
    out = run(k, futures[:2500] + futures[2501:])
    assert (out.fetch, out.lost) == ([], [])
    assert k.stats()[0].skipped_ids == 1


def test_a_real_futures_gap_is_still_recorded(futures: list[Trade]) -> None:
    out = run(kernel(GapPolicy.RESET), futures[:2500] + futures[2510:])
    (record,) = out.lost
    assert record.missing == 10


def test_live_a_hole_that_rest_skips_too_closes_the_gap(futures: list[Trade]) -> None:
    """Live with REST: the hole opens a gap; the fetched page skips the same id (REST has
    no market trade there either): the gap closes, nothing lost, held trades released."""
    k = kernel(GapPolicy.FETCH, BinanceUsdm(api_key="a key: gaps can be fetched"))
    out = run(k, futures[:2500] + futures[2501:2600])
    (gap,) = out.fetch
    assert gap.first_id == gap.last_id == futures[2500].trade_id
    page = futures[2501:3000]  # what historicalTrades?fromId=<the hole> answers
    step = out.add(k.fill("binance-usdm", "BTCUSDT", page))
    assert step.closed
    assert out.lost == []
    (stats,) = k.stats()
    assert (stats.skipped_ids, stats.last_trade_id) == (1, futures[2599].trade_id)
    continuous = run(kernel(GapPolicy.CONTINUE), futures[:2500] + futures[2501:2600])
    assert out.signals == continuous.signals


def test_live_a_page_with_a_hole_inside_a_larger_gap_fills_it(futures: list[Trade]) -> None:
    k = kernel(GapPolicy.FETCH, BinanceUsdm(api_key="a key: gaps can be fetched"))
    out = run(k, futures[:2000] + futures[2300:2400])
    assert len(out.fetch) == 1
    page = futures[2000:2150] + futures[2151:2300]  # REST leaves out one unpublished fill
    assert out.add(k.fill("binance-usdm", "BTCUSDT", page)).closed
    assert out.lost == []
    (stats,) = k.stats()
    assert stats.skipped_ids == 1
