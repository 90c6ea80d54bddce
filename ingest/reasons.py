"""Reason codes of the records the bridge writes to ``telemetry.dlq``.

Every MQTT message the bridge cannot turn into a :class:`~citystream.model.Reading` or a
:class:`~citystream.model.DeviceStatus` is written to the dead-letter topic with one of these
codes, the original MQTT topic and payload, and the device id when the topic names one. The
codes are stable: device integrators and dashboards match on them.

===================== ===========================================================================
code                  meaning
===================== ===========================================================================
``topic_shape``       the topic is not ``{root}/{district}/{sensor_type}/{device_id}/telemetry``
                      (or ``/status``)
``unknown_district``  the district in the topic is not one of Seoul's 25 districts
``unknown_sensor_type`` the sensor type in the topic is not a known sensor type
``bad_device_id``     the device id in the topic does not match ``[a-z0-9][a-z0-9-]{2,63}``
``unknown_device``    the device id is not in the device registry
``device_revoked``    the device was revoked (it is refused at its next connect)
``device_mismatch``   the registry has the device in another district or with another sensor
                      type, or the payload names another device than the topic (SenML base
                      name, native ``device_id``)
``oversize``          the payload is larger than ``ingest.max_payload_bytes`` (64 KiB); the
                      dead-letter record keeps its first ``max_payload_bytes`` bytes
``invalid_utf8``      the payload is not valid UTF-8
``invalid_json``      the payload is not JSON (truncated, trailing bytes, bad tokens)
``not_finite``        a value is NaN or Infinity (``NaN``/``Infinity`` literals, overflowing
                      numbers such as ``1e999``)
``schema``            the JSON does not have the payload's shape (not an object, not a SenML
                      pack, a field of the wrong structure)
``missing_field``     a required field (``ts``, ``seq``, ``values``) is missing
``bad_type``          a field has the wrong type (a string or boolean value, a float ``seq``)
``bad_timestamp``     ``ts`` is neither epoch milliseconds nor an RFC 3339 time with an offset
``seq_invalid``       ``seq`` is negative or larger than a signed 64-bit integer
``empty_values``      the reading carries no values
``unknown_metric``    a metric is not one of the sensor type's metrics
``out_of_range``      a value is outside the metric's physical range
``bad_unit``          a SenML record's unit is not the metric's unit
``senml_invalid``     a SenML pack breaks RFC 8428 or this profile (bad names, unknown
                      must-understand fields, records at different times, no ``seq`` record)
``timestamp_future``  the device time is more than ``ingest.max_future_s`` ahead of the bridge
``timestamp_past``    the device time is more than ``ingest.max_age_s`` behind the bridge
``bad_status``        a status message is neither ``online`` nor ``offline``
``rate_limited``      the device sent readings faster than ``ingest.device_rate_per_s`` beyond
                      a burst of ``ingest.device_burst`` (checked before the payload is read)
``internal_error``    the bridge failed on the message (a bug); it is kept here, not lost
===================== ===========================================================================

A device clock that is off by more than ``ingest.max_clock_skew_s`` but within the two bounds
above is not a rejection: the reading is kept with ``skew_ms`` set and the flag
``clock_skew``.
"""

from __future__ import annotations

TOPIC_SHAPE = "topic_shape"
UNKNOWN_DISTRICT = "unknown_district"
UNKNOWN_SENSOR_TYPE = "unknown_sensor_type"
BAD_DEVICE_ID = "bad_device_id"
UNKNOWN_DEVICE = "unknown_device"
DEVICE_REVOKED = "device_revoked"
DEVICE_MISMATCH = "device_mismatch"
OVERSIZE = "oversize"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_FINITE = "not_finite"
SCHEMA = "schema"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_TIMESTAMP = "bad_timestamp"
SEQ_INVALID = "seq_invalid"
EMPTY_VALUES = "empty_values"
UNKNOWN_METRIC = "unknown_metric"
OUT_OF_RANGE = "out_of_range"
BAD_UNIT = "bad_unit"
SENML_INVALID = "senml_invalid"
TIMESTAMP_FUTURE = "timestamp_future"
TIMESTAMP_PAST = "timestamp_past"
BAD_STATUS = "bad_status"
RATE_LIMITED = "rate_limited"
INTERNAL_ERROR = "internal_error"

ALL: tuple[str, ...] = (
    TOPIC_SHAPE,
    UNKNOWN_DISTRICT,
    UNKNOWN_SENSOR_TYPE,
    BAD_DEVICE_ID,
    UNKNOWN_DEVICE,
    DEVICE_REVOKED,
    DEVICE_MISMATCH,
    OVERSIZE,
    INVALID_UTF8,
    INVALID_JSON,
    NOT_FINITE,
    SCHEMA,
    MISSING_FIELD,
    BAD_TYPE,
    BAD_TIMESTAMP,
    SEQ_INVALID,
    EMPTY_VALUES,
    UNKNOWN_METRIC,
    OUT_OF_RANGE,
    BAD_UNIT,
    SENML_INVALID,
    TIMESTAMP_FUTURE,
    TIMESTAMP_PAST,
    BAD_STATUS,
    RATE_LIMITED,
    INTERNAL_ERROR,
)
"""Every reason code, in the order of the table above."""

CLOCK_SKEW_FLAG = "clock_skew"
"""The flag a kept reading carries when the device clock is off beyond the skew bound."""
