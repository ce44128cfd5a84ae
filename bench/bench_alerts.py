"""What the alert layer costs: a day of real BTCUSDT futures trades (137,988, read and
parsed once, outside the clock) through the kernel in replay batches, best of 7 runs.

Baseline, measured in the same run: the kernel with the original rule only (what
``spikewatch replay`` does without ``--alerts``). Measured: the same with the shipped
alert profile (docs/ALERTS.md: whale trades and orders, minute surges, and their rules).

    python bench/bench_alerts.py
"""

from __future__ import annotations

from common import best_rate, data_file, machine
from spikewatch.config import load_settings
from spikewatch.core.kernel import GapPolicy
from spikewatch.core.model import TradeBatch
from spikewatch.exchanges.binance import BinanceUsdm
from spikewatch.replay.readers import read_trades
from spikewatch.replay.runner import replay
from spikewatch.wiring import build_kernel

DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"


def detect(batches: list[TradeBatch], profile: str) -> int:
    """Trades through a fresh kernel with the alert ``profile`` (off or default)."""
    settings = load_settings({"alert_profile": profile, "exchange": "binance-usdm"}, env={})
    kernel = build_kernel(settings, venues=(BinanceUsdm(),), gap_policy=GapPolicy.RESET, bars=False)
    return replay(batches, kernel, None).trades


def main() -> None:
    batches = list(read_trades([data_file(DAY)], exchange=BinanceUsdm()).batches())
    base = best_rate(lambda: detect(batches, "off"))
    alerts = best_rate(lambda: detect(batches, "default"))
    print(f"kernel on {DAY}, replay batches, best of 7 ({machine()})")
    print(f"  baseline: the original rule only     {base / 1e6:6.2f} M trades/s")
    print(f"  with the shipped alert profile      {alerts / 1e6:6.2f} M trades/s")
    print(f"  ratio alerts / baseline:             {alerts / base:6.2f}x")


if __name__ == "__main__":
    main()
