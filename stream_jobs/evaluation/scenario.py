"""Replays recorded readings through the configured detectors and checks them against labels.

Input: readings as the stream jobs see them (JSON lines of :class:`Reading`, for example a
dump of ``telemetry.raw``) and the ground-truth labels a simulator run wrote (the JSON-lines
format of ``docs/contracts.md``). The replay runs every detector of the configuration the
way the stream job does, in event-time order: repeated readings (same device and ``seq``) and
readings older than the device's latest are left out, as the jobs leave them out; point
detectors per device and metric, ``clock_skew`` per device over ``skew_ms`` relative to the
fleet's clock reference (:func:`stream_jobs.device.fleet_skew`), ``peer`` against the latest
values of the other devices of the district, and ``silent`` as a timer (a device is silent from
``factor * interval`` after its last reading until its next one).

Each alarm (raised ... cleared) is then matched to the labels: a label with an expected rule
is detected when an alarm of that rule on one of its devices (any device of the district and
type for a district-wide event) is raised between its start and its end plus a grace time;
an alarm that overlaps no label on its device or district is a false alarm.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import msgspec

from citystream import codec
from citystream.errors import ConfigError
from citystream.model import Reading
from citystream.sensors import SENSOR_TYPES
from stream_jobs.detectors.base import Decision, Detector, Point
from stream_jobs.detectors.config import DEFAULT, DetectorConfig
from stream_jobs.detectors.peer import Peer
from stream_jobs.detectors.registry import build
from stream_jobs.detectors.silent import Silent
from stream_jobs.device import fleet_skew

logger = logging.getLogger(__name__)

DEVICE_METRIC = "*"
"""The metric of device-level alarms (``silent``, ``clock_skew``)."""


class LabelRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One ground-truth label (``docs/contracts.md``)."""

    kind: str
    devices: list[str]
    district: str
    sensor_type: str
    metric: str
    start_ms: int
    end_ms: int
    expected_rule: str | None
    incident: str = ""


class Alarm(NamedTuple):
    rule: str
    device_id: str
    district: str
    sensor_type: str
    metric: str
    raised_ms: int
    cleared_ms: int | None
    score: float
    reason: str


class KindResult(NamedTuple):
    kind: str
    expected_rule: str | None
    labels: int
    detected: int
    median_latency_s: float | None
    """From the label's start to the first matching alarm."""


class ScenarioReport(NamedTuple):
    readings: int
    alarms: list[Alarm]
    kinds: list[KindResult]
    false_alarms: dict[str, int]
    """Per rule: alarms that overlap no label."""
    skipped: int
    """Readings or values that could not be used (non-finite value, unknown sensor type)."""


class _Open(NamedTuple):
    raised_ms: int
    score: float
    reason: str


class _Replay:
    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.states: dict[tuple[str, str, str], Any] = {}
        self.open: dict[tuple[str, str, str], _Open] = {}
        self.where: dict[str, tuple[str, str]] = {}
        self.alarms: list[Alarm] = []
        self.last_seen: dict[str, int] = {}
        self.latest: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        self.skipped = 0
        self.seen: set[tuple[str, int]] = set()
        self.skew_reference: float | None = None

    def _track(self, key: tuple[str, str, str], ts: int, decision: Decision) -> None:
        rule, device, metric = key
        district, sensor_type = self.where[device]
        current = self.open.get(key)
        if decision.anomalous and current is None:
            self.open[key] = _Open(ts, decision.score, decision.explain())
        elif not decision.anomalous and current is not None:
            del self.open[key]
            self.alarms.append(
                Alarm(
                    rule,
                    device,
                    district,
                    sensor_type,
                    metric,
                    current.raised_ms,
                    ts,
                    current.score,
                    current.reason,
                )
            )

    def _point(self, detector: Detector[Any], key: tuple[str, str, str], point: Point) -> None:
        state = self.states.get(key)
        decision, self.states[key] = detector.update(point, detector.initial() if state is None else state)
        self._track(key, point.ts_ms, decision)

    def reading(self, r: Reading) -> None:
        if r.sensor_type not in SENSOR_TYPES:
            self.skipped += 1
            return
        if (r.device_id, r.seq) in self.seen:
            return  # a repeat: dropped before the detectors
        self.seen.add((r.device_id, r.seq))
        self.where[r.device_id] = (r.district, r.sensor_type)
        self.skew_reference = fleet_skew(self.skew_reference, r.skew_ms)
        in_order = r.ts > self.last_seen.get(r.device_id, r.ts - 1)
        for spec in self.config.for_device(r.sensor_type):
            detector = build(spec)
            key = (spec.name, r.device_id, DEVICE_METRIC)
            if isinstance(detector, Silent):
                self._silence(detector, key, r)
            elif spec.name == "clock_skew" and in_order:
                skew = Point(r.ts, float(round(r.skew_ms - self.skew_reference)))
                self._point(cast(Detector[Any], detector), key, skew)
        if not in_order:
            return  # counted in the aggregates only: detectors see each device in time order
        for metric, value in r.values.items():
            if not math.isfinite(value):
                self.skipped += 1
                continue
            point = Point(r.ts, value)
            peers = self.latest[(r.district, r.sensor_type, metric)]
            for spec in self.config.for_metric(r.sensor_type, metric):
                detector = build(spec)
                key = (spec.name, r.device_id, metric)
                if isinstance(detector, Peer):
                    others = [v for d, v in peers.items() if d != r.device_id]
                    state = self.states.get(key, detector.initial())
                    decision, self.states[key] = detector.check(point, others, state)
                    self._track(key, r.ts, decision)
                else:
                    self._point(cast(Detector[Any], detector), key, point)
            peers[r.device_id] = value
        self.last_seen[r.device_id] = max(r.ts, self.last_seen.get(r.device_id, r.ts))

    def _silence(self, detector: Silent, key: tuple[str, str, str], r: Reading) -> None:
        last = self.last_seen.get(r.device_id)
        limit_ms = int(detector.factor * SENSOR_TYPES[r.sensor_type].interval_s * 1000)
        if last is not None and r.ts - last > limit_ms:
            district, sensor_type = self.where[r.device_id]
            self.alarms.append(
                Alarm(
                    "silent",
                    r.device_id,
                    district,
                    sensor_type,
                    DEVICE_METRIC,
                    last + limit_ms,
                    r.ts,
                    1.0,
                    f"no data for {(r.ts - last) / 1000:.0f} s",
                )
            )

    def finish(self, end_ms: int) -> list[Alarm]:
        for device, last in self.last_seen.items():
            district, sensor_type = self.where[device]
            for spec in self.config.for_device(sensor_type):
                detector = build(spec)
                if isinstance(detector, Silent):
                    limit_ms = int(detector.factor * SENSOR_TYPES[sensor_type].interval_s * 1000)
                    if end_ms - last > limit_ms:
                        self.alarms.append(
                            Alarm(
                                "silent",
                                device,
                                district,
                                sensor_type,
                                DEVICE_METRIC,
                                last + limit_ms,
                                None,
                                1.0,
                                "silent at the end of the recording",
                            )
                        )
        for (rule, device, metric), o in self.open.items():
            district, sensor_type = self.where[device]
            self.alarms.append(
                Alarm(rule, device, district, sensor_type, metric, o.raised_ms, None, o.score, o.reason)
            )
        return sorted(self.alarms, key=lambda a: (a.raised_ms, a.rule, a.device_id))


def replay(readings: Iterable[Reading], config: DetectorConfig = DEFAULT) -> tuple[list[Alarm], int, int]:
    """Every alarm the configured detectors raise over ``readings`` (in event-time order).

    Returns the alarms, the number of readings and the number of skipped values.
    """
    ordered = sorted(readings, key=lambda r: (r.ts, r.device_id, r.seq))
    run = _Replay(config)
    for r in ordered:
        run.reading(r)
    end = ordered[-1].ts if ordered else 0
    return run.finish(end), len(ordered), run.skipped


def _concerns(label: LabelRecord, alarm: Alarm) -> bool:
    if alarm.sensor_type != label.sensor_type:
        return False
    if label.devices:
        return alarm.device_id in label.devices
    return alarm.district == label.district


def _explains(label: LabelRecord, alarm: Alarm) -> bool:
    """Whether ``label``'s incident accounts for ``alarm``: an alarm about one of its devices (or
    its district), or a district-wide alarm (no device) on the incident's metric in its district
    when the incident changes values (it expects an alert): the district's aggregates carry the
    incident's readings."""
    if _concerns(label, alarm):
        return True
    return (
        not alarm.device_id
        and label.expected_rule is not None
        and alarm.sensor_type == label.sensor_type
        and alarm.district == label.district
        and alarm.metric == label.metric
    )


def match(
    alarms: Sequence[Alarm], labels: Sequence[LabelRecord], grace_ms: int = 300_000
) -> tuple[list[KindResult], dict[str, int]]:
    """Detections per label kind, and false alarms per rule."""
    by_kind: dict[tuple[str, str | None], list[float | None]] = defaultdict(list)
    for label in labels:
        latency: float | None = None
        if label.expected_rule is not None:
            hits = [
                a.raised_ms
                for a in alarms
                if a.rule == label.expected_rule
                and _concerns(label, a)
                and (a.metric in (label.metric, DEVICE_METRIC))
                and label.start_ms <= a.raised_ms <= label.end_ms + grace_ms
            ]
            latency = (min(hits) - label.start_ms) / 1000.0 if hits else None
        by_kind[(label.kind, label.expected_rule)].append(latency)
    kinds = []
    for (kind, rule), latencies in sorted(by_kind.items(), key=lambda kv: kv[0][0]):
        found = [x for x in latencies if x is not None]
        kinds.append(
            KindResult(kind, rule, len(latencies), len(found), statistics.median(found) if found else None)
        )
    false_alarms: dict[str, int] = defaultdict(int)
    for a in alarms:
        explained = any(
            _explains(label, a)
            and a.raised_ms <= label.end_ms + grace_ms
            and (a.cleared_ms is None or a.cleared_ms >= label.start_ms)
            for label in labels
        )
        if not explained:
            false_alarms[a.rule] += 1
    return kinds, dict(false_alarms)


def evaluate(
    readings: Iterable[Reading],
    labels: Sequence[LabelRecord],
    config: DetectorConfig = DEFAULT,
    grace_ms: int = 300_000,
) -> ScenarioReport:
    alarms, count, skipped = replay(readings, config)
    kinds, false_alarms = match(alarms, labels, grace_ms)
    return ScenarioReport(count, alarms, kinds, false_alarms, skipped)


def read_readings(path: Path) -> tuple[list[Reading], int]:
    """Readings from JSON lines; returns them and the number of lines that were not readings."""
    readings, bad = [], 0
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    for line in lines:
        if not line.strip():
            continue
        try:
            readings.append(codec.decode(line, Reading))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            bad += 1
    if bad:
        logger.warning("%s: %d lines are not readings; skipped", path, bad)
    return readings, bad


def read_labels(path: Path) -> list[LabelRecord]:
    try:
        return [codec.decode(line, LabelRecord) for line in path.read_bytes().splitlines() if line.strip()]
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"cannot read labels from {path}: {exc}") from exc


def format_report(report: ScenarioReport) -> str:
    lines = [
        f"{report.readings} readings, {len(report.alarms)} alarms, {report.skipped} values skipped",
        f"{'kind':<18} {'expected rule':<15} {'labels':>6} {'detected':>8} {'median latency':>15}",
    ]
    for k in report.kinds:
        latency = f"{k.median_latency_s:.0f} s" if k.median_latency_s is not None else "-"
        lines.append(f"{k.kind:<18} {k.expected_rule or '-':<15} {k.labels:>6} {k.detected:>8} {latency:>15}")
    lines.append(
        "false alarms: " + (", ".join(f"{r} {n}" for r, n in sorted(report.false_alarms.items())) or "none")
    )
    return "\n".join(lines)


def config_from(path: Path | None) -> DetectorConfig:
    return DetectorConfig.load(path) if path is not None else DEFAULT
