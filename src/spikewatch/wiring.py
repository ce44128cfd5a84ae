"""Builds the detection pipeline the settings describe: the one place live and replay share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from spikewatch.config import Settings
from spikewatch.core.detectors import Detector, VolumeSpikeDetector
from spikewatch.core.pipeline import Pipeline


def detector_factory(settings: Settings) -> Callable[[str, str], Sequence[Detector]]:
    """The detectors for one ``(exchange, symbol)``, as configured."""

    def factory(exchange: str, symbol: str) -> Sequence[Detector]:
        return (VolumeSpikeDetector(settings.window, settings.threshold),)

    return factory


def build_pipeline(settings: Settings) -> Pipeline:
    """A fresh pipeline with the configured detectors."""
    return Pipeline(detector_factory(settings))
