"""Requests-per-minute and tokens-per-minute limits as token buckets.

``acquire`` never waits: under a short lock it books the request into the bucket and
returns how long the caller must wait before sending. The caller then sleeps the way its
driver sleeps (``time.sleep`` on a thread, ``asyncio.sleep`` on the loop), holding no lock,
so waiting never blocks the event loop or other crews, and nobody sleeps longer than the
bucket requires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """``capacity`` units per minute, refilled continuously; debt is booked, not waited."""

    __slots__ = ("_clock", "_level", "_lock", "_rate", "_stamp", "capacity")

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be > 0 per minute, got {per_minute}")
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def book(self, units: float) -> float:
        """Take ``units`` now (going into debt if need be); return seconds until they exist."""
        units = min(float(units), self.capacity)
        with self._lock:
            now = self._clock()
            self._level = min(self.capacity, self._level + (now - self._stamp) * self._rate)
            self._stamp = now
            self._level -= units
            if self._level >= 0:
                return 0.0
            return -self._level / self._rate


class RateLimiter:
    """The buckets of one ``LLM`` or ``Crew``: requests and (estimated) tokens per minute."""

    __slots__ = ("requests", "tokens")

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = TokenBucket(rpm, clock=clock) if rpm else None
        self.tokens = TokenBucket(tpm, clock=clock) if tpm else None

    def acquire(self, tokens: int = 0) -> float:
        """Book one request of about ``tokens`` tokens; seconds to wait before sending it."""
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.book(1)
        if self.tokens is not None and tokens:
            wait = max(wait, self.tokens.book(tokens))
        return wait
