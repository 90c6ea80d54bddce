"""The chaos run's pure parts: the seeded plan, the aggregate comparison, the expected alerts."""

from __future__ import annotations

import math

from bench.chaos import (
    COMPONENTS,
    VERY_BAD,
    Plan,
    _alert_verdict,
    aggregates_equal,
    compare_aggregates,
    district_alerts,
)
from bench.chaos_load import SeriesKey
from citystream.model import Aggregate
from citystream.settings import Settings
from stream_jobs.windows import summarize_values

MINUTE = 60_000


def plan(seed: int = 7, rounds: int = 3) -> Plan:
    return Plan(seed, 300, rounds, (8.0, 20.0), (2.0, 8.0), 45.0, 90.0, 5, 180.0)


def agg(district: str, start: int, values: list[float], metric: str = "pm10") -> Aggregate:
    return summarize_values(district, "air_quality", metric, start, sorted(values), emitted_ms=0)


def test_every_round_kills_every_component_once_in_a_seeded_order() -> None:
    faults = plan().faults()
    assert len(faults) == 3 * len(COMPONENTS)
    for r in (1, 2, 3):
        assert sorted(c for n, c, _, _ in faults if n == r) == sorted(COMPONENTS)
    assert all(8.0 <= wait <= 20.0 and 2.0 <= pause <= 8.0 for _, _, wait, pause in faults)
    assert faults == plan().faults()
    assert faults != plan(seed=8).faults()


def test_spikes_start_within_the_fault_schedule_and_last_the_planned_time() -> None:
    spikes = plan().spike_plan(list(range(0, 300, 4)), span_s=600.0)
    assert len(spikes) == 5
    assert len({s.device for s in spikes}) == 5
    for s in spikes:
        assert 22.5 <= s.start_s <= 600.0 - 180.0
        assert math.isclose(s.end_s - s.start_s, 180.0, abs_tol=0.2)
    assert spikes == plan().spike_plan(list(range(0, 300, 4)), span_s=600.0)


def test_aggregates_compare_by_count_and_values() -> None:
    want = agg("mapo", 0, [1.0, 2.0, 3.0])
    assert aggregates_equal(want, agg("mapo", 0, [3.0, 1.0, 2.0]))
    assert not aggregates_equal(want, agg("mapo", 0, [1.0, 2.0]))
    assert not aggregates_equal(want, agg("mapo", 0, [1.0, 2.0, 3.5]))


def test_comparison_counts_equal_different_missing_and_unexpected_windows() -> None:
    key = ("mapo", "air_quality", "pm10", 0)
    other: SeriesKey = ("mapo", "air_quality", "pm10", MINUTE)
    late: SeriesKey = ("mapo", "air_quality", "pm10", 5 * MINUTE)
    expected = {key: agg("mapo", 0, [1.0]), other: agg("mapo", MINUTE, [2.0])}
    got = {key: agg("mapo", 0, [1.0]), ("jongno", "air_quality", "pm10", 0): agg("jongno", 0, [4.0])}
    result = compare_aggregates(expected, got, closed_until=2 * MINUTE)
    assert (result["equal"], result["different"], result["missing"], result["unexpected"]) == (1, 0, 1, 1)
    got[key] = agg("mapo", 0, [1.5])
    got[late] = agg("mapo", 5 * MINUTE, [1.0])  # not closed yet: neither expected nor unexpected
    result = compare_aggregates(expected, got, closed_until=2 * MINUTE)
    assert (result["equal"], result["different"], result["missing"], result["unexpected"]) == (0, 1, 1, 1)


def test_a_district_alert_needs_its_mean_very_bad_for_the_minimum_duration() -> None:
    high, low = VERY_BAD + 20, 60.0
    expected = {}
    # mapo: three minutes above (0, 1, 2 min: 120 s held) -> raised; jongno: two minutes only.
    for minute, value in enumerate([high, high, high, low]):
        expected[("mapo", "air_quality", "pm10", minute * MINUTE)] = agg("mapo", minute * MINUTE, [value])
    for minute, value in enumerate([high, high, low, low]):
        expected[("jongno", "air_quality", "pm10", minute * MINUTE)] = agg("jongno", minute * MINUTE, [value])
    # Another metric of the same district never counts.
    expected[("guro", "air_quality", "pm25", 0)] = agg("guro", 0, [500.0], metric="pm25")
    assert district_alerts(expected, Settings()) == {"threshold:pm10:mapo/air_quality"}


def test_hysteresis_keeps_a_district_above_until_the_mean_falls_below_the_edge_minus_it() -> None:
    expected = {}
    for minute, value in enumerate([VERY_BAD + 1, VERY_BAD - 2, VERY_BAD - 1]):
        expected[("mapo", "air_quality", "pm10", minute * MINUTE)] = agg("mapo", minute * MINUTE, [value])
    assert district_alerts(expected, Settings()) == {"threshold:pm10:mapo/air_quality"}


def test_alert_verdict_names_missing_extra_and_repeated_alerts() -> None:
    verdict = _alert_verdict({"a", "b", "c"}, {"a": 1, "b": 2, "x": 1})
    assert verdict == {"raised": 2, "raised_more_than_once": ["b"], "missing": ["c"], "extra": ["x"]}
