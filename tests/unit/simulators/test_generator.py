"""The message sequence: deterministic, ordered, well-formed, and as long as the plan says."""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

import msgspec
import pytest

from citystream import codec
from citystream.addressing import split_topic
from citystream.sensors import SENSOR_TYPES
from simulators import scenario
from simulators.errors import ScenarioError
from simulators.generator import Message, Plan, digest, merge_streams
from simulators.run import override
from simulators.scenario import Scenario, from_dict

SMALL: dict[str, Any] = {
    "name": "small",
    "seed": 11,
    "start": "2025-06-02T07:00:00+09:00",
    "duration": "20m",
    "fleet": {"size": 60},
}


PINNED_DIGEST = "cea16191e3c69063969b0f1622f383a5da4fb114a095ed231fd467281c99cbe4"
"""faulty-fleet, first 40 minutes (12,000 messages, four incidents under way)."""


def plan_of(s: Scenario, root: str = "city", prefix: str = "") -> Plan:
    return Plan(s, root=root, id_prefix=prefix)


def test_same_seed_same_sequence_different_seed_different() -> None:
    s = from_dict(SMALL)
    first = list(plan_of(s).messages())
    again = list(plan_of(s).messages())
    assert [(m.topic, m.payload) for m in first] == [(m.topic, m.payload) for m in again]
    other = list(plan_of(override(s, seed=12)).messages())
    assert [m.payload for m in other] != [m.payload for m in first]
    assert len(other) == len(first)


def test_payloads_do_not_depend_on_topic_root_or_id_prefix() -> None:
    s = scenario.load("faulty-fleet")
    a = plan_of(s, "city")
    b = plan_of(s, "t123", "t123-")
    assert [m.payload for m in a.messages()] == [m.payload for m in b.messages()]
    assert [label.devices for label in a.labels()] != [label.devices for label in b.labels()]


def test_known_digest_pins_the_sequence_across_machines() -> None:
    # The generator uses only exactly rounded arithmetic and Mersenne Twister streams, so this
    # digest is the same on every platform and Python version; when a change to the signals
    # moves it, every recorded run and label set changes too (update it on purpose only).
    s = override(scenario.load("faulty-fleet"), duration_s=2400)
    assert digest(plan_of(s).messages()) == PINNED_DIGEST


def test_order_is_send_time_then_device() -> None:
    messages = list(plan_of(from_dict(SMALL)).messages())
    keys = [(m.at_ms, m.device, m.position) for m in messages]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_bucket_merge_equals_a_heap_merge() -> None:
    plan = plan_of(scenario.load("faulty-fleet"))
    by_heap = list(heapq.merge(*(plan._stream(d) for d in plan.devices)))
    by_buckets = list(merge_streams([plan._stream(d) for d in plan.devices], plan.start_ms))
    assert by_buckets == by_heap


@pytest.mark.parametrize("name", ["faulty-fleet", "seoul-normal-day", "flood-watch"])
def test_expected_counts_match_what_is_generated(name: str) -> None:
    s = override(scenario.load(name), duration_s=3 * 3600) if name != "faulty-fleet" else scenario.load(name)
    plan = plan_of(s)
    generated = Counter(plan.devices[m.device].device_id for m in plan.messages())
    assert dict(generated) == {k: v for k, v in plan.expected_counts().items() if v}
    assert plan.expected_total() == sum(generated.values())


def test_counts_follow_duration_and_interval() -> None:
    s = from_dict(
        {**SMALL, "duration": 60, "fleet": {"size": 10, "mix": {"noise": 1}, "interval_s": {"noise": 10}}}
    )
    plan = plan_of(s)
    assert set(plan.expected_counts().values()) == {6}
    assert sum(1 for _ in plan.messages()) == 60


def test_payloads_follow_the_mqtt_contract() -> None:
    plan = plan_of(from_dict(SMALL))
    last_seq: dict[int, int] = {}
    for m in plan.messages():
        device = plan.devices[m.device]
        address = split_topic("city", m.topic)
        assert address is not None
        assert (address.district, address.sensor_type, address.device_id, address.kind) == (
            device.district,
            device.sensor_type,
            device.device_id,
            "telemetry",
        )
        body = msgspec.json.decode(m.payload)
        assert set(body) == {"ts", "seq", "values"}
        assert body["ts"] == m.at_ms
        assert body["seq"] == last_seq.get(m.device, 0) + 1
        last_seq[m.device] = body["seq"]
        sensor = SENSOR_TYPES[device.sensor_type]
        assert set(body["values"]) == {metric.name for metric in sensor.metrics}
        for metric in sensor.metrics:
            assert metric.low <= body["values"][metric.name] <= metric.high
        assert len(m.payload) < 64 * 1024
    assert codec.decode(m.payload, dict[str, object])["seq"] == last_seq[m.device]


def test_every_message_carries_the_scenario_qos() -> None:
    for qos in (0, 1):
        plan = plan_of(override(from_dict(SMALL), qos=qos))
        assert {m.qos for m in plan.messages()} == {qos}


def test_a_start_of_now_needs_an_instant() -> None:
    s = override(from_dict(SMALL), start="now")
    with pytest.raises(ScenarioError, match="start instant"):
        Plan(s, root="city")
    plan = Plan(s, root="city", start_ms=1_764_000_000_000)
    first: Message = next(iter(plan.messages()))
    assert 1_764_000_000_000 <= first.at_ms < 1_764_000_000_000 + 300_000
