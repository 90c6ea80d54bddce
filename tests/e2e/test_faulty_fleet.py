"""The faulty-fleet scenario through the whole pipeline: simulator -> Mosquitto -> bridge ->
Kafka -> stream jobs -> alerts.events, scored against the scenario's ground-truth labels.

Every incident whose label expects an alert must get one (of the expected rule, on its device,
or in its district for a district-wide event), and no alert may be raised anywhere else:
duplicates, reordering and malformed payloads are handled upstream and raise none. The
detection delay per kind is printed.

The scenario's two hours are published as fast as the broker takes them, starting now; the
jobs work in event time, so the result does not depend on the pace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from citystream import codec
from citystream.model import AlertEvent, AlertEventKind
from citystream.settings import Settings
from citystream.topics import ALERTS_EVENTS, TELEMETRY_AGG_1M, TELEMETRY_RAW, topic_name
from stream_jobs.evaluation.scenario import Alarm, match, read_labels
from tests.e2e.stages import simulate
from tests.helpers import read_topic, wait_for
from tests.integration.ingest_support import BridgeProcess
from tests.jobs_worker import JobsWorker

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

GRACE_S = 900


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[tuple[BridgeProcess, JobsWorker]]:
    bridge = BridgeProcess(settings, tmp_path)
    # Published as fast as the broker takes them, the districts' gateways drift apart by minutes
    # of device time: a grace of 15 minutes keeps the windows whole.
    jobs = JobsWorker(
        settings, tmp_path / "jobs.log", grace_s=str(GRACE_S), idle_source_s="3", timer_interval_s="1"
    )
    jobs.start()
    bridge.start()
    yield bridge, jobs
    bridge.close()
    jobs.stop()
    print(jobs.tail())  # shown when the test failed


SEOUL = dt.timezone(dt.timedelta(hours=9))
SCENARIO_HOURS = 2


def last_weekday_morning(now: dt.datetime) -> str:
    """09:00 in Seoul on the latest weekday whose two scenario hours are over by ``now``: the
    scenario's own time of day (street lights off, the morning's traffic), fixed whatever the
    hour the test runs at, and recent enough for the bridge to take."""
    start = now.astimezone(SEOUL).replace(hour=9, minute=0, second=0, microsecond=0)
    while start + dt.timedelta(hours=SCENARIO_HOURS) > now or start.weekday() >= 5:
        start -= dt.timedelta(days=1)
    return start.isoformat()


def alarms_of(events: list[AlertEvent]) -> list[Alarm]:
    raised: dict[str, AlertEvent] = {}
    alarms = []
    for event in sorted(events, key=lambda e: (e.ts_ms, e.event_id)):
        a = event.alert
        if event.kind is AlertEventKind.RAISED:
            raised[a.key] = event
        elif event.kind is AlertEventKind.CLEARED and a.key in raised:
            start = raised.pop(a.key)
            alarms.append(_alarm(start, a.cleared_ms))
    alarms.extend(_alarm(start, None) for start in raised.values())
    return alarms


def _alarm(event: AlertEvent, cleared_ms: int | None) -> Alarm:
    a = event.alert
    return Alarm(
        rule=a.rule,
        device_id=a.device_id or "",
        district=a.district,
        sensor_type=a.sensor_type,
        metric=a.metric,
        raised_ms=a.raised_ms,
        cleared_ms=cleared_ms,
        score=a.score,
        reason=a.reason,
    )


async def test_faulty_fleet_alerts_exactly_on_its_incidents(
    settings: Settings, uid: str, tmp_path: Path, pipeline: tuple[BridgeProcess, JobsWorker]
) -> None:
    labels_path = tmp_path / "labels.jsonl"
    await asyncio.to_thread(
        simulate, settings, "faulty-fleet", "--start", last_weekday_morning(dt.datetime.now(dt.UTC)),
        "--connection", "gateway",
        "--id-prefix", f"t{uid}-", "--labels", str(labels_path),
    )  # fmt: skip
    labels = read_labels(labels_path)
    # Windows close a grace after the sources have passed them, also when the sources fall idle.
    end = max(label.end_ms for label in labels) - (GRACE_S + 120) * 1000
    agg = topic_name(TELEMETRY_AGG_1M, settings.kafka)

    async def windows_closed_past_the_end() -> bool:
        records = await read_topic(settings.kafka.bootstrap, agg, timeout_s=5)
        starts = [codec.decode(r.value, dict)["window_start"] for r in records if r.value]
        return bool(starts) and max(starts) >= end

    await wait_for(windows_closed_past_the_end, 240, "the windows of the last incidents", interval_s=3)
    records = await read_topic(
        settings.kafka.bootstrap, topic_name(ALERTS_EVENTS, settings.kafka), timeout_s=5
    )
    events = [codec.decode(r.value, AlertEvent) for r in records if r.value]
    # The run's readings, for `citystream evaluate scenario --readings` when diagnosing a failure.
    raw = await read_topic(settings.kafka.bootstrap, topic_name(TELEMETRY_RAW, settings.kafka), timeout_s=5)
    (tmp_path / "readings.jsonl").write_bytes(b"".join(r.value + b"\n" for r in raw if r.value))
    (tmp_path / "alert-events.jsonl").write_bytes(b"".join(r.value + b"\n" for r in records if r.value))
    kinds, false_alarms = match(alarms_of(events), labels)
    for k in kinds:
        delay = f"{k.median_latency_s:.0f} s" if k.median_latency_s is not None else "-"
        print(f"{k.kind:<16} {k.expected_rule or '-':<15} {k.detected}/{k.labels} detected, delay {delay}")
    print("false alarms:", false_alarms)
    for label in labels:
        if label.expected_rule is not None:
            near = sorted(
                {(e.alert.rule, e.kind.value) for e in events if e.alert.device_id in label.devices}
            )
            print(f"  {label.kind}: {label.devices} {near}")
    missed = [k.kind for k in kinds if k.expected_rule is not None and k.detected < k.labels]
    assert missed == []
    assert false_alarms == {}
