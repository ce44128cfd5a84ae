"""What goes out: messages planned under a rate cap, their text, body and signature.

Pure (no I/O, no clock: times and randomness are arguments), so the delivery policy is
tested without a network.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

from spikewatch.core.alerts import SEVERITIES, Alert

#: Alerts one summary message carries at most; the rest wait for the next free slot.
SUMMARY_MAX = 100
#: The window of the per-destination rate cap, in seconds.
RATE_WINDOW_S = 60.0
#: Alert lines a summary's text lists before "... and N more".
SUMMARY_LINES = 20


class Message(msgspec.Struct, frozen=True):
    """One message to one destination: a single alert, or a summary of many."""

    id: str  # the idempotency id: the alert's own id, or ``summary-<hash of the ids>``
    kind: Literal["alert", "summary"]
    alerts: tuple[Alert, ...]

    @property
    def alert_ids(self) -> tuple[str, ...]:
        """The ids of the alerts this message delivers."""
        return tuple(alert.id for alert in self.alerts)


class WebhookPayload(msgspec.Struct, frozen=True):
    """The JSON body a webhook receives (the same shape for one alert and a summary)."""

    type: str  # "alert" or "summary"
    id: str  # as the X-Spikewatch-Alert-Id header
    count: int  # len(alerts)
    text: str  # one line for a human
    alerts: tuple[Alert, ...]


_encode = msgspec.json.Encoder().encode


def summary_id(alert_ids: Sequence[str]) -> str:
    """The idempotency id of a summary: the same alerts always give the same id."""
    digest = hashlib.sha256("\n".join(sorted(alert_ids)).encode()).hexdigest()
    return f"summary-{digest[:24]}"


def single(alert: Alert) -> Message:
    """A message carrying one alert."""
    return Message(alert.id, "alert", (alert,))


def summary(alerts: Sequence[Alert]) -> Message:
    """A message carrying many alerts at once."""
    return Message(summary_id([a.id for a in alerts]), "summary", tuple(alerts))


def plan(
    alerts: Sequence[Alert], budget: int | None, summary_max: int = SUMMARY_MAX
) -> list[Message]:
    """The messages that deliver ``alerts`` (oldest first) within ``budget`` messages.

    ``budget`` is how many messages the rate cap still allows (None: no cap). Within it,
    each alert goes alone; over it, the first ``budget - 1`` go alone and the rest (up to
    ``summary_max``) share the last message, so nothing is dropped and the cap holds."""
    if budget is None or len(alerts) <= budget:
        return [single(a) for a in alerts]
    if budget <= 0:
        return []
    alone = budget - 1
    rest = alerts[alone : alone + summary_max]
    out = [single(a) for a in alerts[:alone]]
    out.append(single(rest[0]) if len(rest) == 1 else summary(rest))
    return out


def _severity(alerts: Sequence[Alert]) -> str:
    ranks = [SEVERITIES.index(a.severity) for a in alerts if a.severity in SEVERITIES]
    return SEVERITIES[max(ranks)] if ranks else "warning"


def severity(message: Message) -> str:
    """The highest severity among the message's alerts."""
    return _severity(message.alerts)


def _money(usd: float | None) -> str:
    return "unknown" if usd is None else f"${usd:,.0f}"


def headline(message: Message) -> str:
    """One line: the alert's own summary, or ``N more alerts: first; second; ...``."""
    if message.kind == "alert":
        return message.alerts[0].summary
    shown = "; ".join(a.summary for a in message.alerts[:3])
    more = f"; and {len(message.alerts) - 3} more" if len(message.alerts) > 3 else ""
    return f"{len(message.alerts)} more alerts: {shown}{more}"


def text(message: Message) -> tuple[str, str]:
    """Title and body for a chat or mail service (plain text)."""
    if message.kind == "alert":
        a = message.alerts[0]
        title = f"{a.severity.upper()} {a.symbol} {a.rule}"
        body = (
            f"{a.summary}\n"
            f"{a.timestamp} | {a.exchange} | {a.side} | total {_money(a.usd_total)} | "
            f"{a.signals} signal{'s' if a.signals != 1 else ''}\n"
            f"id {a.id}"
        )
        return title, body
    count = len(message.alerts)
    title = f"{_severity(message.alerts).upper()} {count} more alerts (rate cap)"
    lines = [f"- {a.summary} ({a.timestamp})" for a in message.alerts[:SUMMARY_LINES]]
    if count > SUMMARY_LINES:
        lines.append(f"... and {count - SUMMARY_LINES} more")
    return title, f"{count} more alerts:\n" + "\n".join(lines)


def webhook_body(message: Message) -> bytes:
    """The JSON body of a webhook POST."""
    return _encode(
        WebhookPayload(
            type=message.kind,
            id=message.id,
            count=len(message.alerts),
            text=headline(message),
            alerts=message.alerts,
        )
    )


def signature(secret: str, body: bytes) -> str:
    """The ``X-Spikewatch-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the
    body under the destination's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` (constant-time, for receivers)."""
    return hmac.compare_digest(signature(secret, body), header)


def retry_delay(attempt: int, first: float, cap: float, rand: Callable[[], float]) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): ``d = min(cap, first * 2**(n-1))``
    and a delay uniform in ``[d/2, d]`` ("equal jitter": spread apart, never near 0)."""
    ceiling: float = min(cap, first * 2.0 ** min(max(attempt, 1) - 1, 40))
    return ceiling / 2 + ceiling / 2 * rand()


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header as seconds from ``now`` (wall clock): delta-seconds or an
    HTTP date (RFC 9110, 10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)
