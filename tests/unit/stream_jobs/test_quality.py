from __future__ import annotations

import pytest

from citystream.model import Reading
from stream_jobs.quality import MinuteAcc, add, next_minute, score

T0 = 1_764_000_000_000


def reading(i: int, pm25: float, latency_ms: int = 500, flags: tuple[str, ...] = ()) -> Reading:
    return Reading(
        device_id="aq-gangnam-001",
        district="gangnam",
        sensor_type="air_quality",
        ts=T0 + i * 10_000,
        seq=i,
        values={"pm25": pm25},
        received_ms=T0 + i * 10_000 + latency_ms,
        flags=flags,
    )


def minute(readings: list[Reading]) -> MinuteAcc:
    acc = MinuteAcc(start=T0)
    for r in readings:
        acc = add(acc, r, timeliness_bound_ms=10_000)
    return acc


def test_a_healthy_minute_scores_near_one() -> None:
    q = score(
        minute([reading(i, 20.0 + (i % 3) * 0.1) for i in range(6)]), "d", "gangnam", "air_quality", 6.0
    )
    assert (q.completeness, q.timeliness, q.plausibility, q.flatline) == (1.0, 1.0, 1.0, 1.0)
    assert q.noise > 0.9
    assert q.score > 0.95


def test_each_part_sees_its_own_fault() -> None:
    half = score(minute([reading(i, 20.0 + i) for i in range(3)]), "d", "gangnam", "air_quality", 6.0)
    assert half.completeness == 0.5
    late = score(
        minute([reading(i, 20.0 + i, latency_ms=30_000) for i in range(6)]), "d", "g", "air_quality", 6.0
    )
    assert late.timeliness == 0.0
    flagged = minute([reading(0, 20.0, flags=("clock_skew",)), reading(1, 21.0)])
    assert score(flagged, "d", "g", "air_quality", 2.0).plausibility == 0.5
    stuck = score(minute([reading(i, 20.0) for i in range(6)]), "d", "g", "air_quality", 6.0)
    assert stuck.flatline == 0.0
    noisy = score(
        minute([reading(i, 20.0 + (15 if i % 2 else -15)) for i in range(6)]), "d", "g", "air_quality", 6.0
    )
    assert noisy.noise < 0.2
    assert all(q.score < 0.95 for q in (half, late, stuck, noisy))


def test_flatline_looks_back_into_the_previous_minute() -> None:
    first = minute([reading(0, 20.0)])
    second = add(next_minute(first, T0 + 60_000), reading(6, 20.0), timeliness_bound_ms=10_000)
    assert score(second, "d", "g", "air_quality", 1.0).flatline == 0.0


def test_an_empty_minute_scores_zero() -> None:
    q = score(MinuteAcc(start=T0), "d", "g", "air_quality", 1.0)
    assert q.score == 0.0
    assert q.completeness == 0.0


@pytest.mark.parametrize("value", [-1.0, 5000.0])
def test_values_outside_the_physical_range_are_implausible(value: float) -> None:
    assert score(minute([reading(0, value)]), "d", "g", "air_quality", 1.0).plausibility == 0.0
