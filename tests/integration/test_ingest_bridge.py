"""The ingest bridge against the real Mosquitto and Kafka: delivery, validation, security, status."""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citystream.settings import Settings
from citystream.topics import DEVICE_STATUS, TELEMETRY_DLQ, TELEMETRY_RAW
from ingest import reasons
from ingest.registry import DeviceRegistry
from tests.helpers import wait_for
from tests.integration.ingest_support import (
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
    running_bridge,
    statuses,
)
from tests.unit.ingest.corpus import bad_inputs, fill

pytestmark = pytest.mark.integration


@pytest.fixture
async def fleet(settings: Settings, uid: str) -> AsyncIterator[Fleet]:
    mapo = Device(f"t{uid}-mapo", "mapo", "air_quality", f"pw-{uid}-mapo")
    fleet = await register_fleet(settings, uid, 10, extra=[mapo])
    yield fleet
    await remove_fleet(settings, fleet)


def connected(settings: Settings, device: Device, *, will: bool = False) -> Publisher:
    publisher = Publisher(settings, device, will=will)
    rc = publisher.connect()
    assert not rc.is_failure, rc
    return publisher


async def test_10k_messages_arrive_once_each_keyed_and_in_order(settings: Settings, fleet: Fleet) -> None:
    devices = fleet.devices[:10]
    per_device = 1000
    async with running_bridge(settings):
        publishers = [connected(settings, d) for d in devices]
        try:
            for seq in range(per_device):
                for p in publishers:
                    p.publish(p.device.topic(settings), payload(seq))
            for p in publishers:
                await asyncio.to_thread(p.wait_published, 60)
        finally:
            for p in publishers:
                p.close()
        records = await read_records(settings, TELEMETRY_RAW, expect=10 * per_device, timeout_s=60)
    got = readings(records)
    assert len(got) == 10 * per_device
    assert all(r.key == reading.device_id.encode() for r, reading in zip(records, got, strict=True))
    by_device: dict[str, list[int]] = collections.defaultdict(list)
    for reading in got:
        by_device[reading.device_id].append(reading.seq)
    assert sorted(by_device) == sorted(d.device_id for d in devices)
    for seqs in by_device.values():
        assert seqs == list(range(per_device))  # once each, in order (one key, one partition)
    assert {r.partition for r in records} == {
        next(r.partition for r in records if r.key == d.device_id.encode()) for d in devices
    }


async def test_bad_inputs_are_dead_lettered_with_their_reason(
    settings: Settings, fleet: Fleet, uid: str
) -> None:
    device, mapo = fleet.devices[0], fleet.devices[-1]
    max_bytes = settings.ingest.max_payload_bytes
    corpus = bad_inputs(int(time.time() * 1000), device.device_id, max_bytes)
    root = settings.mqtt.topic_root
    expected = {
        (
            fill(b.topic, root=root, device=device.device_id, mapo=mapo.device_id, uid=uid),
            b.payload[:max_bytes],
        ): b
        for b in corpus
    }
    assert len(expected) == len(corpus) >= 30
    async with running_bridge(settings) as bridge:
        by_publisher = {"device": connected(settings, device), "gateway": connected(settings, fleet.gateway)}
        try:
            for (topic, _), bad in zip(expected, corpus, strict=True):
                info = by_publisher[bad.publisher].publish(topic, bad.payload)
                await asyncio.to_thread(info.wait_for_publish, 10)
                assert info.is_published(), bad.name
            by_publisher["device"].publish(device.topic(settings), payload(1))
            for p in by_publisher.values():
                await asyncio.to_thread(p.wait_published)
        finally:
            for p in by_publisher.values():
                p.close()
        dlq = dead_letters(await read_records(settings, TELEMETRY_DLQ, expect=len(corpus), timeout_s=60))
        raw = readings(await read_records(settings, TELEMETRY_RAW, expect=1))
        assert bridge.readiness()[0]  # still running and ready
        stats = dict(bridge.stats.dead_lettered)
    assert [(r.device_id, r.seq) for r in raw] == [(device.device_id, 1)]
    assert len(dlq) == len(corpus)
    for record in dlq:
        bad = expected[(record.source, record.payload)]
        assert record.reason == bad.reason, (bad.name, record.detail)
        assert record.stage == "ingest"
        assert record.detail
    assert stats == dict(collections.Counter(b.reason for b in corpus))
    own = [r for r in dlq if r.source.startswith(f"{root}/gangnam/air_quality/{device.device_id}/")]
    assert own
    assert {r.device_id for r in own} == {device.device_id}


async def test_a_device_cannot_publish_under_another_devices_topic(settings: Settings, fleet: Fleet) -> None:
    a, b = fleet.devices[0], fleet.devices[1]
    async with running_bridge(settings):
        publisher = connected(settings, a)
        try:
            info = publisher.publish(b.topic(settings), payload(1))
            await asyncio.to_thread(info.wait_for_publish, 10)
            publisher.publish(a.topic(settings), payload(2))
            await asyncio.to_thread(publisher.wait_published)
        finally:
            publisher.close()
        raw = readings(await read_records(settings, TELEMETRY_RAW, expect=1))
        await asyncio.sleep(1.0)
        raw = readings(await read_records(settings, TELEMETRY_RAW))
        dlq = await read_records(settings, TELEMETRY_DLQ, timeout_s=2)
    assert [(r.device_id, r.seq) for r in raw] == [(a.device_id, 2)]
    assert dlq == []


def test_anonymous_connect_is_refused(settings: Settings) -> None:
    anonymous = Publisher(settings, Device("anonymous", "gangnam", "air_quality", ""))
    anonymous.client.username_pw_set(None, None)
    rc = anonymous.connect()
    anonymous.client.loop_stop()
    assert rc.is_failure
    assert rc.getName() in {"Not authorized", "Bad user name or password"}


async def test_a_revoked_device_is_refused_while_others_stay_connected(
    settings: Settings, fleet: Fleet
) -> None:
    a, b = fleet.devices[0], fleet.devices[1]
    async with running_bridge(settings):
        pa, pb = connected(settings, a), connected(settings, b)
        try:
            await DeviceRegistry(settings).revoke(a.device_id)
            await asyncio.sleep(0.5)  # the broker reloads on SIGHUP
            assert not pb.disconnected.is_set()
            pb.publish(b.topic(settings), payload(1))
            await asyncio.to_thread(pb.wait_published)
            if not pa.disconnected.is_set():
                pa.publish(a.topic(settings), payload(1))  # still connected: the ACL or the bridge stops it
        finally:
            pa.close()
        again = Publisher(settings, a)
        rc = await asyncio.to_thread(again.connect)
        again.client.loop_stop()
        assert rc.is_failure, rc
        pb.publish(b.topic(settings), payload(2))
        await asyncio.to_thread(pb.wait_published)
        assert not pb.disconnected.is_set()
        pb.close()
        raw = readings(await read_records(settings, TELEMETRY_RAW, expect=2))
    assert [(r.device_id, r.seq) for r in raw] == [(b.device_id, 1), (b.device_id, 2)]


async def test_status_and_last_will_update_the_online_state(settings: Settings, fleet: Fleet) -> None:
    device = fleet.devices[0]
    async with running_bridge(settings):
        publisher = connected(settings, device, will=True)
        publisher.publish(device.topic(settings, "status"), b"online", retain=True)
        await asyncio.to_thread(publisher.wait_published)
        publisher.drop_connection()
        records = await read_records(settings, DEVICE_STATUS, expect=2, timeout_s=60)
    got = statuses(records)
    assert [(s.device_id, s.online) for s in got] == [(device.device_id, True), (device.device_id, False)]
    assert {r.key for r in records} == {device.device_id.encode()}
    assert got[0].ts_ms <= got[1].ts_ms


async def test_two_bridges_split_the_shared_subscription(settings: Settings, fleet: Fleet) -> None:
    devices = fleet.devices[:4]
    async with (
        running_bridge(settings, client_id=f"{settings.mqtt.share_group}-a") as first,
        running_bridge(settings, client_id=f"{settings.mqtt.share_group}-b") as second,
    ):
        publishers = [connected(settings, d) for d in devices]
        try:
            for seq in range(100):
                for p in publishers:
                    p.publish(p.device.topic(settings), payload(seq))
            for p in publishers:
                await asyncio.to_thread(p.wait_published)
        finally:
            for p in publishers:
                p.close()
        raw = readings(await read_records(settings, TELEMETRY_RAW, expect=400))
        shares = (first.stats.received, second.stats.received)
    assert sorted((r.device_id, r.seq) for r in raw) == sorted(
        (d.device_id, s) for d in devices for s in range(100)
    )
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == 400


async def test_a_device_registered_while_the_bridge_runs_is_accepted(
    settings: Settings, fleet: Fleet, uid: str
) -> None:
    async with running_bridge(settings):
        registry = DeviceRegistry(settings)
        newcomer_id = f"t{uid}-new"
        _, password = await registry.add(newcomer_id, "gangnam", "air_quality")
        try:
            newcomer = Device(newcomer_id, "gangnam", "air_quality", password)
            publisher = connected(settings, newcomer)
            publisher.publish(newcomer.topic(settings), payload(1))
            await asyncio.to_thread(publisher.wait_published)
            publisher.close()
            raw = readings(await read_records(settings, TELEMETRY_RAW, expect=1))
            dlq = await read_records(settings, TELEMETRY_DLQ, timeout_s=2)
        finally:
            await registry.remove(newcomer_id)
    assert [(r.device_id, r.seq) for r in raw] == [(newcomer_id, 1)]
    assert dlq == []


async def test_clock_skew_is_flagged_on_the_reading(settings: Settings, fleet: Fleet) -> None:
    device = fleet.devices[0]
    ahead_ms = 20 * 60 * 1000
    async with running_bridge(settings):
        publisher = connected(settings, device)
        publisher.publish(device.topic(settings), payload(1, ts=int(time.time() * 1000) + ahead_ms))
        await asyncio.to_thread(publisher.wait_published)
        publisher.close()
        raw = readings(await read_records(settings, TELEMETRY_RAW, expect=1))
    assert raw[0].flags == (reasons.CLOCK_SKEW_FLAG,)
    assert ahead_ms - 60_000 < raw[0].skew_ms <= ahead_ms


async def test_metrics_health_and_readiness_over_http(
    settings: Settings, fleet: Fleet, tmp_path: Path
) -> None:
    bridge = BridgeProcess(settings, tmp_path)
    device = fleet.devices[0]
    try:
        await asyncio.to_thread(bridge.start)
        assert bridge.get("/healthz") == (200, b"ok\n")
        status, body = bridge.get("/readyz")
        assert status == 200, body
        publisher = connected(settings, device)
        for seq in range(20):
            publisher.publish(device.topic(settings), payload(seq))
        publisher.publish(device.topic(settings), b"{not json")
        await asyncio.to_thread(publisher.wait_published)
        publisher.close()
        await read_records(settings, TELEMETRY_RAW, expect=20)

        async def counted() -> bool:
            text = (await asyncio.to_thread(bridge.get, "/metrics"))[1].decode()
            return (
                'citystream_ingest_produced_total{output="raw"} 20.0' in text
                and 'citystream_ingest_dead_lettered_total{reason="invalid_json"} 1.0' in text
            )

        await wait_for(counted, 30, "the produced and dead-lettered counters")
        text = (await asyncio.to_thread(bridge.get, "/metrics"))[1].decode()
        assert "citystream_ingest_received_total 21.0" in text
        assert "citystream_ingest_produce_latency_seconds_count 21.0" in text
        assert "citystream_ingest_device_latency_seconds_count 20.0" in text
        assert "citystream_ingest_in_flight 0.0" in text
        assert bridge.terminate() == 0
    finally:
        bridge.close()


async def test_graceful_shutdown_delivers_and_acknowledges_what_is_in_flight(
    settings: Settings, fleet: Fleet, tmp_path: Path
) -> None:
    devices = fleet.devices[:5]
    per_device = 600
    bridge = BridgeProcess(settings, tmp_path)
    publishers = [connected(settings, d) for d in devices]
    try:
        await asyncio.to_thread(bridge.start)
        for seq in range(per_device):
            for p in publishers:
                p.publish(p.device.topic(settings), payload(seq))
            if seq == per_device // 3:
                assert await asyncio.to_thread(bridge.terminate) == 0
        for p in publishers:
            await asyncio.to_thread(p.wait_published, 60)
        await asyncio.to_thread(bridge.start)
        raw = readings(
            await read_records(settings, TELEMETRY_RAW, expect=len(devices) * per_device, timeout_s=60)
        )
        assert bridge.terminate() == 0
    finally:
        for p in publishers:
            p.close()
        bridge.close()
    keys = [(r.device_id, r.seq) for r in raw]
    assert set(keys) == {(d.device_id, s) for d in devices for s in range(per_device)}
    twice = [(r.device_id, r.seq, r.received_ms) for r in raw if keys.count((r.device_id, r.seq)) > 1]
    assert not twice, f"a graceful shutdown acknowledges what it delivered: {twice[:6]}"


async def test_the_bridge_reconnects_after_losing_its_mqtt_connection(
    settings: Settings, fleet: Fleet
) -> None:
    devices = fleet.devices[:4]
    async with running_bridge(settings) as bridge:
        publishers = [connected(settings, d) for d in devices]
        try:
            for seq in range(400):
                for p in publishers:
                    p.publish(p.device.topic(settings), payload(seq))
                if seq == 150:
                    sock = bridge.mqtt.client.socket()
                    assert isinstance(sock, socket.socket)
                    sock.shutdown(socket.SHUT_RDWR)  # the network drops the connection
            for p in publishers:
                await asyncio.to_thread(p.wait_published, 60)
        finally:
            for p in publishers:
                p.close()

        async def reconnected() -> bool:
            return bridge.mqtt.connects >= 2 and bridge.readiness()[0]

        await wait_for(reconnected, 30, "the bridge to reconnect")
        raw = readings(await read_records(settings, TELEMETRY_RAW, expect=1600, timeout_s=60))
        redelivered = bridge.stats.redelivered
    keys = {(r.device_id, r.seq) for r in raw}
    assert keys == {(d.device_id, s) for d in devices for s in range(400)}
    print(f"reconnect: {len(raw) - len(keys)} duplicates, {redelivered} redelivered")
