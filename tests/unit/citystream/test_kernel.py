from __future__ import annotations

import math

import msgspec
import pytest

from citystream import codec
from citystream.addressing import device_topic, is_device_id, split_topic
from citystream.geo import DISTRICTS, is_district
from citystream.model import (
    Alert,
    AlertEvent,
    AlertEventKind,
    AlertState,
    DlqRecord,
    Offset,
    Reading,
    Severity,
)
from citystream.sensors import SENSOR_TYPES
from citystream.settings import KafkaSettings, Settings
from citystream.topics import ALERTS, DEVICES, TELEMETRY_RAW, topic_name, topic_specs


def test_reading_round_trips_through_the_codec() -> None:
    r = Reading(
        device_id="aq-gangnam-001",
        district="gangnam",
        sensor_type="air_quality",
        ts=1_764_000_000_000,
        seq=7,
        values={"pm25": 23.4, "pm10": 41.0},
        received_ms=1_764_000_000_020,
        flags=("clock_skew",),
    )
    data = codec.encode(r)
    assert codec.decode(data, Reading) == r
    assert b'"device_id":"aq-gangnam-001"' in data


def test_alert_event_round_trips_with_enums_and_offsets() -> None:
    alert = Alert(
        key="threshold:pm25:gangnam/air_quality",
        rule="threshold",
        subject="gangnam/air_quality",
        severity=Severity.CRITICAL,
        state=AlertState.OPEN,
        detector="threshold",
        detector_version="1",
        district="gangnam",
        sensor_type="air_quality",
        metric="pm25",
        device_id=None,
        value=80.0,
        threshold=75.0,
        score=1.0,
        reason="PM2.5 very bad",
        raised_ms=1,
        updated_ms=2,
        offsets=(Offset(0, 10), Offset(3, 99)),
    )
    event = AlertEvent(event_id="e1", kind=AlertEventKind.RAISED, ts_ms=2, alert=alert)
    data = codec.encode(event)
    assert b'"offsets":[[0,10],[3,99]]' in data
    assert codec.decode(data, AlertEvent) == event


def test_codec_rejects_wrong_types() -> None:
    with pytest.raises(msgspec.ValidationError):
        codec.decode(b'{"device_id": 1}', Reading)
    with pytest.raises(msgspec.DecodeError):
        codec.decode(b'{"device_id": ', Reading)


def test_dlq_record_keeps_raw_bytes() -> None:
    raw = b"\xff\xfe not utf-8"
    rec = DlqRecord(
        reason="invalid_utf8", detail="x", stage="ingest", source="city/a", payload=raw, received_ms=1
    )
    assert codec.decode(codec.encode(rec), DlqRecord).payload == raw


def test_topic_addressing() -> None:
    topic = device_topic("city", "mapo", "noise", "nz-mapo-001", "telemetry")
    assert topic == "city/mapo/noise/nz-mapo-001/telemetry"
    assert split_topic("city", topic) == ("mapo", "noise", "nz-mapo-001", "telemetry")
    assert split_topic("city", "city/mapo/noise/telemetry") is None
    assert split_topic("city", "other/mapo/noise/x/telemetry") is None
    assert split_topic("city", "city/mapo/noise/x/config") is None
    assert is_device_id("aq-001")
    assert not is_device_id("AQ-001")
    assert not is_device_id("ab")
    assert not is_device_id("-abc")
    assert not is_device_id("a" * 65)


def test_seoul_has_25_districts_and_han_river_flags() -> None:
    assert len(DISTRICTS) == 25
    assert len({d.id for d in DISTRICTS}) == 25
    assert is_district("gangnam")
    assert not is_district("busan")
    assert {d.id for d in DISTRICTS if d.han_river} >= {"mapo", "yongsan", "gangnam", "songpa"}
    for d in DISTRICTS:
        assert 37.4 < d.lat < 37.7
        assert 126.7 < d.lon < 127.2


def test_sensor_schema_is_consistent() -> None:
    assert set(SENSOR_TYPES) == {
        "air_quality",
        "noise",
        "weather",
        "traffic",
        "parking",
        "water_level",
        "streetlight",
        "waste_bin",
    }
    for st in SENSOR_TYPES.values():
        for m in st.metrics:
            assert m.low < m.high
            assert math.isfinite(m.low)
    pm = SENSOR_TYPES["air_quality"].metric("pm25")
    assert pm is not None
    assert pm.unit == "ug/m3"


def test_topic_specs_take_the_prefix_and_compaction() -> None:
    k = KafkaSettings(topic_prefix="t1.")
    specs = {s.name: s for s in topic_specs(k)}
    assert topic_name(TELEMETRY_RAW, k) == "t1.telemetry.raw"
    assert specs["t1.alerts"].config["cleanup.policy"] == "compact"
    assert specs["t1.devices"].config["cleanup.policy"] == "compact"
    assert specs["t1.telemetry.raw"].config["cleanup.policy"] == "delete"
    assert specs["t1.telemetry.raw"].partitions == k.partitions
    assert ALERTS in {s.name.removeprefix("t1.") for s in specs.values()}
    assert DEVICES in {s.name.removeprefix("t1.") for s in specs.values()}


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSTREAM_KAFKA__BOOTSTRAP", "127.0.0.1:19092")
    monkeypatch.setenv("CITYSTREAM_INFLUX__SINK_TOKEN", "s3cr3t-value")
    s = Settings()
    assert s.kafka.bootstrap == "127.0.0.1:19092"
    assert s.influx.sink_token.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(s)
    with pytest.raises(Exception, match="frozen"):
        s.log_level = "DEBUG"  # type: ignore[misc]
