"""The shipped alert profile: calm on any pair, liquid or not, with no per-symbol tuning.

Measured on a real day of BTCUSDT futures (``docs/ALERTS.md``,
``tests/unit/test_alert_quality.py``): the original rule alone fires in 671 of the
day's 1,440 minutes; this profile alerts in far fewer and still catches the day's largest
trades and its volume surges. The original ``volume_spike`` detector keeps running (it
still feeds ``/api/get_signal``); no alert rule listens to it by default.

* ``whale``: a single trade worth $150k or more (tiers $150k / $250k / $1M), or a taker
  order worth $500k or more once its fills are folded; one alert per symbol and minute.
* ``surge``: a minute whose volume reaches 5x the median of the 60 minutes with trades
  before it (a pump on a small-cap pair, a cascade on a major); every such minute alerts.
"""

from __future__ import annotations

from decimal import Decimal

from spikewatch.core.alerts import AlertRule
from spikewatch.core.detectors import Detector, VolumeSpikeDetector
from spikewatch.core.notional import NotionalDetector
from spikewatch.core.orders import UsdValue
from spikewatch.core.surge import SurgeDetector

#: The names of the profile's detectors (its rules name them).
PROFILE_DETECTORS = frozenset({"whale", "whale_order", "surge"})

DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(name="whale", detectors=["whale", "whale_order"], cooldown_s=60),
    AlertRule(name="surge", detectors=["surge"], cooldown_s=0),
)


def default_detectors(
    usd: UsdValue | None = None, *, window: int = 200, threshold: Decimal | int | str = 10
) -> tuple[Detector, ...]:
    """The detectors the default rules listen to, after the original rule."""
    usd = usd or UsdValue()
    return (
        VolumeSpikeDetector(window, threshold),
        NotionalDetector((150_000, 250_000, 1_000_000), unit="trade", usd=usd, name="whale"),
        NotionalDetector((500_000, 1_000_000), unit="order", usd=usd, name="whale_order"),
        SurgeDetector(bucket_s=60, baseline=60, factor=5, usd=usd, name="surge"),
    )
