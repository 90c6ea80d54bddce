from __future__ import annotations

import json
from pathlib import Path

import pytest

from citystream.errors import ConfigError
from citystream.sensors import SENSOR_TYPES
from stream_jobs.detectors.base import Point
from stream_jobs.detectors.config import DEFAULT, NAB, DetectorConfig, DetectorSpec, spec
from stream_jobs.detectors.registry import (
    RULES,
    build,
    create,
    is_peer,
    is_timer,
    names,
    peer_detector,
    point_detector,
    timer_detector,
)


def test_every_rule_of_the_contract_is_registered() -> None:
    assert set(RULES) <= set(names())
    required: dict[str, dict[str, object]] = {
        "rate_of_change": {"max_per_min": 1.0},
        "threshold": {"bounds": (1.0,)},
    }
    for rule in RULES:
        assert build(DetectorSpec(rule, required.get(rule, {}))).name == rule


def test_every_default_entry_builds_and_names_a_known_sensor_metric() -> None:
    for (sensor_type, metric), specs in DEFAULT.metrics.items():
        assert SENSOR_TYPES[sensor_type].metric(metric) is not None, (sensor_type, metric)
        for s in specs:
            detector = build(s)
            assert detector.name == s.name
            assert detector.version
    for sensor_type in SENSOR_TYPES:
        assert {s.name for s in DEFAULT.for_device(sensor_type)} == {"silent", "clock_skew"}


def test_air_quality_defaults_use_the_korean_categories() -> None:
    (pm25,) = [s for s in DEFAULT.for_metric("air_quality", "pm25") if s.name == "threshold"]
    (pm10,) = [s for s in DEFAULT.for_metric("air_quality", "pm10") if s.name == "threshold"]
    assert pm25.params["bounds"] == (15, 35, 75)
    assert pm10.params["bounds"] == (30, 80, 150)
    detector = point_detector(pm25)
    decision, _ = detector.update(Point(0, 80.0), detector.initial())
    assert decision.anomalous
    assert "very_bad" in decision.explain()


def test_build_shares_one_instance_per_spec() -> None:
    assert build(spec("zscore", window=30)) is build(spec("zscore", window=30))
    assert build(spec("zscore", window=30)) is not build(spec("zscore", window=31))


@pytest.mark.parametrize(
    ("name", "params"),
    [("nope", {}), ("zscore", {"windw": 3}), ("zscore", {"window": 1}), ("rate_of_change", {})],
)
def test_unknown_names_and_bad_parameters_are_config_errors(name: str, params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        create(name, params)


def test_detector_kinds_are_told_apart() -> None:
    with pytest.raises(ConfigError):
        point_detector(spec("peer"))
    with pytest.raises(ConfigError):
        timer_detector(spec("zscore"))
    with pytest.raises(ConfigError):
        peer_detector(spec("silent"))
    assert timer_detector(spec("silent")).name == "silent"
    assert peer_detector(spec("peer")).name == "peer"
    assert is_timer(spec("silent"))
    assert not is_timer(spec("peer"))
    assert is_peer(spec("peer"))
    assert not is_peer(spec("flatline"))


def test_the_nab_detector_is_the_configured_ensemble() -> None:
    nab = point_detector(spec("nab"))
    assert nab.name == "nab"
    assert nab.version.count("excursion") == len(NAB.params["members"])
    assert point_detector(spec("nab", suppress_for=0)) is not nab


def test_overrides_from_a_file_replace_only_the_named_entries(tmp_path: Path) -> None:
    path = tmp_path / "detectors.json"
    path.write_text(
        json.dumps(
            {
                "metrics": {"noise/laeq": [{"name": "threshold", "params": {"bounds": [65, 75]}}]},
                "devices": {"noise": [{"name": "silent", "params": {"factor": 5}}]},
            }
        )
    )
    config = DetectorConfig.load(path)
    (only,) = config.for_metric("noise", "laeq")
    assert only.params["bounds"] == [65, 75]
    assert config.for_metric("air_quality", "pm25") == DEFAULT.for_metric("air_quality", "pm25")
    assert [s.name for s in config.for_device("noise")] == ["silent"]
    assert config.for_metric("noise", "nothing") == ()


@pytest.mark.parametrize(
    "data",
    [
        {"metrics": {"pm25": []}},
        {"metrics": {"air_quality/pm25": {"name": "x"}}},
        {"metrics": {"air_quality/pm25": [{"params": {}}]}},
        {"devices": {"submarine": []}},
        {"metrics": []},
    ],
)
def test_bad_overrides_are_config_errors(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DEFAULT.with_overrides(data)
