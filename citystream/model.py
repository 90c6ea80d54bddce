"""The message model every stage speaks.

Foreign types (paho messages, Kafka records, Faust events, CSV rows) are converted to these
at the edge, once. Times are integer epoch milliseconds, UTC.
"""

from __future__ import annotations

import enum

import msgspec


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """One device measurement, as the bridge writes it to ``telemetry.raw``."""

    device_id: str
    district: str
    sensor_type: str
    ts: int
    """Device timestamp."""
    seq: int
    values: dict[str, float]
    received_ms: int
    """When the bridge received it from MQTT."""
    skew_ms: int = 0
    """Device clock minus bridge clock at receive time (flagged when beyond the bound)."""
    flags: tuple[str, ...] = ()


class Aggregate(msgspec.Struct, frozen=True, kw_only=True):
    """A 1-minute tumbling-window summary of one metric in one district and sensor type."""

    district: str
    sensor_type: str
    metric: str
    window_start: int
    window_end: int
    count: int
    mean: float
    min: float
    max: float
    p95: float
    emitted_ms: int


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class AlertEventKind(enum.StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class Offset(msgspec.Struct, frozen=True, array_like=True):
    partition: int
    offset: int


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """Current state of one alert; one open alert per (rule, subject)."""

    key: str
    rule: str
    subject: str
    severity: Severity
    state: AlertState
    detector: str
    detector_version: str
    district: str
    sensor_type: str
    metric: str
    device_id: str | None
    value: float
    threshold: float | None
    score: float
    reason: str
    raised_ms: int
    updated_ms: int
    cleared_ms: int | None = None
    acknowledged_by: str | None = None
    silenced: bool = False
    offsets: tuple[Offset, ...] = ()


class AlertEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One step of an alert's lifecycle, as consumers receive it on ``alerts.events``."""

    event_id: str
    kind: AlertEventKind
    ts_ms: int
    alert: Alert


class AlertCommandKind(enum.StrEnum):
    ACKNOWLEDGE = "acknowledge"
    SILENCE = "silence"
    UNSILENCE = "unsilence"


class AlertCommand(msgspec.Struct, frozen=True, kw_only=True):
    """An operator's command on ``alerts.commands``.

    ``alert_key`` targets one alert; a silence may instead match by rule, district and device
    until ``until_ms`` (a maintenance window is a silence with a start time).
    """

    command_id: str
    kind: AlertCommandKind
    issued_ms: int
    by: str
    alert_key: str | None = None
    rule: str | None = None
    district: str | None = None
    device_id: str | None = None
    starts_ms: int | None = None
    until_ms: int | None = None
    note: str = ""


class QualityScore(msgspec.Struct, frozen=True, kw_only=True):
    """Data quality of one device over one minute; each part and the score are in [0, 1]."""

    device_id: str
    district: str
    sensor_type: str
    window_start: int
    completeness: float
    timeliness: float
    plausibility: float
    flatline: float
    noise: float
    score: float


class DlqRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A rejected input with the reason code, kept so nothing is silently dropped."""

    reason: str
    detail: str
    stage: str
    source: str
    """The MQTT topic, or ``topic/partition/offset`` for a Kafka record."""
    payload: bytes
    received_ms: int
    device_id: str | None = None


class DeviceKind(enum.StrEnum):
    DEVICE = "device"
    GATEWAY = "gateway"


class DeviceEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A device registry entry (the compacted ``devices`` topic, keyed by device_id).

    Only the password hash is stored (Mosquitto's PBKDF2-SHA512 format), never the password.
    A gateway entry may publish for every device of its district.
    """

    device_id: str
    district: str
    sensor_type: str
    password_hash: str
    kind: DeviceKind = DeviceKind.DEVICE
    revoked: bool = False
    lat: float | None = None
    lon: float | None = None
    interval_s: float | None = None
    created_ms: int = 0
    updated_ms: int = 0


class DeviceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Online state of a device, from its retained status message or last will."""

    device_id: str
    district: str
    sensor_type: str
    online: bool
    ts_ms: int
