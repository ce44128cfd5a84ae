"""A small REST client for exchange look-ups: timeouts, retries with backoff, and Binance's
rate limits (request weight per minute, HTTP 429 and 418 with ``Retry-After``).

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

import msgspec

from spikewatch import __version__
from spikewatch.ingest.backoff import Backoff

log = logging.getLogger(__name__)

#: Binance's REQUEST_WEIGHT limit per minute (GET /api/v3/exchangeInfo, rateLimits).
WEIGHT_LIMIT = 6000
#: The longest Retry-After we honour before giving up on a request.
MAX_RETRY_AFTER = 300.0


class RestError(RuntimeError):
    """A REST call failed for good (after retries, or a client error not worth retrying)."""


class RestStats(msgspec.Struct, frozen=True):
    """Counters of the REST client."""

    calls: int
    failures: int
    retries: int
    rate_limited: int
    used_weight: int


class RestClient:
    """GET JSON from ``base_url`` with retries; ``get(path, weight)`` returns the body."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        attempts: int = 5,
        backoff: Callable[[], Backoff] = lambda: Backoff(first=0.5, cap=8.0),
        weight_limit: int = WEIGHT_LIMIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self._backoff = backoff
        self.weight_limit = weight_limit
        self._sleep = sleep
        self._calls = self._failures = self._retries = self._limited = 0
        self._used = 0
        self._window_start = time.monotonic()

    def stats(self) -> RestStats:
        """A copy of the counters."""
        return RestStats(self._calls, self._failures, self._retries, self._limited, self._used)

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
        backoff = self._backoff()
        last = "no attempt"
        for attempt in range(1, self.attempts + 1):
            await self._respect_weight(weight)
            self._calls += 1
            try:
                status, body, headers = await asyncio.to_thread(self._fetch, path, send_headers)
            # refused, reset, DNS, timeout, a reply cut short (IncompleteRead), bad headers
            except (OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
                status, body, headers, last = 0, b"", {}, f"{type(exc).__name__}: {exc}"
            used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
            self._used = int(used) if used and used.isdigit() else self._used + weight
            if status == 200:
                return body
            if status:
                last = f"HTTP {status}: {body[:200]!r}"
            if status in (429, 418):
                self._limited += 1
                retry_after = _seconds(headers.get("Retry-After")) or backoff.next_delay()
                if retry_after > MAX_RETRY_AFTER:
                    break
                log.warning("REST rate limited (%d); waiting %.1fs as asked", status, retry_after)
                await self._sleep(retry_after)
            elif 400 <= status < 500:
                break  # our request is wrong: retrying will not help
            elif attempt < self.attempts:
                delay = backoff.next_delay()
                log.warning("REST %s failed (%s); retry %d in %.2fs", path, last, attempt, delay)
                await self._sleep(delay)
            self._retries += 1
        self._failures += 1
        raise RestError(f"GET {path} failed: {last}")


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
