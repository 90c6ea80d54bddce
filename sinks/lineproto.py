"""The one function that turns a model object into an InfluxDB line (``line``).

The schema is fixed in ``docs/contracts.md``: measurements ``reading`` and ``status`` go to the
raw bucket, ``agg_1m``, ``alert`` and ``quality`` to the aggregate bucket. Times are epoch
milliseconds (write with millisecond precision). Tags and fields are sorted by key and escaped
exactly as ``influxdb_client``'s ``Point.to_line_protocol`` does, so both encoders produce the
same bytes; non-finite floats are left out (line protocol cannot carry them) and ``None``
values and empty tags are omitted.

Tag sets repeat for every point of a series, so their encoded form is cached (bounded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from citystream.errors import RejectedMessageError
from citystream.model import (
    Aggregate,
    AlertEvent,
    AlertState,
    DeviceStatus,
    QualityScore,
    Reading,
)

READING: Final = "reading"
STATUS: Final = "status"
AGG_1M: Final = "agg_1m"
AGG_1H: Final = "agg_1h"
ALERT: Final = "alert"
QUALITY: Final = "quality"

RAW_MEASUREMENTS: Final = frozenset({READING, STATUS})
"""Measurements of the raw bucket; every other one goes to the aggregate bucket."""

READING_FIELDS: Final = frozenset({"seq", "bridge_latency_ms", "skew_ms"})
"""Fields every reading has besides its metric values (so no metric may use these names)."""

Model = Reading | Aggregate | AlertEvent | QualityScore | DeviceStatus
FieldValue = float | int | bool | str | None

_ESCAPE_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY: Final = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)
_ESCAPE_STRING: Final = str.maketrans({'"': r"\"", "\\": r"\\"})
_NEEDS_ESCAPE: Final = frozenset(",= \n\t\r")
_CACHE_LIMIT: Final = 100_000
_encode_floats: Final = msgspec.json.Encoder().encode


class LineProtocolError(RejectedMessageError):
    """A record that has no valid line (reason code ``line_protocol``)."""

    def __init__(self, detail: str) -> None:
        super().__init__("line_protocol", detail)


def line(obj: Model) -> str:
    """The InfluxDB line for one model object (millisecond timestamp).

    Raises :class:`LineProtocolError` when the object cannot be written (no field left, a
    metric that clashes with a reading's own fields, or an unsupported type).
    """
    encoder = _ENCODERS.get(type(obj))
    if encoder is None:
        raise LineProtocolError(f"no InfluxDB measurement for {type(obj).__name__}")
    return encoder(obj)


def line_encoder(model: type[Model]) -> Callable[[Any], str]:
    """What :func:`line` calls for objects of ``model`` (to skip the dispatch in a hot loop)."""
    encoder = _ENCODERS.get(model)
    if encoder is None:
        raise LineProtocolError(f"no InfluxDB measurement for {model.__name__}")
    return encoder


def measurement_of(obj: Model) -> str:
    """The measurement ``line(obj)`` writes (to choose the bucket without parsing)."""
    return _MEASUREMENTS[type(obj)]


def format_point(
    measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue], time_ms: int
) -> str:
    """A line from plain parts, sorted and escaped like ``Point.to_line_protocol``."""
    body = _fields(fields.items())
    if not body:
        raise LineProtocolError(f"{measurement} point without fields")
    return f"{_escape_measurement(measurement)}{_tags(tags)} {body} {time_ms}"


# -- escaping ------------------------------------------------------------------------------


def _escape_measurement(name: str) -> str:
    return name.translate(_ESCAPE_MEASUREMENT)


def _escape_key(key: str) -> str:
    if _NEEDS_ESCAPE.isdisjoint(key):
        return key
    return key.translate(_ESCAPE_KEY)


def _escape_tag_value(value: str) -> str:
    escaped = _escape_key(value)
    # A trailing backslash would escape the separator after it.
    return escaped + " " if escaped.endswith("\\") else escaped


def _format_float(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _first(item: tuple[str, object]) -> str:
    return item[0]


def _tags(tags: Mapping[str, str | None]) -> str:
    parts = []
    for key, value in sorted(tags.items()):
        if value is None:
            continue
        k = _escape_key(key)
        v = _escape_tag_value(value)
        if k and v:
            parts.append(f"{k}={v}")
    return "," + ",".join(parts) if parts else ""


def _fields(items: Iterable[tuple[str, FieldValue]]) -> str:
    parts = []
    for key, value in sorted(items, key=_first):
        if value is None:
            continue
        k = _escape_key(key)
        if isinstance(value, bool):
            parts.append(f"{k}={'true' if value else 'false'}")
        elif isinstance(value, int):
            parts.append(f"{k}={value}i")
        elif isinstance(value, float):
            if math.isfinite(value):
                parts.append(f"{k}={_format_float(value)}")
        elif isinstance(value, str):
            parts.append(f'{k}="{value.translate(_ESCAPE_STRING)}"')
        else:
            raise LineProtocolError(f"field {key!r} has unsupported type {type(value).__name__}")
    return ",".join(parts)


# -- cached tag sets and field templates -------------------------------------------------------

Heads = dict[tuple[str | None, ...], str]


def _head(cache: Heads, measurement: str, keys: tuple[str, ...], values: tuple[str | None, ...]) -> str:
    """``measurement,tags`` of a series, from ``cache`` (keyed by the tag values)."""
    head = cache.get(values)
    if head is None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        head = cache[values] = _escape_measurement(measurement) + _tags(dict(zip(keys, values, strict=True)))
    return head


_SERIES_KEYS: Final = ("device_id", "district", "sensor_type")
_AGG_KEYS: Final = ("district", "metric", "sensor_type")
_ALERT_KEYS: Final = (
    "alert_key",
    "device_id",
    "district",
    "event",
    "metric",
    "rule",
    "sensor_type",
    "severity",
    "state",
)
_reading_heads: Heads = {}
_status_heads: Heads = {}
_agg_heads: Heads = {}
_alert_heads: Heads = {}
_quality_heads: Heads = {}

_reading_templates: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}


def _reading_template(metrics: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """A ``str.format`` template for a reading with these metric names, and their sorted order.

    Arguments: 0 head, 1 time, 2 bridge latency, 3 seq, 4 skew, then the formatted metric
    values in the returned order.
    """
    if not READING_FIELDS.isdisjoint(metrics):
        clash = sorted(READING_FIELDS.intersection(metrics))
        raise LineProtocolError(f"metric names {clash} clash with the reading's own fields")
    order = tuple(sorted(metrics))
    slots = {"bridge_latency_ms": "{2}i", "seq": "{3}i", "skew_ms": "{4}i"}
    slots.update({m: f"{{{5 + i}}}" for i, m in enumerate(order)})
    body = ",".join(
        f"{_escape_key(k).replace('{', '{{').replace('}', '}}')}={slot}" for k, slot in sorted(slots.items())
    )
    template = (f"{{0}} {body} {{1}}", order)
    if len(_reading_templates) >= 1000:
        _reading_templates.clear()
    _reading_templates[metrics] = template
    return template


# -- one encoder per model type --------------------------------------------------------------


def _reading(r: Reading) -> str:
    values = r.values
    keys = tuple(values)
    template = _reading_templates.get(keys) or _reading_template(keys)
    head = _reading_heads.get((r.device_id, r.district, r.sensor_type)) or _head(
        _reading_heads, READING, _SERIES_KEYS, (r.device_id, r.district, r.sensor_type)
    )
    fmt, order = template
    # msgspec formats all the floats in one C call. It writes the shortest round-trip digits
    # like repr() but never an exponent below 1e16; "e", "0.0000" (1e-5 <= |v| < 1e-4) or
    # "null" (not finite) take the exact path instead, so the output stays Point's.
    raw = _encode_floats(list(map(values.__getitem__, order)))
    if b"e" in raw or b"n" in raw or b"0.0000" in raw:
        return _reading_exact(r, head)
    nums = (raw[1:-1] + b",").replace(b".0,", b",").decode().split(",")
    return fmt.format(head, r.ts, r.received_ms - r.ts, r.seq, r.skew_ms, *nums)


def _reading_exact(r: Reading, head: str) -> str:
    items: list[tuple[str, FieldValue]] = [
        ("seq", r.seq),
        ("bridge_latency_ms", r.received_ms - r.ts),
        ("skew_ms", r.skew_ms),
        *r.values.items(),
    ]
    return f"{head} {_fields(items)} {r.ts}"


def _status(s: DeviceStatus) -> str:
    head = _head(_status_heads, STATUS, _SERIES_KEYS, (s.device_id, s.district, s.sensor_type))
    return f"{head} online={int(s.online)}i {s.ts_ms}"


def _aggregate(a: Aggregate) -> str:
    head = _head(_agg_heads, AGG_1M, _AGG_KEYS, (a.district, a.metric, a.sensor_type))
    body = _fields((("count", a.count), ("mean", a.mean), ("min", a.min), ("max", a.max), ("p95", a.p95)))
    if not body:
        raise LineProtocolError("aggregate without fields")
    return f"{head} {body} {a.window_start}"


def _alert_event(e: AlertEvent) -> str:
    a = e.alert
    tags = (
        a.key,
        a.device_id,
        a.district,
        str(e.kind),
        a.metric,
        a.rule,
        a.sensor_type,
        str(a.severity),
        str(a.state),
    )
    head = _head(_alert_heads, ALERT, _ALERT_KEYS, tags)
    body = _fields(
        (
            ("value", a.value),
            ("threshold", a.threshold),
            ("score", a.score),
            ("silenced", int(a.silenced)),
            ("open", int(a.state != AlertState.CLEARED)),
        )
    )
    return f"{head} {body} {e.ts_ms}"


def _quality(q: QualityScore) -> str:
    head = _head(_quality_heads, QUALITY, _SERIES_KEYS, (q.device_id, q.district, q.sensor_type))
    body = _fields(
        (
            ("completeness", q.completeness),
            ("timeliness", q.timeliness),
            ("plausibility", q.plausibility),
            ("flatline", q.flatline),
            ("noise", q.noise),
            ("score", q.score),
        )
    )
    if not body:
        raise LineProtocolError("quality score without finite fields")
    return f"{head} {body} {q.window_start}"


_ENCODERS: Final[dict[type[Any], Callable[[Any], str]]] = {
    Reading: _reading,
    DeviceStatus: _status,
    Aggregate: _aggregate,
    AlertEvent: _alert_event,
    QualityScore: _quality,
}
_MEASUREMENTS: Final[dict[type[Any], str]] = {
    Reading: READING,
    DeviceStatus: STATUS,
    Aggregate: AGG_1M,
    AlertEvent: ALERT,
    QualityScore: QUALITY,
}
