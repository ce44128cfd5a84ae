"""The pure core: trades, signals, detectors and the pipeline. No I/O, threads or clocks."""

from spikewatch.core.detectors import Detector, VolumeSpikeDetector
from spikewatch.core.model import Side, Signal, Trade
from spikewatch.core.pipeline import Pipeline

__all__ = ["Detector", "Pipeline", "Side", "Signal", "Trade", "VolumeSpikeDetector"]
