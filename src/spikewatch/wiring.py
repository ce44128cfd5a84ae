"""Builds what the settings describe (exchange adapter, detectors, kernel): the one place
the live runtime and replay share, so they cannot be wired differently."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from spikewatch.config import Settings
from spikewatch.core.detectors import DETECTORS, Detector, VolumeSpikeDetector
from spikewatch.core.kernel import GapPolicy, Kernel, Venue
from spikewatch.exchanges import EXCHANGES
from spikewatch.exchanges.base import Exchange


def build_exchange(settings: Settings, name: str | None = None) -> Exchange:
    """The adapter of ``name`` (default: the configured exchange)."""
    factory = EXCHANGES[name or settings.exchange]
    return factory(api_key=settings.api_key)


def detector_factory(settings: Settings) -> Callable[[str, str], Sequence[Detector]]:
    """The detectors for one ``(exchange, symbol)``, as configured."""

    if not settings.detectors:

        def default(exchange: str, symbol: str) -> Sequence[Detector]:
            return (VolumeSpikeDetector(settings.window, settings.threshold),)

        return default
    chosen = [
        (
            DETECTORS[d.kind or d.name],
            d.window if d.window is not None else settings.window,
            d.threshold if d.threshold is not None else settings.threshold,
        )
        for d in settings.detectors
    ]

    def factory(exchange: str, symbol: str) -> Sequence[Detector]:
        return tuple(build(window, threshold) for build, window, threshold in chosen)

    return factory


def build_kernel(
    settings: Settings,
    *,
    venues: Iterable[Venue] = (),
    watch: Mapping[str, Iterable[str]] | None = None,
    gap_policy: GapPolicy = GapPolicy.FETCH,
    bars: bool = True,
) -> Kernel:
    """A fresh kernel with the configured detectors and gap limits."""
    return Kernel(
        detector_factory(settings),
        venues=venues,
        watch=watch,
        gap_policy=gap_policy,
        max_backfill=settings.max_backfill,
        warm_window=settings.window,
        bars=bars,
    )
