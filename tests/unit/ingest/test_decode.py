"""The payload decoder: native JSON and SenML, and a fuzz test (no I/O)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citystream.errors import RejectedMessageError
from citystream.model import DeviceEntry
from citystream.settings import Settings
from ingest import reasons
from ingest.decode import Payload, decode_payload, parse_json, parse_ts
from ingest.validate import Validator

NOW = 1_764_000_000_000


def test_native_payload() -> None:
    payload = b'{"ts": 1764000000000, "seq": 7, "values": {"pm25": 23.4, "pm10": 41}, "extra": [1]}'
    assert decode_payload(payload, NOW) == Payload(NOW, 7, {"pm25": 23.4, "pm10": 41.0}, None, None)


def test_float_epoch_ms_is_rounded_down() -> None:
    assert decode_payload(b'{"ts": 1764000000000.9, "seq": 0, "values": {"a": 1}}', NOW).ts_ms == NOW


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-11-24T16:00:00Z", NOW),
        ("2025-11-25T01:00:00+09:00", NOW),
        ("2025-11-24T16:00:00.123456+00:00", NOW + 123),
    ],
)
def test_rfc3339_times(value: str, expected: int) -> None:
    assert parse_ts(value) == expected


def test_senml_base_fields_apply_to_later_records() -> None:
    pack = [
        {"bn": "aq-gangnam-001/", "bt": NOW / 1000, "bv": 10, "bu": "ug/m3", "n": "seq", "v": 5},
        {"n": "pm25", "v": 3.5},
        {"n": "pm10", "v": 20, "u": "ug/m3"},
    ]
    decoded = decode_payload(json.dumps(pack).encode(), NOW)
    # bv adds to every value, the sequence number record too (RFC 8428, 4.1).
    assert decoded == Payload(
        NOW, 15, {"pm25": 13.5, "pm10": 30.0}, {"pm25": "ug/m3", "pm10": "ug/m3"}, "aq-gangnam-001"
    )


def test_senml_without_a_base_name_names_no_device() -> None:
    pack = [{"bt": NOW / 1000, "n": "seq", "v": 1}, {"n": "laeq", "u": "dB", "v": 55}]
    assert decode_payload(json.dumps(pack).encode(), NOW).device_id is None


def test_senml_base_only_record_is_allowed() -> None:
    pack = [{"bn": "urn:dev:id:aq-1:", "bt": NOW / 1000}, {"n": "seq", "v": 1}, {"n": "pm25", "v": 2}]
    assert decode_payload(json.dumps(pack).encode(), NOW).values == {"pm25": 2.0}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", reasons.INVALID_UTF8),
        (b"[" * 5000, reasons.INVALID_JSON),
        (b'{"a": "\\ud800"}', reasons.INVALID_JSON),
        (b"[NaN]", reasons.NOT_FINITE),
        (b'{"a": -1e400}', reasons.NOT_FINITE),
    ],
)
def test_parse_json_rejections(payload: bytes, reason: str) -> None:
    with pytest.raises(RejectedMessageError) as info:
        parse_json(payload)
    assert info.value.reason == reason


def test_senml_duplicate_metric_is_invalid() -> None:
    pack = [{"n": "seq", "v": 1}, {"n": "pm25", "v": 2}, {"n": "pm25", "v": 3}]
    with pytest.raises(RejectedMessageError) as info:
        decode_payload(json.dumps(pack).encode(), NOW)
    assert info.value.reason == reasons.SENML_INVALID


def test_senml_overflowing_time_is_invalid() -> None:
    pack = [{"bt": 1e308, "n": "seq", "v": 1, "t": 1e308}, {"n": "pm25", "v": 2}]
    with pytest.raises(RejectedMessageError) as info:
        decode_payload(json.dumps(pack).encode(), NOW)
    assert info.value.reason == reasons.SENML_INVALID


# -- fuzz --------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
senml_keys = st.sampled_from(
    ["bn", "bt", "bu", "bv", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut", "x_"]
)
senml_records = st.dictionaries(senml_keys, json_scalars, max_size=5)
native_like = st.fixed_dictionaries(
    {},
    optional={
        "ts": json_scalars,
        "seq": json_scalars,
        "values": st.dictionaries(st.text(max_size=8), json_scalars, max_size=4) | json_values,
        "device_id": json_scalars,
    },
)


VALIDATOR = Validator(
    Settings(),
    {
        "aq-gangnam-001": DeviceEntry(
            device_id="aq-gangnam-001", district="gangnam", sensor_type="air_quality", password_hash="x"
        )
    },
)
ROUTE = VALIDATOR.route("city/gangnam/air_quality/aq-gangnam-001/telemetry")


def check_contract(payload: bytes) -> None:
    """Either a well-formed Payload or a RejectedMessageError with a known reason; nothing else.

    The whole validation path (schema, ranges, units, time bounds) keeps the same contract.
    """
    rejection: RejectedMessageError | None = None
    try:
        decoded = decode_payload(payload, NOW)
    except RejectedMessageError as exc:
        rejection = exc
    try:
        VALIDATOR.reading(ROUTE, payload, NOW)
    except RejectedMessageError as exc:
        rejection = rejection or exc
    if rejection is not None:
        assert rejection.reason in reasons.ALL
        assert rejection.detail
        return
    assert type(decoded.ts_ms) is int
    assert type(decoded.seq) is int
    assert 0 <= decoded.seq < 2**63
    assert decoded.values
    assert all(type(v) is float and math.isfinite(v) for v in decoded.values.values())
    assert decoded.device_id is None or type(decoded.device_id) is str


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(payload: bytes) -> None:
    check_contract(payload)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(native_like)
def test_fuzz_native_shaped_json(body: dict[str, Any]) -> None:
    check_contract(json.dumps(body).encode())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(senml_records, max_size=5))
def test_fuzz_senml_shaped_json(pack: list[dict[str, Any]]) -> None:
    check_contract(json.dumps(pack).encode())


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(native_like, st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=3))
def test_fuzz_corrupted_json(body: dict[str, Any], cut: int, noise: bytes) -> None:
    raw = json.dumps(body).encode()
    check_contract(raw[:cut] + noise + raw[cut:])
