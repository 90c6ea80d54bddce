"""Kafka with SASL/SCRAM over TLS and per-process ACLs, on a broker of the test's own.

The broker runs from the shared jar cache with its own state directory and free ports; the
shared local stack is not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    for_code,
)

from citystream import codec
from citystream.kafka_client import Principal, cafile, client_kwargs, password_env, ssl_context
from citystream.model import Aggregate, Reading
from citystream.settings import Settings, get_settings, secrets_path
from citystream.topics import ALERTS, DEVICES, TELEMETRY_AGG_1M, TELEMETRY_RAW
from sinks.monitor import Monitor
from stack import tls
from stack.kafka_cluster import KafkaCluster
from stack.sandbox import sandbox_settings
from stack.secrets import write_env_file
from stream_jobs.app import app_id
from tests.helpers import wait_for
from tests.jobs_worker import JobsWorker

pytestmark = [
    pytest.mark.integration,
    # The stack starts its daemons detached and never waits for them here.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]


def _start(state: Path, security: Any) -> tuple[KafkaCluster, Settings]:
    s = sandbox_settings(get_settings(), state, security=security)
    tls.ensure_ca(state / "tls")
    cluster = KafkaCluster(s)
    cluster.write_config()
    return cluster, s


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One SASL_SSL broker with the pipeline's topics, credentials and ACLs."""
    cluster, s = _start(tmp_path_factory.mktemp("kafka-sasl-ssl"), "sasl_ssl")
    try:
        cluster.start()
        cluster.create_topics()
        yield s
    finally:
        cluster.daemon.stop()


async def _produce(kwargs: dict[str, Any], topic: str, value: bytes = b"v") -> None:
    producer = AIOKafkaProducer(**kwargs, acks="all", enable_idempotence=True, request_timeout_ms=10_000)
    try:
        await producer.start()
        await producer.send_and_wait(topic, value, key=b"dev-1")
    finally:
        await producer.stop()


async def _consume_one(kwargs: dict[str, Any], topic: str, group: str | None) -> bytes | None:
    consumer = AIOKafkaConsumer(
        **kwargs, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    if group is None:
        consumer.assign([TopicPartition(topic, p) for p in range(6)])
    else:
        consumer.subscribe([topic])
    try:
        await consumer.start()
        if group is None:
            await consumer.seek_to_beginning()
        record = await asyncio.wait_for(consumer.getone(), 20)
        value: bytes | None = record.value
        return value
    finally:
        await consumer.stop()


def _collect_refused_connections() -> None:
    """aiokafka leaves the socket of a refused connection to the garbage collector: collect it
    here, where that is expected, rather than as an unraisable warning in a later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")  # aiokafka: refused sockets
async def test_client_without_credentials_is_refused(secured: Settings) -> None:
    bootstrap = secured.kafka.bootstrap
    with pytest.raises(KafkaConnectionError):
        await _produce({"bootstrap_servers": bootstrap}, TELEMETRY_RAW)
    # TLS that the broker accepts, but no SASL authentication on top.
    with pytest.raises(KafkaConnectionError):
        await _produce(
            {"bootstrap_servers": bootstrap, "security_protocol": "SSL", "ssl_context": ssl_context(secured)},
            TELEMETRY_RAW,
        )
    _collect_refused_connections()


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")  # aiokafka: refused sockets
async def test_wrong_password_and_unknown_user_are_refused(secured: Settings) -> None:
    ingest = client_kwargs(secured, Principal.INGEST)
    with pytest.raises(KafkaConnectionError):
        await _produce({**ingest, "sasl_plain_password": "not-the-password"}, TELEMETRY_RAW)
    with pytest.raises(KafkaConnectionError):
        await _produce({**ingest, "sasl_plain_username": "mallory"}, TELEMETRY_RAW)
    _collect_refused_connections()


def test_broker_certificate_verifies_only_against_the_stack_ca(secured: Settings, tmp_path: Path) -> None:
    host, _, port = secured.kafka.bootstrap.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        ssl_context(secured).wrap_socket(raw, server_hostname=host) as tls_sock,
    ):
        assert tls_sock.version() in ("TLSv1.2", "TLSv1.3")
    tls.ensure_ca(tmp_path)  # an unrelated CA
    foreign = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        foreign.wrap_socket(raw, server_hostname=host)


@pytest.mark.parametrize(
    ("principal", "topic", "error"),
    [
        (Principal.SINK_INFLUX, TELEMETRY_RAW, TopicAuthorizationFailedError),
        (Principal.JOBS, DEVICES, TopicAuthorizationFailedError),
        (Principal.INGEST, ALERTS, TopicAuthorizationFailedError),
        # The monitor may write nowhere, so it cannot even get an idempotent producer id.
        (Principal.MONITOR, TELEMETRY_RAW, ClusterAuthorizationFailedError),
    ],
)
async def test_principal_cannot_write_a_topic_it_does_not_own(
    secured: Settings, principal: Principal, topic: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await _produce(client_kwargs(secured, principal), topic)


async def test_ingest_writes_raw_and_the_sink_reads_it_in_its_own_group(secured: Settings) -> None:
    await _produce(client_kwargs(secured, Principal.INGEST), TELEMETRY_RAW, b"reading-1")
    sink = client_kwargs(secured, Principal.SINK_INFLUX)
    assert await _consume_one(sink, TELEMETRY_RAW, secured.sink.influx_group) == b"reading-1"
    # Not with another process's group, and the producer may not read what it writes.
    with pytest.raises(GroupAuthorizationFailedError):
        await _consume_one(sink, TELEMETRY_RAW, secured.sink.webhook_group)
    with pytest.raises(TopicAuthorizationFailedError):
        await _consume_one(client_kwargs(secured, Principal.INGEST), TELEMETRY_RAW, None)


async def test_registry_writes_devices_and_the_bridge_follows_it(secured: Settings) -> None:
    await _produce(client_kwargs(secured, Principal.REGISTRY), DEVICES, b"entry-1")
    consumer = AIOKafkaConsumer(**client_kwargs(secured, Principal.INGEST), enable_auto_commit=False)
    tp = TopicPartition(DEVICES, 0)  # one partition, compacted; followed without a group
    consumer.assign([tp])
    try:
        await consumer.start()
        await consumer.seek_to_beginning(tp)
        record = await asyncio.wait_for(consumer.getone(), 20)
        assert record.value == b"entry-1"
    finally:
        await consumer.stop()
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(client_kwargs(secured, Principal.INGEST), DEVICES)


async def test_jobs_create_only_their_own_internal_topics(secured: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(secured, Principal.JOBS))
    await admin.start()
    try:
        own = f"{secured.jobs.app_id}-signals"
        response = await admin.create_topics([NewTopic(own, 1, 1), NewTopic("somebody-elses-topic", 1, 1)])
        errors = {name: for_code(code) for name, code, *_ in response.topic_errors if code}
        assert errors == {"somebody-elses-topic": TopicAuthorizationFailedError}
        assert own in await admin.list_topics()
    finally:
        await admin.close()


async def test_monitor_reads_group_offsets_but_no_records(secured: Settings) -> None:
    await _produce(client_kwargs(secured, Principal.INGEST), TELEMETRY_RAW, b"reading-2")
    assert await _consume_one(
        client_kwargs(secured, Principal.SINK_INFLUX), TELEMETRY_RAW, secured.sink.influx_group
    )
    consumer = AIOKafkaConsumer(
        **client_kwargs(secured, Principal.SINK_INFLUX), group_id=secured.sink.influx_group
    )
    await consumer.start()
    try:
        tp = TopicPartition(TELEMETRY_RAW, 0)
        consumer.assign([tp])
        await consumer.commit({tp: 0})
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(**client_kwargs(secured, Principal.MONITOR))
    await admin.start()
    try:
        groups = {g[0] for g in await admin.list_consumer_groups()}
        assert secured.sink.influx_group in groups
        offsets = await admin.list_consumer_group_offsets(secured.sink.influx_group)
        assert TopicPartition(TELEMETRY_RAW, 0) in offsets
    finally:
        await admin.close()
    with pytest.raises(TopicAuthorizationFailedError):
        await _consume_one(client_kwargs(secured, Principal.MONITOR), TELEMETRY_RAW, None)


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")  # aiokafka: refused sockets
async def test_sasl_scram_without_tls(tmp_path: Path) -> None:
    """The other secured mode: SASL_PLAINTEXT, the same principals and ACLs."""
    cluster, s = _start(tmp_path, "sasl_scram")
    try:
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(cluster.create_topics)
        with pytest.raises(KafkaConnectionError):
            await _produce({"bootstrap_servers": s.kafka.bootstrap}, TELEMETRY_RAW)
        _collect_refused_connections()
        await _produce(client_kwargs(s, Principal.INGEST), TELEMETRY_RAW, b"plain-sasl")
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(client_kwargs(s, Principal.SINK_WEBHOOK), TELEMETRY_RAW)
        group = s.sink.influx_group
        assert (
            await _consume_one(client_kwargs(s, Principal.SINK_INFLUX), TELEMETRY_RAW, group) == b"plain-sasl"
        )
    finally:
        await asyncio.to_thread(cluster.daemon.stop)


async def test_stream_worker_runs_as_its_own_principal(secured: Settings, uid: str, tmp_path: Path) -> None:
    """``python -m stream_jobs`` on the SASL_SSL listener with only the ``jobs`` password: it
    reads readings, writes aggregates under its ACLs, and the monitor sees its group's lag."""
    s = secured.model_copy(
        update={"jobs": secured.jobs.model_copy(update={"app_id": f"{secured.jobs.app_id}-{uid}"})}
    )
    k = s.kafka
    # The worker's state folder holds its own password only, as a deployment would give it.
    write_env_file(
        secrets_path(s.stack.state_dir), {password_env(Principal.JOBS): k.jobs_password.get_secret_value()}
    )
    worker = JobsWorker(
        s, tmp_path / "worker.log", app_id=s.jobs.app_id, grace_s="5", idle_source_s="2", timer_interval_s="1"
    )
    worker.env.update(
        {
            "CITYSTREAM_STACK__STATE_DIR": str(s.stack.state_dir),
            "CITYSTREAM_KAFKA__SECURITY": k.security,
            "CITYSTREAM_KAFKA__SASL_MECHANISM": k.sasl_mechanism,
            "CITYSTREAM_KAFKA__SSL_CAFILE": str(cafile(s)),
            "CITYSTREAM_KAFKA__PARTITIONS": str(k.partitions),
            "CITYSTREAM_KAFKA__REPLICATION_FACTOR": str(k.replication_factor),
        }
    )
    now = int(time.time() * 1000)
    t0 = now - now % 60_000 - 10 * 60_000
    devices = [f"aq-{uid}-{i}" for i in range(4)]
    readings = [
        Reading(
            device_id=d, district="dobong", sensor_type="air_quality", ts=t0 + n * 10_000, seq=n,
            values={"pm25": 10.0 + n % 5}, received_ms=t0 + n * 10_000 + 200,
        )
        for n in range(18)  # three minutes: the first two close
        for d in devices
    ]  # fmt: skip
    producer = AIOKafkaProducer(**client_kwargs(s, Principal.INGEST), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for r in readings:
            await producer.send(TELEMETRY_RAW, codec.encode(r), key=r.device_id.encode())
        await producer.flush()
    finally:
        await producer.stop()

    got: dict[int, int] = {}

    async def two_windows() -> bool:
        consumer = AIOKafkaConsumer(**client_kwargs(s, Principal.ADMIN), enable_auto_commit=False)
        tps = [TopicPartition(TELEMETRY_AGG_1M, p) for p in range(k.partitions)]
        consumer.assign(tps)
        try:
            await consumer.start()
            await consumer.seek_to_beginning(*tps)
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        finally:
            await consumer.stop()
        for record in (r for recs in batch.values() for r in recs if r.value):
            a = codec.decode(record.value, Aggregate)
            if a.district == "dobong" and a.metric == "pm25":
                got[a.window_start] = a.count
        return len(got) >= 2

    worker.start()
    try:
        await wait_for(two_windows, 90, "the worker's aggregates", interval_s=1.0)
        assert got == {t0: 6 * len(devices), t0 + 60_000: 6 * len(devices)}
        monitor_settings = s.model_copy(
            update={
                "monitor": s.monitor.model_copy(
                    update={"targets": {"none": "http://127.0.0.1:9/metrics"}, "consumer_groups": [app_id(s)]}
                )
            }
        )
        lines: list[str] = []

        async def lag_sampled() -> bool:
            nonlocal lines
            lines = [p.to_line_protocol() for p in await monitor.sample()]
            return any("stage=kafka" in line and f"instance={group}" in line for line in lines)

        group = app_id(s)
        async with Monitor(monitor_settings) as monitor:
            with contextlib.suppress(AssertionError):  # the lines sampled show below
                await wait_for(lag_sampled, 30, f"the monitor's lag of {group}", interval_s=1.0)
        lag = [line for line in lines if "stage=kafka" in line and f"instance={group}" in line]
        assert lag, lines
        assert " lag=" in lag[0]
    finally:
        worker.stop()
        print(worker.tail(3000))  # shown when the test failed
    assert "AuthorizationFailed" not in worker.log.read_text()
