"""Senders: one message to one destination, over the network, with a verdict.

A sender never raises for a failed delivery: it returns a :class:`SendResult` saying
whether the receiver acknowledged it (a 2xx), why not, and how long the receiver asked to
be left alone (``Retry-After``). Error texts never hold the URL (it carries credentials).
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Protocol

import msgspec

from spikewatch.alerting.destinations import Destination
from spikewatch.alerting.messages import (
    Message,
    retry_after_seconds,
    severity,
    signature,
    text,
    webhook_body,
)

USER_AGENT = "spikewatch-alerts/1"


class SendResult(msgspec.Struct, frozen=True):
    """The outcome of one send."""

    ok: bool  # the receiver acknowledged it (2xx)
    error: str | None = None  # why not, for logs and stats
    status: int | None = None  # the HTTP status, where there was one
    retry_after: float | None = None  # seconds the receiver asked to wait (429, 503)


class Sender(Protocol):
    """Sends messages to one destination; called from one delivery thread only."""

    def send(self, message: Message) -> SendResult:
        """Deliver ``message``; never raises for a failed delivery."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured: a redirected POST would lose its body
    (or go somewhere unsigned-for), so it fails as its 3xx instead."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _header_value(value: str) -> str:
    """A header value as HTTP can carry it (ids are ASCII unless a rule's name is not)."""
    if value.isascii() and value.isprintable():
        return value
    return urllib.parse.quote(value, safe="")


class WebhookSender:
    """POSTs the message as JSON, signed: ``X-Spikewatch-Signature: sha256=<hex HMAC-SHA256
    of the body>`` and ``X-Spikewatch-Alert-Id: <message id>`` for idempotency."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    def send(self, message: Message) -> SendResult:
        """POST ``message``; a 2xx is success."""
        body = webhook_body(message)
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Spikewatch-Alert-Id": _header_value(message.id),
                "X-Spikewatch-Signature": signature(self._secret, body),
            },
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status = int(response.status)
                response.read(65536)  # let the receiver finish; the body is not used
        except urllib.error.HTTPError as exc:
            with exc:
                wait = retry_after_seconds(exc.headers.get("Retry-After"), time.time())
                reason = str(exc.reason or "").strip()
                return SendResult(
                    False, f"HTTP {exc.code} {reason}".strip(), exc.code, retry_after=wait
                )
        except urllib.error.URLError as exc:
            return SendResult(False, _describe(exc.reason))
        except (OSError, http.client.HTTPException) as exc:
            return SendResult(False, _describe(exc))
        if 200 <= status < 300:
            return SendResult(True, status=status)
        return SendResult(False, f"HTTP {status}", status)

    def close(self) -> None:
        """Nothing held between sends (a connection per POST)."""


def _describe(reason: object) -> str:
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


#: severity -> Apprise's NotifyType name
_NOTIFY_TYPES = {"info": "INFO", "warning": "WARNING", "critical": "FAILURE"}


class AppriseSender:
    """Sends through Apprise (any of its URLs): a title and a plain-text body. Apprise
    is imported only when a destination needs it (it costs a process about 15 MB and a
    quarter of a second to import: most runs deliver to no chat service)."""

    def __init__(self, url: str, timeout: float) -> None:
        import apprise

        self._module = apprise
        self._apprise = apprise.Apprise()
        with warnings.catch_warnings():
            # Apprise loads its plugins on first use; its e-mail plugin imports imghdr,
            # deprecated since Python 3.11: Apprise's business, not a user's
            warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
            added = self._apprise.add(url)
        if not added:
            # Apprise could not make a service of it: the URL itself is not repeated
            scheme = url.split("://", 1)[0] if "://" in url else "?"
            raise ValueError(f"not a URL Apprise can send to (scheme {scheme!r})")
        self._timeout = timeout

    def send(self, message: Message) -> SendResult:
        """Notify; Apprise's own verdict (its services report 2xx as success)."""
        title, body = text(message)
        apprise = self._module
        kind = _NOTIFY_TYPES.get(severity(message), "WARNING")
        result = self._apprise.notify(
            body=body,
            title=title,
            notify_type=getattr(apprise.NotifyType, kind),
            body_format=apprise.NotifyFormat.TEXT,
            timeout=self._timeout,
        )
        if result:
            return SendResult(True)
        problems = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR")]
        return SendResult(False, problems[-1] if problems else f"apprise: {result.status.name}")

    def close(self) -> None:
        """Nothing held."""


def build_sender(destination: Destination) -> Sender:
    """The sender for ``destination``; ValueError naming it when its URL is unusable."""
    if destination.kind == "webhook":
        return WebhookSender(destination.url, destination.secret, destination.timeout_s)
    try:
        return AppriseSender(destination.url, destination.timeout_s)
    except ValueError as exc:
        raise ValueError(f"destination {destination.name!r}: {exc}") from None
