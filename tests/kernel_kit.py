"""Shared by the kernel tests: a kernel with the original rule, the outcome of its steps,
and frames fed to it in reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from spikewatch.core.detectors import VolumeSpikeDetector
from spikewatch.core.kernel import GapPolicy, Kernel, Step
from spikewatch.core.model import GapRecord, Signal, Trade
from spikewatch.core.sequencer import Gap
from spikewatch.exchanges.binance import BinanceSpot

WINDOW = 200


def make_kernel(policy: GapPolicy, **options: object) -> Kernel:
    return Kernel(
        lambda exchange, symbol: (VolumeSpikeDetector(WINDOW, Decimal(10)),),
        venues=(BinanceSpot(),),
        gap_policy=policy,
        warm_window=WINDOW,
        **options,  # type: ignore[arg-type]
    )


@dataclass
class Outcome:
    signals: list[Signal] = field(default_factory=list)
    lost: list[GapRecord] = field(default_factory=list)
    fetch: list[Gap] = field(default_factory=list)

    def add(self, step: Step) -> Step:
        self.signals += step.signals
        self.lost += step.lost
        self.fetch += step.fetch
        assert not step.failures
        return step

    def ids(self) -> list[tuple[str, int]]:
        return [(s.symbol, s.trade_id) for s in self.signals]


def feed_reads(kernel: Kernel, frames: Sequence[bytes], size: int, out: Outcome) -> None:
    for start in range(0, len(frames), size):
        out.add(kernel.feed_frames("binance", frames[start : start + size]))


def trade_id(frame: bytes) -> int:
    doc = json.loads(frame)
    return int(doc.get("data", doc)["t"])


def trades_of(frames: Sequence[bytes]) -> list[Trade]:
    parsed = BinanceSpot().parse_batch(frames)
    return parsed.trade_list()
