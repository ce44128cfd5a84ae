"""An independent, obviously-correct statement of the spike rule, for tests to compare against.

Written from the rule's words with exact fractions and a plain list; it shares no code
with spikewatch's detector.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal, localcontext


def reference_spikes(
    frames: Iterable[bytes], window: int = 200, threshold: str = "10"
) -> list[tuple[str, int]]:
    """``(symbol, trade_id)`` of every trade whose qty > threshold x mean of the previous
    ``window`` trades of its symbol; each trade id is used once, in the order first seen.

    Decimal arithmetic with 60 significant digits is exact for these values (8 decimals,
    at most 11 integer digits, sums of at most a million of them)."""
    with localcontext(prec=60):
        return _spikes(frames, window, Decimal(threshold))


def _spikes(frames: Iterable[bytes], window: int, limit: Decimal) -> list[tuple[str, int]]:
    history: dict[str, list[Decimal]] = {}
    seen: dict[str, set[int]] = {}
    out = []
    for frame in frames:
        try:
            doc = json.loads(frame)
        except ValueError:
            continue
        event = doc.get("data", doc) if isinstance(doc, dict) else None
        if not isinstance(event, dict) or event.get("e") != "trade":
            continue
        symbol, trade_id = event["s"], event["t"]
        if trade_id in seen.setdefault(symbol, set()):
            continue
        seen[symbol].add(trade_id)
        qty = Decimal(event["q"])
        past = history.setdefault(symbol, [])
        if len(past) >= window and qty * window > limit * sum(past[-window:]):
            out.append((symbol, trade_id))
        past.append(qty)
    return out
