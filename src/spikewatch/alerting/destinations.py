"""Where alerts go: one typed table per destination (TOML ``[[alerts.destinations]]``).

Two kinds: ``apprise``, any Apprise URL (``tgram://``, ``discord://``, ``slack://``,
``mailto://``, ``ntfy://``, ``json://``...), and ``webhook``, a JSON POST signed with
HMAC-SHA256 (see docs/ALERTS.md, "Delivery"). URLs and secrets hold credentials: they
never appear in a repr, a log line or the stats, only the destination's name does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

import msgspec

Kind = Literal["apprise", "webhook"]


class Destination(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One destination and its delivery policy (times in seconds)."""

    name: str  # shown in logs and stats; the key of its outbox rows: keep it stable
    url: str
    kind: Kind = "apprise"
    secret: str = ""  # the webhook's HMAC key (required for ``webhook``)
    max_per_minute: int = 20  # messages a minute at most; more alerts go in a summary; 0: no cap
    max_attempts: int = 10  # failed attempts before an alert is dead-lettered
    timeout_s: float = 10.0  # one send, connect and each read
    backoff_first_s: float = 2.0  # the first retry comes after 1-2 s; doubles up to the cap
    backoff_cap_s: float = 600.0  # also caps a receiver's Retry-After

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("a destination needs a name")
        if not self.url:
            raise ValueError(f"destination {self.name!r}: url is empty")
        if self.kind == "webhook":
            if urlsplit(self.url).scheme not in ("http", "https"):
                raise ValueError(f"destination {self.name!r}: a webhook url is http(s)://")
            if not self.secret:
                raise ValueError(f"destination {self.name!r}: a webhook needs a secret")
        if self.max_per_minute < 0:
            raise ValueError(f"destination {self.name!r}: max_per_minute must be >= 0")
        if self.max_attempts < 1:
            raise ValueError(f"destination {self.name!r}: max_attempts must be >= 1")
        if not 0 < self.timeout_s <= 300:
            raise ValueError(f"destination {self.name!r}: timeout_s must be in (0, 300]")
        if not 0 < self.backoff_first_s <= self.backoff_cap_s:
            raise ValueError(
                f"destination {self.name!r}: need 0 < backoff_first_s <= backoff_cap_s"
            )

    def __repr__(self) -> str:
        # the url and secret carry credentials (bot tokens, webhook keys)
        return f"Destination(name={self.name!r}, kind={self.kind!r}, url=<hidden>)"

    __str__ = __repr__


def check_destinations(destinations: Sequence[Destination]) -> None:
    """Raise ValueError when two destinations share a name (their outbox rows would mix)."""
    seen: set[str] = set()
    for destination in destinations:
        if destination.name in seen:
            raise ValueError(f"two destinations are named {destination.name!r}")
        seen.add(destination.name)
