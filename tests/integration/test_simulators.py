"""The simulator against the real Mosquitto: counts, determinism, incidents, credentials, status."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest

from citystream.settings import Settings
from cli.main import main as citystream
from simulators import evidence, labels, provision, run, wire
from simulators.connection import MqttConnection
from simulators.errors import ConnectError
from simulators.fleet import Device
from simulators.generator import Message, Plan
from simulators.publisher import Login, Pacing, Publisher, Route, connect_retrying
from simulators.scenario import Kind, from_dict
from tests.mqtt import TestClient

pytestmark = pytest.mark.integration

SHORT: dict[str, Any] = {
    "name": "short",
    "seed": 3,
    "start": "2025-06-02T08:00:00+09:00",
    "duration": 60,
    "time_compression": 30,
    "qos": 1,
    "fleet": {
        "size": 8,
        "districts": ["gangnam", "mapo"],
        "mix": {"air_quality": 1, "noise": 1},
        "interval_s": {"air_quality": 10, "noise": 5},
    },
}
"""Four air-quality monitors every 10 s and four noise monitors every 5 s for one minute."""
PER_DEVICE = {"air_quality": 6, "noise": 12}


@pytest.fixture
def listener(settings: Settings) -> Iterator[TestClient]:
    """The ingest user subscribed to the test's whole topic root."""
    m = settings.mqtt
    client = TestClient(m.host, m.port, m.ingest_username, m.ingest_password.get_secret_value())
    assert client.connect().value == 0
    client.subscribe(f"{m.topic_root}/#")
    yield client
    client.close()


def by_topic(messages: list[mqtt.MQTTMessage]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for m in messages:
        out[m.topic].append(bytes(m.payload))
    return out


def check_counts(root: str, prefix: str, messages: list[mqtt.MQTTMessage], gateways: list[str]) -> None:
    topics = by_topic(messages)
    telemetry = {t: p for t, p in topics.items() if t.endswith("/telemetry")}
    status = {t: p for t, p in topics.items() if t.endswith("/status")}
    assert len(telemetry) == 8
    for topic, payloads in telemetry.items():
        _, district, sensor_type, device_id, _ = topic.split("/")
        assert topic.startswith(f"{root}/")
        assert device_id.startswith(prefix)
        assert district in ("gangnam", "mapo")
        assert len(payloads) == PER_DEVICE[sensor_type], topic
        assert [msgspec.json.decode(p)["seq"] for p in payloads] == list(range(1, len(payloads) + 1))
    gateway_status = {f"{root}/{g.rsplit('-', 1)[1]}/any/{g}/status" for g in gateways}
    assert set(status) == {t.replace("/telemetry", "/status") for t in telemetry} | gateway_status
    for payloads in status.values():
        assert payloads == [b"online", b"offline", b""]


@pytest.mark.parametrize("connection", ["device", "gateway"])
async def test_a_short_scenario_sends_what_it_says(
    settings: Settings, uid: str, listener: TestClient, connection: str
) -> None:
    scenario = from_dict({**SHORT, "connection": connection})
    prefix = f"t{uid}-"
    result = await run.run_scenario(settings, scenario, id_prefix=prefix, clear_status=True, deprovision=True)
    expected_total = 4 * PER_DEVICE["air_quality"] + 4 * PER_DEVICE["noise"]
    s = result.summary
    assert (s.planned, s.sent, s.failed, s.qos) == (expected_total, expected_total, 0, 1)
    assert sorted(result.expected.values()) == [6] * 4 + [12] * 4
    if connection == "device":
        assert s.connections == 8
        assert {login.username for login in result.route.logins} == set(result.expected)
    else:
        assert s.connections == 2
        assert [login.username for login in result.route.logins] == [
            f"{prefix}gw-gangnam",
            f"{prefix}gw-mapo",
        ]
    gateways = [] if connection == "device" else [login.username for login in result.route.logins]
    received = await asyncio.to_thread(listener.wait_messages, expected_total + 3 * (8 + len(gateways)), 20)
    check_counts(settings.mqtt.topic_root, prefix, received, gateways)
    if connection == "gateway":
        assert len(result.route.registered) == 2 + 8, "the gateways and their devices"


async def test_same_seed_same_payloads_over_the_wire(
    settings: Settings, uid: str, listener: TestClient
) -> None:
    def sequences(messages: list[mqtt.MQTTMessage]) -> dict[str, list[bytes]]:
        return {t: p for t, p in by_topic(messages).items() if t.endswith("/telemetry")}

    async def once(seed: int) -> dict[str, list[bytes]]:
        listener.messages.clear()
        scenario = from_dict({**SHORT, "seed": seed, "rate": 0, "connection": "gateway", "duration": 300})
        result = await run.run_scenario(
            settings, scenario, id_prefix=f"t{uid}-", status=False, deprovision=True
        )
        assert result.summary.failed == 0
        return sequences(await asyncio.to_thread(listener.wait_messages, result.summary.planned, 20))

    first, second, other = await once(7), await once(7), await once(8)
    assert sum(len(p) for p in first.values()) == 4 * 30 + 4 * 60
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[t] != other[t] for t in first)


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_a_stopped_or_cancelled_run_reports_its_devices_offline(
    settings: Settings, uid: str, listener: TestClient, how: str
) -> None:
    scenario = from_dict({**SHORT, "duration": 3600, "time_compression": 60, "connection": "device"})
    stop = asyncio.Event()
    running = asyncio.create_task(
        run.run_scenario(settings, scenario, id_prefix=f"t{uid}-", deprovision=True, stop=stop)
    )
    await asyncio.to_thread(listener.wait_messages, 8 + 20, 20)  # online, then some telemetry
    if how == "stop":
        stop.set()
        summary = (await running).summary
        assert summary.stopped
        assert 0 < summary.queued < summary.planned
        assert (summary.failed, summary.sent) == (0, summary.queued)
    else:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    await asyncio.sleep(0.5)
    status = [m for m in listener.messages if m.topic.endswith("/status")]
    last: dict[str, bytes] = {m.topic: bytes(m.payload) for m in status}
    assert len(last) == 8
    assert set(last.values()) == {b"offline"}
    for topic in last:  # delete the retained status again
        await _clear_retained(settings, uid, topic)


async def _clear_retained(settings: Settings, uid: str, topic: str) -> None:
    district = topic.split("/")[1]
    device = _device(uid, f"clear-{district}", district)
    route = provision.plan_route([device], "gateway", f"t{uid}-")
    await provision.provision(settings, route, [device], register_devices=False)
    try:
        login = route.logins[0]
        m = settings.mqtt
        conn = MqttConnection(
            m.host, m.port, login.client_id, username=login.username, password=login.password
        )
        await connect_retrying(conn)
        conn.publish(wire.topic_field(topic), b"", 1, retain=True)
        await conn.close()
        assert conn.stats.acked == 1
    finally:
        await provision.deprovision(settings, route)


def test_faulty_fleet_shows_every_incident_on_the_wire(
    settings: Settings, uid: str, listener: TestClient, tmp_path: Path
) -> None:
    labels_path = tmp_path / "labels.jsonl"
    root = settings.mqtt.topic_root
    code = citystream(
        [
            "simulate", "--scenario", "faulty-fleet", "--root", root, "--id-prefix", f"t{uid}-",
            "--rate", "0", "--connection", "gateway", "--labels", str(labels_path), "--no-progress",
            "--clear-status", "--deprovision",
        ]
    )  # fmt: skip
    assert code == 0
    found = labels.read(labels_path)
    assert {label.kind for label in found} == {k.value for k in Kind}
    for label in found:
        assert label.start_ms < label.end_ms
        assert label.devices or label.kind == "district_event"
        assert all(d.startswith(f"t{uid}-") for d in label.devices)
    telemetry = 35_985
    received = listener.wait_messages(telemetry + 3 * (300 + 25), timeout_s=60)
    logs = evidence.collect(root, ((m.topic, bytes(m.payload)) for m in received))
    assert sum(len(log.readings) + len(log.invalid) for log in logs.values()) == telemetry
    problems = {label.incident: evidence.problem(label, logs) for label in found}
    assert problems == dict.fromkeys(problems)
    stuck = next(label for label in found if label.kind == "stuck_value")
    inside = [r.values for r in logs[stuck.devices[0]].readings if stuck.start_ms <= r.ts < stuck.end_ms]
    assert len(inside) == 60
    assert len({msgspec.json.encode(v) for v in inside}) == 1


def test_replay_of_a_nab_series(settings: Settings, uid: str, listener: TestClient, tmp_path: Path) -> None:
    source = Path("/work/shared/nab/data/realKnownCause/nyc_taxi.csv")
    if not source.is_file():
        pytest.skip("NAB corpus not present")
    head = source.read_text().splitlines()[:201]
    csv = tmp_path / "taxi.csv"
    csv.write_text("\n".join(head) + "\n")
    device_id = f"t{uid}-taxi"
    code = citystream(
        [
            "simulate", "--replay", str(csv), "--device", device_id, "--district", "jung",
            "--scale", "0.5", "--rate", "0", "--root", settings.mqtt.topic_root, "--no-progress",
            "--clear-status", "--deprovision",
        ]
    )  # fmt: skip
    assert code == 0
    topic = f"{settings.mqtt.topic_root}/jung/traffic/{device_id}/telemetry"
    received = [m for m in listener.wait_messages(200 + 3, timeout_s=20) if m.topic == topic]
    bodies = [msgspec.json.decode(m.payload) for m in received]
    assert [b["seq"] for b in bodies] == list(range(1, 201))
    expected = [float(line.split(",")[1]) * 0.5 for line in head[1:]]
    assert [b["values"]["vehicle_count"] for b in bodies] == expected
    assert {b2["ts"] - b1["ts"] for b1, b2 in itertools.pairwise(bodies)} == {1_800_000}


def _device(uid: str, name: str, district: str = "gangnam") -> Device:
    return Device(0, f"t{uid}-{name}", name, district, "noise", 37.5, 127.0, 1000, 0, 1)


async def test_wrong_credentials_surface_as_a_connect_error(settings: Settings, uid: str) -> None:
    device = _device(uid, "nobody")
    route = Route("device", [Login(device.device_id, device.device_id, "not-registered", "gangnam")], [0])
    publisher = Publisher(settings.mqtt, route, [device], settings.mqtt.topic_root, auth_retry_s=0)
    with pytest.raises(ConnectError, match="refused") as exc:
        await publisher.run(iter([]), start_ms=0, pacing=Pacing(0.0), total=0)
    assert exc.value.reason in (0x86, 0x87)
    assert not exc.value.retriable


async def test_the_broker_acl_refuses_another_device_topic_and_it_is_counted(
    settings: Settings, uid: str, listener: TestClient
) -> None:
    """One device's credentials used for two devices: the other device's messages fail."""
    mine, theirs = _device(uid, "mine"), _device(uid, "theirs")._replace(number=1)
    route = provision.plan_route([mine], "device", "")
    route = Route("device", route.logins, [0, 0])
    await provision.provision(settings, route, [mine])
    try:
        root = settings.mqtt.topic_root
        messages = [
            Message(i, d.number, i, d.topic(root), b'{"ts":%d,"seq":%d,"values":{"laeq":50.0}}' % (i, i), 1)
            for i in range(1, 11)
            for d in (mine, theirs)
        ]
        publisher = Publisher(settings.mqtt, route, [mine, theirs], root, status=False)
        summary = await publisher.run(iter(messages), start_ms=0, pacing=Pacing(0.0), total=len(messages))
    finally:
        await provision.deprovision(settings, route)
    assert (summary.sent, summary.failed) == (10, 10)
    assert summary.failures == {"not authorized": 10}
    received = await asyncio.to_thread(listener.wait_messages, 10, 10)
    await asyncio.sleep(0.5)
    assert Counter(m.topic for m in listener.messages) == {mine.topic(root): 10}, received


async def test_a_crashed_device_leaves_its_last_will(
    settings: Settings, uid: str, listener: TestClient
) -> None:
    device = _device(uid, "crash")
    route = provision.plan_route([device], "device", "")
    await provision.provision(settings, route, [device])
    login = route.logins[0]
    status = device.status_topic(settings.mqtt.topic_root)

    def connection(will: wire.Will | None = None) -> MqttConnection:
        m = settings.mqtt
        return MqttConnection(
            m.host, m.port, login.client_id, username=login.username, password=login.password, will=will
        )

    try:
        conn = connection(wire.Will(status, b"offline"))
        await connect_retrying(conn)
        conn.publish(wire.topic_field(status), b"online", 1, retain=True)
        conn.flush()
        await conn.idle()
        assert conn._transport is not None
        conn._transport.abort()  # no DISCONNECT: the broker must send the will
        messages = await asyncio.to_thread(listener.wait_messages, 2, 10)
        assert [(m.topic, m.payload) for m in messages] == [(status, b"online"), (status, b"offline")]
    finally:
        clear = connection()
        await clear.connect()
        clear.publish(wire.topic_field(status), b"", 1, retain=True)  # delete the retained status
        await clear.close()
        await provision.deprovision(settings, route)
    assert clear.stats.acked == 1


async def test_a_lost_connection_is_counted_and_reconnected(
    settings: Settings, uid: str, listener: TestClient
) -> None:
    """Another client takes over the gateway's session mid-run; the publisher comes back."""
    scenario = from_dict(
        {
            **SHORT,
            "rate": 150,
            "duration": 600,
            "connection": "gateway",
            "fleet": {**SHORT["fleet"], "districts": ["jung"]},
        }
    )
    plan = Plan(scenario, root=settings.mqtt.topic_root, id_prefix=f"t{uid}-")
    route = provision.plan_route(plan.devices, "gateway", f"t{uid}-")
    await provision.provision(settings, route, plan.devices)
    login = route.logins[0]
    try:
        publisher = Publisher(settings.mqtt, route, plan.devices, plan.root, status=False)
        total = plan.expected_total()
        running = asyncio.create_task(
            publisher.run(plan.messages(), start_ms=plan.start_ms, pacing=Pacing(150.0), total=total)
        )
        await asyncio.sleep(1.0)
        intruder = MqttConnection(
            settings.mqtt.host,
            settings.mqtt.port,
            login.client_id,
            username=login.username,
            password=login.password,
        )
        await intruder.connect()  # same client id: the broker drops the publisher's connection
        await intruder.close()
        summary = await running
    finally:
        await provision.deprovision(settings, route)
    assert summary.failed > 0
    assert summary.sent > total / 2
    assert summary.sent + summary.failed == total
    # In flight when the connection dropped, or published while it was down.
    assert all(r.startswith(("connection lost:", "disconnected:")) for r in summary.failures), (
        summary.failures
    )
    received = await asyncio.to_thread(listener.wait_messages, summary.sent, 20)
    telemetry = [m for m in received if m.topic.endswith("/telemetry")]
    assert summary.sent <= len(telemetry) <= total
