"""Incidents: labels for every kind, and the generated data really shows each one."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from citystream.geo import BY_ID
from simulators import evidence, labels, scenario
from simulators.generator import Plan
from simulators.incidents import envelope
from simulators.payloads import MALFORMED_VARIANTS
from simulators.scenario import Kind

KINDS = {k.value for k in Kind}


@pytest.fixture(scope="module")
def faulty() -> Plan:
    return Plan(scenario.load("faulty-fleet"), root="city", id_prefix="t1-")


def test_every_kind_is_labelled_with_window_and_targets(faulty: Plan) -> None:
    found = faulty.labels()
    assert {label.kind for label in found} == KINDS
    devices = {d.device_id: d for d in faulty.devices}
    for label in found:
        assert faulty.start_ms <= label.start_ms < label.end_ms <= faulty.end_ms
        if label.kind == "district_event":
            assert label.devices == []
        else:
            assert label.devices
            for device_id in label.devices:
                assert devices[device_id].district == label.district
                assert devices[device_id].sensor_type == label.sensor_type
    rules = {label.kind: label.expected_rule for label in found}
    assert rules == {
        "spike": "zscore",
        "level_shift": "ewma",
        "drift": "peer",
        "stuck_value": "flatline",
        "dropout": "silent",
        "duplicate_burst": None,
        "out_of_order": None,
        "malformed": None,
        "clock_skew": "clock_skew",
        "district_event": "threshold",
    }


def test_incidents_hit_different_devices(faulty: Plan) -> None:
    targets = [d for label in faulty.labels() for d in label.devices]
    assert len(targets) == len(set(targets))


def test_the_label_file_round_trips(faulty: Plan, tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    assert labels.write(path, faulty.labels()) == len(faulty.labels())
    lines = path.read_bytes().splitlines()
    first = msgspec.json.decode(lines[0])
    assert set(first) == {
        "kind", "devices", "district", "sensor_type", "metric",
        "start_ms", "end_ms", "expected_rule", "incident",
    }  # fmt: skip
    assert labels.read(path) == faulty.labels()


def test_the_generated_data_shows_every_incident(faulty: Plan) -> None:
    logs = evidence.collect("city", ((m.topic, m.payload) for m in faulty.messages()))
    problems = {label.incident: evidence.problem(label, logs) for label in faulty.labels()}
    assert problems == dict.fromkeys(problems)


def test_without_the_incidents_the_evidence_is_missing(faulty: Plan) -> None:
    """The checks can fail: on the same fleet without incidents, no label is borne out."""
    clean = msgspec.structs.replace(faulty.scenario, incidents=[])
    logs = evidence.collect(
        "city", ((m.topic, m.payload) for m in Plan(clean, root="city", id_prefix="t1-").messages())
    )
    for label in faulty.labels():
        assert evidence.problem(label, logs) is not None, label.incident


def test_stuck_device_repeats_one_value_for_the_whole_window(faulty: Plan) -> None:
    label = next(label for label in faulty.labels() if label.kind == "stuck_value")
    logs = evidence.collect("city", ((m.topic, m.payload) for m in faulty.messages()))
    inside = [r.values for r in logs[label.devices[0]].readings if label.start_ms <= r.ts < label.end_ms]
    assert len(inside) == (label.end_ms - label.start_ms) // 60_000
    assert all(v == inside[0] for v in inside)


def test_malformed_payloads_cycle_through_every_variant(faulty: Plan) -> None:
    label = next(label for label in faulty.labels() if label.kind == "malformed")
    logs = evidence.collect("city", ((m.topic, m.payload) for m in faulty.messages()))
    bad = logs[label.devices[0]].invalid
    assert len(bad) == len(MALFORMED_VARIANTS)
    assert any(b"NaN" in p for p in bad)
    assert any(b"radiation_usv" in p for p in bad)
    assert any(p.startswith(b"\xff") for p in bad)


def test_clock_skew_moves_the_device_time_only(faulty: Plan) -> None:
    label = next(label for label in faulty.labels() if label.kind == "clock_skew")
    index = next(d.number for d in faulty.devices if d.device_id == label.devices[0])
    skewed = [m for m in faulty.messages() if m.device == index and label.start_ms <= m.at_ms < label.end_ms]
    assert skewed
    for m in skewed:
        assert msgspec.json.decode(m.payload)["ts"] - m.at_ms == 15 * 60_000


def smaller(name: str, size: int) -> Plan:
    s = scenario.load(name)
    return Plan(msgspec.structs.replace(s, fleet=msgspec.structs.replace(s.fleet, size=size)), root="city")


def test_a_yellow_dust_front_crosses_the_city_from_the_west() -> None:
    plan = smaller("yellow-dust", 60)
    found = plan.labels()
    assert len(found) == 25
    assert {label.kind for label in found} == {"district_event"}
    start = {label.district: label.start_ms for label in found}
    assert start["gangseo"] < start["mapo"] < start["jung"] < start["gangnam"] < start["gangdong"]
    logs = evidence.collect("city", ((m.topic, m.payload) for m in plan.messages()))
    assert [label.district for label in found if evidence.problem(label, logs)] == []


def test_the_flood_rises_along_the_han_only() -> None:
    plan = smaller("flood-watch", 60)
    found = plan.labels()
    assert {label.district for label in found} == {d for d, info in BY_ID.items() if info.han_river}
    assert {(label.sensor_type, label.metric) for label in found} == {("water_level", "level_cm")}
    logs = evidence.collect("city", ((m.topic, m.payload) for m in plan.messages()))
    assert [label.district for label in found if evidence.problem(label, logs)] == []


def test_district_events_ramp_up_and_down() -> None:
    plan = Plan(scenario.load("faulty-fleet"), root="city")
    event = next(i for i in plan.incidents if i.kind is Kind.DISTRICT_EVENT)
    assert envelope(event, event.start_ms) == 0.0
    assert envelope(event, event.start_ms + event.ramp_ms // 2) == pytest.approx(0.5)
    assert envelope(event, (event.start_ms + event.end_ms) // 2) == 1.0
    assert envelope(event, event.end_ms - event.ramp_ms // 4) == pytest.approx(0.25)
