"""A small REST client for exchange look-ups: timeouts, retries with backoff, and Binance's
rate limits (request weight per minute, HTTP 429 and 418 with ``Retry-After``).

Every look-up has a retry budget: at most ``attempts`` requests, and at most ``max_wait``
seconds spent waiting between them (backoff delays and ``Retry-After`` together). A reply
that cannot be used (garbage, HTML, empty where trades must be, the wrong trades) is
retried like a 5xx: ``fetch(path, parse)`` takes a ``parse`` that raises :class:`BadReply`.

Every request first acquires its weight from the client's
:class:`~spikewatch.ingest.budget.RestBudget` (pass one to share it between clients of the
same IP): a rolling minute kept under the limit minus a margin, other processes' weight
read from the exchange's count (``X-MBX-USED-WEIGHT-1M``), a priority queue (gaps,
catch-ups, warm starts, background) and optional deadlines; a 429 or 418 blocks every
look-up until its ``Retry-After`` is over.

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
from spikewatch.ingest.budget import BACKGROUND, MARGIN, NotSent, Priority, RestBudget

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


class Dropped(RestError):
    """A look-up the weight budget did not send before its deadline (the exchange was
    not asked: nothing is known of its reachability)."""


class BadReply(ValueError):
    """A 200 reply that cannot be used (raised by a ``parse`` given to
    :meth:`RestClient.fetch`): retried like a server error."""


class RestStats(msgspec.Struct, frozen=True):
    """Counters of the REST client."""

    calls: int  # HTTP requests sent (every attempt, retries included)
    failures: int  # look-ups given up (after their retries, or a 4xx)
    retries: int  # attempts made again after a failed one
    rate_limited: int  # 429 and 418 replies
    # request weight used in the current minute: ours, and other processes' on the IP
    # as the exchange's count (X-MBX-USED-WEIGHT-1M) last showed it
    used_weight: int
    successes: int = 0  # requests answered with a usable reply
    bad_replies: int = 0  # 200 replies that could not be used (garbage, wrong trades...)
    last_error: str | None = None  # why the latest failed look-up failed
    reachable: bool | None = None  # None: not asked yet; False: never answered at all
    weight_limit: int = 0  # request weight the exchange allows per minute
    weight_cap: int = 0  # the part of it the budget uses (the rest is a safety margin)
    weight_sent: int = 0  # request weight sent since start
    queued: int = 0  # requests waiting for weight (or a Retry-After) now
    in_flight: int = 0  # requests sent whose reply is not in yet
    waits: int = 0  # requests that had to wait before they were sent
    dropped: int = 0  # look-ups not sent before their deadline (a gap: recorded as lost)


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
        margin: float = MARGIN,
        clock: Callable[[], float] = time.monotonic,
        budget: RestBudget | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.max_wait = max_wait
        self._backoff = backoff
        self._sleep = sleep
        #: every request acquires its weight here first (pass one to share it between
        #: clients of the same IP and venue)
        self.budget = budget or RestBudget(weight_limit, margin=margin, clock=clock, sleep=sleep)
        self.weight_limit = self.budget.limit
        self._calls = self._failures = self._retries = self._limited = 0
        self._successes = self._bad = 0
        self._last_error: str | None = None
        self._answered = False  # any HTTP reply ever, usable or not
        self._asked = False

    def stats(self) -> RestStats:
        """A copy of the counters."""
        budget = self.budget.stats()
        return RestStats(
            calls=self._calls,
            failures=self._failures,
            retries=self._retries,
            rate_limited=self._limited,
            used_weight=budget.used,
            successes=self._successes,
            bad_replies=self._bad,
            last_error=self._last_error,
            reachable=self._answered if self._asked else None,
            weight_limit=budget.limit,
            weight_cap=budget.cap,
            weight_sent=budget.weight_sent,
            queued=budget.queued,
            in_flight=budget.in_flight,
            waits=budget.waits,
            dropped=budget.dropped,
        )

    def deadline_in(self, seconds: float) -> float:
        """The budget's clock time ``seconds`` from now: a ``deadline`` argument."""
        return self.budget.deadline_in(seconds)

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

    async def get(
        self,
        path: str,
        weight: int = 1,
        send_headers: Sequence[tuple[str, str]] = (),
        *,
        priority: Priority = BACKGROUND,
        deadline: float | None = None,
    ) -> bytes:
        """The body of ``GET base_url + path`` (with extra ``headers``, e.g. an API key);
        raises :class:`RestError` when it fails (:class:`Dropped` when the budget did
        not send it before ``deadline``, a time on :attr:`budget`'s clock)."""
        return await self.fetch(
            path, _as_is, weight, send_headers, priority=priority, deadline=deadline
        )

    async def fetch(
        self,
        path: str,
        parse: Callable[[bytes], T],
        weight: int = 1,
        send_headers: Sequence[tuple[str, str]] = (),
        *,
        priority: Priority = BACKGROUND,
        deadline: float | None = None,
    ) -> T:
        """``parse`` of the body of ``GET base_url + path``; a reply ``parse`` rejects with
        :class:`BadReply` is retried like a 5xx. Each attempt waits for its ``weight``
        in the budget's queue at ``priority``. Raises :class:`RestError` when the retry
        budget is spent (the message says why), :class:`Dropped` when the budget could
        not send it before ``deadline`` (a time on :attr:`budget`'s clock; None: none)."""
        backoff = self._backoff()
        waited = 0.0  # seconds spent waiting between attempts
        last = "no attempt"
        answered = False  # an HTTP reply in this look-up
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self._retries += 1
            # the exchange asked for no requests for a while (Retry-After): asking anyway
            # gets an IP banned (418), so every look-up waits (in the budget's queue), or
            # gives up if it is too long
            blocked, blocked_by = self.budget.blocked_for()
            if blocked > 0:
                if blocked > self.max_wait - waited:
                    last = (
                        f"not sent: rate limited, asked to wait {blocked:.0f}s more "
                        f"({blocked_by}): more than the retry budget of "
                        f"{self.max_wait:.0f}s allows"
                    )
                    break
                waited += blocked
            try:
                ticket = await self.budget.acquire(weight, priority, deadline)
            except NotSent as exc:
                self._last_error = f"GET {path} not sent: {exc}"
                raise Dropped(self._last_error) from None
            self._asked = True
            self._calls += 1
            used: int | None = None
            try:
                try:
                    status, body, headers = await asyncio.to_thread(self._fetch, path, send_headers)
                # refused, reset, DNS, timeout, a reply cut short (IncompleteRead), bad headers
                except (OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
                    status, body, headers, last = 0, b"", {}, f"{type(exc).__name__}: {exc}"
                used = _used_weight(headers)
            finally:  # cancelled or not, the request is no longer in flight
                self.budget.settle(ticket, used)
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
                # for every look-up: the budget sends nothing before it is over
                self.budget.block(delay, f"HTTP {status}")
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
            if deadline is not None and self.budget.clock() + delay >= deadline:
                last = f"{last} (no time for a retry before its deadline)"
                break
            # a host that never answered is logged once, by whoever gives up on it
            level = logging.WARNING if self._answered else logging.DEBUG
            log.log(level, "REST %s failed (%s); retry %d in %.2fs", path, last, attempt, delay)
            waited += delay
            await self._sleep(delay)
        self._failures += 1
        self._last_error = f"GET {path} failed: {last}"
        raise RestError(self._last_error, unreachable=not answered and not self._answered)


def _used_weight(headers: dict[str, str]) -> int | None:
    """The exchange's weight count of the current minute in a reply, if it has one."""
    for name, value in headers.items():
        if name.lower() == "x-mbx-used-weight-1m":
            return int(value) if value.strip().isdigit() else None
    return None


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
