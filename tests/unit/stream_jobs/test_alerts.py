from __future__ import annotations

import msgspec
import pytest

from citystream.model import (
    AlertCommand,
    AlertCommandKind,
    AlertEvent,
    AlertEventKind,
    AlertState,
    Offset,
    Severity,
)
from stream_jobs.alerts import (
    Policies,
    RulePolicy,
    Silence,
    Track,
    apply_silence_command,
    expire,
    on_command,
    on_signal,
    on_silences_changed,
)
from stream_jobs.messages import Signal

T0 = 1_764_000_000_000
S = 1000
KEY = "zscore:pm25:aq-gangnam-001"
POLICIES = Policies(
    {
        "zscore": RulePolicy(Severity.WARNING, 0, 60 * S),
        "threshold": RulePolicy(Severity.CRITICAL, 120 * S, 300 * S),
    },
    flap_window_ms=1800 * S,
    flap_max_raises=2,
)


def signal(t_s: int, anomalous: bool, score: float = 0.8, rule: str = "zscore", offset: int = 0) -> Signal:
    key = f"{rule}:pm25:aq-gangnam-001"
    return Signal(
        key=key,
        rule=rule,
        metric="pm25",
        subject="aq-gangnam-001",
        district="gangnam",
        sensor_type="air_quality",
        device_id="aq-gangnam-001",
        detector=rule,
        detector_version="1",
        ts_ms=T0 + t_s * S,
        anomalous=anomalous,
        score=score,
        value=99.0,
        threshold=35.0,
        reason="test",
        offsets=(Offset(2, offset),) if offset else (),
    )


def run(
    signals: list[Signal], silences: tuple[Silence, ...] = (), track: Track | None = None
) -> tuple[Track, list[AlertEvent]]:
    track = track or Track()
    events: list[AlertEvent] = []
    for s in signals:
        track, new = on_signal(track, s, POLICIES, silences)
        events += new
    return track, events


def kinds(events: list[AlertEvent]) -> list[tuple[AlertEventKind, int]]:
    return [(e.kind, (e.ts_ms - T0) // S) for e in events]


def test_raise_update_clear_with_the_readings_behind_it() -> None:
    track, events = run(
        [
            signal(0, True, 0.6, offset=10),
            signal(30, True, 0.9, offset=11),
            signal(60, False),
            signal(100, False),
        ]
    )
    assert kinds(events) == [
        (AlertEventKind.RAISED, 0),
        (AlertEventKind.UPDATED, 30),
        (AlertEventKind.CLEARED, 100),
    ]
    raised = events[0].alert
    assert (raised.key, raised.rule, raised.detector, raised.detector_version) == (
        KEY,
        "zscore",
        "zscore",
        "1",
    )
    assert (raised.value, raised.threshold, raised.score, raised.state) == (99.0, 35.0, 0.6, AlertState.OPEN)
    assert raised.offsets == (Offset(2, 10),)
    assert events[1].alert.offsets == (Offset(2, 10), Offset(2, 11))
    assert events[2].alert.state is AlertState.CLEARED
    assert events[2].alert.cleared_ms == T0 + 100 * S
    assert [e.event_id for e in events] == [f"{KEY}#1", f"{KEY}#2", f"{KEY}#3"]
    assert not track.open


def test_minimum_duration_holds_back_short_conditions() -> None:
    _, events = run(
        [
            signal(0, True, rule="threshold"),
            signal(60, True, rule="threshold"),
            signal(90, False, rule="threshold"),
        ]
    )
    assert events == []
    _, events = run(
        [
            signal(0, True, rule="threshold"),
            signal(60, True, rule="threshold"),
            signal(120, True, rule="threshold"),
        ]
    )
    assert kinds(events) == [(AlertEventKind.RAISED, 120)]


def test_clear_needs_the_condition_gone_for_the_hold() -> None:
    _, events = run(
        [signal(0, True), signal(30, False), signal(40, True), signal(80, False), signal(99, False)]
    )
    assert kinds(events) == [(AlertEventKind.RAISED, 0)]


def test_flapping_alerts_are_held_open_longer() -> None:
    seq = []
    t = 0
    for _ in range(3):
        seq += [signal(t, True), signal(t + 61, False)]
        t += 200
    track, events = run(seq)
    assert [k for k, _ in kinds(events)] == [
        AlertEventKind.RAISED,
        AlertEventKind.CLEARED,
        AlertEventKind.RAISED,
        AlertEventKind.CLEARED,
        AlertEventKind.RAISED,
    ]
    assert track.flapping
    assert track.open
    last_anomalous = t - 200
    # Four times the 60 s hold: still open 200 s after the condition went, cleared at 240 s.
    track, events = run([signal(last_anomalous + 200, False)], track=track)
    assert events == []
    track, events = run([signal(last_anomalous + 240, False)], track=track)
    assert kinds(events) == [(AlertEventKind.CLEARED, last_anomalous + 240)]


def test_replayed_or_older_signals_change_nothing() -> None:
    track, _events = run([signal(0, True), signal(60, False)])
    again, more = run([signal(0, True), signal(30, True)], track=track)
    assert more == []
    assert again == track


def command(kind: AlertCommandKind, **fields: object) -> AlertCommand:
    return msgspec.convert(
        {"command_id": "c1", "kind": kind, "issued_ms": T0 + 10 * S, "by": "op", **fields}, AlertCommand
    )


def test_acknowledge_once_then_clear() -> None:
    track, _ = run([signal(0, True)])
    ack = command(AlertCommandKind.ACKNOWLEDGE, alert_key=KEY)
    track, events = on_command(track, ack)
    assert kinds(events) == [(AlertEventKind.ACKNOWLEDGED, 10)]
    assert events[0].alert.state is AlertState.ACKNOWLEDGED
    assert events[0].alert.acknowledged_by == "op"
    track, events = on_command(track, ack)
    assert events == []
    _, events = run([signal(100, False)], track=track)
    assert kinds(events) == [(AlertEventKind.CLEARED, 100)]
    assert on_command(Track(), ack) == (Track(), [])


def test_silence_suppresses_delivery_not_detection() -> None:
    silences = apply_silence_command((), command(AlertCommandKind.SILENCE, device_id="aq-gangnam-001"))
    _track, events = run([signal(0, True), signal(70, False)], silences)
    assert [(e.kind, e.alert.silenced) for e in events] == [
        (AlertEventKind.RAISED, True),
        (AlertEventKind.CLEARED, True),
    ]
    other = apply_silence_command((), command(AlertCommandKind.SILENCE, device_id="aq-mapo-001"))
    _, events = run([signal(0, True)], other)
    assert not events[0].alert.silenced


def test_maintenance_window_and_unsilence() -> None:
    window = command(
        AlertCommandKind.SILENCE,
        district="gangnam",
        rule="zscore",
        starts_ms=T0 + 50 * S,
        until_ms=T0 + 500 * S,
    )
    silences = apply_silence_command((), window)
    track, events = run([signal(0, True)], silences)
    assert not events[0].alert.silenced  # before the window
    track, events = on_silences_changed(track, silences, T0 + 60 * S)
    assert [(e.kind, e.alert.silenced) for e in events] == [(AlertEventKind.UPDATED, True)]
    cleared = apply_silence_command(
        silences, command(AlertCommandKind.UNSILENCE, district="gangnam", rule="zscore")
    )
    assert cleared == ()
    track, events = on_silences_changed(track, cleared, T0 + 70 * S)
    assert [(e.kind, e.alert.silenced) for e in events] == [(AlertEventKind.UPDATED, False)]
    assert expire(silences, T0 + 500 * S) == ()


@pytest.mark.parametrize("fields", [{}, {"note": "everything"}])
def test_a_silence_without_matchers_is_refused(fields: dict[str, str]) -> None:
    assert apply_silence_command((), command(AlertCommandKind.SILENCE, **fields)) == ()
