"""How good a set of alerts is on a day of trades, by issue 11's definitions.

* *alert minutes*: UTC minutes holding at least one alert (one that opened there);
* *top trades*: the ``top`` largest trades by price x quantity, each caught when an alert
  falls in its minute;
* *surges*: minutes whose base-asset volume is at least ``factor`` times the median of
  the ``baseline`` minutes with trades before it (once that many exist), caught likewise.

One pass over the trades (minute volumes and a heap of the largest), exact integers.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable

import msgspec

from spikewatch.core.alerts import Alert
from spikewatch.core.model import Trade, TradeBatch

MINUTE_US = 60_000_000


class Quality(msgspec.Struct, frozen=True, kw_only=True):
    """The measures, and the minutes behind them (for a report)."""

    alerts: int
    alert_minutes: int
    minutes_with_trades: int
    top_trades: int
    top_trades_caught: int
    surges: int
    surges_caught: int
    missed_top_minutes: list[int]  # minutes (epoch // 60 s) of top trades not caught
    missed_surge_minutes: list[int]


class DayStats:
    """Minute volumes and the largest trades of one symbol's trades, fed in order."""

    def __init__(self, top: int = 20) -> None:
        self.top = top
        self.volumes: dict[int, int] = {}  # minute -> base units, in time order
        self._largest: list[tuple[int, int, int]] = []  # (value, -trade id, minute)

    def add(self, items: Iterable[Trade | TradeBatch]) -> None:
        """Count trades (or batches of them)."""
        volumes = self.volumes
        largest = self._largest
        for item in items:
            trades = item.trades() if isinstance(item, TradeBatch) else (item,)
            for t in trades:
                minute = t.time_us // MINUTE_US
                volumes[minute] = volumes.get(minute, 0) + t.qty
                entry = (t.price * t.qty, -t.trade_id, minute)
                if len(largest) < self.top:
                    heapq.heappush(largest, entry)
                elif entry > largest[0]:
                    heapq.heapreplace(largest, entry)

    def top_minutes(self) -> list[int]:
        """The minute of each of the largest trades, largest first."""
        return [minute for _, _, minute in sorted(self._largest, reverse=True)]

    def surge_minutes(self, factor: int = 5, baseline: int = 60) -> list[int]:
        """Minutes whose volume is >= ``factor`` x the median of the ``baseline`` minutes
        with trades before them."""
        minutes = list(self.volumes)
        found = []
        for i in range(baseline, len(minutes)):
            before = [self.volumes[m] for m in minutes[i - baseline : i]]
            if self.volumes[minutes[i]] >= factor * statistics.median(before):
                found.append(minutes[i])
        return found


def measure(day: DayStats, alerts: Iterable[Alert]) -> Quality:
    """The quality of ``alerts`` (those opened) on the day ``day`` counted."""
    opened = list(alerts)
    minutes = {a.time_us // MINUTE_US for a in opened}
    top = day.top_minutes()
    surges = day.surge_minutes()
    return Quality(
        alerts=len(opened),
        alert_minutes=len(minutes),
        minutes_with_trades=len(day.volumes),
        top_trades=len(top),
        top_trades_caught=sum(1 for m in top if m in minutes),
        surges=len(surges),
        surges_caught=sum(1 for m in surges if m in minutes),
        missed_top_minutes=sorted({m for m in top if m not in minutes}),
        missed_surge_minutes=[m for m in surges if m not in minutes],
    )
