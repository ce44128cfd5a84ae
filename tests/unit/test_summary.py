"""The terminal's summary of signals (``spikewatch run`` and ``demo``): one line per
interval instead of one per signal, fed the real signals of the recorded BTCUSDT trades."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from spikewatch.cli import SignalSummary
from spikewatch.config import load_settings
from spikewatch.core.kernel import GapPolicy
from spikewatch.core.model import Signal
from spikewatch.replay.readers import read_trades
from spikewatch.replay.runner import replay
from spikewatch.wiring import build_exchange, build_kernel

from helpers import wait_until

BTC_CSV = "binance-spot-BTCUSDT-trades-2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"


@pytest.fixture(scope="module")
def signals(fixtures_dir: Path) -> list[Signal]:
    settings = load_settings(env={})
    exchange = build_exchange(settings)
    kernel = build_kernel(settings, venues=(exchange,), gap_policy=GapPolicy.RESET, bars=False)
    found: list[Signal] = []
    replay(read_trades([fixtures_dir / BTC_CSV], exchange=exchange), kernel, found.append)
    return found


def test_one_line_counts_the_signals_and_names_the_latest(signals: list[Signal]) -> None:
    summary = SignalSummary(every=10)
    for signal in signals:
        summary.note(signal)

    assert summary.take() == "467 signals in the last 10 s, latest BTCUSDT 0.27 @ 61,607.98 (sell)"
    assert summary.take() is None  # nothing since: no line

    summary.note(signals[0])
    line = summary.take()
    assert line is not None
    assert line.startswith("1 signal in the last 10 s, latest BTCUSDT ")


def test_the_lines_are_logged_at_info_while_signals_come(
    signals: list[Signal], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spikewatch")
    summary = SignalSummary(every=0.05)
    for signal in signals[:3]:
        summary.note(signal)
    summary.start()
    try:
        wait_until(lambda: any("3 signals in the last" in r.getMessage() for r in caplog.records))
    finally:
        summary.stop()
    lines = [r for r in caplog.records if r.name == "spikewatch"]
    assert [r.levelno for r in lines] == [logging.INFO]
