"""The pure parts of publishing: connection mode, routes, pacing, summaries."""

from __future__ import annotations

import pytest

from simulators import fleet, provision
from simulators.errors import ScenarioError
from simulators.publisher import Pacing, Summary
from simulators.scenario import FleetSpec


def test_mode_by_fleet_size() -> None:
    assert provision.choose_mode("auto", 10) == "device"
    assert provision.choose_mode("auto", provision.DEVICE_MODE_LIMIT + 1) == "gateway"
    assert provision.choose_mode("gateway", 3) == "gateway"
    with pytest.raises(ScenarioError, match="too many"):
        provision.choose_mode("device", provision.DEVICE_MODE_LIMIT + 1)


def test_device_route_gives_every_device_its_own_login() -> None:
    devices = fleet.build(FleetSpec(size=30), seed=1, id_prefix="t-")
    route = provision.plan_route(devices, "device", "t-")
    assert [login.username for login in route.logins] == [d.device_id for d in devices]
    assert route.connection_of == list(range(30))
    assert len({login.password for login in route.logins}) == 30


def test_gateway_route_gives_one_login_per_district() -> None:
    devices = fleet.build(FleetSpec(size=100, districts=["gangnam", "mapo", "jung"]), seed=1, id_prefix="t-")
    route = provision.plan_route(devices, "gateway", "t-")
    assert [login.username for login in route.logins] == ["t-gw-gangnam", "t-gw-jung", "t-gw-mapo"]
    for device, conn in zip(devices, route.connection_of, strict=True):
        assert route.logins[conn].district == device.district


def test_pacing_descriptions() -> None:
    assert Pacing(None, 60).describe() == "scenario time x60"
    assert Pacing(500.0).describe() == "500 msg/s"
    assert Pacing(0.0).describe() == "as fast as possible"


def test_summary_lines_say_what_failed_and_why() -> None:
    summary = Summary(
        planned=10, queued=10, sent=8, failed=2, duration_s=2.0, rate=4.0, qos=1, mode="device",
        connections=3, pacing="as fast as possible", status_messages=6, failures={"not authorized": 2},
    )  # fmt: skip
    lines = summary.lines()
    assert lines[0] == "sent      8 of 10 telemetry messages (QoS 1)"
    assert lines[1] == "failed    2 (not authorized: 2)"
    assert "4 msg/s" in lines[3]


def test_devices_behind_a_gateway_get_entries_nobody_can_log_in_with() -> None:
    devices = fleet.build(FleetSpec(size=40), seed=1, id_prefix="t-")
    entries = provision._unusable_entries(devices)
    assert [e.device_id for e, _ in entries] == [d.device_id for d in devices]
    for (entry, password), device in zip(entries, devices, strict=True):
        assert (entry.district, entry.sensor_type, entry.kind) == (
            device.district,
            device.sensor_type,
            "device",
        )
        assert entry.interval_s == device.interval_ms / 1000
        assert password == ""
    assert len({e.password_hash for e, _ in entries}) == 1
    assert entries[0][0].password_hash.startswith("$7$")


def test_gateway_status_topics_are_the_ones_ingest_accepts() -> None:
    devices = fleet.build(FleetSpec(size=10, districts=["jung"]), seed=1, id_prefix="t-")
    route = provision.plan_route(devices, "gateway", "t-")
    assert route.gateway_status_topic(0, "city") == "city/jung/any/t-gw-jung/status"
    assert provision.plan_route(devices, "device", "t-").gateway_status_topic(0, "city") is None
