"""``spikewatch report``: files of trades through the kernel and its alert rules, into one
self-contained HTML page and its JSON twin.

The page holds: signals and alerts per hour, the minutes with an alert, the largest trades
and the volume surges of the data (each marked caught or missed, by the definitions of
:mod:`spikewatch.replay.quality`), a sweep of one detector's main knob (what a lower or
higher value would have given), and a price chart with the alerts as markers. The chart
library is the one the dashboard vendors, inlined: the page needs no network.
"""

from __future__ import annotations

import html
import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path

import msgspec

from spikewatch.core.alerts import Alert, AlertEvent, AlertRules
from spikewatch.core.detectors import Detector
from spikewatch.core.kernel import GapPolicy, Kernel, Venue
from spikewatch.core.model import Signal, Trade, TradeBatch, iso_utc
from spikewatch.replay.quality import MINUTE_US, DayStats, Quality, measure
from spikewatch.replay.runner import replay

HOUR_US = 3_600_000_000

DetectorsFor = Callable[[str, str], Sequence[Detector]]


class HourRow(msgspec.Struct, frozen=True):
    hour: str  # ISO 8601 start of the hour
    trades: int
    signals: int
    alerts: int


class TopTrade(msgspec.Struct, frozen=True):
    timestamp: str
    trade_id: int
    price: float
    qty: float
    value: float  # quote asset
    caught: bool


class SurgeRow(msgspec.Struct, frozen=True):
    minute: str
    volume: float  # base asset
    baseline: float  # median of the 60 minutes with trades before it
    ratio: float
    caught: bool


class SweepRow(msgspec.Struct, frozen=True):
    value: float
    alerts: int
    alert_minutes: int
    top_trades_caught: int
    surges_caught: int


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the page shows, as data (the JSON twin)."""

    files: list[str]
    exchange: str
    symbols: list[str]
    trades: int
    first: str | None
    last: str | None
    signals_by_detector: dict[str, int]
    alerts_by_rule: dict[str, int]
    quality: Quality
    hours: list[HourRow]
    top_trades: list[TopTrade]
    surges: list[SurgeRow]
    sweep_knob: str | None
    sweep: list[SweepRow]
    alerts: list[Alert]
    prices: list[tuple[int, float]]  # (minute start, s since epoch; last price)


class _Run(msgspec.Struct):
    signals: list[Signal]
    alerts: list[Alert]


def _run(
    trades: Sequence[Trade | TradeBatch],
    venue: Venue,
    detectors: DetectorsFor,
    rules: AlertRules,
) -> _Run:
    kernel = Kernel(detectors, venues=(venue,), gap_policy=GapPolicy.RESET, rules=rules)
    signals: list[Signal] = []
    alerts: list[Alert] = []

    def take(events: Sequence[AlertEvent]) -> None:
        alerts.extend(e.alert for e in events if e.opened)

    replay(trades, kernel, signals.append, on_alerts=take)
    return _Run(signals, alerts)


def build(
    trades: Sequence[Trade | TradeBatch],
    *,
    venue: Venue,
    detectors: DetectorsFor,
    rules: Callable[[], AlertRules],
    files: Sequence[str] = (),
    sweep: tuple[str, Sequence[float], Callable[[float], DetectorsFor]] | None = None,
) -> Report:
    """Run ``trades`` once with the configured detectors and rules (and once more per
    sweep value: ``sweep = (knob name, values, detectors with that value)``)."""
    day = DayStats()
    day.add(trades)
    main = _run(trades, venue, detectors, rules())
    quality = measure(day, main.alerts)
    alert_minutes = {a.time_us // MINUTE_US for a in main.alerts}
    flat = [
        t for item in trades for t in (item.trades() if isinstance(item, TradeBatch) else (item,))
    ]
    hours: dict[int, list[int]] = {}
    prices: dict[int, float] = {}
    for t in flat:
        row = hours.setdefault(t.time_us // HOUR_US, [0, 0, 0])
        row[0] += 1
        prices[t.time_us // MINUTE_US] = t.price / 1e8
    for s in main.signals:
        hours.setdefault(s.time_us // HOUR_US, [0, 0, 0])[1] += 1
    for a in main.alerts:
        hours.setdefault(a.time_us // HOUR_US, [0, 0, 0])[2] += 1
    largest = sorted(flat, key=lambda t: (t.price * t.qty, -t.trade_id), reverse=True)[: day.top]
    minutes = list(day.volumes)
    surge_rows = []
    surge_set = set(day.surge_minutes())
    for i, minute in enumerate(minutes):
        if minute in surge_set:
            base = statistics.median(day.volumes[m] for m in minutes[i - 60 : i])
            surge_rows.append(
                SurgeRow(
                    minute=iso_utc(minute * MINUTE_US),
                    volume=day.volumes[minute] / 1e8,
                    baseline=base / 1e8,
                    ratio=day.volumes[minute] / base,
                    caught=minute in alert_minutes,
                )
            )
    sweep_rows: list[SweepRow] = []
    if sweep is not None:
        for value in sweep[1]:
            run = _run(trades, venue, sweep[2](value), rules())
            q = measure(day, run.alerts)
            sweep_rows.append(
                SweepRow(value, q.alerts, q.alert_minutes, q.top_trades_caught, q.surges_caught)
            )
    signal_counts: dict[str, int] = {}
    for s in main.signals:
        signal_counts[s.detector] = signal_counts.get(s.detector, 0) + 1
    rule_counts: dict[str, int] = {}
    for a in main.alerts:
        rule_counts[a.rule] = rule_counts.get(a.rule, 0) + 1
    return Report(
        files=list(files),
        exchange=venue.name,
        symbols=sorted({t.symbol for t in flat}),
        trades=len(flat),
        first=iso_utc(flat[0].time_us) if flat else None,
        last=iso_utc(flat[-1].time_us) if flat else None,
        signals_by_detector=signal_counts,
        alerts_by_rule=rule_counts,
        quality=quality,
        hours=[HourRow(iso_utc(h * HOUR_US), *hours[h]) for h in sorted(hours)],
        top_trades=[
            TopTrade(
                iso_utc(t.time_us),
                t.trade_id,
                t.price / 1e8,
                t.qty / 1e8,
                t.price * t.qty / 1e16,
                t.time_us // MINUTE_US in alert_minutes,
            )
            for t in largest
        ],
        surges=surge_rows,
        sweep_knob=sweep[0] if sweep is not None else None,
        sweep=sweep_rows,
        alerts=main.alerts,
        prices=[(m * 60, p) for m, p in sorted(prices.items())],
    )


def to_json(report: Report) -> bytes:
    """The JSON twin (indented, stable key order)."""
    return json.dumps(msgspec.to_builtins(report), indent=1).encode() + b"\n"


def _chart_library() -> str:
    path = (
        resources.files("spikewatch.web")
        / "static/vendor/lightweight-charts.standalone.production.js"
    )
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return ""  # the page says the chart is missing (run `make assets`)


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _yes(caught: bool) -> str:
    return "caught" if caught else "MISSED"


def render_html(report: Report, chart_js: str | None = None) -> str:
    """One self-contained page (no network): tables, and the price chart with markers."""
    js = _chart_library() if chart_js is None else chart_js
    q = report.quality
    minutes = max(q.minutes_with_trades, 1)
    title = f"spikewatch report: {', '.join(report.symbols)} on {report.exchange}"
    summary = _table(
        ("measure", "value"),
        [
            ("trades", f"{report.trades:,}"),
            ("from", report.first or "-"),
            ("to", report.last or "-"),
            ("signals", ", ".join(f"{k}: {v:,}" for k, v in report.signals_by_detector.items())),
            ("alerts", ", ".join(f"{k}: {v:,}" for k, v in report.alerts_by_rule.items()) or "0"),
            (
                "alert minutes",
                f"{q.alert_minutes} of {minutes} ({100 * q.alert_minutes / minutes:.1f} %)",
            ),
            ("largest trades caught", f"{q.top_trades_caught} / {q.top_trades}"),
            ("volume surges caught", f"{q.surges_caught} / {q.surges}"),
        ],
    )
    hours = _table(
        ("hour (UTC)", "trades", "signals", "alerts"),
        [(h.hour[:13] + "h", f"{h.trades:,}", h.signals, h.alerts) for h in report.hours],
    )
    top = _table(
        ("time", "trade id", "price", "quantity", "value (quote)", ""),
        [
            (
                t.timestamp,
                t.trade_id,
                f"{t.price:,.8g}",
                f"{t.qty:,.8g}",
                f"{t.value:,.0f}",
                _yes(t.caught),
            )
            for t in report.top_trades
        ],
    )
    surges = _table(
        ("minute", "volume", "baseline (median)", "ratio", ""),
        [
            (
                s.minute[:16],
                f"{s.volume:,.4f}",
                f"{s.baseline:,.4f}",
                f"{s.ratio:.1f}x",
                _yes(s.caught),
            )
            for s in report.surges
        ],
    )
    sweep = (
        _table(
            (
                report.sweep_knob or "value",
                "alerts",
                "alert minutes",
                "largest trades caught",
                "surges caught",
            ),
            [
                (f"{r.value:,g}", r.alerts, r.alert_minutes, r.top_trades_caught, r.surges_caught)
                for r in report.sweep
            ],
        )
        if report.sweep
        else "<p>No sweep asked for.</p>"
    )
    alerts = _table(
        ("time", "rule", "side", "price", "USD", "summary"),
        [
            (
                a.timestamp,
                a.rule,
                a.side,
                f"{a.price:,.8g}",
                "" if a.usd_value is None else f"{a.usd_value:,.0f}",
                a.summary,
            )
            for a in report.alerts
        ],
    )
    data = json.dumps(
        {
            "prices": report.prices,
            "markers": sorted(
                (
                    {"time": a.time_us // MINUTE_US * 60, "rule": a.rule, "side": a.side}
                    for a in report.alerts
                ),
                key=lambda m: int(str(m["time"])),
            ),
        }
    ).replace("</", "<\\/")
    chart_script = (
        f"<script>{js}</script><script>{_CHART}</script>"
        if js
        else "<p>(chart library not installed: run <code>make assets</code>)</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Files: {html.escape(", ".join(report.files) or "-")}</p>
<h2>Summary</h2>{summary}
<h2>Price and alerts</h2><div id="chart"></div>
<script id="data" type="application/json">{data}</script>{chart_script}
<h2>Per hour</h2>{hours}
<h2>The largest trades</h2><p>Caught when an alert falls in the same UTC minute.</p>{top}
<h2>Volume surges</h2>
<p>Minutes whose volume is at least 5x the median of the 60 minutes with trades before.</p>
{surges}
<h2>Sweep</h2>{sweep}
<h2>Alerts</h2>{alerts}
</body></html>
"""


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1d2433; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #dde; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child, td:last-child { text-align: left; }
#chart { height: 360px; }
"""

_CHART = """
(function () {
  const data = JSON.parse(document.getElementById('data').textContent);
  const LC = window.LightweightCharts;
  const chart = LC.createChart(document.getElementById('chart'), { autoSize: true,
    timeScale: { timeVisible: true, secondsVisible: false } });
  const line = chart.addSeries(LC.LineSeries, { color: '#2962ff', lineWidth: 1 });
  line.setData(data.prices.map(([time, value]) => ({ time, value })));
  LC.createSeriesMarkers(line, data.markers.map(m => ({ time: m.time,
    position: m.side === 'sell' ? 'aboveBar' : 'belowBar',
    shape: m.side === 'sell' ? 'arrowDown' : 'arrowUp',
    color: m.rule === 'surge' ? '#e08600' : '#c62828', text: m.rule })));
  chart.timeScale().fitContent();
})();
"""


def write(report: Report, html_path: Path | None, json_path: Path | None) -> None:
    """Write the page and/or its JSON twin."""
    if html_path is not None:
        html_path.write_text(render_html(report), encoding="utf-8")
    if json_path is not None:
        json_path.write_bytes(to_json(report))
