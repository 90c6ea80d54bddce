"""Does a recorded message stream really show the labelled incidents?

Give :func:`collect` the telemetry as it arrived (MQTT topic and payload, in arrival order,
for example from a subscriber or a dump) and ask :func:`problem` about each label: ``None``
when the data shows the incident, else what is missing. The checks are robust statistics on
the received readings (medians and median absolute deviations), not a replay of the generator,
so they hold for any recording of a scenario.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from citystream.addressing import TELEMETRY, split_topic
from citystream.sensors import SENSOR_TYPES
from simulators.labels import Label

SKEW_JUMP_MS = 300_000
"""A clock-skew incident moves the device clock by more than this (the ingest bound)."""
SHIFT_IN_SPREADS = 4.0
"""How many median absolute deviations a shifted level must stand out by."""


class Reading(NamedTuple):
    ts: int
    seq: int
    values: dict[str, float]


@dataclass
class DeviceLog:
    device_id: str
    district: str
    sensor_type: str
    readings: list[Reading] = field(default_factory=list)
    """Valid readings in arrival order."""
    invalid: list[bytes] = field(default_factory=list)
    """Payloads that break the MQTT contract."""


def parse(payload: bytes, sensor_type: str) -> Reading | None:
    """The reading of a native JSON payload, or ``None`` when it breaks the contract."""
    try:
        body: Any = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("ts"), int)
        or not isinstance(body.get("seq"), int)
    ):
        return None
    values = body.get("values")
    if not isinstance(values, dict) or not values:
        return None
    sensor = SENSOR_TYPES[sensor_type]
    for name, value in values.items():
        metric = sensor.metric(name)
        if metric is None or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or not metric.low <= value <= metric.high:
            return None
    return Reading(body["ts"], body["seq"], {k: float(v) for k, v in values.items()})


def collect(root: str, messages: Iterable[tuple[str, bytes]]) -> dict[str, DeviceLog]:
    """Telemetry per device id, in arrival order (status and foreign topics are left aside)."""
    logs: dict[str, DeviceLog] = {}
    for topic, payload in messages:
        address = split_topic(root, topic)
        if address is None or address.kind != TELEMETRY or address.sensor_type not in SENSOR_TYPES:
            continue
        log = logs.get(address.device_id)
        if log is None:
            log = logs[address.device_id] = DeviceLog(
                address.device_id, address.district, address.sensor_type
            )
        reading = parse(payload, address.sensor_type)
        if reading is None:
            log.invalid.append(payload)
        else:
            log.readings.append(reading)
    return logs


def _spread(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    centre = statistics.median(values)
    return statistics.median(abs(v - centre) for v in values)


def _split(log: DeviceLog, metric: str, start: int, end: int) -> tuple[list[float], list[float]]:
    inside = [r.values[metric] for r in log.readings if start <= r.ts < end and metric in r.values]
    outside = [r.values[metric] for r in log.readings if not start <= r.ts < end and metric in r.values]
    return inside, outside


def _stands_out(inside: list[float], reference: list[float], what: str) -> str | None:
    if not inside or len(reference) < 3:
        return f"{what}: too few readings ({len(inside)} inside, {len(reference)} for reference)"
    shift = statistics.median(inside) - statistics.median(reference)
    spread = max(_spread(reference), 1e-9)
    if shift < SHIFT_IN_SPREADS * spread:
        return f"{what}: median moved by {shift:.3g}, less than {SHIFT_IN_SPREADS:g} x {spread:.3g}"
    return None


def problem(label: Label, logs: dict[str, DeviceLog]) -> str | None:
    """``None`` when the data shows the labelled incident, else what does not fit."""
    if label.kind == "district_event":
        return _district_event(label, logs)
    missing = [d for d in label.devices if d not in logs]
    if missing:
        return f"no telemetry from {missing}"
    for device_id in label.devices:
        found = CHECKS[label.kind](label, logs[device_id], logs)
        if found is not None:
            return f"{label.kind} on {device_id}: {found}"
    return None


def _level(label: Label, log: DeviceLog, _: dict[str, DeviceLog]) -> str | None:
    inside, outside = _split(log, label.metric, label.start_ms, label.end_ms)
    return _stands_out(inside, outside, label.metric)


def _drift(label: Label, log: DeviceLog, logs: dict[str, DeviceLog]) -> str | None:
    """The device moves away from its district peers during the window."""
    peers = [
        other
        for other in logs.values()
        if other.district == log.district and other.sensor_type == log.sensor_type and other is not log
    ]
    if not peers:
        return "no peers to compare with"

    def gap(reading: Reading) -> float:
        near = [
            r.values[label.metric]
            for p in peers
            for r in p.readings
            if abs(r.ts - reading.ts) <= 60_000 and label.metric in r.values
        ]
        return reading.values[label.metric] - statistics.median(near) if near else math.nan

    span = label.end_ms - label.start_ms
    late = [gap(r) for r in log.readings if label.end_ms - span // 4 <= r.ts < label.end_ms]
    before = [gap(r) for r in log.readings if r.ts < label.start_ms]
    return _stands_out(
        [g for g in late if not math.isnan(g)], [g for g in before if not math.isnan(g)], "gap to peers"
    )


def _stuck(label: Label, log: DeviceLog, _: dict[str, DeviceLog]) -> str | None:
    inside = [r.values for r in log.readings if label.start_ms <= r.ts < label.end_ms]
    outside = [r.values for r in log.readings if not label.start_ms <= r.ts < label.end_ms]
    if len(inside) < 2:
        return f"only {len(inside)} readings in the window"
    if any(v != inside[0] for v in inside):
        return "values change inside the window"
    if outside and all(v == inside[0] for v in outside):
        return "values never change, not only in the window"
    return None


def _dropout(label: Label, log: DeviceLog, _: dict[str, DeviceLog]) -> str | None:
    inside = [r for r in log.readings if label.start_ms <= r.ts < label.end_ms]
    if inside:
        return f"{len(inside)} readings inside the silent window"
    if not any(r.ts < label.start_ms for r in log.readings) or not any(
        r.ts >= label.end_ms for r in log.readings
    ):
        return "no readings around the window"
    return None


def _duplicates(label: Label, log: DeviceLog, _: dict[str, DeviceLog]) -> str | None:
    seqs_in = [r.seq for r in log.readings if label.start_ms <= r.ts < label.end_ms]
    seqs_out = [r.seq for r in log.readings if not label.start_ms <= r.ts < label.end_ms]
    if not seqs_in or any(seqs_in.count(s) < 2 for s in set(seqs_in)):
        return "not every message in the window was repeated"
    if len(set(seqs_out)) != len(seqs_out):
        return "duplicates outside the window"
    return None


def _out_of_order(label: Label, log: DeviceLog, _: dict[str, DeviceLog]) -> str | None:
    seqs_in = [r.seq for r in log.readings if label.start_ms <= r.ts < label.end_ms]
    seqs_out = [r.seq for r in log.readings if not label.start_ms <= r.ts < label.end_ms]
    if not any(b < a for a, b in itertools.pairwise(seqs_in)):
        return "arrived in order inside the window"
    if seqs_out != sorted(seqs_out):
        return "out of order outside the window"
    return None


def _malformed(label: Label, log: DeviceLog, _: dict[str, DeviceLog]) -> str | None:
    if not log.invalid:
        return "no invalid payloads"
    valid_inside = [r for r in log.readings if label.start_ms <= r.ts < label.end_ms]
    if valid_inside:
        return f"{len(valid_inside)} valid readings inside the window"
    return None


def _clock_skew(label: Label, log: DeviceLog, _: dict[str, DeviceLog]) -> str | None:
    """The device clock jumps by more than the bound when the window opens and back at its end."""
    pairs = list(itertools.pairwise(log.readings))
    if not pairs:
        return "too few readings"
    usual = statistics.median(b.ts - a.ts for a, b in pairs)
    jumps = [(a, b.ts - a.ts - usual) for a, b in pairs if abs(b.ts - a.ts - usual) > SKEW_JUMP_MS]
    opening = [a for a, step in jumps if step > 0 and a.ts < label.start_ms]
    closing = [a for a, step in jumps if step < 0 and a.ts >= label.start_ms]
    if len(opening) != 1 or len(closing) != 1:
        return f"{len(opening)} jumps ahead and {len(closing)} back beyond {SKEW_JUMP_MS // 1000} s"
    return None


def _district_event(label: Label, logs: dict[str, DeviceLog]) -> str | None:
    devices = [
        log
        for log in logs.values()
        if log.district == label.district and log.sensor_type == label.sensor_type
    ]
    if not devices:
        return f"no {label.sensor_type} telemetry from {label.district}"
    middle = (label.start_ms + label.end_ms) // 2
    quarter = (label.end_ms - label.start_ms) // 4
    for log in devices:
        core = [
            r.values[label.metric]
            for r in log.readings
            if abs(r.ts - middle) <= quarter and label.metric in r.values
        ]
        before = [
            r.values[label.metric] for r in log.readings if r.ts < label.start_ms and label.metric in r.values
        ]
        found = _stands_out(core, before, f"{label.metric} of {log.device_id}")
        if found is not None:
            return found
    return None


CHECKS = {
    "spike": _level,
    "level_shift": _level,
    "drift": _drift,
    "stuck_value": _stuck,
    "dropout": _dropout,
    "duplicate_burst": _duplicates,
    "out_of_order": _out_of_order,
    "malformed": _malformed,
    "clock_skew": _clock_skew,
}
