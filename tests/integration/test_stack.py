"""The foundation against the real local Mosquitto, Kafka and InfluxDB."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from citystream.addressing import device_topic
from citystream.settings import Settings
from citystream.topics import TELEMETRY_RAW, topic_name
from ingest.registry import DeviceRegistry
from stack.manager import Stack
from tests.helpers import create_buckets
from tests.mqtt import TestClient

pytestmark = pytest.mark.integration

Devices = dict[str, tuple[str, str, str]]
"""name -> (device id, password, telemetry topic)"""


def test_status_reports_every_service_up(stack_settings: Settings) -> None:
    rows = Stack(stack_settings).status()
    assert [r.name for r in rows] == ["mosquitto", "kafka", "influxdb"]
    assert all(r.healthy and r.pid for r in rows), rows
    versions = {r.name: r.version for r in rows}
    assert versions["mosquitto"].startswith("2.")
    assert versions["kafka"].startswith("4.")
    assert versions["influxdb"].startswith("2.")


async def test_kafka_produce_and_consume(settings: Settings, uid: str) -> None:
    topic = topic_name(TELEMETRY_RAW, settings.kafka)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=b"dev-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=f"g{uid}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            got += [r.value for recs in batch.values() for r in recs if r.value is not None]
    finally:
        await consumer.stop()
    # One key, so one partition, so in order.
    assert got == [f"v{i}".encode() for i in range(20)]


@pytest.fixture
def two_devices(settings: Settings, uid: str) -> Iterator[Devices]:
    """Two registered devices in different districts: id -> (password, topic)."""
    registry = DeviceRegistry(settings)
    devices: Devices = {}
    for name, district in (("a", "gangnam"), ("b", "mapo")):
        device_id = f"t{uid}-{name}"
        _, password = asyncio.run(registry.add(device_id, district, "air_quality"))
        topic = device_topic(settings.mqtt.topic_root, district, "air_quality", device_id, "telemetry")
        devices[name] = (device_id, password, topic)
    yield devices
    asyncio.run(registry.remove(*(d[0] for d in devices.values())))


def _ingest_client(settings: Settings) -> TestClient:
    m = settings.mqtt
    client = TestClient(m.host, m.port, m.ingest_username, m.ingest_password.get_secret_value())
    assert client.connect().value == 0
    return client


def test_device_publishes_with_its_credentials(settings: Settings, two_devices: Devices) -> None:
    device_id, password, topic = two_devices["a"]
    listener = _ingest_client(settings)
    listener.subscribe(f"{settings.mqtt.topic_root}/#")
    device = TestClient(settings.mqtt.host, settings.mqtt.port, device_id, password)
    try:
        assert device.connect().value == 0
        info = device.publish(topic, b'{"ts": 1, "seq": 1, "values": {"pm25": 3.0}}')
        assert info.is_published()
        messages = listener.wait_messages(1)
        assert [m.topic for m in messages] == [topic]
        assert messages[0].payload == b'{"ts": 1, "seq": 1, "values": {"pm25": 3.0}}'
    finally:
        device.close()
        listener.close()


def test_anonymous_and_wrong_password_are_refused(settings: Settings, two_devices: Devices) -> None:
    anonymous = TestClient(settings.mqtt.host, settings.mqtt.port, None, None)
    rc = anonymous.connect()
    assert rc.is_failure, rc
    anonymous.client.loop_stop()
    device_id, _, _ = two_devices["a"]
    wrong = TestClient(settings.mqtt.host, settings.mqtt.port, device_id, "not-the-password")
    rc = wrong.connect()
    assert rc.is_failure, rc
    wrong.client.loop_stop()


def test_device_cannot_publish_under_another_device(settings: Settings, two_devices: Devices) -> None:
    a_id, a_password, a_topic = two_devices["a"]
    _, _, b_topic = two_devices["b"]
    listener = _ingest_client(settings)
    listener.subscribe(f"{settings.mqtt.topic_root}/#")
    device = TestClient(settings.mqtt.host, settings.mqtt.port, a_id, a_password)
    try:
        assert device.connect().value == 0
        info = device.publish(b_topic, b'{"ts": 1, "seq": 1, "values": {"pm25": 3.0}}')
        # MQTT 5: the broker answers "not authorized" and delivers nothing.
        assert device.puback[info.mid].is_failure
        device.publish(a_topic, b'{"ts": 1, "seq": 2, "values": {"pm25": 3.0}}')
        messages = listener.wait_messages(1)
        time.sleep(0.5)
        assert [m.topic for m in listener.messages] == [a_topic], messages
    finally:
        device.close()
        listener.close()


def test_influx_write_and_flux_read(settings: Settings, uid: str) -> None:
    create_buckets(settings)
    i = settings.influx
    point = (
        Point("reading")
        .tag("district", "gangnam")
        .tag("device_id", f"t{uid}")
        .field("pm25", 23.5)
        .time(time.time_ns() // 1_000_000, "ms")
    )
    # The sink and dashboard tokens are scoped to the stack's buckets; the test's own bucket
    # is written with the operator token (the scoping is checked in the next test).
    with InfluxDBClient(url=i.url, token=i.admin_token.get_secret_value(), org=i.org) as admin:
        admin.write_api(write_options=SYNCHRONOUS).write(bucket=i.bucket_raw, record=point)
        tables = admin.query_api().query(
            f'from(bucket: "{i.bucket_raw}") |> range(start: -1h) '
            f'|> filter(fn: (r) => r._measurement == "reading" and r.device_id == "t{uid}")'
        )
    rows = [(r.get_field(), r.get_value(), r.values["district"]) for t in tables for r in t.records]
    assert rows == [("pm25", 23.5, "gangnam")]


def test_sink_token_cannot_read_and_dashboard_token_cannot_write(stack_settings: Settings, uid: str) -> None:
    i = stack_settings.influx
    flux = f'from(bucket: "{i.bucket_raw}") |> range(start: -1m) |> limit(n: 1)'
    point = Point("reading").tag("device_id", f"t{uid}").field("pm25", 1.0)
    with InfluxDBClient(url=i.url, token=i.sink_token.get_secret_value(), org=i.org) as sink:
        sink.write_api(write_options=SYNCHRONOUS).write(bucket=i.bucket_raw, record=point)
        with pytest.raises(ApiException) as denied_read:
            sink.query_api().query(flux)
        assert denied_read.value.status in (401, 403, 404)
    with InfluxDBClient(url=i.url, token=i.dashboard_token.get_secret_value(), org=i.org) as dash:
        dash.query_api().query(flux)
        with pytest.raises(ApiException) as denied_write:
            dash.write_api(write_options=SYNCHRONOUS).write(bucket=i.bucket_raw, record=point)
        assert denied_write.value.status in (401, 403, 404)
