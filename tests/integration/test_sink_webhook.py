"""The webhook sink and the alert API against the real Kafka and a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr

from citystream import codec
from citystream.model import (
    Alert,
    AlertCommand,
    AlertCommandKind,
    AlertEvent,
    AlertEventKind,
    AlertState,
    DlqRecord,
    Reading,
    Severity,
)
from citystream.settings import Settings, WebhookSubscriber
from citystream.topics import ALERTS, ALERTS_COMMANDS, ALERTS_EVENTS, SINK_DLQ, TELEMETRY_RAW, topic_name
from sinks.api import AlertApi
from sinks.signing import EVENT_ID_HEADER, SignatureError, Verifier
from sinks.webhook import WebhookSink
from tests.helpers import read_topic, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-for-tests"
TOKEN = "api-token-for-tests"


# -- a real receiver ---------------------------------------------------------------------------


@dataclass
class Receiver:
    """A local webhook receiver that verifies every request like a consumer should."""

    secret: str = SECRET
    fail_until: float = 0.0
    """Answer 500 to everything before this monotonic time."""
    always_status: int | None = None
    accepted: list[AlertEvent] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    failed_answers: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self.verifier = Verifier(self.secret, tolerance_s=300)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        if self.always_status is not None or time.monotonic() < self.fail_until:
            self.failed_answers += 1
            return web.Response(status=self.always_status or 500)
        try:
            self.verifier.verify(headers, body)
        except SignatureError as exc:
            self.rejected.append(exc.reason)
            return web.json_response({"error": str(exc)}, status=409 if exc.reason == "replayed" else 401)
        self.requests.append((headers, body))
        self.accepted.append(codec.decode(body, AlertEvent))
        return web.Response(status=204)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextlib.asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = next(int(a[1]) for a in runner.addresses if isinstance(a, tuple))
    try:
        yield receiver
    finally:
        await runner.cleanup()


def webhook_settings(settings: Settings, uid: str, **sink: object) -> Settings:
    update: dict[str, object] = {
        "webhook_group": f"g{uid}-webhook",
        "webhook_metrics_port": 0,
        "webhook_backoff_initial_s": 0.1,
        "webhook_backoff_max_s": 0.5,
        "api_port": 0,
        "api_token": SecretStr(TOKEN),
        **sink,
    }
    return settings.model_copy(update={"sink": settings.sink.model_copy(update=update)})


def subscriber(url: str, name: str = "ops", **filters: tuple[str, ...]) -> WebhookSubscriber:
    return WebhookSubscriber(name=name, url=url, secret=SecretStr(SECRET), **filters)


@contextlib.asynccontextmanager
async def running(sink: WebhookSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sink.run())
    try:
        yield task
    finally:
        sink.stop()
        await asyncio.wait_for(task, 60)


def event(
    key_index: int,
    n: int,
    *,
    severity: Severity = Severity.WARNING,
    silenced: bool = False,
    district: str = "mapo",
) -> AlertEvent:
    device = f"aq-{district}-{key_index:03d}"
    ts = time.time_ns() // 1_000_000
    kind = AlertEventKind.RAISED if n == 0 else AlertEventKind.UPDATED
    return AlertEvent(
        event_id=uuid.uuid4().hex,
        kind=kind,
        ts_ms=ts,
        alert=Alert(
            key=f"zscore:pm25:{device}",
            rule="zscore",
            subject=device,
            severity=severity,
            state=AlertState.OPEN,
            detector="zscore",
            detector_version="1",
            district=district,
            sensor_type="air_quality",
            metric="pm25",
            device_id=device,
            value=40.0 + n,
            threshold=None,
            score=4.0 + n,
            reason="robust z-score above 4",
            raised_ms=ts,
            updated_ms=ts,
            silenced=silenced,
        ),
    )


async def produce_events(settings: Settings, events: list[AlertEvent]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(
                topic_name(ALERTS_EVENTS, settings.kafka), codec.encode(e), key=e.alert.key.encode()
            )
    finally:
        await producer.stop()


async def committed(settings: Settings, group: str) -> int:
    topic = topic_name(ALERTS_EVENTS, settings.kafka)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return sum(
            [
                await consumer.committed(TopicPartition(topic, p)) or 0
                for p in range(settings.kafka.partitions)
            ]
        )
    finally:
        await consumer.stop()


def by_key(events: list[AlertEvent]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(e.alert.key, []).append(e.event_id)
    return out


# -- deliveries ------------------------------------------------------------------------------


async def test_receiver_verifies_every_signature_and_rejects_a_replay(settings: Settings, uid: str) -> None:
    events = [event(k, n) for n in range(3) for k in range(4)]
    critical = event(9, 0, severity=Severity.CRITICAL, district="jongno")
    silenced = event(8, 0, silenced=True)
    async with serving(Receiver()) as everything, serving(Receiver()) as only_critical:
        subs = (
            subscriber(everything.url, "everything"),
            subscriber(only_critical.url, "critical-jongno", severities=("critical",), districts=("jongno",)),
        )
        s = webhook_settings(settings, uid)
        await produce_events(s, [*events, silenced, critical])
        sink = WebhookSink(s, subscribers=subs)
        async with running(sink):

            async def delivered() -> bool:
                return len(everything.accepted) == len(events) + 1 and len(only_critical.accepted) == 1

            await wait_for(delivered, 30, "every event delivered")
            await wait_for(
                lambda: _is(committed(s, s.sink.webhook_group), len(events) + 2), 20, "offsets committed"
            )

        assert everything.rejected == []
        assert {e.event_id for e in everything.accepted} == {e.event_id for e in [*events, critical]}
        assert [e.event_id for e in only_critical.accepted] == [critical.event_id]
        assert silenced.event_id not in {e.event_id for e in everything.accepted}
        # Each alert's events arrived in the order they were produced.
        assert by_key(everything.accepted) == by_key([*events, critical])

        # Replaying a captured delivery, byte for byte, is refused.
        headers, body = everything.requests[0]
        async with aiohttp.ClientSession() as http:
            async with http.post(everything.url, data=body, headers=headers) as resp:
                assert resp.status == 409
            tampered = body.replace(b'"value":', b'"value":1')
            fresh = {**headers, EVENT_ID_HEADER: uuid.uuid4().hex}
            async with http.post(everything.url, data=tampered, headers=fresh) as resp:
                assert resp.status == 401
        assert everything.rejected == ["replayed", "bad_signature"]


async def _is(value: object, expected: int) -> bool:
    return bool(await value == expected)  # type: ignore[misc]  # an awaitable of int


async def test_receiver_failing_for_a_while_gets_every_event_later_in_order(
    settings: Settings, uid: str
) -> None:
    events = [event(k, n) for n in range(8) for k in range(3)]
    async with serving(Receiver(fail_until=time.monotonic() + 4.0)) as receiver:
        s = webhook_settings(settings, uid, webhook_max_attempts=30)
        await produce_events(s, events)
        async with running(WebhookSink(s, subscribers=(subscriber(receiver.url),))):
            await wait_for(lambda: _len_is(receiver.accepted, len(events)), 60, "every event delivered")
            await wait_for(
                lambda: _is(committed(s, s.sink.webhook_group), len(events)), 20, "offsets committed"
            )
    assert receiver.failed_answers > 0
    assert by_key(receiver.accepted) == by_key(events)
    assert len({e.event_id for e in receiver.accepted}) == len(events)
    dead = await read_topic(s.kafka.bootstrap, topic_name(SINK_DLQ, s.kafka), timeout_s=2)
    assert dead == []


async def _len_is(items: list[AlertEvent], n: int) -> bool:
    return len(items) == n


async def test_receiver_down_past_the_retries_leaves_events_in_the_dead_letter_topic(
    settings: Settings, uid: str
) -> None:
    events = [event(k, n) for n in range(2) for k in range(3)]
    async with serving(Receiver(always_status=503)) as receiver:
        s = webhook_settings(settings, uid, webhook_max_attempts=3, webhook_backoff_max_s=0.2)
        await produce_events(s, events)
        async with running(WebhookSink(s, subscribers=(subscriber(receiver.url, "down"),))):
            dead = await read_topic(
                s.kafka.bootstrap, topic_name(SINK_DLQ, s.kafka), expect=len(events), timeout_s=40
            )
            await wait_for(
                lambda: _is(committed(s, s.sink.webhook_group), len(events)), 20, "offsets committed"
            )
    assert receiver.failed_answers == 3 * len(events)
    assert receiver.accepted == []
    records = [codec.decode(r.value, DlqRecord) for r in dead if r.value is not None]
    assert len(records) == len(events)
    assert {r.reason for r in records} == {"webhook_retries_exhausted"}
    assert all("down" in r.detail and "HTTP 503" in r.detail for r in records)
    assert {codec.decode(r.payload, AlertEvent).event_id for r in records} == {e.event_id for e in events}
    # Dead-lettered in order per alert too.
    assert by_key([codec.decode(r.payload, AlertEvent) for r in records]) == by_key(events)


# -- the acknowledgement API ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def api_running(settings: Settings) -> AsyncIterator[str]:
    api = AlertApi(settings)
    await api.start()
    try:
        yield f"http://127.0.0.1:{api.http.port}"
    finally:
        await api.stop()


async def test_api_requires_the_token_and_writes_commands(settings: Settings, uid: str) -> None:
    s = webhook_settings(settings, uid)
    key = f"threshold:pm25:mapo-{uid}/air_quality"  # a district alert: its key holds a slash
    until = time.time_ns() // 1_000_000 + 3_600_000
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with api_running(s) as base, aiohttp.ClientSession() as http:
        async with http.post(f"{base}/alerts/{key}/ack", json={"by": "kim"}) as resp:
            assert resp.status == 401
        async with http.post(
            f"{base}/alerts/{key}/ack", json={"by": "kim"}, headers={"Authorization": "Bearer wrong"}
        ) as resp:
            assert resp.status == 401
        async with http.post(f"{base}/alerts/{key}/ack", json={"note": "no by"}, headers=auth) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/silences", json={"by": "kim", "until_ms": until}, headers=auth) as resp:
            assert resp.status == 400  # no matcher
        async with http.post(
            f"{base}/alerts/{key}/ack", json={"by": "kim", "note": "on it"}, headers=auth
        ) as resp:
            assert resp.status == 202
            ack_id = (await resp.json())["command_id"]
        async with http.post(
            f"{base}/silences",
            json={
                "by": "lee",
                "district": "mapo",
                "rule": "flatline",
                "until_ms": until,
                "note": "maintenance",
            },
            headers=auth,
        ) as resp:
            assert resp.status == 202
        async with http.post(
            f"{base}/silences/expire",
            json={"by": "lee", "district": "mapo", "rule": "flatline", "until_ms": until},
            headers=auth,
        ) as resp:
            assert resp.status == 202
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/metrics") as resp:
            assert 'citystream_alert_api_commands_total{kind="acknowledge"} 1.0' in await resp.text()

    records = await read_topic(s.kafka.bootstrap, topic_name(ALERTS_COMMANDS, s.kafka), expect=3)
    commands = {
        codec.decode(r.value, AlertCommand).kind: (r.key, codec.decode(r.value, AlertCommand))
        for r in records
        if r.value
    }
    ack_key, ack = commands[AlertCommandKind.ACKNOWLEDGE]
    assert ack_key == key.encode()
    assert (ack.command_id, ack.alert_key, ack.by, ack.note) == (ack_id, key, "kim", "on it")
    silence_key, silence = commands[AlertCommandKind.SILENCE]
    assert silence_key == b"silence:flatline:mapo:*"
    assert (silence.rule, silence.district, silence.device_id, silence.until_ms) == (
        "flatline",
        "mapo",
        None,
        until,
    )
    assert commands[AlertCommandKind.UNSILENCE][1].district == "mapo"


def _has_jobs_command() -> bool:
    from cli.main import build_parser
    from cli.stages import SubParsers

    parser = build_parser()
    # argparse has no public accessor for the subcommands
    commands = next(a for a in parser._actions if isinstance(a, SubParsers))
    return "jobs" in commands.choices


@pytest.fixture
def jobs_process(settings: Settings, uid: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``citystream jobs`` on the test's topics (the stage that applies alert commands)."""
    if not _has_jobs_command():
        pytest.skip("needs the stream jobs' 'citystream jobs' command to apply alert commands")
    env = {
        **os.environ,
        "CITYSTREAM_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CITYSTREAM_INFLUX__BUCKET_RAW": settings.influx.bucket_raw,
        "CITYSTREAM_INFLUX__BUCKET_AGG": settings.influx.bucket_agg,
    }
    log = tmp_path / "jobs.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "jobs"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    yield proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.skipif(
    not (REPO / "stream_jobs" / "app.py").exists(),
    reason="needs the stream jobs (stream_jobs/app.py) to apply commands",
)
async def test_ack_through_the_api_changes_the_alert_state(
    settings: Settings, uid: str, jobs_process: subprocess.Popen[bytes]
) -> None:
    """End to end: readings raise an alert in the stream jobs; the API acknowledges it."""
    s = webhook_settings(settings, uid)
    device = f"aq-mapo-{uid}"
    start = time.time_ns() // 1_000_000 - 10 * 60_000
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(120):  # ten minutes of PM2.5 far above every threshold, one reading per 5 s
            reading = Reading(
                device_id=device,
                district="mapo",
                sensor_type="air_quality",
                ts=start + i * 5000,
                seq=i,
                values={"pm25": 400.0},
                received_ms=start + i * 5000 + 20,
            )
            await producer.send(
                topic_name(TELEMETRY_RAW, s.kafka), codec.encode(reading), key=device.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()

    alerts_topic = topic_name(ALERTS, s.kafka)

    async def current(key: str | None = None) -> list[Alert]:
        records = await read_topic(s.kafka.bootstrap, alerts_topic, timeout_s=3)
        alerts = [codec.decode(r.value, Alert) for r in records if r.value]
        return [a for a in alerts if a.device_id == device and (key is None or a.key == key)]

    found: list[Alert] = []

    async def raised() -> bool:
        assert jobs_process.poll() is None, "the stream jobs exited"
        found[:] = await current()
        return bool(found)

    await wait_for(raised, 120, "an alert raised by the stream jobs", interval_s=1.0)
    key = found[-1].key
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        api_running(s) as base,
        aiohttp.ClientSession() as http,
        http.post(f"{base}/alerts/{key}/ack", json={"by": "kim"}, headers=auth) as resp,
    ):
        assert resp.status == 202

    async def acknowledged() -> bool:
        states = await current(key)
        return (
            bool(states)
            and states[-1].state == AlertState.ACKNOWLEDGED
            and states[-1].acknowledged_by == "kim"
        )

    await wait_for(acknowledged, 60, "the alert acknowledged in the alerts topic", interval_s=1.0)
