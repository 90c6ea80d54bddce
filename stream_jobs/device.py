"""Everything the jobs do per device, as pure steps over one state value per device.

For each reading of a device, in partition order: drop repeats (:mod:`stream_jobs.dedup`),
hand its values to the aggregation (``SeriesItem``), keep the latest value, add it to the
device's quality minute (:mod:`stream_jobs.quality`), run the device detectors of each metric
and the clock-skew check, and turn their decisions into :class:`~stream_jobs.messages.Signal`
values for the alert lifecycle.

Detectors see readings in ``seq`` order only: a reading that arrives after a later one (out of
order) is counted in the aggregates and the quality but not fed to the detectors, so a
reordered delivery never looks like a jump.

Signals are sent when a condition starts or stops, while it holds every ``heartbeat_ms`` of
event time, and after it stopped every ``heartbeat_ms`` for ``tail_ms`` (so the lifecycle can
clear the alert after its hold), and not otherwise: a healthy fleet sends none.

The state is persisted as a :class:`DeviceRecord` (detector states in their ``dump`` form);
:class:`DeviceWork` is its working copy, loaded once per device and process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from citystream.model import Offset, QualityScore, Reading
from stream_jobs import quality
from stream_jobs.catalog import Catalog, Slot, rule_of
from stream_jobs.dedup import DedupState, Verdict, accept
from stream_jobs.detectors.base import Decision, Detector, Point
from stream_jobs.detectors.common import StateStruct
from stream_jobs.messages import DEVICE_METRIC, SeriesItem, Signal, alert_key, series_key

MAX_SIGNAL_OFFSETS = 4
MAX_EMPTY_MINUTES = 60
"""A silent device gets quality scores of 0 for at most this many minutes."""

BUILTIN_VERSION = "1"


class Mark(msgspec.Struct, array_like=True):
    """What was last signalled for one alert key."""

    anomalous: bool
    sent_ts: int
    last_anomalous: int
    offsets: tuple[Offset, ...] = ()
    """Offsets of anomalous readings not signalled yet."""


class DeviceRecord(msgspec.Struct, kw_only=True):
    """The persisted state of one device (a table value)."""

    device_id: str
    district: str
    sensor_type: str
    partition: int
    dedup: DedupState = DedupState()
    last_offset: int = -1
    detect_ts: int = -1
    latest_ts: int = -1
    latest: dict[str, float] = {}
    detectors: dict[str, Any] = {}
    marks: dict[str, Mark] = {}
    quality: quality.MinuteAcc | None = None
    empty_minutes: int = 0


class Context(NamedTuple):
    catalog: Catalog
    heartbeat_ms: int
    tail_ms: int
    timeliness_bound_ms: int
    dedup_window: int
    expected_per_minute: Callable[[str, str], float]
    """(device_id, sensor_type) -> readings expected per minute."""


class Outputs:
    """What one step produced (appended to by every step of a batch)."""

    __slots__ = ("duplicates", "items", "quality", "replayed", "signals")

    def __init__(self) -> None:
        self.items: list[SeriesItem] = []
        self.signals: list[Signal] = []
        self.quality: list[QualityScore] = []
        self.duplicates = 0
        self.replayed = 0


class DeviceWork:
    """Working copy of a :class:`DeviceRecord` with live detector states."""

    __slots__ = ("detectors", "record")

    def __init__(self, record: DeviceRecord, detectors: dict[str, Any]) -> None:
        self.record = record
        self.detectors = detectors

    @classmethod
    def new(cls, reading: Reading, partition: int) -> DeviceWork:
        record = DeviceRecord(
            device_id=reading.device_id,
            district=reading.district,
            sensor_type=reading.sensor_type,
            partition=partition,
        )
        return cls(record, {})

    @classmethod
    def load(cls, record: DeviceRecord, catalog: Catalog) -> DeviceWork:
        live: dict[str, Any] = {}
        for key, data in record.detectors.items():
            detector = _detector(catalog, record.sensor_type, key)
            if detector is not None:
                live[key] = detector.load(data)
        return cls(record, live)

    def dump(self, catalog: Catalog) -> DeviceRecord:
        dumped: dict[str, Any] = {}
        for key, state in self.detectors.items():
            if isinstance(state, StateStruct):
                # Encodes as its ``dump`` would (and loads back the same): no copy needed.
                dumped[key] = state
                continue
            detector = _detector(catalog, self.record.sensor_type, key)
            if detector is not None:
                dumped[key] = detector.dump(state)
        self.record.detectors = dumped
        return self.record


def _detector(catalog: Catalog, sensor_type: str, key: str) -> Detector[Any] | None:
    """The detector whose state is kept under ``{metric}/{name}``."""
    metric, _, name = key.partition("/")
    if metric == DEVICE_METRIC:
        candidates: tuple[Detector[Any], ...] = catalog.device_point(sensor_type) + catalog.timer(sensor_type)
    else:
        candidates = catalog.point(sensor_type, metric)
    for detector in candidates:
        if detector.name == name:
            return detector
    return None


def _signal(  # noqa: PLR0917  # one field per argument, built in one place
    rec: DeviceRecord,
    rule: str,
    metric: str,
    detector: str,
    version: str,
    ts: int,
    anomalous: bool,
    score: float,
    value: float,
    threshold: float | None,
    reason: str,
    offsets: tuple[Offset, ...],
) -> Signal:
    return Signal(
        key=alert_key(rule, metric, rec.device_id),
        rule=rule,
        metric=metric,
        subject=rec.device_id,
        district=rec.district,
        sensor_type=rec.sensor_type,
        device_id=rec.device_id,
        detector=detector,
        detector_version=version,
        ts_ms=ts,
        anomalous=anomalous,
        score=score,
        value=value,
        threshold=threshold,
        reason=reason,
        offsets=offsets,
    )


def throttle(  # noqa: PLR0911  # one return per case of the table in the module docstring
    marks: dict[str, Mark],
    key: str,
    anomalous: bool,
    ts: int,
    offset: Offset | None,
    *,
    heartbeat_ms: int,
    tail_ms: int,
) -> tuple[bool, tuple[Offset, ...]]:
    """Whether to send a signal for ``key`` now (and the offsets it carries); updates ``marks``."""
    mark = marks.get(key)
    if mark is None:
        if not anomalous:
            return False, ()
        marks[key] = Mark(True, ts, ts)
        return True, (offset,) if offset else ()
    if anomalous:
        mark.last_anomalous = ts
        pending = (*mark.offsets, offset)[-MAX_SIGNAL_OFFSETS:] if offset else mark.offsets
        if not mark.anomalous or ts - mark.sent_ts >= heartbeat_ms:
            mark.anomalous, mark.sent_ts, mark.offsets = True, ts, ()
            return True, pending
        mark.offsets = pending
        return False, ()
    if mark.anomalous:
        mark.anomalous, mark.sent_ts, mark.offsets = False, ts, ()
        return True, ()
    if ts - mark.last_anomalous > tail_ms:
        del marks[key]
        return False, ()
    if ts - mark.sent_ts >= heartbeat_ms:
        mark.sent_ts = ts
        return True, ()
    return False, ()


SKEW_ALPHA = 0.05
SKEW_CLAMP_MS = 60_000.0


def fleet_skew(reference: float | None, skew_ms: float) -> float:
    """The next fleet clock reference: a robust moving average of the readings' ``skew_ms``.

    Each reading moves it by ``SKEW_ALPHA`` of its difference, clamped to ``SKEW_CLAMP_MS``,
    so one device with a wrong clock barely moves it, while a shift of the whole fleet
    (a bridge clock error, or a simulator running faster than real time) is followed.
    """
    if reference is None:
        return skew_ms
    diff = max(-SKEW_CLAMP_MS, min(SKEW_CLAMP_MS, skew_ms - reference))
    return reference + SKEW_ALPHA * diff


def on_reading(
    work: DeviceWork,
    reading: Reading,
    offset: int,
    ctx: Context,
    out: Outputs,
    *,
    skew_reference: float = 0.0,
) -> None:
    """Apply one reading (at ``offset`` of the device's partition) to its device.

    The device-level point detectors (``clock_skew``) see the reading's ``skew_ms`` relative to
    ``skew_reference``, the fleet's (see :func:`fleet_skew`): a device clock is off when it
    disagrees with the other devices' clocks.
    """
    rec = work.record
    if offset <= rec.last_offset:
        out.replayed += 1
        return
    rec.last_offset = offset
    verdict, rec.dedup = accept(rec.dedup, reading.seq, ctx.dedup_window)
    if not verdict.accepted:
        out.duplicates += 1
        return
    ts = reading.ts
    for metric, value in reading.values.items():
        out.items.append(
            SeriesItem(
                series_key(reading.district, reading.sensor_type, metric),
                reading.device_id,
                reading.seq,
                ts,
                value,
                offset,
            )
        )
    if ts >= rec.latest_ts:
        rec.latest_ts = ts
        rec.latest = dict(reading.values)
    _quality(rec, reading, ctx, out)
    where = Offset(rec.partition, offset)
    in_order = verdict is Verdict.NEW and ts > rec.detect_ts
    if in_order:
        rec.detect_ts = ts
    skew = Point(ts, round(reading.skew_ms - skew_reference))
    catalog = ctx.catalog
    _run(work, catalog.timer_slots(rec.sensor_type, DEVICE_METRIC), DEVICE_METRIC, skew, where, ctx, out)
    if not in_order:
        return
    _run(work, catalog.device_slots(rec.sensor_type, DEVICE_METRIC), DEVICE_METRIC, skew, where, ctx, out)
    for metric, value in reading.values.items():
        _run(work, catalog.point_slots(rec.sensor_type, metric), metric, Point(ts, value), where, ctx, out)


def _run(  # noqa: PLR0917  # the step's whole context, internal
    work: DeviceWork,
    slots: tuple[Slot, ...],
    metric: str,
    point: Point,
    where: Offset,
    ctx: Context,
    out: Outputs,
) -> None:
    """Run one series' detectors on ``point``; signal what :func:`throttle` lets through."""
    states = work.detectors
    marks = work.record.marks
    for detector, state_key, rule in slots:
        state = states.get(state_key)
        decision, states[state_key] = detector.update(point, detector.initial() if state is None else state)
        # Without a mark and with nothing anomalous there is nothing to say (the common case).
        if decision.anomalous or marks:
            _signal_step(work, detector, rule, metric, point, where, decision, ctx, out)


def _signal_step(  # noqa: PLR0917  # the step's whole context, internal
    work: DeviceWork,
    detector: Detector[Any],
    rule: str,
    metric: str,
    point: Point,
    where: Offset,
    decision: Decision,
    ctx: Context,
    out: Outputs,
) -> None:
    rec = work.record
    key = alert_key(rule, metric, rec.device_id)
    send, offsets = throttle(
        rec.marks,
        key,
        decision.anomalous,
        point.ts_ms,
        where,
        heartbeat_ms=ctx.heartbeat_ms,
        tail_ms=ctx.tail_ms,
    )
    if send:
        out.signals.append(
            _signal(
                rec,
                rule,
                metric,
                detector.name,
                detector.version,
                point.ts_ms,
                decision.anomalous,
                decision.score,
                point.value,
                decision.threshold,
                decision.explain(),
                offsets,
            )
        )


def _quality(rec: DeviceRecord, reading: Reading, ctx: Context, out: Outputs) -> None:
    minute = quality.minute_of(reading.ts)
    acc = rec.quality
    if acc is None:
        acc = quality.MinuteAcc(start=minute)
    elif minute > acc.start:
        acc = _finish_minutes(rec, acc, minute, ctx, out)
    elif minute < acc.start:
        return  # a reading for a minute already scored: it counts in the aggregates only
    rec.quality = quality.add(acc, reading, ctx.timeliness_bound_ms)
    rec.empty_minutes = 0


def _finish_minutes(
    rec: DeviceRecord, acc: quality.MinuteAcc, until: int, ctx: Context, out: Outputs
) -> quality.MinuteAcc:
    """Score ``acc`` and every empty minute after it before ``until``; the accumulator for ``until``."""
    expected = ctx.expected_per_minute(rec.device_id, rec.sensor_type)
    while acc.start < until:
        if acc.count or (expected >= 1.0 and rec.empty_minutes < MAX_EMPTY_MINUTES):
            out.quality.append(quality.score(acc, rec.device_id, rec.district, rec.sensor_type, expected))
        if not acc.count:
            rec.empty_minutes += 1
        acc = quality.next_minute(acc, acc.start + quality.MINUTE_MS)
        if rec.empty_minutes >= MAX_EMPTY_MINUTES:
            return quality.next_minute(acc, until)
    return acc


def on_watermark(
    work: DeviceWork, event_now: int, *, grace_ms: int, interval_s: float, ctx: Context, out: Outputs
) -> bool:
    """Time passed on the device's partition (event time ``event_now``): close the quality
    minutes that ended more than ``grace_ms`` ago and run the timer detectors (``silent``).

    Returns whether the state changed.
    """
    rec = work.record
    changed = False
    acc = rec.quality
    if acc is not None and acc.start + quality.MINUTE_MS + grace_ms <= event_now:
        rec.quality = _finish_minutes(rec, acc, quality.minute_of(event_now - grace_ms), ctx, out)
        changed = True
    if rec.latest_ts < 0:
        return changed
    for detector in ctx.catalog.timer(rec.sensor_type):
        state_key = f"{DEVICE_METRIC}/{detector.name}"
        state = work.detectors.get(state_key)
        if state is None:
            state = detector.initial()
        decision, new_state = detector.check(event_now, rec.latest_ts, interval_s, state)
        if new_state != state:
            work.detectors[state_key] = new_state
            changed = True
        rule = rule_of(detector)
        key = alert_key(rule, DEVICE_METRIC, rec.device_id)
        marks_before = len(rec.marks)
        send, _ = throttle(
            rec.marks,
            key,
            decision.anomalous,
            event_now,
            None,
            heartbeat_ms=ctx.heartbeat_ms,
            tail_ms=ctx.tail_ms,
        )
        changed = changed or send or len(rec.marks) != marks_before
        if send:
            out.signals.append(
                _signal(
                    rec,
                    rule,
                    DEVICE_METRIC,
                    detector.name,
                    detector.version,
                    event_now,
                    decision.anomalous,
                    decision.score,
                    (event_now - rec.latest_ts) / 1000,
                    decision.threshold,
                    decision.explain(),
                    (),
                )
            )
    return changed
