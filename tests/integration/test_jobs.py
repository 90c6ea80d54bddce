"""The stream jobs as a real Faust worker (a subprocess) against the local Kafka.

Readings go straight to the test's telemetry.raw (with duplicates, out-of-order pairs and a
malformed record); the 1-minute aggregates on telemetry.agg.1m must be exactly what the
readings give, once each, also when the worker is killed (SIGKILL) in the middle and started
again.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from citystream import codec
from citystream.model import (
    Aggregate,
    Alert,
    AlertCommand,
    AlertCommandKind,
    AlertEvent,
    AlertEventKind,
    AlertState,
    DlqRecord,
    Reading,
)
from citystream.settings import Settings
from citystream.topics import (
    ALERTS,
    ALERTS_COMMANDS,
    ALERTS_EVENTS,
    TELEMETRY_AGG_1M,
    TELEMETRY_DLQ,
    TELEMETRY_RAW,
    topic_name,
)
from tests.helpers import read_topic, wait_for
from tests.jobs_worker import JobsWorker

pytestmark = pytest.mark.integration

GRACE_S = 20
MINUTE = 60_000
DISTRICTS = ("gangnam", "mapo", "jongno")
DEVICES = [(f"aq-{d}-{i:03d}", d) for d in DISTRICTS for i in range(4)]
STEP_MS = 10_000


def make_readings(start_ms: int, minutes: int, seed: int) -> list[Reading]:
    """Every device every 10 s, pm25 and pm10 (smooth, plausible series), in time order."""
    rng = random.Random(seed)
    level = {device_id: (rng.uniform(15, 25), rng.uniform(30, 45)) for device_id, _ in DEVICES}
    readings = []
    for k in range(minutes * MINUTE // STEP_MS):
        ts = start_ms + k * STEP_MS
        for device_id, district in DEVICES:
            readings.append(
                Reading(
                    device_id=device_id,
                    district=district,
                    sensor_type="air_quality",
                    ts=ts + rng.randrange(0, 500),
                    seq=k,
                    values={
                        "pm25": round(level[device_id][0] + rng.gauss(0, 0.4), 2),
                        "pm10": round(level[device_id][1] + rng.gauss(0, 0.6), 2),
                    },
                    received_ms=ts + 600,
                )
            )
    return readings


def with_faults(readings: list[Reading], seed: int) -> list[bytes]:
    """The wire records: some readings twice, some neighbours swapped, one malformed record."""
    rng = random.Random(seed)
    out = [codec.encode(r) for r in readings]
    for i in range(0, len(out) - 2 * len(DEVICES), 97):
        j = i + len(DEVICES)  # the same device's next reading
        out[i], out[j] = out[j], out[i]
    for i in rng.sample(range(len(out)), 25):
        out.insert(i + rng.randrange(1, 40), out[i])
    out.insert(len(out) // 2, b'{"device_id": "aq-gangnam-000", "seq": ')
    return out


def expected_aggregates(
    readings: list[Reading], closed_before: int
) -> dict[tuple[str, int], tuple[float, ...]]:
    """(series, window start) -> (count, mean, min, max, p95) for every window that must close."""
    values: dict[tuple[str, int], list[float]] = {}
    for r in readings:
        start = r.ts - r.ts % MINUTE
        if start + MINUTE > closed_before:
            continue
        for metric, v in r.values.items():
            values.setdefault((f"{r.district}/{r.sensor_type}/{metric}", start), []).append(v)
    out: dict[tuple[str, int], tuple[float, ...]] = {}
    for key, vs in values.items():
        p95 = statistics.quantiles(vs, n=20, method="inclusive")[18]
        out[key] = (len(vs), round(statistics.fmean(vs), 9), min(vs), max(vs), round(p95, 9))
    return out


def as_table(records: list[Aggregate]) -> dict[tuple[str, int], tuple[float, ...]]:
    table: dict[tuple[str, int], tuple[float, ...]] = {}
    for a in records:
        key = (f"{a.district}/{a.sensor_type}/{a.metric}", a.window_start)
        row = (a.count, round(a.mean, 9), a.min, a.max, round(a.p95, 9))
        assert table.setdefault(key, row) == row, f"window {key} emitted with two different results"
    return table


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[JobsWorker]:
    # A short session timeout: the restarted worker gets the partitions of the one killed
    # without waiting a minute for the group to give up on it.
    w = JobsWorker(
        settings,
        tmp_path / "worker.log",
        grace_s=str(GRACE_S),
        idle_source_s="3",
        timer_interval_s="1",
        session_timeout_s="10",
    )
    yield w
    w.stop()
    if w.log.exists():
        text = w.log.read_text()
        print(text[:5000], "\n...\n", text[-3000:])  # shown when the test failed


async def produce(settings: Settings, records: list[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        topic = topic_name(TELEMETRY_RAW, settings.kafka)
        sends = []
        for value in records:
            try:
                key = codec.decode(value, Reading).device_id.encode()
            except codec.DecodeError:
                key = b"aq-gangnam-000"
            sends.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def read_aggregates(settings: Settings) -> list[Aggregate]:
    records = await read_topic(
        settings.kafka.bootstrap, topic_name(TELEMETRY_AGG_1M, settings.kafka), timeout_s=5
    )
    return [codec.decode(r.value, Aggregate) for r in records if r.value is not None]


async def wait_for_aggregates(settings: Settings, n: int, timeout_s: float) -> list[Aggregate]:
    got: list[Aggregate] = []

    async def enough() -> bool:
        nonlocal got
        got = await read_aggregates(settings)
        return len({(a.district, a.metric, a.window_start) for a in got}) >= n

    await wait_for(enough, timeout_s, f"{n} aggregates", interval_s=1.0)
    return got


def start_ms() -> int:
    now = int(time.time() * 1000)
    return now - now % MINUTE - 30 * MINUTE


async def test_aggregates_are_exact_despite_duplicates_and_disorder(
    settings: Settings, worker: JobsWorker
) -> None:
    readings = make_readings(start_ms(), 8, seed=1)
    closed_before = max(r.ts for r in readings) - GRACE_S * 1000
    closed_before -= closed_before % MINUTE
    expected = expected_aggregates(readings, closed_before)
    worker.start()
    await produce(settings, with_faults(readings, seed=2))
    got = await wait_for_aggregates(settings, len(expected), timeout_s=90)
    assert as_table(got) == expected
    dlq = await read_topic(settings.kafka.bootstrap, topic_name(TELEMETRY_DLQ, settings.kafka), timeout_s=5)
    reasons = [codec.decode(r.value, DlqRecord).reason for r in dlq if r.value is not None]
    assert reasons == ["invalid_reading"]
    events = await read_topic(
        settings.kafka.bootstrap, topic_name(ALERTS_EVENTS, settings.kafka), timeout_s=3
    )
    kinds = [
        (e.alert.rule, e.alert.subject)
        for e in (codec.decode(r.value, AlertEvent) for r in events if r.value)
    ]
    assert kinds == [], "duplicates and reordering raise no alert"


async def test_killed_worker_resumes_with_the_same_aggregates(settings: Settings, worker: JobsWorker) -> None:
    readings = make_readings(start_ms(), 10, seed=3)
    closed_before = max(r.ts for r in readings) - GRACE_S * 1000
    closed_before -= closed_before % MINUTE
    expected = expected_aggregates(readings, closed_before)
    wire = with_faults(readings, seed=4)
    half = len(wire) // 2
    worker.start()
    await produce(settings, wire[:half])
    await wait_for_aggregates(settings, 1, timeout_s=60)
    worker.kill()
    await produce(settings, wire[half:])
    worker.start()
    got = await wait_for_aggregates(settings, len(expected), timeout_s=90)
    assert as_table(got) == expected


async def test_an_alert_is_raised_acknowledged_and_kept_current(
    settings: Settings, worker: JobsWorker
) -> None:
    t0 = start_ms()
    device_id = "aq-gangnam-000"
    readings = [
        Reading(
            device_id=device_id,
            district="gangnam",
            sensor_type="air_quality",
            ts=t0 + k * STEP_MS,
            seq=k,
            values={"pm25": 20.0 + (k % 3) * 0.2 if k < 12 else 120.0 + (k % 3) * 0.2},
            received_ms=t0 + k * STEP_MS + 300,
        )
        for k in range(60)
    ]
    worker.start()
    await produce(settings, [codec.encode(r) for r in readings])
    key = f"threshold:pm25:{device_id}"
    events_topic = topic_name(ALERTS_EVENTS, settings.kafka)

    async def events_of_key() -> list[AlertEvent]:
        records = await read_topic(settings.kafka.bootstrap, events_topic, timeout_s=3)
        return [
            e for e in (codec.decode(r.value, AlertEvent) for r in records if r.value) if e.alert.key == key
        ]

    async def raised() -> bool:
        return any(e.kind is AlertEventKind.RAISED for e in await events_of_key())

    await wait_for(raised, 90, f"{key} raised", interval_s=1.0)
    first = (await events_of_key())[0]
    assert first.alert.rule == "threshold"
    assert first.alert.detector == "threshold"
    assert first.alert.value >= 75.0
    assert first.alert.offsets, "the alert names the readings behind it"
    # The condition must hold two minutes (the threshold rule's minimum duration) before it is raised.
    assert first.alert.raised_ms >= t0 + 12 * STEP_MS + 120_000

    command = AlertCommand(
        command_id="c-1", kind=AlertCommandKind.ACKNOWLEDGE, issued_ms=int(time.time() * 1000), by="operator",
        alert_key=key,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic_name(ALERTS_COMMANDS, settings.kafka), codec.encode(command), key=key.encode()
        )
    finally:
        await producer.stop()

    async def acknowledged() -> bool:
        return any(e.kind is AlertEventKind.ACKNOWLEDGED for e in await events_of_key())

    await wait_for(acknowledged, 60, f"{key} acknowledged", interval_s=1.0)
    events = await events_of_key()
    assert [e.kind for e in events].count(AlertEventKind.RAISED) == 1
    acked = next(e for e in events if e.kind is AlertEventKind.ACKNOWLEDGED)
    assert acked.alert.acknowledged_by == "operator"
    current = await read_topic(settings.kafka.bootstrap, topic_name(ALERTS, settings.kafka), timeout_s=3)
    states = [codec.decode(r.value, Alert) for r in current if r.key == key.encode() and r.value]
    assert states[-1].state is AlertState.ACKNOWLEDGED
