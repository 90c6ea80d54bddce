"""MQTT topic layout: ``{root}/{district}/{sensor_type}/{device_id}/{telemetry|status}``."""

from __future__ import annotations

import re
from typing import NamedTuple

DEVICE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{2,63}")
TELEMETRY = "telemetry"
STATUS = "status"


class TopicAddress(NamedTuple):
    district: str
    sensor_type: str
    device_id: str
    kind: str


def is_device_id(value: str) -> bool:
    return DEVICE_ID_RE.fullmatch(value) is not None


def device_topic(root: str, district: str, sensor_type: str, device_id: str, kind: str) -> str:
    return f"{root}/{district}/{sensor_type}/{device_id}/{kind}"


def split_topic(root: str, topic: str) -> TopicAddress | None:
    """The parts of a device topic, or ``None`` when the topic does not have that shape.

    Only the shape is checked here; whether district, sensor type and device id are known is
    the validator's job.
    """
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != root or parts[4] not in (TELEMETRY, STATUS):
        return None
    return TopicAddress(parts[1], parts[2], parts[3], parts[4])
