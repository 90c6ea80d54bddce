"""Injected incidents: which devices they hit and when, what they do to the data, and the
ground-truth label each one leaves.

Value incidents (spike, level shift, drift, stuck value, district event) change the readings;
delivery incidents (dropout, duplicate burst, out-of-order, malformed, clock skew) change what
goes on the wire. :class:`DeviceFaults` applies both to one device's readings in time order.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import msgspec

from citystream.geo import BY_ID
from citystream.sensors import SENSOR_TYPES
from simulators import payloads
from simulators.errors import ScenarioError
from simulators.fleet import Device, by_group
from simulators.labels import Label
from simulators.profiles import KM_PER_DEG_LAT, KM_PER_DEG_LON, derive_seed, rng_for
from simulators.scenario import EXPECTED_RULE, VALUE_KINDS, IncidentSpec, Kind, district_ids, seconds
from simulators.signals import SCALE

logger = logging.getLogger(__name__)

MIN_PEERS = 3
"""A drifting device needs this many devices of its type in its district (itself included)."""


class Incident(NamedTuple):
    number: int
    """Position in the scenario's incident list."""
    name: str
    kind: Kind
    devices: tuple[int, ...]
    """Indices into the fleet; for a district event, every device of the type in the district."""
    district: str
    sensor_type: str
    metric: str
    start_ms: int
    end_ms: int
    expected_rule: str | None
    factor: float | None = None
    delta: float | None = None
    copies: int = 1
    depth: int = 1
    skew_ms: int = 0
    add: tuple[tuple[str, float], ...] = ()
    ramp_ms: int = 0

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms

    def label(self, devices: list[Device]) -> Label:
        return Label(
            kind=self.kind.value,
            devices=[] if self.kind is Kind.DISTRICT_EVENT else [devices[i].device_id for i in self.devices],
            district=self.district,
            sensor_type=self.sensor_type,
            metric=self.metric,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            expected_rule=self.expected_rule,
            incident=self.name,
        )


def resolve(
    specs: list[IncidentSpec], devices: list[Device], *, start_ms: int, duration_ms: int, seed: int
) -> list[Incident]:
    """Concrete incidents, in scenario order; windows are clipped to the scenario's end."""
    out: list[Incident] = []
    used: set[int] = set()
    groups = by_group(devices)
    for number, spec in enumerate(specs):
        name = spec.name or f"{spec.kind.value}-{number + 1}"
        a_ms, b_ms = round(seconds(spec.start) * 1000), round(seconds(spec.end) * 1000)
        if a_ms >= duration_ms:
            logger.warning("incident %s starts after the scenario ends; left out", name)
            continue
        rule = (
            EXPECTED_RULE[spec.kind]
            if isinstance(spec.expected_rule, msgspec.UnsetType)
            else spec.expected_rule
        )
        if spec.kind is Kind.DISTRICT_EVENT:
            out += _district_event(
                spec,
                number=number,
                name=name,
                rule=rule,
                groups=groups,
                start_ms=start_ms,
                window_ms=(a_ms, b_ms),
                duration_ms=duration_ms,
            )
            continue
        chosen = _targets(
            spec, number=number, name=name, devices=devices, groups=groups, used=used, seed=seed
        )
        used.update(d.number for d in chosen)
        by_district: dict[tuple[str, str], list[Device]] = {}
        for d in chosen:
            by_district.setdefault((d.district, d.sensor_type), []).append(d)
        for (district, sensor_type), members in by_district.items():
            metric = spec.metric or SENSOR_TYPES[sensor_type].metrics[0].name
            out.append(
                Incident(
                    number=number,
                    name=name,
                    kind=spec.kind,
                    devices=tuple(d.number for d in members),
                    district=district,
                    sensor_type=sensor_type,
                    metric=metric,
                    start_ms=start_ms + a_ms,
                    end_ms=start_ms + min(b_ms, duration_ms),
                    expected_rule=rule,
                    factor=spec.factor,
                    delta=spec.delta,
                    copies=spec.copies,
                    depth=spec.depth,
                    skew_ms=round(seconds(spec.skew) * 1000),
                )
            )
    return out


def _targets(
    spec: IncidentSpec,
    *,
    number: int,
    name: str,
    devices: list[Device],
    groups: dict[tuple[str, str], list[Device]],
    used: set[int],
    seed: int,
) -> list[Device]:
    target = spec.target
    if target is None:
        raise ScenarioError(f"incident {name}: no target")
    if target.devices:
        known = {d.base_id: d for d in devices}
        missing = [i for i in target.devices if i not in known]
        if missing:
            raise ScenarioError(f"incident {name}: no devices {missing} in the fleet")
        return [known[i] for i in target.devices]
    candidates = [
        d
        for d in devices
        if (target.sensor_type is None or d.sensor_type == target.sensor_type)
        and (target.district is None or d.district == target.district)
        and (spec.metric is None or SENSOR_TYPES[d.sensor_type].metric(spec.metric) is not None)
        and (spec.kind is not Kind.DRIFT or len(groups[(d.district, d.sensor_type)]) >= MIN_PEERS)
    ]
    if len(candidates) < target.count:
        where = f" in {target.district}" if target.district else ""
        what = target.sensor_type or "matching"
        peers = f" with {MIN_PEERS - 1}+ peers" if spec.kind is Kind.DRIFT else ""
        raise ScenarioError(
            f"incident {name}: wants {target.count} {what} devices{where}{peers}, "
            f"the fleet has {len(candidates)}"
        )
    fresh = [d for d in candidates if d.number not in used]
    pool = fresh if len(fresh) >= target.count else candidates
    rng = rng_for(seed, "incident", number)
    return sorted(rng.sample(pool, target.count), key=lambda d: d.number)


def _district_event(
    spec: IncidentSpec,
    *,
    number: int,
    name: str,
    rule: str | None,
    groups: dict[tuple[str, str], list[Device]],
    start_ms: int,
    window_ms: tuple[int, int],
    duration_ms: int,
) -> list[Incident]:
    a_ms, b_ms = window_ms
    sensor_type = spec.sensor_type or ""
    districts = district_ids(spec.districts or "all")
    delays = _sweep_delays(spec, districts)
    metric = spec.metric or next(iter(spec.add))
    out = []
    for district in districts:
        members = groups.get((district, sensor_type), [])
        a, b = a_ms + delays[district], b_ms + delays[district]
        if a >= duration_ms:
            continue
        if not members:
            logger.info("incident %s: no %s devices in %s", name, sensor_type, district)
        out.append(
            Incident(
                number=number,
                name=name,
                kind=Kind.DISTRICT_EVENT,
                devices=tuple(d.number for d in members),
                district=district,
                sensor_type=sensor_type,
                metric=metric,
                start_ms=start_ms + a,
                end_ms=start_ms + min(b, duration_ms),
                expected_rule=rule,
                add=tuple(spec.add.items()),
                ramp_ms=round(seconds(spec.ramp) * 1000),
            )
        )
    return out


def _sweep_delays(spec: IncidentSpec, districts: list[str]) -> dict[str, int]:
    """When the event reaches each district, after it entered the city (ms)."""
    if spec.sweep is None:
        return dict.fromkeys(districts, 0)
    origin, speed = spec.sweep.origin, spec.sweep.speed_kmh
    lats = [BY_ID[d].lat for d in districts]
    lons = [BY_ID[d].lon for d in districts]
    delays = {}
    for d in districts:
        lat, lon = BY_ID[d].lat, BY_ID[d].lon
        km = {
            "west": (lon - min(lons)) * KM_PER_DEG_LON,
            "east": (max(lons) - lon) * KM_PER_DEG_LON,
            "south": (lat - min(lats)) * KM_PER_DEG_LAT,
            "north": (max(lats) - lat) * KM_PER_DEG_LAT,
        }[origin]
        delays[d] = round(km / speed * 3600) * 1000
    return delays


# -- effects on values ------------------------------------------------------------------------


def device_share(incident: Incident, device: Device) -> float:
    """How strongly a district event hits one device (0.85-1.15, fixed per device)."""
    return 0.85 + 0.3 * (derive_seed(device.seed, "share", incident.number) % 1000) / 1000


def envelope(incident: Incident, t_ms: int) -> float:
    """Strength of a district event at ``t_ms``: ramps up, holds, ramps down."""
    if incident.ramp_ms <= 0:
        return 1.0
    return min(
        1.0, (t_ms - incident.start_ms) / incident.ramp_ms, (incident.end_ms - t_ms) / incident.ramp_ms
    )


def apply_value(incident: Incident, values: dict[str, float], t_ms: int, share: float = 1.0) -> None:
    """Change one reading in place (spike, level shift, drift or district event)."""
    kind = incident.kind
    if kind is Kind.DISTRICT_EVENT:
        strength = envelope(incident, t_ms) * share
        for metric, amount in incident.add:
            values[metric] += amount * strength
        return
    metric = incident.metric
    v = values[metric]
    if kind is Kind.DRIFT:
        progress = (t_ms - incident.start_ms) / (incident.end_ms - incident.start_ms)
        if incident.factor is not None:
            values[metric] = v * (1.0 + (incident.factor - 1.0) * progress)
        else:
            delta = incident.delta if incident.delta is not None else 5.0 * SCALE[metric]
            values[metric] = v + delta * progress
        return
    default = 8.0 if kind is Kind.SPIKE else 4.0
    if incident.factor is not None:
        values[metric] = v * incident.factor
    else:
        values[metric] = v + (incident.delta if incident.delta is not None else default * SCALE[metric])


class Delivery(NamedTuple):
    """What the delivery incidents do to one reading."""

    dropout: bool
    skew_ms: int
    malformed: bool
    copies: int
    reorder: int
    """Group size of reversed delivery, 0 when in order."""


IN_ORDER = Delivery(dropout=False, skew_ms=0, malformed=False, copies=1, reorder=0)


class DeviceFaults:
    """The incidents of one device, applied reading by reading in time order."""

    def __init__(self, device: Device, incidents: list[Incident]) -> None:
        self.sensor_type = device.sensor_type
        value_kinds = VALUE_KINDS | {Kind.DISTRICT_EVENT}
        # District events first, then the sensor's own faults; a stuck sensor freezes last.
        self.value_incidents = sorted(
            (i for i in incidents if i.kind in value_kinds),
            key=lambda i: (i.kind is Kind.STUCK_VALUE, i.kind is not Kind.DISTRICT_EVENT, i.number),
        )
        self.delivery_incidents = [i for i in incidents if i.kind not in value_kinds]
        self.shares = {i.number: device_share(i, device) for i in self.value_incidents}
        self.frozen: dict[int, dict[str, float]] = {}
        self.malformed_count = 0

    def values(self, t_ms: int, values: dict[str, float]) -> dict[str, float]:
        for inc in self.value_incidents:
            if not inc.active(t_ms):
                continue
            if inc.kind is Kind.STUCK_VALUE:
                values = dict(self.frozen.setdefault(inc.number, values))
            else:
                apply_value(inc, values, t_ms, self.shares[inc.number])
        return values

    def delivery(self, t_ms: int) -> Delivery:
        active = [i for i in self.delivery_incidents if i.active(t_ms)]
        if not active:
            return IN_ORDER
        kinds = {i.kind for i in active}
        return Delivery(
            dropout=Kind.DROPOUT in kinds,
            skew_ms=sum(i.skew_ms for i in active if i.kind is Kind.CLOCK_SKEW),
            malformed=Kind.MALFORMED in kinds,
            copies=max((i.copies for i in active if i.kind is Kind.DUPLICATE_BURST), default=1),
            reorder=max((i.depth for i in active if i.kind is Kind.OUT_OF_ORDER), default=0),
        )

    def payload(self, ts: int, seq: int, values: dict[str, float], *, malformed: bool) -> bytes:
        if not malformed:
            return payloads.telemetry(ts, seq, values)
        self.malformed_count += 1
        return payloads.malformed(self.malformed_count - 1, ts, seq, values, self.sensor_type)


class Reorder:
    """Holds messages of an out-of-order window and lets them go in reverse, group by group."""

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.held_at = 0

    def hold(self, t_ms: int, items: list[bytes], depth: int) -> list[tuple[int, bytes]]:
        self.held += items
        self.held_at = t_ms
        return self.release() if len(self.held) >= depth else []

    def release(self) -> list[tuple[int, bytes]]:
        """What is held, newest first, sent at the time of the newest."""
        out = [(self.held_at, p) for p in reversed(self.held)]
        self.held = []
        return out
