"""HDR summaries, Prometheus bucket quantiles and recovery after a burst."""

from __future__ import annotations

import math

import pytest
from hdrh.histogram import HdrHistogram

from bench.latency import (
    MAX_MS,
    Latency,
    Timeline,
    bucket_delta,
    bucket_quantile,
    bucket_summary,
    recovery_time,
)


def test_summary_of_known_values() -> None:
    lat = Latency()
    lat.record_many(range(1, 1001))  # 1..1000 ms
    s = lat.summary()
    assert s["count"] == 1000
    assert s["p50"] == pytest.approx(500, abs=1)
    assert s["p99"] == pytest.approx(990, abs=1)
    assert s["p999"] == pytest.approx(999, abs=1)
    assert s["max"] == 1000
    assert s["mean"] == pytest.approx(500.5, rel=1e-3)


def test_negative_and_overflow_are_clamped_and_counted() -> None:
    lat = Latency()
    lat.record_many([-5, -1, 10, MAX_MS + 1])
    s = lat.summary()
    assert s["negative"] == 2
    assert s["min"] == -5
    assert s["overflow"] == 1
    assert s["max"] == MAX_MS
    assert lat.percentile(25) == 0


def test_empty_summary_is_zeros() -> None:
    s = Latency().summary()
    assert s["count"] == 0
    assert s["p99"] == 0
    assert s["max"] == 0


def test_merge_and_encoding_round_trip() -> None:
    a, b = Latency(), Latency()
    a.record_many([1, 2, 3])
    b.record_many([100, 200])
    a.merge(b)
    assert a.count == 5
    assert a.max_ms == 200
    decoded = HdrHistogram.decode(a.encoded())
    assert decoded.get_total_count() == 5


def test_timeline_percentiles_per_second() -> None:
    t = Timeline()
    for ms in (10, 20, 30):
        t.record(101, ms)
    t.record(100, 5)
    assert t.percentile_series(100.0, origin=100) == [(0, 5.0), (1, 30.0)]


BUCKETS = [(0.005, 0.0), (0.01, 10.0), (0.025, 60.0), (0.05, 90.0), (0.1, 100.0), (math.inf, 100.0)]


def test_bucket_quantile_interpolates_inside_the_bucket() -> None:
    assert bucket_quantile(0.5, BUCKETS) == pytest.approx(0.01 + 0.015 * 40 / 50)
    assert bucket_quantile(0.9, BUCKETS) == pytest.approx(0.05)
    assert bucket_quantile(0.99, BUCKETS) == pytest.approx(0.05 + 0.05 * 9 / 10)
    assert bucket_quantile(0.05, BUCKETS) == pytest.approx(0.005 + 0.005 * 5 / 10)


def test_bucket_quantile_in_the_inf_bucket_and_empty() -> None:
    assert bucket_quantile(0.99, [(1.0, 10.0), (math.inf, 20.0)]) == 1.0
    assert bucket_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert bucket_quantile(0.5, []) is None


def test_bucket_delta_and_summary_in_ms() -> None:
    before = {0.01: 5.0, 0.1: 10.0, math.inf: 10.0}
    after = {0.01: 15.0, 0.1: 30.0, math.inf: 30.0}
    delta = bucket_delta(after, before)
    assert delta == [(0.01, 10.0), (0.1, 20.0), (math.inf, 20.0)]
    s = bucket_summary(delta)
    assert s["count"] == 20
    assert s["p50"] == pytest.approx(10.0)
    assert s["p99"] == pytest.approx(10 + 90 * (19.8 - 10) / 10, abs=0.1)
    assert s["resolution_ms"] == 10.0
    assert s["max_le_ms"] == 100.0


def test_recovery_time() -> None:
    series = [(s, 10.0) for s in range(10)] + [(10, 80.0), (11, 60.0), (12, 11.0), (13, 12.0), (14, 9.0)]
    assert recovery_time(series, baseline=10.0, after=10) == 2
    assert recovery_time(series, baseline=10.0, after=10, hold=4) is None
    assert recovery_time([(s, 5.0) for s in range(20)], baseline=10.0, after=10) == 0
    assert recovery_time([(11, 50.0), (12, 50.0)], baseline=10.0, after=10) is None
