"""The alert lifecycle: a pure state machine per alert key (``{rule}:{metric}:{subject}``).

Input: detector :class:`~stream_jobs.messages.Signal` values (a condition at an event time)
and operator :class:`~citystream.model.AlertCommand` values. Output: the next
:class:`Track` and the :class:`~citystream.model.AlertEvent` values to publish; the current
:class:`~citystream.model.Alert` of every event goes to the compacted ``alerts`` topic and the
event to ``alerts.events``.

Semantics:

- One alert per key at a time. ``raised`` when the condition has held for the rule's minimum
  duration (the time from its first anomalous signal to the current one); ``updated`` when the
  score of an open alert rises by ``UPDATE_STEP`` or its silenced flag changes; ``cleared``
  when the condition has been gone for the rule's clear hold (hysteresis in time; the detectors
  add hysteresis in value).
- Flapping: when an alert is raised more than ``flap_max_raises`` times within
  ``flap_window_ms``, it is held open until its condition has been gone for four times the
  clear hold.
- ``acknowledge`` (by alert key) moves an open alert to ``acknowledged`` and emits
  ``acknowledged``; it stays open until it clears.
- A silence matches alerts by key, or by rule / district / device (every given matcher must
  match), from ``starts_ms`` (a maintenance window; none: at once) until ``until_ms`` (none:
  until ``unsilence``). Silences suppress delivery, not detection: the lifecycle runs as
  usual, but events of a silenced alert carry ``alert.silenced = True`` and the webhook sink
  does not deliver them. An open alert whose silence ends gets an ``updated`` event with
  ``silenced = False`` at its next signal. ``unsilence`` removes the silences whose matchers
  equal its own.
- Signals are applied in event time; one older than the last applied signal of its key (a
  replay after a restart) changes nothing, so replays never emit an event twice. Event ids are
  ``{key}#{n}`` with ``n`` counting the key's events, stable across replays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from citystream.model import (
    Alert,
    AlertCommand,
    AlertCommandKind,
    AlertEvent,
    AlertEventKind,
    AlertState,
    Offset,
    Severity,
)
from stream_jobs.messages import Signal

UPDATE_STEP = 0.1
MAX_OFFSETS = 8
FLAP_HOLD_FACTOR = 4


class RulePolicy(NamedTuple):
    severity: Severity
    min_duration_ms: int
    clear_hold_ms: int


DEFAULT_POLICIES: dict[str, RulePolicy] = {
    "threshold": RulePolicy(Severity.WARNING, 120_000, 300_000),
    "zscore": RulePolicy(Severity.WARNING, 0, 300_000),
    "ewma": RulePolicy(Severity.WARNING, 60_000, 600_000),
    "rate_of_change": RulePolicy(Severity.WARNING, 0, 300_000),
    "flatline": RulePolicy(Severity.WARNING, 0, 300_000),
    "silent": RulePolicy(Severity.CRITICAL, 0, 0),
    "peer": RulePolicy(Severity.WARNING, 0, 600_000),
    "clock_skew": RulePolicy(Severity.INFO, 0, 300_000),
}
FALLBACK_POLICY = RulePolicy(Severity.WARNING, 0, 300_000)


class Policies(NamedTuple):
    rules: dict[str, RulePolicy]
    flap_window_ms: int = 1_800_000
    flap_max_raises: int = 3

    def for_rule(self, rule: str) -> RulePolicy:
        return self.rules.get(rule, FALLBACK_POLICY)

    def longest_hold_ms(self) -> int:
        return FLAP_HOLD_FACTOR * max((p.clear_hold_ms for p in self.rules.values()), default=0)


def policies(
    min_duration_s: dict[str, float],
    clear_hold_s: dict[str, float],
    flap_window_s: float = 1800.0,
    flap_max_raises: int = 3,
) -> Policies:
    """The default policies with per-rule overrides (seconds), as settings give them."""
    rules = dict(DEFAULT_POLICIES)
    for rule in set(min_duration_s) | set(clear_hold_s):
        base = rules.get(rule, FALLBACK_POLICY)
        rules[rule] = base._replace(
            min_duration_ms=int(min_duration_s.get(rule, base.min_duration_ms / 1000) * 1000),
            clear_hold_ms=int(clear_hold_s.get(rule, base.clear_hold_ms / 1000) * 1000),
        )
    return Policies(rules, int(flap_window_s * 1000), flap_max_raises)


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    by: str
    alert_key: str | None = None
    rule: str | None = None
    district: str | None = None
    device_id: str | None = None
    starts_ms: int | None = None
    until_ms: int | None = None
    note: str = ""

    def matchers(self) -> tuple[str | None, ...]:
        return (self.alert_key, self.rule, self.district, self.device_id)

    def matches(self, alert: Alert, at_ms: int) -> bool:
        if self.starts_ms is not None and at_ms < self.starts_ms:
            return False
        if self.until_ms is not None and at_ms >= self.until_ms:
            return False
        return (
            (self.alert_key is None or self.alert_key == alert.key)
            and (self.rule is None or self.rule == alert.rule)
            and (self.district is None or self.district == alert.district)
            and (self.device_id is None or self.device_id == alert.device_id)
        )


def apply_silence_command(silences: tuple[Silence, ...], command: AlertCommand) -> tuple[Silence, ...]:
    """The silences after a ``silence`` or ``unsilence`` command (other kinds change nothing)."""
    if command.kind is AlertCommandKind.SILENCE:
        matchers = (command.alert_key, command.rule, command.district, command.device_id)
        if all(m is None for m in matchers):
            return silences  # a silence that matches everything is refused
        new = Silence(
            command_id=command.command_id,
            by=command.by,
            alert_key=command.alert_key,
            rule=command.rule,
            district=command.district,
            device_id=command.device_id,
            starts_ms=command.starts_ms,
            until_ms=command.until_ms,
            note=command.note,
        )
        return (*(s for s in silences if s.command_id != command.command_id), new)
    if command.kind is AlertCommandKind.UNSILENCE:
        target = (command.alert_key, command.rule, command.district, command.device_id)
        return tuple(s for s in silences if s.matchers() != target)
    return silences


def expire(silences: tuple[Silence, ...], at_ms: int) -> tuple[Silence, ...]:
    return tuple(s for s in silences if s.until_ms is None or s.until_ms > at_ms)


def is_silenced(alert: Alert, silences: Sequence[Silence], at_ms: int) -> bool:
    return any(s.matches(alert, at_ms) for s in silences)


class Track(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the lifecycle remembers about one alert key."""

    alert: Alert | None = None
    """The open alert, or the last one after it cleared."""
    pending_since: int | None = None
    """Event time of the first anomalous signal of a condition not raised yet."""
    pending_offsets: tuple[Offset, ...] = ()
    last_anomalous_ms: int | None = None
    last_ts: int = -1
    raises: tuple[int, ...] = ()
    """Times of recent raises (for flapping)."""
    flapping: bool = False
    events: int = 0
    """How many events this key has emitted (for stable event ids)."""

    @property
    def open(self) -> bool:
        return self.alert is not None and self.alert.state is not AlertState.CLEARED


def _event(track: Track, kind: AlertEventKind, ts: int, alert: Alert) -> tuple[Track, AlertEvent]:
    n = track.events + 1
    event = AlertEvent(event_id=f"{alert.key}#{n}", kind=kind, ts_ms=ts, alert=alert)
    return msgspec.structs.replace(track, alert=alert, events=n), event


def _offsets(old: tuple[Offset, ...], new: tuple[Offset, ...]) -> tuple[Offset, ...]:
    merged = dict.fromkeys(old + new)
    return tuple(merged)[-MAX_OFFSETS:]


def on_signal(  # noqa: PLR0911  # one return per lifecycle transition
    track: Track, signal: Signal, policies_: Policies, silences: Sequence[Silence]
) -> tuple[Track, list[AlertEvent]]:
    """Apply one detector signal."""
    ts = signal.ts_ms
    if ts <= track.last_ts:
        return track, []
    policy = policies_.for_rule(signal.rule)
    track = msgspec.structs.replace(track, last_ts=ts)
    events: list[AlertEvent] = []
    if signal.anomalous:
        track = msgspec.structs.replace(track, last_anomalous_ms=ts)
        if track.open:
            assert track.alert is not None  # noqa: S101  # open implies an alert
            alert = track.alert
            offsets = _offsets(alert.offsets, signal.offsets)
            silenced = is_silenced(alert, silences, ts)
            if signal.score >= alert.score + UPDATE_STEP or silenced != alert.silenced:
                updated = msgspec.structs.replace(
                    alert,
                    value=signal.value,
                    threshold=signal.threshold,
                    score=max(signal.score, alert.score),
                    reason=signal.reason or alert.reason,
                    updated_ms=ts,
                    silenced=silenced,
                    offsets=offsets,
                )
                track, event = _event(track, AlertEventKind.UPDATED, ts, updated)
                events.append(event)
            else:
                track = msgspec.structs.replace(track, alert=msgspec.structs.replace(alert, offsets=offsets))
            return track, events
        since = track.pending_since if track.pending_since is not None else ts
        pending_offsets = _offsets(track.pending_offsets, signal.offsets)
        if ts - since < policy.min_duration_ms:
            return msgspec.structs.replace(
                track, pending_since=since, pending_offsets=pending_offsets
            ), events
        alert = Alert(
            key=signal.key,
            rule=signal.rule,
            subject=signal.subject,
            severity=policy.severity,
            state=AlertState.OPEN,
            detector=signal.detector,
            detector_version=signal.detector_version,
            district=signal.district,
            sensor_type=signal.sensor_type,
            metric=signal.metric,
            device_id=signal.device_id,
            value=signal.value,
            threshold=signal.threshold,
            score=signal.score,
            reason=signal.reason,
            raised_ms=ts,
            updated_ms=ts,
            offsets=pending_offsets,
        )
        alert = msgspec.structs.replace(alert, silenced=is_silenced(alert, silences, ts))
        raises = (*(r for r in track.raises if r > ts - policies_.flap_window_ms), ts)
        track = msgspec.structs.replace(
            track,
            pending_since=None,
            pending_offsets=(),
            raises=raises,
            flapping=track.flapping or len(raises) > policies_.flap_max_raises,
        )
        track, event = _event(track, AlertEventKind.RAISED, ts, alert)
        return track, [event]
    # The condition is gone.
    if not track.open:
        return msgspec.structs.replace(track, pending_since=None, pending_offsets=()), events
    assert track.alert is not None  # noqa: S101  # open implies an alert
    hold = policy.clear_hold_ms * (FLAP_HOLD_FACTOR if track.flapping else 1)
    last = track.last_anomalous_ms if track.last_anomalous_ms is not None else ts
    if ts - last < hold:
        return track, events
    alert = track.alert
    cleared = msgspec.structs.replace(
        alert,
        state=AlertState.CLEARED,
        updated_ms=ts,
        cleared_ms=ts,
        silenced=is_silenced(alert, silences, ts),
    )
    flapping = track.flapping and sum(1 for r in track.raises if r > ts - policies_.flap_window_ms) > 1
    track = msgspec.structs.replace(track, flapping=flapping)
    track, event = _event(track, AlertEventKind.CLEARED, ts, cleared)
    return track, [event]


def on_command(track: Track, command: AlertCommand) -> tuple[Track, list[AlertEvent]]:
    """Apply an ``acknowledge`` for this key (other commands do not change one track)."""
    if command.kind is not AlertCommandKind.ACKNOWLEDGE or not track.open:
        return track, []
    assert track.alert is not None  # noqa: S101  # open implies an alert
    if track.alert.state is AlertState.ACKNOWLEDGED:
        return track, []
    ts = max(command.issued_ms, track.alert.updated_ms)
    acked = msgspec.structs.replace(
        track.alert, state=AlertState.ACKNOWLEDGED, acknowledged_by=command.by, updated_ms=ts
    )
    track, event = _event(track, AlertEventKind.ACKNOWLEDGED, ts, acked)
    return track, [event]


def on_silences_changed(
    track: Track, silences: Sequence[Silence], at_ms: int
) -> tuple[Track, list[AlertEvent]]:
    """Re-evaluate an open alert's silenced flag after the silences changed."""
    if not track.open:
        return track, []
    assert track.alert is not None  # noqa: S101  # open implies an alert
    silenced = is_silenced(track.alert, silences, at_ms)
    if silenced == track.alert.silenced:
        return track, []
    ts = max(at_ms, track.alert.updated_ms)
    updated = msgspec.structs.replace(track.alert, silenced=silenced, updated_ms=ts)
    track, event = _event(track, AlertEventKind.UPDATED, ts, updated)
    return track, [event]
