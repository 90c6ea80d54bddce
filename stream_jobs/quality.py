"""Data quality of one device over one minute of event time: pure scoring.

Each part is in [0, 1], 1 meaning good:

- completeness: readings received / readings expected from the device's interval (capped at 1);
- timeliness: share of readings the bridge received within ``timeliness_bound_ms`` of their
  device time;
- plausibility: share of readings whose values are all inside the metric's physical range and
  that carry no flag (such as ``clock_skew``);
- flatline: 1 minus the share of consecutive repeated values (the last value of the previous
  minute counts as the first of this one), worst metric;
- noise: ``1 / (1 + r / NOISE_REF)`` where ``r`` is the median absolute first difference
  relative to the typical level (the median absolute value, at least 1 % of the metric's
  range), worst metric.

The score is the weighted mean of the parts (``WEIGHTS``). A minute with no reading has
completeness 0 and score 0.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping

import msgspec

from citystream.model import QualityScore, Reading
from citystream.sensors import SENSOR_TYPES

MINUTE_MS = 60_000
NOISE_REF = 0.1
WEIGHTS = {"completeness": 0.3, "timeliness": 0.2, "plausibility": 0.2, "flatline": 0.15, "noise": 0.15}


class MinuteAcc(msgspec.Struct, kw_only=True):
    """What one device sent in one minute (filled in place by :func:`add`)."""

    start: int
    count: int = 0
    timely: int = 0
    plausible: int = 0
    values: dict[str, list[float]] = {}
    previous: dict[str, float] = {}
    """Each metric's last value of the previous minute."""


def minute_of(ts: int) -> int:
    return ts - ts % MINUTE_MS


def plausible(reading: Reading) -> bool:
    if reading.flags:
        return False
    sensor_type = reading.sensor_type
    for name, value in reading.values.items():
        limits = _RANGES.get((sensor_type, name))
        if limits is None or not limits[0] <= value <= limits[1]:  # NaN fails the comparison
            return False
    return True


_RANGES = {(t.name, m.name): (m.low, m.high) for t in SENSOR_TYPES.values() for m in t.metrics}


def add(acc: MinuteAcc, reading: Reading, timeliness_bound_ms: int) -> MinuteAcc:
    """Add ``reading`` (which belongs to ``acc``'s minute) to ``acc``; returns ``acc``."""
    values = acc.values
    for name, value in reading.values.items():
        series = values.get(name)
        if series is None:
            values[name] = [value]
        else:
            series.append(value)
    acc.count += 1
    acc.timely += abs(reading.received_ms - reading.ts) <= timeliness_bound_ms
    acc.plausible += plausible(reading)
    return acc


def next_minute(acc: MinuteAcc, start: int) -> MinuteAcc:
    """A fresh accumulator for the minute at ``start`` that remembers ``acc``'s last values."""
    previous = dict(acc.previous)
    for name, values in acc.values.items():
        if values:
            previous[name] = values[-1]
    return MinuteAcc(start=start, previous=previous)


def _flatline(series: list[float], previous: float | None) -> float:
    points = ([previous] if previous is not None else []) + series
    if len(points) < 2:
        return 1.0
    repeats = sum(1 for a, b in itertools.pairwise(points) if a == b)
    return 1.0 - repeats / (len(points) - 1)


def _noise(series: list[float], previous: float | None, span: float) -> float:
    points = ([previous] if previous is not None else []) + series
    if len(points) < 3:
        return 1.0
    diffs = [abs(b - a) for a, b in itertools.pairwise(points)]
    level = max(statistics.median(abs(p) for p in points), 0.01 * span, 1e-9)
    ratio = statistics.median(diffs) / level
    return 1.0 / (1.0 + ratio / NOISE_REF)


def score(
    acc: MinuteAcc, device_id: str, district: str, sensor_type: str, expected_per_minute: float
) -> QualityScore:
    """The QualityScore of a finished minute."""
    if acc.count == 0:
        return QualityScore(
            device_id=device_id,
            district=district,
            sensor_type=sensor_type,
            window_start=acc.start,
            completeness=0.0,
            timeliness=0.0,
            plausibility=0.0,
            flatline=0.0,
            noise=0.0,
            score=0.0,
        )
    kind = SENSOR_TYPES.get(sensor_type)
    spans: Mapping[str, float] = {m.name: m.high - m.low for m in kind.metrics} if kind else {}
    parts = {
        "completeness": min(1.0, acc.count / expected_per_minute) if expected_per_minute > 0 else 1.0,
        "timeliness": acc.timely / acc.count,
        "plausibility": acc.plausible / acc.count,
        "flatline": min(
            (_flatline(v, acc.previous.get(name)) for name, v in acc.values.items()), default=1.0
        ),
        "noise": min(
            (_noise(v, acc.previous.get(name), spans.get(name, 1.0)) for name, v in acc.values.items()),
            default=1.0,
        ),
    }
    total = math.fsum(WEIGHTS[name] * value for name, value in parts.items())
    return QualityScore(
        device_id=device_id,
        district=district,
        sensor_type=sensor_type,
        window_start=acc.start,
        score=round(total, 6),
        **{name: round(value, 6) for name, value in parts.items()},
    )
