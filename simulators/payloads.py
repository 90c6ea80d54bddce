"""Telemetry payloads: the native JSON of the MQTT contract, and deliberately broken ones."""

from __future__ import annotations

import msgspec

from citystream import codec
from citystream.sensors import SENSOR_TYPES


class Telemetry(msgspec.Struct):
    """``{"ts": <epoch ms>, "seq": n, "values": {...}}``"""

    ts: int
    seq: int
    values: dict[str, float]


def telemetry(ts: int, seq: int, values: dict[str, float]) -> bytes:
    return codec.encode(Telemetry(ts, seq, values))


MALFORMED_VARIANTS = ("truncated", "nan", "unknown_metric", "out_of_range", "wrong_type", "not_utf8")
"""Broken payloads in the order a malformed incident sends them (then again from the first)."""


def malformed(variant: int, ts: int, seq: int, values: dict[str, float], sensor_type: str) -> bytes:
    """A deliberately broken payload; ingest must send it to the dead-letter topic."""
    name = MALFORMED_VARIANTS[variant % len(MALFORMED_VARIANTS)]
    metric = SENSOR_TYPES[sensor_type].metrics[0]
    good = telemetry(ts, seq, values)
    if name == "truncated":
        return good[: len(good) // 2]
    if name == "nan":
        return b'{"ts":%d,"seq":%d,"values":{"%s":NaN}}' % (ts, seq, metric.name.encode())
    if name == "unknown_metric":
        return telemetry(ts, seq, {"radiation_usv": 0.12})
    if name == "out_of_range":
        return telemetry(ts, seq, {**values, metric.name: metric.high * 10 + 1})
    if name == "wrong_type":
        return codec.encode({"ts": ts, "seq": seq, "values": {**values, metric.name: "high"}})
    return b"\xff\xfe" + good[1:]
