"""Builds what the settings describe (exchange adapter, detectors, kernel): the one place
the live runtime and replay share, so they cannot be wired differently."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from spikewatch.config import DetectorConfig, Settings, detector_params, resolve_profile
from spikewatch.core.alerts import AlertRules
from spikewatch.core.detectors import DETECTORS, Detector
from spikewatch.core.kernel import GapPolicy, Kernel, Venue
from spikewatch.core.orders import UsdValue
from spikewatch.core.profile import DEFAULT_RULES, default_detectors
from spikewatch.exchanges import EXCHANGES
from spikewatch.exchanges.base import Exchange


def build_exchange(settings: Settings, name: str | None = None) -> Exchange:
    """The adapter of ``name`` (default: the configured exchange)."""
    factory = EXCHANGES[name or settings.exchange]
    return factory(api_key=settings.api_key)


def detector_factory(
    settings: Settings, usd: UsdValue | None = None
) -> Callable[[str, str], Sequence[Detector]]:
    """The detectors for one ``(exchange, symbol)``, as configured (then the alert
    profile's, when it is on)."""
    tables = settings.detectors or (DetectorConfig(name="volume_spike"),)
    chosen = [(DETECTORS[t.kind or t.name], detector_params(settings, t, usd)) for t in tables]
    profile = resolve_profile(settings, live=False).alert_profile == "default"
    names = {t.name for t in tables}

    def factory(exchange: str, symbol: str) -> Sequence[Detector]:
        detectors = [build(params) for build, params in chosen]
        if profile:  # the profile's own, unless a table of the same name replaced one
            extra = default_detectors(usd, window=settings.window, threshold=settings.threshold)
            detectors += [d for d in extra[1:] if d.name not in names]
        return tuple(detectors)

    return factory


def alert_rules(settings: Settings, *, profile: bool | None = None) -> AlertRules | None:
    """The configured ``[[alerts]]`` rules, and the profile's when it is on (or when
    ``profile`` says so); None when there is none."""
    if profile is None:  # "auto" here is the command line's to settle (cli: live or not)
        profile = resolve_profile(settings, live=False).alert_profile == "default"
    use_profile = profile
    rules = [*settings.alerts, *(DEFAULT_RULES if use_profile else ())]
    return AlertRules(rules) if rules else None


def build_kernel(
    settings: Settings,
    *,
    venues: Iterable[Venue] = (),
    watch: Mapping[str, Iterable[str]] | None = None,
    gap_policy: GapPolicy = GapPolicy.FETCH,
    bars: bool = True,
    alerts: bool = True,
) -> Kernel:
    """A fresh kernel with the configured detectors, alert rules and gap limits
    (``alerts=False``: signals only, whatever is configured)."""
    usd = UsdValue(settings.usd_rates)
    rules = alert_rules(settings) if alerts else None
    kernel = Kernel(
        detector_factory(settings, usd),
        venues=venues,
        watch=watch,
        gap_policy=gap_policy,
        max_backfill=settings.max_backfill,
        warm_window=settings.window,
        bars=bars,
        bar_keep=settings.bar_seconds or (300 if settings.symbol_set().is_all else 3600),
        rules=rules,
    )
    usd.last_price = kernel.last_price  # other quotes in USD: <asset>USDT from the same feed
    return kernel
