"""Per-device rate limits at the bridge against the real Mosquitto and Kafka: a flooding device is
throttled (its excess dead-lettered as ``rate_limited``, acknowledged, counted and reported once),
while the others keep their rate and lose nothing."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from citystream.model import DlqRecord
from citystream.settings import Settings
from citystream.topics import TELEMETRY_DLQ, TELEMETRY_RAW
from ingest import reasons
from tests.helpers import wait_for
from tests.integration.ingest_support import (
    REDELIVERED,
    BridgeProcess,
    Device,
    Fleet,
    Publisher,
    dead_letters,
    payload,
    read_records,
    readings,
    register_fleet,
    remove_fleet,
)

pytestmark = pytest.mark.integration

RATE_PER_S = 20.0
BURST = 40
FLOOD_FACTOR = 10
"""The flooding device sends this many times its rate."""
NORMAL_PER_S = 10.0
"""The other devices send at half the limit, but more than a burst in all."""
SECONDS = 5.0
TICK_S = 0.1


@pytest.fixture
async def fleet(settings: Settings, uid: str) -> AsyncIterator[Fleet]:
    fleet = await register_fleet(settings, uid, 5)
    yield fleet
    await remove_fleet(settings, fleet)


def limited(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "ingest": settings.ingest.model_copy(
                update={"device_rate_per_s": RATE_PER_S, "device_burst": BURST}
            )
        }
    )


def send(
    settings: Settings,
    publishers: list[Publisher],
    flooder: Device,
    sent: dict[str, int],
    flood_factor: float = FLOOD_FACTOR,
) -> float:
    """For ``SECONDS``: the flooder at ``flood_factor`` times the rate, the others at
    ``NORMAL_PER_S``, in ticks of ``TICK_S``; returns how long it took, acknowledgements included."""
    flood_per_tick = round(RATE_PER_S * flood_factor * TICK_S)
    normal_per_tick = round(NORMAL_PER_S * TICK_S)
    started = time.monotonic()
    for tick in range(round(SECONDS / TICK_S)):
        for p in publishers:
            count = flood_per_tick if p.device == flooder else normal_per_tick
            for _ in range(count):
                p.publish(p.device.topic(settings), payload(sent[p.device.device_id]))
                sent[p.device.device_id] += 1
        time.sleep(max(0.0, started + (tick + 1) * TICK_S - time.monotonic()))
    for p in publishers:
        p.wait_published(90)
    return time.monotonic() - started


def token_bucket(times_ms: list[int], rate_per_s: float, burst: int) -> list[bool]:
    """Which of these arrivals a token bucket of ``burst`` tokens refilled at ``rate_per_s`` passes."""
    capacity = Fraction(burst)
    tokens, last = capacity, times_ms[0]
    passed: list[bool] = []
    for t in times_ms:
        tokens = min(capacity, tokens + Fraction(rate_per_s) * Fraction(t - last, 1000))
        last = t
        passed.append(tokens >= 1)
        if tokens >= 1:
            tokens -= 1
    return passed


def seq_of(record: DlqRecord) -> int:
    seq: int = json.loads(record.payload)["seq"]
    return seq


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_flooding_device_is_throttled_while_the_others_keep_their_rate(
    settings: Settings, fleet: Fleet, tmp_path: Path
) -> None:
    s = limited(settings)
    flooder, others = fleet.devices[0], fleet.devices[1:]
    bridge = BridgeProcess(s, tmp_path)
    publishers = [Publisher(s, d) for d in fleet.devices]
    sent = {d.device_id: 0 for d in fleet.devices}
    try:
        await asyncio.to_thread(bridge.start)
        for p in publishers:
            assert not (await asyncio.to_thread(p.connect)).is_failure
        publish_s = await asyncio.to_thread(send, s, publishers, flooder, sent)
        total = sum(sent.values())

        async def settled() -> bool:
            m = samples((await asyncio.to_thread(bridge.get, "/metrics"))[1].decode())
            produced = sum(
                m.get(("citystream_ingest_produced_total", frozenset({("output", o)})), 0)
                for o in ("raw", "dlq")
            )
            return produced == total and m.get(("citystream_ingest_mqtt_acked", frozenset()), 0) == total

        await wait_for(settled, 60, f"all {total} messages produced and acknowledged")
        metrics = samples((await asyncio.to_thread(bridge.get, "/metrics"))[1].decode())
        produced_raw = metrics[("citystream_ingest_produced_total", frozenset({("output", "raw")}))]
        produced_dlq = metrics[("citystream_ingest_produced_total", frozenset({("output", "dlq")}))]
        raw = readings(await read_records(s, TELEMETRY_RAW, expect=int(produced_raw), timeout_s=60))
        dlq = dead_letters(await read_records(s, TELEMETRY_DLQ, expect=int(produced_dlq), timeout_s=60))
        assert await asyncio.to_thread(bridge.terminate) == 0
    finally:
        for p in publishers:
            p.close()
        bridge.close()

    # The others lose nothing: every reading of theirs is in telemetry.raw, none in the DLQ.
    for device in others:
        assert sent[device.device_id] == round(NORMAL_PER_S * SECONDS) > BURST
        seqs = sorted(r.seq for r in raw if r.device_id == device.device_id)
        assert seqs == list(range(sent[device.device_id])), device.device_id
    assert {r.device_id for r in dlq} == {flooder.device_id}

    # The flooder: every reading is either in telemetry.raw or dead-lettered as rate_limited.
    accepted = [r for r in raw if r.device_id == flooder.device_id]
    throttled = [seq_of(r) for r in dlq]
    assert {r.reason for r in dlq} == {reasons.RATE_LIMITED}
    assert all(r.detail for r in dlq)
    assert sorted([r.seq for r in accepted] + throttled) == list(range(sent[flooder.device_id]))

    # ...and what got through is what a token bucket lets through on the bridge's receive times
    # (the limiter's clock, carried by every record): replayed here in exact rational arithmetic,
    # in the order the device sent (one connection, QoS 1: the order the bridge received).
    received = {r.seq: r.received_ms for r in accepted} | {seq_of(r): r.received_ms for r in dlq}
    times = [received[seq] for seq in range(sent[flooder.device_id])]
    assert times == sorted(times)
    predicted = [seq for seq, passed in enumerate(token_bucket(times, RATE_PER_S, BURST)) if passed]
    assert sorted(r.seq for r in accepted) == predicted
    span_s = (times[-1] - times[0]) / 1000
    bound = BURST + RATE_PER_S * span_s
    assert len(accepted) <= bound + 1e-9
    assert len(throttled) >= sent[flooder.device_id] - bound

    # Metrics: per reason, per device, the throttled-devices gauge, every message acknowledged.
    assert metrics[("citystream_ingest_dead_lettered_total", frozenset({("reason", "rate_limited")}))] == len(
        dlq
    )
    per_device = {
        dict(labels)["device_id"]: value
        for (name, labels), value in metrics.items()
        if name == "citystream_ingest_device_dead_lettered_total"
    }
    assert per_device == {flooder.device_id: len(dlq)}
    assert metrics[("citystream_ingest_rate_limited_devices", frozenset())] == 1
    assert metrics[("citystream_ingest_rate_limit_buckets", frozenset())] == len(fleet.devices)
    assert metrics[("citystream_ingest_mqtt_acked", frozenset())] == total
    assert metrics[("citystream_ingest_mqtt_not_acked", frozenset())] == 0

    # One warning for the flooder (the run is shorter than the report interval), by id, no payload.
    log = bridge.log.read_text()
    warnings = [line for line in log.splitlines() if "over its rate limit" in line]
    assert len(warnings) == 1, warnings
    assert flooder.device_id in warnings[0]
    assert '"values"' not in log
    assert "pm25" not in log
    print(
        f"rate limit {RATE_PER_S:g}/s burst {BURST}: flooder sent {sent[flooder.device_id]} in "
        f"{publish_s:.1f} s, {len(accepted)} accepted (burst + rate x {span_s:.2f} s = {bound:.1f}), "
        f"{len(throttled)} dead-lettered as rate_limited; {len(others)} others sent "
        f"{sum(sent[d.device_id] for d in others)}, all in telemetry.raw"
    )


async def test_throttled_readings_are_acknowledged_only_once_in_kafka_so_a_kill_9_loses_none(
    settings: Settings, fleet: Fleet, tmp_path: Path
) -> None:
    s = limited(settings)
    flooder = fleet.devices[0]
    bridge = BridgeProcess(s, tmp_path)
    publishers = [Publisher(s, d) for d in fleet.devices]
    sent = {d.device_id: 0 for d in fleet.devices}
    dlq_produced = re.compile(rb'citystream_ingest_produced_total\{output="dlq"\} ([0-9.e+]+)')
    try:
        await asyncio.to_thread(bridge.start)
        for p in publishers:
            assert not (await asyncio.to_thread(p.connect)).is_failure
        # a harder flood, so that records are in flight when the bridge dies
        sender = threading.Thread(
            target=send, args=(s, publishers, flooder, sent, 10 * FLOOD_FACTOR), daemon=True
        )
        sender.start()

        async def throttling() -> bool:
            return await asyncio.to_thread(bridge.metric, dlq_produced) >= 1000

        await wait_for(throttling, 30, "the flooder's first dead-letter records")
        await asyncio.to_thread(bridge.kill)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(bridge.start)
        await asyncio.to_thread(sender.join, 120)
        assert not sender.is_alive()
        expected = {(device_id, seq) for device_id, count in sent.items() for seq in range(count)}

        async def everything() -> set[tuple[str, int]]:
            raw = readings(await read_records(s, TELEMETRY_RAW))
            dlq = dead_letters(await read_records(s, TELEMETRY_DLQ))
            return {(r.device_id, r.seq) for r in raw} | {(r.device_id or "", seq_of(r)) for r in dlq}

        async def all_in_kafka() -> bool:
            return await everything() >= expected

        await wait_for(all_in_kafka, 90, "every reading in telemetry.raw or telemetry.dlq", interval_s=1.0)
        raw = readings(await read_records(s, TELEMETRY_RAW))
        dlq = dead_letters(await read_records(s, TELEMETRY_DLQ))
        redelivered = await asyncio.to_thread(bridge.metric, REDELIVERED)
        assert await asyncio.to_thread(bridge.terminate) == 0
    finally:
        for p in publishers:
            p.close()
        bridge.close()
    keys = [(r.device_id, r.seq) for r in raw] + [(r.device_id or "", seq_of(r)) for r in dlq]
    assert set(keys) == expected
    assert {r.reason for r in dlq} == {reasons.RATE_LIMITED}
    throttled_others = sum(1 for r in dlq if r.device_id != flooder.device_id)
    print(
        f"kill -9 while throttling: {len(expected)} sent, {len(raw)} in telemetry.raw, {len(dlq)} "
        f"dead-lettered ({throttled_others} of other devices' backlog), "
        f"{len(keys) - len(set(keys))} duplicates, {redelivered:.0f} redelivered by the broker"
    )
