"""The fleet: mix, ids, placement, schedule; the same seed gives the same fleet."""

from __future__ import annotations

from collections import Counter

from citystream.addressing import is_device_id
from citystream.geo import BY_ID
from citystream.sensors import SENSOR_TYPES
from simulators import fleet
from simulators.profiles import KM_PER_DEG_LAT, KM_PER_DEG_LON
from simulators.scenario import FleetSpec


def test_allocation_follows_the_mix_and_sums_to_the_size() -> None:
    counts = fleet.allocate(101, {"air_quality": 3, "noise": 2, "weather": 0, "traffic": 5})
    assert sum(counts.values()) == 101
    assert "weather" not in counts
    assert counts == {"air_quality": 30, "noise": 20, "traffic": 51}


def test_ids_are_unique_valid_and_prefixed() -> None:
    devices = fleet.build(FleetSpec(size=500), seed=1, id_prefix="t12-")
    ids = [d.device_id for d in devices]
    assert len(set(ids)) == 500
    assert all(is_device_id(i) and i.startswith("t12-") for i in ids)
    assert [d.number for d in devices] == list(range(500))
    assert devices[0].device_id == "t12-" + devices[0].base_id
    assert devices[0].topic("city") == (
        f"city/{devices[0].district}/{devices[0].sensor_type}/{devices[0].device_id}/telemetry"
    )


def test_devices_spread_over_every_district_and_stand_inside_it() -> None:
    devices = fleet.build(FleetSpec(size=250), seed=3)
    assert {d.district for d in devices} == set(BY_ID)
    for d in devices:
        home = BY_ID[d.district]
        km = (((d.lat - home.lat) * KM_PER_DEG_LAT) ** 2 + ((d.lon - home.lon) * KM_PER_DEG_LON) ** 2) ** 0.5
        assert km <= fleet.PLACEMENT_RADIUS_KM + 0.01


def test_river_gauges_go_to_the_han_districts_first() -> None:
    devices = fleet.build(FleetSpec(size=11, mix={"water_level": 1}), seed=1)
    assert all(BY_ID[d.district].han_river for d in devices)


def test_schedule_uses_the_type_interval_or_the_override() -> None:
    devices = fleet.build(FleetSpec(size=24, interval_s={"traffic": 30}), seed=1)
    for d in devices:
        expected = 30_000 if d.sensor_type == "traffic" else SENSOR_TYPES[d.sensor_type].interval_s * 1000
        assert d.interval_ms == expected
        assert 0 <= d.phase_ms < d.interval_ms
    assert len({d.phase_ms for d in devices}) > 20, "devices do not report in lockstep"


def test_same_seed_same_fleet_and_the_prefix_changes_no_seed() -> None:
    a = fleet.build(FleetSpec(size=60), seed=5)
    b = fleet.build(FleetSpec(size=60), seed=5, id_prefix="x-")
    c = fleet.build(FleetSpec(size=60), seed=6)
    assert [(d.base_id, d.lat, d.lon, d.phase_ms, d.seed) for d in a] == [
        (d.base_id, d.lat, d.lon, d.phase_ms, d.seed) for d in b
    ]
    assert [d.seed for d in a] != [d.seed for d in c]


def test_groups_are_the_peers_of_a_district() -> None:
    devices = fleet.build(FleetSpec(size=75, mix={"air_quality": 1}), seed=1)
    groups = fleet.by_group(devices)
    assert Counter(len(g) for g in groups.values()) == {3: 25}
