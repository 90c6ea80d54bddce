"""Per-device token buckets: burst, refill, independence, reports, eviction (no I/O, clock passed in)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.ratelimit import SWEEP_INTERVAL_MS, DeviceRateLimiter, Report

EPOCH_MS = 1_760_000_000_000
"""A wall-clock time in milliseconds, as the bridge passes it."""


def accepted(limiter: DeviceRateLimiter, device_id: str, times_ms: list[int]) -> int:
    return sum(limiter.take(device_id, t) for t in times_ms)


def evenly(per_s: float, seconds: float, start_ms: int = EPOCH_MS) -> list[int]:
    """Arrival times (ms) of a device sending ``per_s`` messages a second for ``seconds``."""
    return [start_ms + int(i * 1000 / per_s) for i in range(round(per_s * seconds))]


def test_a_new_device_gets_its_burst_at_once_then_the_rate() -> None:
    limiter = DeviceRateLimiter(10, 5)
    t = EPOCH_MS
    assert [limiter.take("a", t) for _ in range(6)] == [True] * 5 + [False]
    assert not limiter.take("a", t + 99)  # not yet a whole token
    assert limiter.take("a", t + 100)
    assert not limiter.take("a", t + 100)
    assert accepted(limiter, "a", [t + 400] * 20) == 3  # 300 ms refill 3 tokens


def test_the_bucket_never_holds_more_than_the_burst() -> None:
    limiter = DeviceRateLimiter(10, 5)
    assert accepted(limiter, "a", [EPOCH_MS] * 5) == 5
    assert accepted(limiter, "a", [EPOCH_MS + 3_600_000] * 50) == 5


def test_a_device_at_its_rate_is_never_throttled() -> None:
    limiter = DeviceRateLimiter(20, 1)  # no burst to spare: every 50 ms exactly
    times = [EPOCH_MS + 50 * i for i in range(20 * 300)]
    assert accepted(limiter, "a", times) == len(times)


@pytest.mark.parametrize(("rate", "burst"), [(20, 100), (20, 1), (1, 10), (0.5, 3), (3, 7), (1000, 50)])
def test_a_flooding_device_gets_its_burst_plus_its_rate(rate: float, burst: int) -> None:
    limiter = DeviceRateLimiter(rate, burst)
    times = evenly(rate * 10, 7.0)
    got = accepted(limiter, "flood", times)
    expected = burst + rate * (times[-1] - times[0]) / 1000
    assert expected - 1 < got <= expected
    assert got < len(times)


def test_a_flooding_device_does_not_take_from_the_others() -> None:
    limiter = DeviceRateLimiter(20, 100)
    flood = evenly(2000, 10)
    normal = evenly(15, 10)
    results = {"flood": 0, "normal": 0}
    for t, device in sorted([(t, "flood") for t in flood] + [(t, "normal") for t in normal]):
        results[device] += limiter.take(device, t)
    assert results["normal"] == len(normal)
    assert 100 + 20 * 10 - 1 <= results["flood"] <= 100 + 20 * 10


def test_zero_rate_turns_the_limit_off() -> None:
    limiter = DeviceRateLimiter(0, 1)
    assert not limiter.enabled
    assert accepted(limiter, "a", [EPOCH_MS] * 10_000) == 10_000
    assert len(limiter) == 0
    assert limiter.report("a", EPOCH_MS) is None


def test_a_burst_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        DeviceRateLimiter(10, 0)


def test_a_clock_that_steps_back_neither_refills_nor_drains() -> None:
    limiter = DeviceRateLimiter(10, 2)
    t = EPOCH_MS
    assert accepted(limiter, "a", [t, t]) == 2
    assert not limiter.take("a", t - 3_600_000)  # an hour back: the bucket is still empty
    assert not limiter.take("a", t - 3_600_000 + 99)
    assert limiter.take("a", t - 3_600_000 + 100)  # and refills from there at the rate
    assert not limiter.take("a", t - 3_600_000 + 100)


def test_reports_come_at_most_once_per_interval_and_count_what_was_refused() -> None:
    limiter = DeviceRateLimiter(1, 1, report_interval_s=60)
    t0 = EPOCH_MS
    assert limiter.take("a", t0)
    assert limiter.report("a", t0) is None  # nothing refused yet
    assert not limiter.take("a", t0)
    assert limiter.report("a", t0) == Report("a", 1, None)
    reports: list[tuple[int, Report]] = []
    for second in range(1, 125):
        for _ in range(3):  # three a second, one passes
            now = t0 + 1000 * second
            if not limiter.take("a", now):
                report = limiter.report("a", now)
                if report is not None:
                    reports.append((second, report))
    # seconds 1..59 refuse two each; the first refusal at 60 s brings the report
    assert reports == [(60, Report("a", 2 * 59 + 1, 60.0)), (120, Report("a", 1 + 2 * 59 + 1, 60.0))]
    assert limiter.report("a", t0 + 124_000) is None  # due again only at 180 s


def test_throttled_devices_counts_the_last_interval() -> None:
    limiter = DeviceRateLimiter(1, 1, report_interval_s=60)
    t = EPOCH_MS
    for device in ("a", "b", "c"):
        limiter.take(device, t)
    limiter.take("a", t)
    limiter.take("b", t + 30_000)
    limiter.take("b", t + 30_000)
    assert limiter.throttled_devices(t + 30_000) == 2
    assert limiter.throttled_devices(t + 61_000) == 1
    assert limiter.throttled_devices(t + 91_000) == 0


def test_idle_buckets_are_evicted_so_memory_stays_bounded() -> None:
    limiter = DeviceRateLimiter(20, 100, report_interval_s=60)
    assert limiter.idle_ms == 60_000  # a bucket refills in 5 s: the report interval is longer
    peak = 0
    for i in range(50_000):  # a new device every 10 ms for 500 s
        assert limiter.take(f"d{i}", EPOCH_MS + 10 * i)
        peak = max(peak, len(limiter))
    # only the devices seen in the last idle_ms (plus one sweep interval) are kept
    assert peak <= math.ceil((limiter.idle_ms + SWEEP_INTERVAL_MS) / 10) + 1
    assert limiter.evicted >= 50_000 - peak
    limiter.take("late", EPOCH_MS + 10_000_000)
    assert len(limiter) == 1


def test_the_idle_time_is_the_refill_time_when_that_is_longer() -> None:
    assert DeviceRateLimiter(0.5, 100, report_interval_s=60).idle_ms == 200_000


def test_a_device_that_keeps_sending_is_not_evicted() -> None:
    limiter = DeviceRateLimiter(1, 1, report_interval_s=10)
    assert limiter.take("steady", EPOCH_MS)
    assert not limiter.take("steady", EPOCH_MS)
    assert limiter.report("steady", EPOCH_MS) is not None
    for second in range(1, 100):
        now = EPOCH_MS + 1000 * second
        limiter.take(f"other{second}", now)
        assert limiter.take("steady", now)
    assert len(limiter) < 20
    assert not limiter.take("steady", EPOCH_MS + 99_000)
    report = limiter.report("steady", EPOCH_MS + 99_000)
    assert report is not None
    assert report.since_s == 99.0  # the bucket and its report state survived every sweep


arrivals = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(min_value=0, max_value=500)),
    min_size=1,
    max_size=300,
)
rates = st.sampled_from([0.3, 1, 3, 7.5, 20, 100, 1000])


@given(arrivals, rates, st.integers(min_value=1, max_value=20))
def test_no_window_lets_more_than_burst_plus_rate_through(
    steps: list[tuple[str, int]], rate: float, burst: int
) -> None:
    limiter = DeviceRateLimiter(rate, burst, report_interval_s=0.5)
    now = EPOCH_MS
    passed: dict[str, list[int]] = {}
    for device, gap_ms in steps:
        now += gap_ms
        if limiter.take(device, now):
            passed.setdefault(device, []).append(now)
    for times in passed.values():
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= burst + rate * (times[j] - start) / 1000 + 1e-9


@given(arrivals, rates, st.integers(min_value=1, max_value=20))
def test_eviction_changes_no_decision(steps: list[tuple[str, int]], rate: float, burst: int) -> None:
    evicting = DeviceRateLimiter(rate, burst, report_interval_s=0.0)
    keeping = DeviceRateLimiter(rate, burst, report_interval_s=1e9)
    now = EPOCH_MS
    for device, gap_ms in steps:
        now += gap_ms * 20
        assert evicting.take(device, now) == keeping.take(device, now)
    assert keeping.evicted == 0
