"""The per-device step with tiny stand-in detectors (the real ones are tested on their own)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from citystream import codec
from citystream.model import Reading
from stream_jobs.catalog import Catalog
from stream_jobs.detectors.base import Decision, Detector, Point, TimerDetector
from stream_jobs.device import Context, DeviceRecord, DeviceWork, Outputs, on_reading, on_watermark

T0 = 1_764_000_000_000


class Above:
    """Anomalous while the value is above ``limit``; its state counts the points it saw."""

    name = "threshold"
    version = "t1"

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def initial(self) -> int:
        return 0

    def update(self, point: Point, state: int) -> tuple[Decision, int]:
        bad = point.value > self.limit
        return Decision(1.0 if bad else 0.0, bad, self.limit, "above" if bad else ""), state + 1

    def dump(self, state: int) -> Any:
        return state

    def load(self, data: Any) -> int:
        return int(data)


class Quiet(Above):
    """Silent after three intervals without data."""

    name = "silent"

    def check(
        self, now_ms: int, last_seen_ms: int | None, interval_s: float, state: int
    ) -> tuple[Decision, int]:
        gap = now_ms - (last_seen_ms or now_ms)
        return Decision(0.9, gap > 3 * interval_s * 1000, None, "quiet"), state


class Stand(Catalog):
    def _point(self, sensor_type: str, metric: str) -> tuple[Detector[Any], ...]:
        return (Above(50.0),) if metric == "pm25" else ()

    def _device_point(self, sensor_type: str) -> tuple[Detector[Any], ...]:
        return ()

    def _timer(self, sensor_type: str) -> tuple[TimerDetector[Any], ...]:
        return (Quiet(1e9),)


CTX = Context(
    catalog=Stand(),
    heartbeat_ms=30_000,
    tail_ms=60_000,
    timeliness_bound_ms=10_000,
    dedup_window=64,
    expected_per_minute=lambda _device, _type: 6.0,
)


def reading(seq: int, pm25: float = 20.0, t_s: float | None = None) -> Reading:
    ts = T0 + int((seq * 10 if t_s is None else t_s) * 1000)
    return Reading(
        device_id="aq-gangnam-001",
        district="gangnam",
        sensor_type="air_quality",
        ts=ts,
        seq=seq,
        values={"pm25": pm25, "pm10": 30.0},
        received_ms=ts + 300,
    )


def feed(work: DeviceWork, readings: list[Reading], first_offset: int = 0) -> Outputs:
    out = Outputs()
    for i, r in enumerate(readings):
        on_reading(work, r, first_offset + i, CTX, out)
    return out


def fresh() -> DeviceWork:
    return DeviceWork.new(reading(0), partition=3)


def test_duplicates_are_dropped_and_reordered_readings_skip_the_detectors() -> None:
    work = fresh()
    out = feed(work, [reading(0), reading(2), reading(1), reading(2), reading(3)])
    assert out.duplicates == 1
    assert sorted((i.series, i.seq) for i in out.items if i.series.endswith("pm25")) == [
        ("gangnam/air_quality/pm25", s) for s in (0, 1, 2, 3)
    ]
    assert work.detectors["pm25/threshold"] == 3  # seq 1 came after 2: not fed


def test_a_replayed_offset_changes_nothing() -> None:
    work = fresh()
    feed(work, [reading(0), reading(1)])
    before = codec.encode(work.dump(CTX.catalog))
    out = feed(work, [reading(0), reading(1)])
    assert out.replayed == 2
    assert out.items == []
    assert codec.encode(work.dump(CTX.catalog)) == before


def test_signals_on_change_heartbeat_and_tail_only() -> None:
    work = fresh()
    values = [20.0] * 3 + [80.0] * 6 + [20.0] * 12
    out = feed(work, [reading(i, v) for i, v in enumerate(values)])
    sent = [((s.ts_ms - T0) // 1000, s.anomalous) for s in out.signals if s.rule == "threshold"]
    # Raised at 30 s, heartbeat at 60 s, gone at 90 s, a heartbeat while within the 60 s tail
    # after the last anomalous point (80 s), then quiet.
    assert sent == [(30, True), (60, True), (90, False), (120, False)]
    first = next(s for s in out.signals if s.anomalous)
    assert first.key == "threshold:pm25:aq-gangnam-001"
    assert (first.detector, first.detector_version, first.value, first.threshold) == (
        "threshold",
        "t1",
        80.0,
        50.0,
    )
    assert [(o.partition, o.offset) for o in first.offsets] == [(3, 3)]


def test_quality_minutes_close_when_the_next_starts_or_time_runs_on() -> None:
    work = fresh()
    out = feed(work, [reading(i) for i in range(7)])  # 0..60 s: the first minute is done
    assert [(q.window_start, q.completeness) for q in out.quality] == [(T0, 1.0)]
    out = Outputs()
    changed = on_watermark(work, T0 + 200_000, grace_ms=10_000, interval_s=10.0, ctx=CTX, out=out)
    assert changed
    assert [(q.window_start - T0) // 60_000 for q in out.quality] == [1, 2]
    assert out.quality[0].completeness == pytest.approx(1 / 6, abs=1e-6)
    assert out.quality[1].score == 0.0
    assert [(s.rule, s.key, s.anomalous) for s in out.signals] == [
        ("silent", "silent:*:aq-gangnam-001", True)
    ]
    back = feed(work, [reading(30)], first_offset=100)
    assert [(s.rule, s.anomalous) for s in back.signals] == [("silent", False)]


def test_the_record_round_trips_through_the_table_codec() -> None:
    work = fresh()
    feed(work, [reading(i, 80.0 if i > 3 else 20.0) for i in range(8)])
    raw = msgspec.json.decode(codec.encode(work.dump(CTX.catalog)))
    loaded = DeviceWork.load(msgspec.convert(raw, DeviceRecord, strict=False), CTX.catalog)
    assert loaded.detectors == work.detectors
    assert codec.encode(loaded.record) == codec.encode(work.record)


def test_the_fleet_clock_reference_follows_the_fleet_not_one_device() -> None:
    from stream_jobs.device import fleet_skew

    ref = None
    for i in range(400):  # the whole fleet drifts 0.5 s per reading; one device in ten is 15 min off
        skew = i * 500.0 + (900_000.0 if i % 10 == 0 else 0.0)
        ref = fleet_skew(ref, skew)
    assert ref is not None
    assert abs(ref - 399 * 500.0) < 60_000
