"""``GET /api/alerts``: the alert log (every alert the rules raised, newest first).

Alerts come from the delivery outbox (``engine.outbox``), which keeps each alert's latest
fold and its delivery per destination; paged like ``/api/signals``. Without alert rules
there is no outbox: the answer is an empty page that says so (``enabled: false`` and a
``note``), so the dashboard and scripts can tell "none yet" from "none configured".
"""

from __future__ import annotations

import re

import msgspec
from flask import Blueprint, Response, current_app, request

from spikewatch.alerting.outbox import DeliveryState
from spikewatch.alerting.port import AlertLog
from spikewatch.core.alerts import Alert
from spikewatch.status import EngineView
from spikewatch.store.base import Cursor
from spikewatch.web import params
from spikewatch.web.api import _HISTORY_SLOTS, DEFAULT_PAGE, MAX_PAGE, served
from spikewatch.web.responses import json_response
from spikewatch.wiring import alert_rules

alerts = Blueprint("alerts", __name__)

#: A rule's name as a query parameter: printable, at most 100 characters (names are free
#: text in ``[[alerts]]``; this only keeps control characters and huge values out).
RULE_PATTERN = r"^[^\x00-\x1f\x7f]{1,100}$"
_RULE = re.compile(RULE_PATTERN)
#: What the answer says when no alert rules are configured.
NO_RULES = (
    "no alert rules are configured: start with --alert-profile default (the shipped "
    "rules) or add [[alerts]] rules to the config file; see docs/ALERTS.md"
)


class StoredAlert(Alert, frozen=True, kw_only=True):
    """An alert in the log: its latest fold (``signals`` folded in so far) and where it
    was delivered."""

    #: per configured destination: pending (not yet delivered), sent, or dead (gave up
    #: after its attempts); empty when no destination is configured
    deliveries: dict[str, DeliveryState]


class AlertList(msgspec.Struct, frozen=True, omit_defaults=True):
    """One page of ``/api/alerts``, newest first; follow ``next_cursor`` until it is null."""

    alerts: list[StoredAlert]
    count: int  # len(alerts)
    next_cursor: str | None  # the cursor of the next page; null on the last one
    enabled: bool  # false: no alert rules are configured (see note)
    note: str | None = None  # why the page is empty, when no rules are configured


def _rule(args: dict[str, str]) -> str | None:
    """An optional rule name (any printable text)."""
    raw = args.get("rule")
    if raw is None or raw == "":
        return None
    if not _RULE.fullmatch(raw):
        raise params.BadRequest("rule", f"{raw[:40]!r} is not a rule name")
    return raw


def _known(rule: str, engine: EngineView, outbox: AlertLog) -> None:
    """Raise for a rule neither configured nor in the log: a typo would page nothing."""
    rules = alert_rules(engine.settings)
    configured = [r.name for r in rules.rules] if rules is not None else []
    if rule not in configured and not outbox.page(rule=rule, limit=1).alerts:
        raise params.BadRequest(
            "rule",
            f"{rule[:40]!r} is not a rule here (configured: {', '.join(configured) or 'none'})",
        )


def _cursor(args: dict[str, str]) -> Cursor | None:
    raw = args.get("cursor")
    if not raw:
        return None
    try:
        if not params.CURSOR.fullmatch(raw):
            raise ValueError(raw)
        return Cursor.decode(raw)
    except ValueError:
        raise params.BadRequest(
            "cursor", "not one this server issued (pass next_cursor as it came)"
        ) from None


@alerts.get("/api/alerts")
def alert_log() -> Response:
    """Stored alerts, newest first: ``rule``, ``symbol``, ``exchange``, ``since``,
    ``until``, ``limit``, ``cursor``."""
    args = request.args.to_dict()
    params.reject_unknown(args, ("rule", "symbol", "exchange", "since", "until", "limit", "cursor"))
    engine: EngineView = current_app.extensions["spikewatch.engine"]
    symbol = params.symbol(args)
    exchange = params.exchange(args, served(engine))
    since, until = params.time_range(args)
    limit = params.integer(args, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    cursor = _cursor(args)
    rule = _rule(args)
    outbox = engine.outbox
    if outbox is None:
        return json_response(AlertList([], 0, None, enabled=False, note=NO_RULES))
    if rule is not None:
        _known(rule, engine, outbox)
    with _HISTORY_SLOTS:  # history pages share the interpreter with ingest (api.py)
        page = outbox.page(
            rule=rule,
            exchange=exchange,
            symbol=symbol,
            since_us=since,
            until_us=until,
            limit=limit,
            after=cursor,
        )
    entries = [
        StoredAlert(**msgspec.structs.asdict(a), deliveries=page.deliveries.get(a.id, {}))
        for a in page.alerts
    ]
    token = page.next_cursor.encode() if page.next_cursor else None
    return json_response(AlertList(entries, len(entries), token, enabled=True))
