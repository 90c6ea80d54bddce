"""The simulated fleet: which devices exist, where they stand and when they report.

Every device has its own id (``aq-gangnam-003``, plus the run's id prefix), coordinates inside
its district, reporting interval, phase and random stream; the fleet depends only on the
scenario's fleet section and seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from citystream.addressing import STATUS, TELEMETRY, device_topic
from citystream.geo import BY_ID
from citystream.sensors import SENSOR_TYPES
from simulators.errors import ScenarioError
from simulators.profiles import KM_PER_DEG_LAT, KM_PER_DEG_LON, derive_seed, rng_for
from simulators.scenario import FleetSpec, district_ids

ABBREVIATION = {
    "air_quality": "aq",
    "noise": "ns",
    "weather": "wx",
    "traffic": "tf",
    "parking": "pk",
    "water_level": "wl",
    "streetlight": "sl",
    "waste_bin": "wb",
}
PLACEMENT_RADIUS_KM = 1.6


class Device(NamedTuple):
    number: int
    device_id: str
    base_id: str
    """The id without the run's prefix; seeds derive from it, so a prefix changes no data."""
    district: str
    sensor_type: str
    lat: float
    lon: float
    interval_ms: int
    phase_ms: int
    """First report this long after the scenario start (devices do not report in lockstep)."""
    seed: int

    def topic(self, root: str, kind: str = TELEMETRY) -> str:
        return device_topic(root, self.district, self.sensor_type, self.device_id, kind)

    def status_topic(self, root: str) -> str:
        return self.topic(root, STATUS)


def allocate(size: int, mix: dict[str, float]) -> dict[str, int]:
    """Devices per sensor type by the largest remainder, in the kernel's type order."""
    weights = {t: mix.get(t, 0.0) for t in SENSOR_TYPES if mix.get(t, 0.0) > 0}
    total = sum(weights.values())
    exact = {t: size * w / total for t, w in weights.items()}
    counts = {t: int(v) for t, v in exact.items()}
    left = size - sum(counts.values())
    for t in sorted(exact, key=lambda t: (counts[t] - exact[t], list(SENSOR_TYPES).index(t)))[:left]:
        counts[t] += 1
    return {t: n for t, n in counts.items() if n}


def build(spec: FleetSpec, seed: int, id_prefix: str = "") -> list[Device]:
    """The fleet of a scenario; the same spec and seed give the same fleet."""
    districts = district_ids(spec.districts)
    counts = allocate(spec.size, spec.mix)
    devices: list[Device] = []
    for type_no, (sensor_type, count) in enumerate(counts.items()):
        order = list(districts)
        if sensor_type == "water_level":
            # River gauges first: the Han districts get them before the others.
            order.sort(key=lambda d: not BY_ID[d].han_river)
        else:
            # Rotate per type so small counts of different types land in different districts.
            shift = type_no * 7 % len(order)
            order = order[shift:] + order[:shift]
        interval_s = spec.interval_s.get(sensor_type, SENSOR_TYPES[sensor_type].interval_s)
        interval_ms = max(100, round(interval_s * 1000))
        numbers: dict[str, int] = {}
        for k in range(count):
            district = order[k % len(order)]
            numbers[district] = numbers.get(district, 0) + 1
            base_id = f"{ABBREVIATION[sensor_type]}-{district}-{numbers[district]:03d}"
            device_id = f"{id_prefix}{base_id}"
            if len(device_id) > 64:
                raise ScenarioError(f"device id {device_id!r} is longer than 64 characters")
            rng = rng_for(seed, "place", base_id)
            lat, lon = _place(BY_ID[district].lat, BY_ID[district].lon, rng.random)
            devices.append(
                Device(
                    number=len(devices),
                    device_id=device_id,
                    base_id=base_id,
                    district=district,
                    sensor_type=sensor_type,
                    lat=lat,
                    lon=lon,
                    interval_ms=interval_ms,
                    phase_ms=int(rng.random() * interval_ms),
                    seed=derive_seed(seed, "device", base_id),
                )
            )
    return devices


def _place(lat: float, lon: float, rnd: Callable[[], float]) -> tuple[float, float]:
    """A point within the placement radius of the district centroid (rejection sampling)."""
    while True:
        x, y = 2.0 * rnd() - 1.0, 2.0 * rnd() - 1.0
        if x * x + y * y <= 1.0:
            break
    return (
        round(lat + y * PLACEMENT_RADIUS_KM / KM_PER_DEG_LAT, 5),
        round(lon + x * PLACEMENT_RADIUS_KM / KM_PER_DEG_LON, 5),
    )


def by_group(devices: list[Device]) -> dict[tuple[str, str], list[Device]]:
    """Devices by (district, sensor type): the peers of each device."""
    groups: dict[tuple[str, str], list[Device]] = {}
    for d in devices:
        groups.setdefault((d.district, d.sensor_type), []).append(d)
    return groups
