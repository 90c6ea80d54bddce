"""Latency figures: HDR histograms of milliseconds, and quantiles of Prometheus histograms.

Every hop is recorded per message into an HDR histogram (3 significant digits, up to one
hour); negative values (a device clock ahead of the broker's) are recorded as 0 and counted,
values beyond an hour are counted as overflow, and the exact maximum is kept beside the
histogram. The InfluxDB sink publishes its device-to-write latency only as a Prometheus
histogram with coarse buckets; :func:`bucket_quantile` interpolates in it the way
``histogram_quantile`` does, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from hdrh.histogram import HdrHistogram

MAX_MS = 3_600_000
DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


class Latency:
    """An HDR histogram of latencies in milliseconds, with the exact max and what was clamped."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(1, MAX_MS, DIGITS)
        self.max_ms = 0
        self.min_ms: int | None = None
        """The smallest value recorded, before clamping (shows how far below zero values went)."""
        self.negative = 0
        self.overflow = 0

    def record(self, ms: int) -> None:
        if self.min_ms is None or ms < self.min_ms:
            self.min_ms = ms
        if ms < 0:
            self.negative += 1
            ms = 0
        if ms > MAX_MS:
            self.overflow += 1
            ms = MAX_MS
        self.hist.record_value(ms)
        self.max_ms = max(self.max_ms, ms)

    def record_many(self, values: Iterable[int]) -> None:
        for v in values:
            self.record(v)

    def merge(self, other: Latency) -> None:
        self.hist.add(other.hist)
        self.max_ms = max(self.max_ms, other.max_ms)
        if other.min_ms is not None and (self.min_ms is None or other.min_ms < self.min_ms):
            self.min_ms = other.min_ms
        self.negative += other.negative
        self.overflow += other.overflow

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    def percentile(self, p: float) -> float:
        return float(self.hist.get_value_at_percentile(p)) if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """count, mean, p50, p90, p99, p999 and max in milliseconds (zeros when empty)."""
        out: dict[str, float] = {"count": float(self.count)}
        if not self.count:
            return {**out, "mean": 0.0, **dict.fromkeys(PERCENTILES, 0.0), "max": 0.0}
        out["mean"] = round(float(self.hist.get_mean_value()), 2)
        for name, p in PERCENTILES.items():
            out[name] = self.percentile(p)
        out["max"] = float(self.max_ms)
        if self.negative:
            out["negative"] = float(self.negative)
            out["min"] = float(self.min_ms or 0)
        if self.overflow:
            out["overflow"] = float(self.overflow)
        return out

    def encoded(self) -> str:
        """The histogram in HDR's compressed base64 form (``HdrHistogram.decode`` reads it)."""
        encoded: bytes = self.hist.encode()
        return encoded.decode()


class Timeline:
    """Latencies bucketed by the second they belong to (for recovery after a burst)."""

    def __init__(self) -> None:
        self.seconds: dict[int, Latency] = {}

    def record(self, second: int, ms: int) -> None:
        latency = self.seconds.get(second)
        if latency is None:
            latency = self.seconds[second] = Latency()
        latency.record(ms)

    def percentile_series(self, p: float, origin: int = 0) -> list[tuple[int, float]]:
        """(second - origin, percentile) for every second that has values, in order."""
        return [(s - origin, self.seconds[s].percentile(p)) for s in sorted(self.seconds)]


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``[(upper bound, count), ...]``.

    Linear interpolation inside the bucket that holds the rank, as Prometheus does; the lower
    edge of the first bucket is 0; a rank in the ``+Inf`` bucket gives the highest finite
    bound. ``None`` when the histogram is empty.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank and cumulative > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        if not math.isinf(bound):
            lower = bound
        below = cumulative
    return lower


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> list[tuple[float, float]]:
    """Cumulative buckets of the observations made between two scrapes of one histogram."""
    return sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)


def bucket_summary(buckets: Sequence[tuple[float, float]], scale: float = 1000.0) -> dict[str, float]:
    """count, p50, p90, p99, p999 of a cumulative histogram, in milliseconds (``scale`` from its unit)."""
    ordered = sorted(buckets)
    count = ordered[-1][1] if ordered else 0.0
    out: dict[str, float] = {"count": float(count)}
    for name, p in PERCENTILES.items():
        value = bucket_quantile(p / 100.0, ordered)
        out[name] = round(value * scale, 1) if value is not None else 0.0
    finite = [b for b, _ in ordered if not math.isinf(b)]
    out["resolution_ms"] = 0.0 if not finite else round(finite[0] * scale, 1)
    if count > 0:
        # The max is only known to lie below the bound of the highest bucket that holds anything.
        top = next((b for b, c in ordered if c >= count), math.inf)
        out["max_le_ms"] = round((top if not math.isinf(top) else (finite[-1] if finite else 0.0)) * scale, 1)
    return out


def recovery_time(
    series: Sequence[tuple[int, float]], baseline: float, after: int, hold: int = 3, slack: float = 1.2
) -> int | None:
    """Seconds from ``after`` until ``series`` is back at or under ``baseline * slack`` for good.

    ``series`` is ``(second, value)``; "for good" means for ``hold`` consecutive seconds that
    have values. ``0`` when it never left; ``None`` when it does not come back within the series.
    """
    limit = baseline * slack
    points = [(s, v) for s, v in series if s >= after]
    run = 0
    for i, (_second, value) in enumerate(points):
        if value <= limit:
            run += 1
            if run >= hold:
                return max(0, points[i - hold + 1][0] - after)
        else:
            run = 0
    return None
