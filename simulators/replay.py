"""Replay a recorded series (CSV ``timestamp,value``, such as a NAB data file) as one device.

The series keeps its spacing but is moved to start at the run's start instant; the publisher
compresses it in time. Rows that cannot be read are skipped, counted and reported by line.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from citystream.addressing import is_device_id
from citystream.geo import BY_ID, is_district
from citystream.sensors import SENSOR_TYPES
from simulators import payloads
from simulators.errors import ReplayError
from simulators.fleet import Device
from simulators.generator import Message

logger = logging.getLogger(__name__)


class Series(NamedTuple):
    times_ms: list[int]
    values: list[float]
    skipped: list[tuple[int, str]]
    """(line number, reason) of every row left out."""


def _parse_time(text: str) -> int:
    instant = datetime.fromisoformat(text.strip())
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return int(instant.timestamp() * 1000)


def read_series(path: Path) -> Series:
    """The rows of a ``timestamp,value`` CSV in file order (a header row is recognised)."""
    times: list[int] = []
    values: list[float] = []
    skipped: list[tuple[int, str]] = []
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from exc
    with handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if line_no == 1 and row and row[0].strip().lower() in ("timestamp", "time", "ts"):
                continue
            if len(row) < 2:
                skipped.append((line_no, "fewer than 2 columns"))
                continue
            try:
                t = _parse_time(row[0])
            except ValueError:
                skipped.append((line_no, f"bad timestamp {row[0][:40]!r}"))
                continue
            try:
                v = float(row[1])
            except ValueError:
                skipped.append((line_no, f"bad value {row[1][:40]!r}"))
                continue
            if not math.isfinite(v):
                skipped.append((line_no, "value is not finite"))
                continue
            if times and t <= times[-1]:
                skipped.append((line_no, "timestamp not after the previous row"))
                continue
            times.append(t)
            values.append(v)
    if skipped:
        logger.warning(
            "%s: skipped %d rows (first: line %d, %s)", path, len(skipped), skipped[0][0], skipped[0][1]
        )
    if len(times) < 2:
        raise ReplayError(f"{path}: fewer than 2 usable rows")
    return Series(times, values, skipped)


def replay_device(device_id: str, district: str, sensor_type: str, series: Series) -> Device:
    if not is_device_id(device_id):
        raise ReplayError(f"device id {device_id!r} must match [a-z0-9][a-z0-9-]{{2,63}}")
    if not is_district(district):
        raise ReplayError(f"unknown district {district!r}")
    if sensor_type not in SENSOR_TYPES:
        raise ReplayError(f"unknown sensor type {sensor_type!r}; known: {', '.join(SENSOR_TYPES)}")
    steps = sorted(b - a for a, b in itertools.pairwise(series.times_ms))
    home = BY_ID[district]
    return Device(
        number=0,
        device_id=device_id,
        base_id=device_id,
        district=district,
        sensor_type=sensor_type,
        lat=home.lat,
        lon=home.lon,
        interval_ms=steps[len(steps) // 2],
        phase_ms=0,
        seed=0,
    )


def messages(
    series: Series, device: Device, *, root: str, start_ms: int, metric: str, scale: float, qos: int
) -> Iterator[Message]:
    """The series as telemetry of ``device``, shifted to begin at ``start_ms``."""
    if SENSOR_TYPES[device.sensor_type].metric(metric) is None:
        raise ReplayError(f"{metric!r} is not a metric of {device.sensor_type}")
    topic = device.topic(root)
    t0 = series.times_ms[0]
    for seq, (t, v) in enumerate(zip(series.times_ms, series.values, strict=True), start=1):
        at = start_ms + (t - t0)
        payload = payloads.telemetry(at, seq, {metric: round(v * scale, 6)})
        yield Message(at, 0, seq, topic, payload, qos)
