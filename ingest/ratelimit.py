"""Per-device rate limits: a token bucket per device, so a flooding device is throttled and the
others keep their rate.

Each device has a bucket of ``burst`` tokens that refills at ``rate`` tokens a second, up to
``burst``; a reading takes one token, and a reading that finds no whole token is over the limit
(the bridge dead-letters it as ``rate_limited``). A device that stays under the rate is never
throttled; a device that floods gets ``burst`` readings through at once and ``rate`` a second
after that, whatever it sends.

The bucket is kept as its theoretical arrival time (GCRA, the virtual-scheduling form of the
same token bucket) in integer nanoseconds, so no rounding error creeps in: with a float token
count, adding 0.1 token ten times falls short of one token and a device would get less than its
rate. The clock is the caller's, in integer milliseconds (the bridge passes its receive time,
the one its records carry), so the limiter is pure and what it let through can be checked from
the records alone. A clock that steps back refills nothing and takes nothing away.

Memory stays bounded: a bucket left alone for ``burst / rate`` seconds is full again, the same
as a new one, so forgetting it changes nothing. Buckets not used for that long, and for at least
``report_interval_s`` (so that the once-per-interval report per device holds), are evicted in
one sweep per second, least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

REPORT_INTERVAL_S = 60.0
"""At most one report (a log line) per throttled device in this time."""
SWEEP_INTERVAL_MS = 1000
NS_PER_MS = 1_000_000


class _Bucket:
    __slots__ = ("last_report_ms", "last_throttled_ms", "seen_ms", "tat_ns", "unreported")

    def __init__(self, now_ms: int) -> None:
        self.tat_ns = now_ms * NS_PER_MS
        """Theoretical arrival time: the bucket is full from then on, and holds
        ``(now - tat) / interval + burst`` tokens, capped at ``burst``, before it."""
        self.seen_ms = now_ms
        """The latest time the device sent at (the clock's high-water mark for this bucket)."""
        self.unreported = 0
        """Readings over the limit since the last report."""
        self.last_report_ms: int | None = None
        self.last_throttled_ms: int | None = None


class Report(NamedTuple):
    """A throttled device is due a report: ``throttled`` readings over the limit since the last one."""

    device_id: str
    throttled: int
    since_s: float | None
    """Seconds since the previous report of this device; ``None`` for its first one."""


class DeviceRateLimiter:
    """Token buckets keyed by device id; ``rate_per_s <= 0`` turns the limit off."""

    def __init__(
        self, rate_per_s: float, burst: int, *, report_interval_s: float = REPORT_INTERVAL_S
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.enabled = rate_per_s > 0
        self.interval_ns = max(1, round(1e9 / rate_per_s)) if self.enabled else 0
        """Time one token takes to refill (a rate above 10⁹ a second counts as 10⁹)."""
        self.tolerance_ns = (burst - 1) * self.interval_ns
        self.burst = burst
        self.report_interval_ms = round(report_interval_s * 1000)
        self.idle_ms = max(-(-burst * self.interval_ns // NS_PER_MS), self.report_interval_ms)
        """A bucket not used for this long is evicted (it is full again by then)."""
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        """Least recently used first."""
        self._next_sweep_ms: int | None = None
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, device_id: str, now_ms: int) -> bool:
        """Whether one more reading of the device at ``now_ms`` is within its limit."""
        if not self.enabled:
            return True
        if self._next_sweep_ms is None or now_ms >= self._next_sweep_ms:
            self._sweep(now_ms)
        buckets = self._buckets
        bucket = buckets.get(device_id)
        if bucket is None:
            bucket = buckets[device_id] = _Bucket(now_ms)
        else:
            buckets.move_to_end(device_id)
            if now_ms < bucket.seen_ms:  # the clock stepped back: shift the schedule with it
                bucket.tat_ns -= (bucket.seen_ms - now_ms) * NS_PER_MS
            bucket.seen_ms = now_ms
        now_ns = now_ms * NS_PER_MS
        tat_ns = bucket.tat_ns
        if now_ns < tat_ns - self.tolerance_ns:
            bucket.unreported += 1
            bucket.last_throttled_ms = now_ms
            return False
        bucket.tat_ns = max(tat_ns, now_ns) + self.interval_ns
        return True

    def report(self, device_id: str, now_ms: int) -> Report | None:
        """After a refused :meth:`take`: a report, unless the device had one within the interval."""
        bucket = self._buckets.get(device_id)
        if bucket is None or not bucket.unreported:
            return None
        last = bucket.last_report_ms
        if last is not None and now_ms - last < self.report_interval_ms:
            return None
        report = Report(device_id, bucket.unreported, None if last is None else (now_ms - last) / 1000)
        bucket.unreported = 0
        bucket.last_report_ms = now_ms
        return report

    def throttled_devices(self, now_ms: int) -> int:
        """Devices that had a reading refused in the last report interval."""
        horizon = now_ms - self.report_interval_ms
        return sum(
            1
            for b in self._buckets.values()
            if b.last_throttled_ms is not None and b.last_throttled_ms >= horizon
        )

    def _sweep(self, now_ms: int) -> None:
        self._next_sweep_ms = now_ms + SWEEP_INTERVAL_MS
        horizon = now_ms - self.idle_ms
        buckets = self._buckets
        while buckets:
            device_id, bucket = next(iter(buckets.items()))
            if bucket.seen_ms > horizon:
                break
            del buckets[device_id]
            self.evicted += 1
