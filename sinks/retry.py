"""Backoff for retried writes and deliveries: exponential, capped, with full jitter.

A server's ``Retry-After`` (seconds or an HTTP date) wins over the computed delay, bounded by
``retry_after_max_s`` so a bad header cannot stall a sink for hours.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float
    max_s: float
    retry_after_max_s: float = 60.0
    jitter: bool = True

    def delay(
        self, attempt: int, retry_after: float | None = None, rand: random.Random | None = None
    ) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.max_s, self.initial_s * 2 ** max(0, attempt - 1))
        # Full jitter (uniform in [0, ceiling]) spreads retries of many clients apart.
        delay = (rand or _random).uniform(0, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max_s))
        return delay


_random = random.Random()  # noqa: S311  # jitter, not cryptography


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date); ``None`` if absent."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
