"""A small REST client for exchange look-ups: timeouts, retries with backoff, and Binance's
rate limits (request weight per minute, HTTP 429 and 418 with ``Retry-After``).

Every look-up has a retry budget: at most ``attempts`` requests, and at most ``max_wait``
seconds spent waiting between them (backoff delays and ``Retry-After`` together). A reply
that cannot be used (garbage, HTML, empty where trades must be, the wrong trades) is
retried like a 5xx: ``fetch(path, parse)`` takes a ``parse`` that raises :class:`BadReply`.

Requests run in a worker thread (``urllib``), so the event loop never blocks on them.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec

from spikewatch import __version__
from spikewatch.ingest.backoff import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Binance's REQUEST_WEIGHT limit per minute (GET /api/v3/exchangeInfo, rateLimits).
WEIGHT_LIMIT = 6000
#: Seconds one look-up may spend waiting between its attempts, at most (backoff delays and
#: ``Retry-After`` together): a minute's weight window, and then some.
MAX_WAIT = 90.0
#: Attempts of a look-up that fails without any answer (refused, DNS, timeout) while the
#: host has never answered at all: it is most likely unreachable from this machine (no
#: network, a firewall), and retrying five times would only hold up start-up.
UNREACHABLE_ATTEMPTS = 2


class RestError(RuntimeError):
    """A REST call failed for good (after retries, or a client error not worth retrying).

    ``unreachable``: no attempt got an HTTP answer, and the host never answered this client
    (offline, DNS failure, a firewall)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class BadReply(ValueError):
    """A 200 reply that cannot be used (raised by a ``parse`` given to
    :meth:`RestClient.fetch`): retried like a server error."""


class RestStats(msgspec.Struct, frozen=True):
    """Counters of the REST client."""

    calls: int  # HTTP requests sent (every attempt, retries included)
    failures: int  # look-ups given up (after their retries, or a 4xx)
    retries: int  # attempts made again after a failed one
    rate_limited: int  # 429 and 418 replies
    used_weight: int  # request weight used in the current minute (the exchange's count)
    successes: int = 0  # requests answered with a usable reply
    bad_replies: int = 0  # 200 replies that could not be used (garbage, wrong trades...)
    last_error: str | None = None  # why the latest failed look-up failed
    reachable: bool | None = None  # None: not asked yet; False: never answered at all


def _as_is(body: bytes) -> bytes:
    return body


class RestClient:
    """GET JSON from ``base_url`` with retries; ``get(path, weight)`` returns the body,
    ``fetch(path, parse, weight)`` what ``parse`` makes of it."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        attempts: int = 5,
        max_wait: float = MAX_WAIT,
        backoff: Callable[[], Backoff] = lambda: Backoff(first=0.5, cap=8.0),
        weight_limit: int = WEIGHT_LIMIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.max_wait = max_wait
        self._backoff = backoff
        self.weight_limit = weight_limit
        self._sleep = sleep
        self._calls = self._failures = self._retries = self._limited = 0
        self._successes = self._bad = 0
        self._last_error: str | None = None
        self._answered = False  # any HTTP reply ever, usable or not
        self._asked = False
        self._blocked_until = 0.0  # monotonic seconds: no request before (Retry-After)
        self._blocked_by = ""
        self._used = 0
        self._window_start = time.monotonic()

    def stats(self) -> RestStats:
        """A copy of the counters."""
        return RestStats(
            calls=self._calls,
            failures=self._failures,
            retries=self._retries,
            rate_limited=self._limited,
            used_weight=self._used,
            successes=self._successes,
            bad_replies=self._bad,
            last_error=self._last_error,
            reachable=self._answered if self._asked else None,
        )

    def _fetch(
        self, path: str, headers: Sequence[tuple[str, str]]
    ) -> tuple[int, bytes, dict[str, str]]:
        request = urllib.request.Request(
            self.base_url + path,
            headers={"User-Agent": f"spikewatch/{__version__}", **dict(headers)},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read(), dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(), dict(exc.headers.items())

    async def _respect_weight(self, weight: int) -> None:
        now = time.monotonic()
        if now - self._window_start >= 60:
            self._window_start, self._used = now, 0
        if self._used + weight > self.weight_limit * 0.8:
            wait = 60 - (now - self._window_start)
            log.warning(
                "REST weight %d of %d used; pausing %.0fs", self._used, self.weight_limit, wait
            )
            await self._sleep(max(wait, 0))
            self._window_start, self._used = time.monotonic(), 0

    async def get(
        self, path: str, weight: int = 1, send_headers: Sequence[tuple[str, str]] = ()
    ) -> bytes:
        """The body of ``GET base_url + path`` (with extra ``headers``, e.g. an API key);
        raises :class:`RestError` when it fails."""
        return await self.fetch(path, _as_is, weight, send_headers)

    async def fetch(
        self,
        path: str,
        parse: Callable[[bytes], T],
        weight: int = 1,
        send_headers: Sequence[tuple[str, str]] = (),
    ) -> T:
        """``parse`` of the body of ``GET base_url + path``; a reply ``parse`` rejects with
        :class:`BadReply` is retried like a 5xx. Raises :class:`RestError` when the retry
        budget is spent (the message says why)."""
        backoff = self._backoff()
        waited = 0.0  # seconds spent waiting between attempts
        last = "no attempt"
        answered = False  # an HTTP reply in this look-up
        self._asked = True
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self._retries += 1
            # the exchange asked for no requests for a while (Retry-After): asking anyway
            # gets an IP banned (418), so every look-up waits, or gives up if it is too long
            blocked = self._blocked_until - time.monotonic()
            if blocked > 0:
                if blocked > self.max_wait - waited:
                    last = (
                        f"not sent: rate limited, asked to wait {blocked:.0f}s more "
                        f"({self._blocked_by}): more than the retry budget of "
                        f"{self.max_wait:.0f}s allows"
                    )
                    break
                waited += blocked
                await self._sleep(blocked)
            await self._respect_weight(weight)
            self._calls += 1
            try:
                status, body, headers = await asyncio.to_thread(self._fetch, path, send_headers)
            # refused, reset, DNS, timeout, a reply cut short (IncompleteRead), bad headers
            except (OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
                status, body, headers, last = 0, b"", {}, f"{type(exc).__name__}: {exc}"
            used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
            self._used = int(used) if used and used.isdigit() else self._used + weight
            if status:
                answered = self._answered = True
            if status == 200:
                try:
                    result = parse(body)
                except BadReply as exc:
                    self._bad += 1
                    last = f"unusable reply: {exc}"
                else:
                    self._successes += 1
                    return result
            elif status:
                last = f"HTTP {status}: {body[:200]!r}"
            if status in (429, 418):
                self._limited += 1
                asked = _seconds(headers.get("Retry-After"))
                delay = asked if asked is not None else backoff.next_delay()
                # kept for every look-up (they all wait for it at the top of the loop)
                self._blocked_until = max(self._blocked_until, time.monotonic() + delay)
                self._blocked_by = f"HTTP {status}"
                if attempt < self.attempts and delay > self.max_wait - waited:
                    last = (
                        f"rate limited (HTTP {status}), asked to wait {delay:.0f}s: more than "
                        f"the retry budget of {self.max_wait:.0f}s allows"
                    )
                    break
            if attempt == self.attempts:
                break
            if status in (429, 418):
                log.warning("REST rate limited (%d); waiting %.1fs as asked", status, delay)
                continue
            if 400 <= status < 500:
                break  # our request is wrong: retrying will not help
            if not status and not self._answered and attempt >= UNREACHABLE_ATTEMPTS:
                break  # never any answer from this host: most likely unreachable
            delay = backoff.next_delay()
            if delay > self.max_wait - waited:
                last = f"{last} (retry budget of {self.max_wait:.0f}s spent)"
                break
            # a host that never answered is logged once, by whoever gives up on it
            level = logging.WARNING if self._answered else logging.DEBUG
            log.log(level, "REST %s failed (%s); retry %d in %.2fs", path, last, attempt, delay)
            waited += delay
            await self._sleep(delay)
        self._failures += 1
        self._last_error = f"GET {path} failed: {last}"
        raise RestError(self._last_error, unreachable=not answered and not self._answered)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
