"""Validation of one MQTT message against the topic layout, the registry and the sensor schema.

Pure: the registry is a mapping the caller keeps current (:class:`ingest.registry.RegistryFollower`)
and the clock is passed in. Every rejection raises :class:`~citystream.errors.RejectedMessageError`
with a code from :mod:`ingest.reasons`.

Who may publish for a device is the broker's decision (per-device credentials and ACL; a
gateway may publish for any device of its district). The bridge cannot see the MQTT user name
of the publisher (Mosquitto does not forward it), so it checks what it can see: the topic names
a registered, non-revoked device with that district and sensor type, and the payload, when it
names a device, names the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from citystream.addressing import STATUS, TELEMETRY, is_device_id, split_topic
from citystream.errors import RejectedMessageError
from citystream.geo import is_district
from citystream.model import DeviceEntry, DeviceKind, DeviceStatus, Reading
from citystream.sensors import SENSOR_TYPES, Metric
from citystream.settings import Settings
from ingest import reasons
from ingest.decode import decode_payload, reject

GATEWAY_SENSOR_TYPE = "any"
"""The sensor type segment of a gateway's own status topic."""

_SCHEMAS: dict[str, dict[str, Metric]] = {
    name: {m.name: m for m in sensor.metrics} for name, sensor in SENSOR_TYPES.items()
}
_ONLINE = {b"online": True, b"offline": False}


class Route(NamedTuple):
    """What a valid topic resolves to (cached per topic until the registry changes)."""

    kind: str
    device_id: str
    district: str
    sensor_type: str
    key: bytes
    """The Kafka key: the device id."""
    schema: Mapping[str, Metric]


def device_hint(root: str, topic: str) -> str | None:
    """The device id in a topic's fourth level, if the topic is under the root and it is one."""
    parts = topic.split("/", 4)
    if len(parts) < 4 or parts[0] != root or not is_device_id(parts[3]):
        return None
    return parts[3]


class Validator:
    """Turns (topic, payload) into a Reading or a DeviceStatus, or rejects it with a reason."""

    def __init__(self, settings: Settings, devices: Mapping[str, DeviceEntry]) -> None:
        ingest = settings.ingest
        self.root = settings.mqtt.topic_root
        self.devices = devices
        self.max_payload_bytes = ingest.max_payload_bytes
        self.skew_ms = int(ingest.max_clock_skew_s * 1000)
        self.future_ms = int(ingest.max_future_s * 1000)
        self.past_ms = int(ingest.max_age_s * 1000)
        self._routes: dict[str, Route] = {}

    def invalidate(self) -> None:
        """Forget cached routes (after any registry change)."""
        self._routes.clear()

    def route(self, topic: str) -> Route:
        route = self._routes.get(topic)
        if route is None:
            route = self._routes[topic] = self._resolve(topic)
        return route

    def _resolve(self, topic: str) -> Route:
        address = split_topic(self.root, topic)
        if address is None:
            raise reject(
                reasons.TOPIC_SHAPE,
                f"{topic[:200]!r} is not {self.root}/{{district}}/{{sensor_type}}/{{device_id}}/"
                f"{{{TELEMETRY}|{STATUS}}}",
            )
        district, sensor_type, device_id, kind = address
        if not is_district(district):
            raise reject(reasons.UNKNOWN_DISTRICT, f"unknown district {district[:64]!r}")
        if not is_device_id(device_id):
            raise reject(reasons.BAD_DEVICE_ID, f"{device_id[:80]!r} is not a device id")
        entry = self.devices.get(device_id)
        gateway_status = (
            kind == STATUS
            and sensor_type == GATEWAY_SENSOR_TYPE
            and entry is not None
            and entry.kind is DeviceKind.GATEWAY
        )
        if sensor_type not in _SCHEMAS and not gateway_status:
            raise reject(reasons.UNKNOWN_SENSOR_TYPE, f"unknown sensor type {sensor_type[:64]!r}")
        if entry is None:
            raise reject(reasons.UNKNOWN_DEVICE, f"{device_id} is not in the device registry")
        if entry.revoked:
            raise reject(reasons.DEVICE_REVOKED, f"{device_id} was revoked")
        if entry.district != district:
            raise reject(
                reasons.DEVICE_MISMATCH, f"{device_id} is registered in {entry.district}, not {district}"
            )
        if entry.kind is DeviceKind.GATEWAY and not gateway_status:
            raise reject(reasons.DEVICE_MISMATCH, f"{device_id} is a gateway; it publishes for devices")
        if entry.kind is DeviceKind.DEVICE and entry.sensor_type != sensor_type:
            raise reject(
                reasons.DEVICE_MISMATCH,
                f"{device_id} is registered as {entry.sensor_type}, not {sensor_type}",
            )
        return Route(
            kind, device_id, district, sensor_type, device_id.encode(), _SCHEMAS.get(sensor_type, {})
        )

    def check_size(self, payload: bytes) -> None:
        if len(payload) > self.max_payload_bytes:
            raise reject(
                reasons.OVERSIZE, f"{len(payload)} bytes, the limit is {self.max_payload_bytes} bytes"
            )

    def reading(self, route: Route, payload: bytes, received_ms: int) -> Reading:
        """A telemetry payload as a Reading (raises ``RejectedMessageError``)."""
        self.check_size(payload)
        decoded = decode_payload(payload, received_ms)
        if decoded.device_id is not None and decoded.device_id != route.device_id:
            raise reject(
                reasons.DEVICE_MISMATCH,
                f"the payload names {decoded.device_id[:80]!r}, the topic {route.device_id!r}",
            )
        schema = route.schema
        units = decoded.units
        for name, value in decoded.values.items():
            metric = schema.get(name)
            if metric is None:
                raise reject(
                    reasons.UNKNOWN_METRIC,
                    f"{name[:64]!r} is not a {route.sensor_type} metric ({', '.join(schema)})",
                )
            if not metric.low <= value <= metric.high:
                raise reject(
                    reasons.OUT_OF_RANGE, f"{name} = {value} is outside [{metric.low}, {metric.high}]"
                )
            if units is not None:
                unit = units.get(name)
                if unit is not None and unit != metric.unit:
                    raise reject(reasons.BAD_UNIT, f"{name} is in {metric.unit}, not {unit[:32]!r}")
        skew = decoded.ts_ms - received_ms
        if skew > self.future_ms:
            raise reject(reasons.TIMESTAMP_FUTURE, f"device time is {skew / 1000:.0f} s ahead")
        if -skew > self.past_ms:
            raise reject(reasons.TIMESTAMP_PAST, f"device time is {-skew / 1000:.0f} s behind")
        flags = (reasons.CLOCK_SKEW_FLAG,) if abs(skew) > self.skew_ms else ()
        return Reading(
            device_id=route.device_id,
            district=route.district,
            sensor_type=route.sensor_type,
            ts=decoded.ts_ms,
            seq=decoded.seq,
            values=decoded.values,
            received_ms=received_ms,
            skew_ms=skew,
            flags=flags,
        )

    def status(self, route: Route, payload: bytes, received_ms: int) -> DeviceStatus:
        """A status payload (``online`` / ``offline``) as a DeviceStatus."""
        online = _ONLINE.get(payload.strip().lower()) if len(payload) <= 64 else None
        if online is None:
            raise reject(reasons.BAD_STATUS, f"status must be 'online' or 'offline', got {payload[:64]!r}")
        return DeviceStatus(
            device_id=route.device_id,
            district=route.district,
            sensor_type=route.sensor_type,
            online=online,
            ts_ms=received_ms,
        )


__all__ = ["RejectedMessageError", "Route", "Validator", "device_hint"]
