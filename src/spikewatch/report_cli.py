"""``spikewatch report FILE...``: the alerts of recorded or historical trades as one
self-contained HTML page (and its JSON twin), built by :mod:`spikewatch.replay.report`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from spikewatch.config import DetectorConfig, Settings
from spikewatch.core.alerts import AlertRules
from spikewatch.core.detectors import Detector
from spikewatch.core.profile import PROFILE_DETECTORS
from spikewatch.replay import report
from spikewatch.replay.readers import read_trades

#: What a sweep varies, by detector kind: the option (or flat key) and how it is given.
_KNOBS = {"notional": "tiers", "surge": "factor", "volume_spike": "threshold"}
#: The shipped profile's detectors, as the tables that would replace them.
_PROFILE_TABLES = {
    "whale": DetectorConfig(name="whale", kind="notional", options={"unit": "trade"}),
    "whale_order": DetectorConfig(name="whale_order", kind="notional", options={"unit": "order"}),
    "surge": DetectorConfig(name="surge", kind="surge"),
}


def _with_knob(settings: Settings, name: str, value: float) -> Settings:
    """``settings`` with detector ``name``'s main knob set to ``value``."""
    tables = list(settings.detectors)
    found = next((t for t in tables if t.name == name), None)
    if found is None:
        if name not in PROFILE_DETECTORS or settings.alert_profile != "default":
            known = ", ".join(sorted({t.name for t in tables} | PROFILE_DETECTORS))
            raise ValueError(f"--sweep {name}: no such detector (one of {known})")
        found = _PROFILE_TABLES[name]
        if not tables:  # the profile's tables sit beside the original rule
            tables.append(DetectorConfig(name="volume_spike"))
        tables.append(found)
    kind = found.kind or found.name
    knob = _KNOBS.get(kind)
    if knob is None:
        raise ValueError(f"--sweep {name}: a {kind} detector has no knob to sweep")
    if knob == "threshold":
        changed = msgspec.structs.replace(found, threshold=value)
    else:
        option = [value] if knob == "tiers" else value
        changed = msgspec.structs.replace(found, options={**found.options, knob: option})
    tables = [changed if t is found else t for t in tables]
    return msgspec.structs.replace(settings, detectors=tuple(tables))


def _sweep(
    settings: Settings, text: str | None
) -> tuple[str, list[float], Callable[[float], Callable[[str, str], Sequence[Detector]]]] | None:
    if not text:
        return None
    name, _, values = text.partition("=")
    try:
        numbers = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sweep {text}: give NAME=V1,V2,... with numbers") from None
    if not name or not numbers:
        raise ValueError(f"--sweep {text}: give NAME=V1,V2,... e.g. whale=100000,250000")
    from spikewatch.wiring import detector_factory

    for value in numbers:  # every value checked before the first run
        _with_knob(settings, name, value)

    def detectors(value: float) -> Callable[[str, str], Sequence[Detector]]:
        return detector_factory(_with_knob(settings, name, value))

    return name, numbers, detectors


def cmd_report(ns: argparse.Namespace, settings: Settings) -> int:
    """Build the report of ``ns.files`` and write it."""
    from spikewatch.replay_cli import with_rules
    from spikewatch.wiring import alert_rules, build_exchange, detector_factory

    settings = with_rules(settings)

    def say(text: str) -> None:
        if not ns.quiet:
            print(text, file=sys.stderr)

    try:
        sweep = _sweep(settings, ns.sweep)
        venue = build_exchange(settings)
        say(f"reading {len(ns.files)} file(s)...")
        trades = list(
            read_trades(ns.files, fmt=ns.format, symbol=ns.symbol, exchange=venue).batches()
        )
        if not trades:
            print(f"spikewatch: no trades read from {', '.join(ns.files)}", file=sys.stderr)
            return 2
        runs = 1 + (len(sweep[1]) if sweep else 0)
        say(f"running the kernel {runs} time(s) over {sum(len(b) for b in trades):,} trades...")

        def rules() -> AlertRules:
            found = alert_rules(settings)
            assert found is not None  # with_rules: the profile at least
            return found

        built = report.build(
            trades,
            venue=venue,
            detectors=detector_factory(settings),
            rules=rules,
            files=[Path(f).name for f in ns.files],
            sweep=sweep,
        )
        report.write(built, Path(ns.out), Path(ns.json_out) if ns.json_out else None)
    except (ValueError, OSError) as exc:
        print(f"spikewatch: {exc}", file=sys.stderr)
        return 2
    q = built.quality
    say(
        f"wrote {ns.out}{' and ' + ns.json_out if ns.json_out else ''}: {q.alerts} alerts in "
        f"{q.alert_minutes} of {q.minutes_with_trades} minutes; largest trades caught "
        f"{q.top_trades_caught}/{q.top_trades}, surges caught {q.surges_caught}/{q.surges}"
    )
    return 0
