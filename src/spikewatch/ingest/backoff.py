"""Exponential backoff with full jitter: pure, with the randomness injected."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays before reconnect attempts: ``uniform(0, min(cap, first * 2**n))``.

    The first retry comes within ``first`` seconds; ``reset()`` after a healthy connection.
    Full jitter spreads many clients' retries apart (AWS architecture blog, "Exponential
    Backoff And Jitter").
    """

    def __init__(
        self, first: float = 1.0, cap: float = 30.0, rand: Callable[[], float] = random.random
    ) -> None:
        if first <= 0 or cap < first:
            raise ValueError("need 0 < first <= cap")
        self.first = first
        self.cap = cap
        self._rand = rand
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds; grows with each call."""
        ceiling = min(self.cap, self.first * 2 ** min(self.attempt, 30))
        self.attempt += 1
        delay: float = ceiling * self._rand()
        return delay

    def reset(self) -> None:
        """Start again from the smallest delay."""
        self.attempt = 0
