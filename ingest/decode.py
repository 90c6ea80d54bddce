"""Payload decoding: native JSON and SenML JSON (RFC 8428) to one :class:`Payload`.

Pure functions, no I/O. A payload that cannot be decoded raises
:class:`~citystream.errors.RejectedMessageError` with a reason code from :mod:`ingest.reasons`.
Whether the metrics, units and ranges fit the device's sensor type is checked later, by
:mod:`ingest.validate`, which knows the device.

Native payload (the MQTT contract)::

    {"ts": 1764000000000, "seq": 42, "values": {"pm25": 23.4, "pm10": 41.0}}

``ts`` is epoch milliseconds (an integer, or a float that is rounded down) or an RFC 3339
string with an offset; ``seq`` a non-negative integer; ``device_id`` may be given and must then
be the topic's device. Other fields are ignored.

SenML profile (RFC 8428 JSON): one pack is one reading. The resolved name of each record is
``[urn:dev:id:]{device_id}:{metric}`` or just ``{metric}`` (``/`` may separate instead of
``:``); a record named ``seq`` carries the sequence number; every record resolves to the same
time; values are numbers (``v``); a unit (``u`` or ``bu``), when given, must be the metric's
unit. Times below 2**28 are relative to the bridge's clock (RFC 8428, section 4.5.3)::

    [{"bn": "urn:dev:id:aq-gangnam-003:", "bt": 1764000000.0, "n": "seq", "v": 42},
     {"n": "pm25", "u": "ug/m3", "v": 23.4}, {"n": "pm10", "u": "ug/m3", "v": 41.0}]
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from citystream.errors import RejectedMessageError
from ingest import reasons

SEQ_LIMIT = 2**63
"""``seq`` must fit a signed 64-bit integer (Kafka consumers in other languages read it)."""

SENML_VERSION = 10
SENML_RELATIVE_LIMIT_S = 2**28
SEQ_NAME = "seq"
_URN_PREFIX = "urn:dev:id:"
_SENML_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
_SENML_STRING_FIELDS = ("bn", "bu", "n", "u", "vs", "vd")
_SENML_NUMBER_FIELDS = ("bt", "bv", "bs", "v", "s", "t", "ut")


class Payload(NamedTuple):
    """A decoded payload, before it is checked against the device's sensor type."""

    ts_ms: int
    seq: int
    values: dict[str, float]
    units: dict[str, str] | None
    """Units per metric (SenML records that carry one); ``None`` for native payloads."""
    device_id: str | None
    """The device the payload itself names, if it names one."""


def reject(reason: str, detail: str) -> RejectedMessageError:
    return RejectedMessageError(reason, detail)


def parse_json(payload: bytes) -> Any:
    """The payload as plain JSON data; rejects invalid UTF-8, malformed JSON and NaN/Infinity."""
    if not payload.isascii():
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise reject(reasons.INVALID_UTF8, f"byte {exc.start}: {exc.reason}") from None
    try:
        return msgspec.json.decode(payload)
    except msgspec.ValidationError as exc:  # only "Number out of range" without a type
        raise reject(reasons.NOT_FINITE, str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        detail = str(exc) if isinstance(exc, msgspec.DecodeError) else "nested too deeply"
        if _has_non_finite_literal(payload):
            raise reject(reasons.NOT_FINITE, "NaN or Infinity is not JSON") from None
        raise reject(reasons.INVALID_JSON, detail) from None


def _has_non_finite_literal(payload: bytes) -> bool:
    """True when the payload is JSON except for ``NaN``/``Infinity`` literals."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decode_payload(payload: bytes, now_ms: int) -> Payload:
    """Decode a native or SenML payload; ``now_ms`` resolves SenML relative times."""
    data = parse_json(payload)
    if isinstance(data, dict):
        return decode_native(data)
    if isinstance(data, list):
        return decode_senml(data, now_ms)
    raise reject(reasons.SCHEMA, f"expected a JSON object or a SenML array, got {_kind(data)}")


# -- native ---------------------------------------------------------------------------------


def decode_native(data: dict[str, Any]) -> Payload:
    try:
        ts_raw = data["ts"]
        seq = data["seq"]
        values = data["values"]
    except KeyError as exc:
        raise reject(reasons.MISSING_FIELD, f"missing field {exc.args[0]!r}") from None
    ts_ms = parse_ts(ts_raw)
    if type(seq) is not int:
        raise reject(reasons.BAD_TYPE, f"seq must be an integer, got {_kind(seq)}")
    if not 0 <= seq < SEQ_LIMIT:
        raise reject(reasons.SEQ_INVALID, f"seq {seq} is not in [0, 2**63)")
    if type(values) is not dict:
        raise reject(reasons.SCHEMA, f"values must be an object, got {_kind(values)}")
    if not values:
        raise reject(reasons.EMPTY_VALUES, "values is empty")
    out: dict[str, float] = {}
    for name, value in values.items():
        kind = type(value)
        if kind is float:
            out[name] = value
        elif kind is int:
            out[name] = float(value)
        else:
            raise reject(reasons.BAD_TYPE, f"value of {name!r} must be a number, got {_kind(value)}")
    device_id = data.get("device_id")
    if device_id is not None and type(device_id) is not str:
        raise reject(reasons.BAD_TYPE, f"device_id must be a string, got {_kind(device_id)}")
    return Payload(ts_ms, seq, out, None, device_id)


def parse_ts(value: Any) -> int:
    """Epoch milliseconds from an integer, a float or an RFC 3339 string with an offset."""
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is float:
        return math.floor(float(value))
    if kind is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise reject(reasons.BAD_TIMESTAMP, f"ts {value[:40]!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise reject(reasons.BAD_TIMESTAMP, f"ts {value[:40]!r} has no UTC offset")
        return math.floor(parsed.timestamp() * 1000)
    raise reject(reasons.BAD_TYPE, f"ts must be epoch ms or an RFC 3339 string, got {_kind(value)}")


# -- SenML ----------------------------------------------------------------------------------


class SenmlRecord(NamedTuple):
    """One resolved SenML record (RFC 8428, section 4.6) that carries a number."""

    position: int
    device_id: str | None
    metric: str
    time_ms: int
    value: float
    unit: str | None


def resolve_senml(pack: list[Any], now_ms: int) -> list[SenmlRecord]:
    """Apply the base fields to every record; records of base fields only are dropped."""
    if not pack:
        raise reject(reasons.SENML_INVALID, "empty SenML pack")
    base_name = ""
    base_time = 0.0
    base_unit: str | None = None
    base_value = 0.0
    resolved: list[SenmlRecord] = []
    for index, record in enumerate(pack):
        if type(record) is not dict:
            raise reject(reasons.SENML_INVALID, f"record {index} is {_kind(record)}, not an object")
        _check_record_fields(record, index)
        base_name = record.get("bn", base_name)
        base_time = record.get("bt", base_time)
        base_unit = record.get("bu", base_unit)
        base_value = record.get("bv", base_value)
        if "v" not in record:
            _check_valueless(record, index, base_name)
            continue
        name = base_name + record.get("n", "")
        if not name or _SENML_NAME_RE.fullmatch(name) is None:
            raise reject(reasons.SENML_INVALID, f"record {index}: bad SenML name {name[:70]!r}")
        device_id, metric = _split_name(name)
        value = base_value + record["v"]
        if not math.isfinite(value):
            raise reject(reasons.NOT_FINITE, f"{metric}: {value}")
        time_ms = _senml_time_ms(base_time + record.get("t", 0.0), now_ms, index)
        resolved.append(SenmlRecord(index, device_id, metric, time_ms, value, record.get("u", base_unit)))
    return resolved


def _check_valueless(record: dict[str, Any], index: int, base_name: str) -> None:
    for other in ("vs", "vb", "vd"):
        if other in record:
            name = base_name + record.get("n", "")
            raise reject(reasons.BAD_TYPE, f"record {name[:70]!r} has a {other}, not a number (v)")
    if "s" in record:
        raise reject(reasons.SENML_INVALID, f"record {index}: sums (s) are not readings")
    if "n" in record:
        raise reject(reasons.SENML_INVALID, f"record {index} has a name but no value")


def _senml_time_ms(when: float, now_ms: int, index: int) -> int:
    if not math.isfinite(when):
        raise reject(reasons.SENML_INVALID, f"record {index}: time {when} is not finite")
    if abs(when) < SENML_RELATIVE_LIMIT_S:
        return now_ms + math.floor(when * 1000)
    return math.floor(when * 1000)


def decode_senml(pack: list[Any], now_ms: int) -> Payload:
    """One reading from a SenML pack (see the module docstring for the profile)."""
    device_id: str | None = None
    seq: int | None = None
    times: set[int] = set()
    values: dict[str, float] = {}
    units: dict[str, str] = {}
    for record in resolve_senml(pack, now_ms):
        if record.device_id is not None:
            if device_id is not None and record.device_id != device_id:
                raise reject(
                    reasons.DEVICE_MISMATCH, f"the pack names {device_id!r} and {record.device_id[:80]!r}"
                )
            device_id = record.device_id
        metric = record.metric
        if metric in values or (metric == SEQ_NAME and seq is not None):
            raise reject(reasons.SENML_INVALID, f"record {record.position}: {metric!r} appears twice")
        times.add(record.time_ms)
        if metric == SEQ_NAME:
            seq = _senml_seq(record.value)
            continue
        values[metric] = float(record.value)
        if record.unit is not None:
            units[metric] = record.unit
    if len(times) > 1:
        raise reject(reasons.SENML_INVALID, "records at different times (one pack is one reading)")
    if seq is None:
        raise reject(reasons.MISSING_FIELD, "the SenML pack has no 'seq' record")
    if not values:
        raise reject(reasons.EMPTY_VALUES, "the SenML pack has no measurement")
    return Payload(times.pop(), seq, values, units, device_id)


def _senml_seq(value: float) -> int:
    if value != math.floor(value) or not 0 <= value < SEQ_LIMIT:
        raise reject(reasons.SEQ_INVALID, f"seq {value} is not a non-negative integer")
    return int(value)


def _check_record_fields(record: dict[str, Any], index: int) -> None:
    for key in record:
        if key.endswith("_"):
            raise reject(reasons.SENML_INVALID, f"record {index}: must-understand field {key!r}")
    for key in _SENML_STRING_FIELDS:
        if key in record and type(record[key]) is not str:
            raise reject(reasons.SENML_INVALID, f"record {index}: {key} must be a string")
    for key in _SENML_NUMBER_FIELDS:
        if key in record and type(record[key]) not in (int, float):
            if key == "v":
                raise reject(reasons.BAD_TYPE, f"record {index}: v must be a number")
            raise reject(reasons.SENML_INVALID, f"record {index}: {key} must be a number")
    if "vb" in record and type(record["vb"]) is not bool:
        raise reject(reasons.SENML_INVALID, f"record {index}: vb must be a boolean")
    if "bver" in record:
        version = record["bver"]
        if type(version) is not int or not 1 <= version <= SENML_VERSION:
            raise reject(reasons.SENML_INVALID, f"record {index}: unsupported bver {version!r}")


def _split_name(name: str) -> tuple[str | None, str]:
    """``(device, metric)`` from a resolved SenML name; ``device`` is ``None`` when unnamed."""
    cut = max(name.rfind(":"), name.rfind("/"))
    if cut < 0:
        return None, name
    metric = name[cut + 1 :]
    if not metric:
        raise reject(reasons.SENML_INVALID, f"name {name[:70]!r} has no measurement after its prefix")
    prefix = name[:cut].removeprefix(_URN_PREFIX).rstrip(":/")
    return (prefix or None), metric


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
