"""Logging that cannot flood: at most one line per kind per interval, with a count."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs the first event of each kind, then at most one line per ``interval`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        """Log ``message`` for ``kind`` unless one was logged less than ``interval`` ago."""
        now = self._clock()
        if now < self._next.get(kind, float("-inf")):
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        skipped = self._suppressed.pop(kind, 0)
        more = f" ({skipped} more like it since the last report)" if skipped else ""
        self._logger.warning("%s%s", message, more)
        self._next[kind] = now + self._interval
