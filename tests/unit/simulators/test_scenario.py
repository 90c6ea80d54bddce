"""Scenario files: durations, loading, validation and overrides."""

from __future__ import annotations

import pytest

from simulators import scenario
from simulators.errors import ScenarioError
from simulators.run import override
from simulators.scenario import Kind, from_dict, parse, parse_start, seconds

BUILT_IN = ("faulty-fleet", "flood-watch", "quick-tour", "seoul-normal-day", "seoul-rush-hour", "yellow-dust")


@pytest.mark.parametrize(
    ("text", "expected"),
    [(90, 90.0), (1.5, 1.5), ("45s", 45.0), ("10m", 600.0), ("1h30m", 5400.0), ("2d", 172800.0),
     ("-15m", -900.0), ("0.5h", 1800.0), ("120", 120.0)],
)  # fmt: skip
def test_durations(text: float | str, expected: float) -> None:
    assert seconds(text) == expected


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "1h-5m", "m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ScenarioError, match="not a duration"):
        seconds(text)


def test_the_built_in_scenarios_are_shipped_and_valid() -> None:
    assert set(BUILT_IN) <= set(scenario.builtin_names())
    for name in BUILT_IN:
        s = scenario.load(name)
        assert s.name == name
        assert scenario.validate(s) == []
        assert parse_start(s.start) is not None, "built-in scenarios start at a fixed instant"


def test_faulty_fleet_has_one_incident_of_every_kind() -> None:
    s = scenario.load("faulty-fleet")
    assert sorted(i.kind for i in s.incidents) == sorted(Kind)


def test_unknown_scenario_names_the_built_in_ones() -> None:
    with pytest.raises(ScenarioError, match="seoul-normal-day"):
        scenario.load("no-such-scenario")


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ScenarioError, match="colour"):
        from_dict({"name": "x", "colour": "red"})


def test_every_problem_is_reported_at_once() -> None:
    text = """
name: broken
duration: -5m
qos: 2
start: "2025-06-02T00:00:00"
fleet: {size: 10, districts: [gangnam, atlantis], mix: {air_quality: 1, lava: 1}}
incidents:
  - {kind: spike, start: 10m, end: 5m, target: {sensor_type: air_quality}, metric: laeq}
  - {kind: drift, start: 1m, end: 2m}
  - {kind: district_event, start: 1m, end: 2m, sensor_type: noise, add: {pm10: 5}}
  - {kind: duplicate_burst, start: 1m, end: 2m, copies: 1, target: {sensor_type: noise}}
"""
    with pytest.raises(ScenarioError) as exc:
        parse(text)
    message = str(exc.value)
    for expected in (
        "duration must be positive",
        "qos must be 0 or 1",
        "needs a UTC offset",
        "atlantis",
        "unknown sensor type 'lava'",
        "incidents[0] (spike): needs 0 <= start < end",
        "'laeq' is not a metric of air_quality",
        "incidents[1] (drift): target",
        "'pm10' is not a metric of noise",
        "copies must be >= 2",
        "the fleet has no noise devices",
    ):
        assert expected in message, (expected, message)


def test_not_yaml_and_not_a_mapping() -> None:
    with pytest.raises(ScenarioError, match="not valid YAML"):
        parse("name: [unclosed")
    with pytest.raises(ScenarioError, match="mapping"):
        parse("- a list")


def test_overrides_are_applied_and_checked() -> None:
    s = scenario.load("seoul-normal-day")
    changed = override(s, duration_s=600, rate=500, seed=9, qos=0, connection="gateway", start="now")
    assert (changed.duration_s, changed.rate, changed.seed, changed.qos) == (600, 500, 9, 0)
    assert (changed.connection, changed.start) == ("gateway", "now")
    by_compression = override(s, compression=10)
    assert (by_compression.rate, by_compression.time_compression) == (None, 10)
    with pytest.raises(ScenarioError, match="rate must be >= 0"):
        override(s, rate=-1)


def test_start_instants() -> None:
    assert parse_start("now") is None
    assert parse_start("2025-06-02T00:00:00+09:00") == 1748790000000
    with pytest.raises(ScenarioError):
        parse_start("yesterday")


def test_durations_are_printed_back() -> None:
    assert scenario.format_duration(5400.0) == "1h30m"
    assert scenario.format_duration(31_536_000) == "365d"
    assert scenario.format_duration(61.4) == "1m1s"
    assert scenario.format_duration("2h") == "2h"
