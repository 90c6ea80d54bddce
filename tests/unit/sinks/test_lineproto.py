"""The line-protocol encoder gives the same bytes as influxdb-client's Point for every model."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from citystream.model import (
    Aggregate,
    Alert,
    AlertEvent,
    AlertEventKind,
    AlertState,
    DeviceStatus,
    QualityScore,
    Reading,
    Severity,
)
from sinks.lineproto import READING_FIELDS, LineProtocolError, format_point, line, measurement_of

FieldValue = float | int | bool | str | None


def point(measurement: str, tags: dict[str, str | None], fields: dict[str, FieldValue], time_ms: int) -> str:
    p = Point(measurement)
    for key, tag in tags.items():
        if tag is not None:
            p.tag(key, tag)
    for key, value in fields.items():
        p.field(key, value)
    text: str = p.time(time_ms, WritePrecision.MS).to_line_protocol()
    return text


def reading(**kw: object) -> Reading:
    base: dict[str, object] = {
        "device_id": "aq-gangnam-001",
        "district": "gangnam",
        "sensor_type": "air_quality",
        "ts": 1_764_000_000_000,
        "seq": 42,
        "values": {"pm25": 23.4, "pm10": 41.0, "no2": 0.031},
        "received_ms": 1_764_000_000_017,
        "skew_ms": -5,
    }
    return Reading(**{**base, **kw})  # type: ignore[arg-type]  # test data


def reading_point(r: Reading) -> str:
    return point(
        "reading",
        {"device_id": r.device_id, "district": r.district, "sensor_type": r.sensor_type},
        {**r.values, "seq": r.seq, "bridge_latency_ms": r.received_ms - r.ts, "skew_ms": r.skew_ms},
        r.ts,
    )


def alert(device: bool = True, state: AlertState = AlertState.OPEN) -> Alert:
    return Alert(
        key="threshold:pm25:aq-mapo-003" if device else "threshold:pm25:mapo/air_quality",
        rule="threshold",
        subject="aq-mapo-003" if device else "mapo/air_quality",
        severity=Severity.CRITICAL,
        state=state,
        detector="threshold",
        detector_version="2",
        district="mapo",
        sensor_type="air_quality",
        metric="pm25",
        device_id="aq-mapo-003" if device else None,
        value=88.5,
        threshold=75.0 if device else None,
        score=1.5,
        reason="above the limit",
        raised_ms=1,
        updated_ms=2,
        silenced=not device,
    )


def test_reading_matches_point() -> None:
    r = reading()
    assert line(r) == reading_point(r)
    assert line(r) == (
        "reading,device_id=aq-gangnam-001,district=gangnam,sensor_type=air_quality "
        "bridge_latency_ms=17i,no2=0.031,pm10=41,pm25=23.4,seq=42i,skew_ms=-5i 1764000000000"
    )


def test_reading_with_a_non_finite_value_leaves_it_out_like_point() -> None:
    r = reading(values={"pm25": math.inf, "pm10": 3.5, "o3": math.nan})
    assert line(r) == reading_point(r)
    assert "pm25" not in line(r)
    assert "o3" not in line(r)


def test_reading_tags_and_metrics_that_need_escaping() -> None:
    r = reading(device_id="a b,c=d", district="x\\", values={"p m,2=5": 1.5, "{x}": 2.0})
    assert line(r) == reading_point(r)


@pytest.mark.parametrize("name", sorted(READING_FIELDS))
def test_metric_named_like_a_reading_field_is_refused(name: str) -> None:
    with pytest.raises(LineProtocolError) as err:
        line(reading(values={name: 1.0}))
    assert err.value.reason == "line_protocol"


def test_status_aggregate_alert_quality_match_point() -> None:
    status = DeviceStatus(
        device_id="aq-mapo-003", district="mapo", sensor_type="air_quality", online=False, ts_ms=7
    )
    assert line(status) == point(
        "status",
        {"device_id": "aq-mapo-003", "district": "mapo", "sensor_type": "air_quality"},
        {"online": 0},
        7,
    )
    agg = Aggregate(
        district="mapo", sensor_type="noise", metric="laeq", window_start=60_000, window_end=120_000,
        count=30, mean=55.25, min=40.0, max=71.5, p95=69.0, emitted_ms=121_000,
    )  # fmt: skip
    assert line(agg) == point(
        "agg_1m",
        {"district": "mapo", "sensor_type": "noise", "metric": "laeq"},
        {"count": 30, "mean": 55.25, "min": 40.0, "max": 71.5, "p95": 69.0},
        60_000,
    )
    for a, kind in (
        (alert(), AlertEventKind.RAISED),
        (alert(False, AlertState.CLEARED), AlertEventKind.CLEARED),
    ):
        event = AlertEvent(event_id="e", kind=kind, ts_ms=99, alert=a)
        assert line(event) == point(
            "alert",
            {
                "rule": a.rule,
                "severity": str(a.severity),
                "district": a.district,
                "sensor_type": a.sensor_type,
                "metric": a.metric,
                "device_id": a.device_id,
                "alert_key": a.key,
                "event": str(kind),
                "state": str(a.state),
            },
            {
                "value": a.value,
                "threshold": a.threshold,
                "score": a.score,
                "silenced": int(a.silenced),
                "open": int(a.state != AlertState.CLEARED),
            },
            99,
        )
    assert "device_id" not in line(
        AlertEvent(event_id="e", kind=AlertEventKind.CLEARED, ts_ms=1, alert=alert(False))
    )
    q = QualityScore(
        device_id="aq-mapo-003", district="mapo", sensor_type="air_quality", window_start=60_000,
        completeness=1.0, timeliness=0.5, plausibility=0.75, flatline=1.0, noise=0.25, score=0.7,
    )  # fmt: skip
    assert line(q) == point(
        "quality",
        {"device_id": q.device_id, "district": q.district, "sensor_type": q.sensor_type},
        {
            "completeness": 1.0,
            "timeliness": 0.5,
            "plausibility": 0.75,
            "flatline": 1.0,
            "noise": 0.25,
            "score": 0.7,
        },
        60_000,
    )


def test_measurements() -> None:
    assert measurement_of(reading()) == "reading"
    assert (
        measurement_of(AlertEvent(event_id="e", kind=AlertEventKind.RAISED, ts_ms=1, alert=alert()))
        == "alert"
    )


def test_unknown_type_is_refused() -> None:
    with pytest.raises(LineProtocolError):
        line(alert())  # type: ignore[arg-type]  # an Alert has no measurement, its events do


def test_point_without_fields_is_refused() -> None:
    with pytest.raises(LineProtocolError):
        format_point("m", {"a": "b"}, {"x": math.nan, "y": None}, 1)


# -- escaping, checked against Point on generated input ----------------------------------------

texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
tag_values = texts | st.none()
field_values = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | texts
    | st.none()
)


@given(
    measurement=texts.filter(lambda m: not m.startswith("#")),
    tags=st.dictionaries(texts, tag_values, max_size=5),
    fields=st.dictionaries(texts, field_values, min_size=1, max_size=6),
    time_ms=st.integers(min_value=0, max_value=2**53),
)
def test_format_point_escapes_like_point(
    measurement: str, tags: dict[str, str | None], fields: dict[str, FieldValue], time_ms: int
) -> None:
    expected = point(measurement, tags, fields, time_ms)
    if not expected:  # Point gives nothing when no field is left
        with pytest.raises(LineProtocolError):
            format_point(measurement, tags, fields, time_ms)
    else:
        assert format_point(measurement, tags, fields, time_ms) == expected


@given(
    device=texts,
    district=texts,
    values=st.dictionaries(
        texts.filter(lambda k: k not in READING_FIELDS),
        st.floats(allow_nan=True, allow_infinity=True),
        max_size=6,
    ),
    ts=st.integers(min_value=0, max_value=2**53),
    seq=st.integers(min_value=0, max_value=2**62),
)
def test_reading_escapes_like_point(
    device: str, district: str, values: dict[str, float], ts: int, seq: int
) -> None:
    r = reading(device_id=device, district=district, values=values, ts=ts, seq=seq, received_ms=ts + 3)
    assert line(r) == reading_point(r)


@pytest.mark.parametrize(
    "value",
    [1e-5, 5.5e-5, -9.99e-5, 1e-4, 0.00012, 1e15, 1e16, 1.5e16, 0.0, -0.0, 100.0, 1e-300, 5e-324, 1.7e308],
)
def test_reading_float_formats_at_the_edges_match_point(value: float) -> None:
    r = reading(values={"a": value, "b": 2.0, "c": 0.5})
    assert line(r) == reading_point(r)


def test_reading_without_metrics_matches_point() -> None:
    r = reading(values={})
    assert line(r) == reading_point(r)
