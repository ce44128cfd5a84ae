"""``spikewatch report`` on the real futures day: the JSON twin holds the measures by the
issue's definitions, and the page is self-contained (chart library inlined, no URL)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from spikewatch.core.alerts import AlertRules
from spikewatch.core.detectors import Detector
from spikewatch.core.notional import NotionalDetector
from spikewatch.core.profile import DEFAULT_RULES, default_detectors
from spikewatch.exchanges.binance import BinanceUsdm
from spikewatch.replay import report
from spikewatch.replay.readers import read_trades

DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"


def rules() -> AlertRules:
    return AlertRules(DEFAULT_RULES)  # the kernel tells it each detector's name


def with_whale_tier(tier: float):  # type: ignore[no-untyped-def]
    def detectors(exchange: str, symbol: str) -> tuple[Detector, ...]:
        base = default_detectors()
        return (base[0], NotionalDetector((tier,), unit="trade", name="whale"), *base[2:])

    return detectors


def test_the_report_of_a_day_measures_and_renders_offline(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    trades = list(read_trades([fixtures_dir / DAY], exchange=BinanceUsdm()))
    built = report.build(
        trades,
        venue=BinanceUsdm(),
        detectors=lambda exchange, symbol: default_detectors(),
        rules=rules,
        files=[DAY],
        sweep=("whale tier (USD)", [100_000, 250_000], with_whale_tier),
    )
    page, twin = tmp_path / "r.html", tmp_path / "r.json"
    report.write(built, page, twin)
    data = json.loads(twin.read_text())
    assert data["trades"] == 137_988
    assert data["quality"]["top_trades_caught"] == 20
    assert data["quality"]["surges_caught"] == data["quality"]["surges"] == 34
    assert len(data["hours"]) == 24
    assert sum(h["alerts"] for h in data["hours"]) == data["quality"]["alerts"]
    assert [row["value"] for row in data["sweep"]] == [100_000, 250_000]
    low, high = data["sweep"]
    assert low["alert_minutes"] > high["alert_minutes"]  # a lower tier: more alerts
    assert all(t["caught"] for t in data["top_trades"])
    text = page.read_text()
    assert "LightweightCharts" in text  # the chart library is in the page
    assert not re.search(r"""(src|href)=["']https?://""", text)  # nothing to fetch
    assert "20 / 20" in text
    assert "34 / 34" in text
