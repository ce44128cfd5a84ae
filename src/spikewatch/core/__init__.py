"""The pure core: trades, signals, detectors and the kernel. No I/O, threads or clocks."""

from spikewatch.core.detectors import Detector, VolumeSpikeDetector
from spikewatch.core.kernel import GapPolicy, Kernel, Step
from spikewatch.core.model import Side, Signal, Trade

__all__ = [
    "Detector",
    "GapPolicy",
    "Kernel",
    "Side",
    "Signal",
    "Step",
    "Trade",
    "VolumeSpikeDetector",
]
