"""Bad inputs and the reason each must be dead-lettered with (shared by unit and integration tests).

Topics are templates: ``{root}``, ``{device}`` (an air-quality device in gangnam), ``{mapo}`` (an
air-quality device in mapo) and ``{uid}`` are filled in per test. ``publisher`` says who can send
it through the broker's ACL: the device itself (``device``) or the gangnam gateway (``gateway``).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from ingest import reasons

DAY_MS = 24 * 3600 * 1000
OWN = "{root}/gangnam/air_quality/{device}/telemetry"


class BadInput(NamedTuple):
    name: str
    topic: str
    payload: bytes
    reason: str
    publisher: str = "device"


def _native(ts: object, seq: object = 1, values: object = None, **extra: object) -> bytes:
    body: dict[str, object] = {"ts": ts, "seq": seq, "values": {"pm25": 12.5} if values is None else values}
    body.update(extra)
    return json.dumps(body).encode()


def _senml(now_ms: int, device: str, records: list[dict[str, object]]) -> bytes:
    head: dict[str, object] = {"bn": f"urn:dev:id:{device}:", "bt": now_ms / 1000, "n": "seq", "v": 7}
    return json.dumps([head, *records]).encode()


def bad_inputs(now_ms: int, device: str, max_payload_bytes: int = 64 * 1024) -> list[BadInput]:
    """At least 30 bad messages from ``device`` (or its gateway), one or more per reason the
    broker lets through."""
    good = {"pm25": 12.5}
    r = reasons
    return [
        # topic and registry
        BadInput(
            "topic: unknown last level",
            "{root}/gangnam/air_quality/{device}/command",
            _native(now_ms),
            r.TOPIC_SHAPE,
            "gateway",
        ),
        BadInput(
            "topic: unknown sensor type",
            "{root}/gangnam/smell/{device}/telemetry",
            _native(now_ms),
            r.UNKNOWN_SENSOR_TYPE,
            "gateway",
        ),
        BadInput(
            "topic: bad device id",
            "{root}/gangnam/air_quality/Bad_ID/telemetry",
            _native(now_ms),
            r.BAD_DEVICE_ID,
            "gateway",
        ),
        BadInput(
            "topic: unregistered device",
            "{root}/gangnam/air_quality/{uid}-ghost/telemetry",
            _native(now_ms),
            r.UNKNOWN_DEVICE,
            "gateway",
        ),
        BadInput(
            "topic: wrong sensor type for the device",
            "{root}/gangnam/noise/{device}/telemetry",
            _native(now_ms, values={"laeq": 50}),
            r.DEVICE_MISMATCH,
            "gateway",
        ),
        BadInput(
            "topic: device of another district",
            "{root}/gangnam/air_quality/{mapo}/telemetry",
            _native(now_ms),
            r.DEVICE_MISMATCH,
            "gateway",
        ),
        BadInput(
            "payload names another device", OWN, _native(now_ms, device_id="someone-else"), r.DEVICE_MISMATCH
        ),
        BadInput(
            "SenML base name of another device",
            OWN,
            _senml(now_ms, device, [{"bn": "urn:dev:id:someone-else:", "n": "pm25", "v": 1}]),
            r.DEVICE_MISMATCH,
        ),
        # bytes and JSON
        BadInput("truncated JSON", OWN, _native(now_ms)[:-7], r.INVALID_JSON),
        BadInput("empty payload", OWN, b"", r.INVALID_JSON),
        BadInput("not JSON", OWN, b"pm25=12.5", r.INVALID_JSON),
        BadInput("trailing bytes", OWN, _native(now_ms) + b" }", r.INVALID_JSON),
        BadInput("invalid UTF-8", OWN, _native(now_ms)[:-1] + b', "note": "\xff\xfe"}', r.INVALID_UTF8),
        BadInput("oversize", OWN, _native(now_ms, note="x" * max_payload_bytes), r.OVERSIZE),
        BadInput("NaN", OWN, _native(now_ms).replace(b"12.5", b"NaN"), r.NOT_FINITE),
        BadInput("Infinity", OWN, _native(now_ms).replace(b"12.5", b"Infinity"), r.NOT_FINITE),
        BadInput("-Infinity", OWN, _native(now_ms).replace(b"12.5", b"-Infinity"), r.NOT_FINITE),
        BadInput("overflowing number", OWN, _native(now_ms).replace(b"12.5", b"1e999"), r.NOT_FINITE),
        # shape and types
        BadInput("a bare number", OWN, b"42", r.SCHEMA),
        BadInput("values is an array", OWN, _native(now_ms, values=[12.5]), r.SCHEMA),
        BadInput("missing seq", OWN, json.dumps({"ts": now_ms, "values": good}).encode(), r.MISSING_FIELD),
        BadInput("missing ts", OWN, json.dumps({"seq": 1, "values": good}).encode(), r.MISSING_FIELD),
        BadInput("missing values", OWN, json.dumps({"ts": now_ms, "seq": 1}).encode(), r.MISSING_FIELD),
        BadInput("value is a string", OWN, _native(now_ms, values={"pm25": "12.5"}), r.BAD_TYPE),
        BadInput("value is a boolean", OWN, _native(now_ms, values={"pm25": True}), r.BAD_TYPE),
        BadInput("value is null", OWN, _native(now_ms, values={"pm25": None}), r.BAD_TYPE),
        BadInput("seq is a float", OWN, _native(now_ms, seq=1.5), r.BAD_TYPE),
        BadInput("seq is a string", OWN, _native(now_ms, seq="1"), r.BAD_TYPE),
        BadInput("ts is a boolean", OWN, _native(True), r.BAD_TYPE),
        BadInput("negative seq", OWN, _native(now_ms, seq=-1), r.SEQ_INVALID),
        BadInput("seq beyond 64 bits", OWN, _native(now_ms, seq=2**64), r.SEQ_INVALID),
        BadInput("ts is prose", OWN, _native("yesterday"), r.BAD_TIMESTAMP),
        BadInput("ts without an offset", OWN, _native("2026-01-01T00:00:00"), r.BAD_TIMESTAMP),
        BadInput("no values", OWN, _native(now_ms, values={}), r.EMPTY_VALUES),
        # the sensor schema
        BadInput("unknown metric", OWN, _native(now_ms, values={"temperature": 20.0}), r.UNKNOWN_METRIC),
        BadInput("out of range (high)", OWN, _native(now_ms, values={"pm25": 5000.0}), r.OUT_OF_RANGE),
        BadInput("out of range (negative)", OWN, _native(now_ms, values={"pm10": -1}), r.OUT_OF_RANGE),
        # time
        BadInput("two days ahead", OWN, _native(now_ms + 2 * DAY_MS), r.TIMESTAMP_FUTURE),
        BadInput("thirty days ago", OWN, _native(now_ms - 30 * DAY_MS), r.TIMESTAMP_PAST),
        BadInput("epoch seconds instead of ms", OWN, _native(now_ms // 1000), r.TIMESTAMP_PAST),
        # SenML
        BadInput(
            "SenML name with a space", OWN, _senml(now_ms, device, [{"n": "pm 25", "v": 1}]), r.SENML_INVALID
        ),
        BadInput(
            "SenML name starting with '-'", OWN, json.dumps([{"n": "-seq", "v": 1}]).encode(), r.SENML_INVALID
        ),
        BadInput(
            "SenML unit of another metric",
            OWN,
            _senml(now_ms, device, [{"n": "pm25", "u": "ppm", "v": 1}]),
            r.BAD_UNIT,
        ),
        BadInput(
            "SenML unknown unit",
            OWN,
            _senml(now_ms, device, [{"n": "pm10", "u": "furlongs", "v": 1}]),
            r.BAD_UNIT,
        ),
        BadInput(
            "SenML must-understand field",
            OWN,
            _senml(now_ms, device, [{"n": "pm25", "v": 1, "foo_": 1}]),
            r.SENML_INVALID,
        ),
        BadInput(
            "SenML records at two times",
            OWN,
            _senml(now_ms, device, [{"n": "pm25", "v": 1, "t": 60}]),
            r.SENML_INVALID,
        ),
        BadInput(
            "SenML without seq",
            OWN,
            json.dumps([{"bt": now_ms / 1000, "n": "pm25", "v": 1}]).encode(),
            r.MISSING_FIELD,
        ),
        BadInput(
            "SenML string value", OWN, _senml(now_ms, device, [{"n": "pm25", "vs": "high"}]), r.BAD_TYPE
        ),
        BadInput("SenML empty pack", OWN, b"[]", r.SENML_INVALID),
        BadInput("SenML record not an object", OWN, b"[1, 2]", r.SENML_INVALID),
        BadInput(
            "SenML future version",
            OWN,
            _senml(now_ms, device, [{"bver": 99, "n": "pm25", "v": 1}]),
            r.SENML_INVALID,
        ),
        BadInput(
            "SenML unknown metric", OWN, _senml(now_ms, device, [{"n": "laeq", "v": 50}]), r.UNKNOWN_METRIC
        ),
        # status
        BadInput(
            "status neither online nor offline",
            "{root}/gangnam/air_quality/{device}/status",
            b"maybe",
            r.BAD_STATUS,
        ),
    ]


def fill(template: str, *, root: str, device: str, mapo: str, uid: str) -> str:
    return template.format(root=root, device=device, mapo=mapo, uid=uid)
