"""Alert API request validation, command keys, bearer tokens; webhook subscriber filters; metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from citystream.model import Alert, AlertCommandKind, AlertEvent, AlertEventKind, AlertState, Severity
from citystream.settings import WebhookSubscriber
from sinks.api import (
    AckRequest,
    BadRequestError,
    SilenceRequest,
    ack_command,
    bearer_ok,
    command_key,
    silence_command,
)
from sinks.metrics import BulkHistogram
from sinks.webhook import matches

NOW = 1_764_000_000_000


def test_ack_command() -> None:
    cmd = ack_command("zscore:pm25:aq-mapo-001", AckRequest(by="kim", note="looking"), NOW, "c1")
    assert (cmd.kind, cmd.alert_key, cmd.by, cmd.note, cmd.issued_ms, cmd.command_id) == (
        AlertCommandKind.ACKNOWLEDGE,
        "zscore:pm25:aq-mapo-001",
        "kim",
        "looking",
        NOW,
        "c1",
    )
    assert command_key(cmd) == b"zscore:pm25:aq-mapo-001"


@pytest.mark.parametrize(
    ("key", "by", "note"),
    [("k", " ", ""), ("", "kim", ""), ("k" * 600, "kim", ""), ("k", "kim", "n" * 3000)],
)
def test_ack_command_refuses_bad_input(key: str, by: str, note: str) -> None:
    with pytest.raises(BadRequestError):
        ack_command(key, AckRequest(by=by, note=note), NOW, "c")


def test_silence_by_matchers() -> None:
    request = SilenceRequest(by="lee", until_ms=NOW + 60_000, district="mapo", rule="flatline")
    cmd = silence_command(request, AlertCommandKind.SILENCE, NOW, "c2")
    assert (cmd.kind, cmd.rule, cmd.district, cmd.device_id, cmd.alert_key) == (
        AlertCommandKind.SILENCE,
        "flatline",
        "mapo",
        None,
        None,
    )
    assert (cmd.starts_ms, cmd.until_ms) == (NOW, NOW + 60_000)
    assert command_key(cmd) == b"silence:flatline:mapo:*"


def test_maintenance_window_starts_later() -> None:
    request = SilenceRequest(
        by="lee", starts_ms=NOW + 3_600_000, until_ms=NOW + 7_200_000, device_id="wl-mapo-001"
    )
    cmd = silence_command(request, AlertCommandKind.SILENCE, NOW, "c3")
    assert cmd.starts_ms == NOW + 3_600_000
    assert command_key(cmd) == b"silence:*:*:wl-mapo-001"


@pytest.mark.parametrize(
    "request_",
    [
        SilenceRequest(by="lee", until_ms=NOW + 1000),  # no matcher
        SilenceRequest(by="lee", until_ms=NOW - 1, district="mapo"),  # already over
        SilenceRequest(by="lee", starts_ms=NOW + 5000, until_ms=NOW + 4000, district="mapo"),
        SilenceRequest(by="", until_ms=NOW + 1000, district="mapo"),
    ],
)
def test_silence_refuses_bad_input(request_: SilenceRequest) -> None:
    with pytest.raises(BadRequestError):
        silence_command(request_, AlertCommandKind.SILENCE, NOW, "c")


def test_bearer_token_check() -> None:
    assert bearer_ok("Bearer t0ken", "t0ken")
    assert bearer_ok("bearer  t0ken ", "t0ken")
    assert not bearer_ok("Bearer t0ke", "t0ken")
    assert not bearer_ok("Basic t0ken", "t0ken")
    assert not bearer_ok(None, "t0ken")
    assert not bearer_ok("Bearer ", "")


def _event(severity: Severity, district: str, rule: str) -> AlertEvent:
    alert = Alert(
        key=f"{rule}:pm25:x", rule=rule, subject="x", severity=severity, state=AlertState.OPEN, detector=rule,
        detector_version="1", district=district, sensor_type="air_quality", metric="pm25", device_id="x",
        value=1.0, threshold=None, score=1.0, reason="", raised_ms=1, updated_ms=1,
    )  # fmt: skip
    return AlertEvent(event_id="e", kind=AlertEventKind.RAISED, ts_ms=1, alert=alert)


def test_subscriber_filters() -> None:
    everything = WebhookSubscriber(name="a", url="http://x", secret=SecretStr("s"))
    picky = WebhookSubscriber(
        name="b",
        url="http://x",
        secret=SecretStr("s"),
        severities=("critical",),
        districts=("mapo", "jongno"),
        rules=("threshold",),
    )
    assert matches(everything, _event(Severity.INFO, "nowon", "zscore"))
    assert matches(picky, _event(Severity.CRITICAL, "mapo", "threshold"))
    assert not matches(picky, _event(Severity.WARNING, "mapo", "threshold"))
    assert not matches(picky, _event(Severity.CRITICAL, "nowon", "threshold"))
    assert not matches(picky, _event(Severity.CRITICAL, "jongno", "zscore"))


def test_bulk_histogram_exposition() -> None:
    registry = CollectorRegistry()
    h = BulkHistogram("lat_seconds", "latency", buckets=(0.1, 1.0), registry=registry)
    h.observe_many("reading", [0.05, 0.1, 0.5, 2.0])
    h.observe_many("reading", [0.01])
    assert h.count("reading") == 5
    assert registry.get_sample_value("lat_seconds_bucket", {"kind": "reading", "le": "0.1"}) == 3
    assert registry.get_sample_value("lat_seconds_bucket", {"kind": "reading", "le": "1.0"}) == 4
    assert registry.get_sample_value("lat_seconds_bucket", {"kind": "reading", "le": "+Inf"}) == 5
    assert registry.get_sample_value("lat_seconds_count", {"kind": "reading"}) == 5
    assert registry.get_sample_value("lat_seconds_sum", {"kind": "reading"}) == pytest.approx(2.66)
    assert b'lat_seconds_bucket{kind="reading",le="+Inf"} 5.0' in generate_latest(registry)
