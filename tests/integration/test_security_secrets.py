"""No configured secret in logs, metrics or error output.

The first test runs a secured stack of its own (Kafka SASL_SSL with ACLs, Mosquitto over TLS),
exercises it with good and bad credentials, captures every Python log record at DEBUG level
and the Prometheus text of this process, and scans all of it and the services' logs for every
configured secret. The second scans the shared stack's service logs for its secrets.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from prometheus_client import REGISTRY, generate_latest

from citystream.addressing import device_topic
from citystream.kafka_client import Principal, client_kwargs
from citystream.settings import Settings, get_settings, secrets_path
from citystream.topics import SINK_DLQ, TELEMETRY_DLQ, TELEMETRY_RAW, topic_name
from ingest.registry import new_password, prepare_entry
from stack import tls
from stack.kafka_cluster import KafkaCluster
from stack.mosquitto import MosquittoService
from stack.sandbox import sandbox_settings
from stack.secret_scan import configured_secrets, log_files, scan_paths, scan_topic
from tests.mqtt import TestClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]

LOUD = ("", "aiokafka", "kafka", "stack", "citystream", "paho")


def _collect_refused_connections() -> None:
    """aiokafka leaves the socket of a refused connection to the garbage collector: collect it
    here, where that is expected, rather than as an unraisable warning in a later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[Path]:
    """Every Python log record of the test, at DEBUG, into ``python.log`` under the state dir."""
    path = tmp_path / "python.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    levels = {name: logging.getLogger(name).level for name in LOUD}
    root = logging.getLogger()
    root.addHandler(handler)
    for name in LOUD:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def _kafka_traffic(s: Settings, wrong_password: str) -> None:
    producer = AIOKafkaProducer(**client_kwargs(s, Principal.INGEST), acks="all", enable_idempotence=True)
    try:
        await producer.start()
        await producer.send_and_wait(TELEMETRY_RAW, b'{"seq": 1}', key=b"aq-gangnam-911")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        TELEMETRY_RAW,
        **client_kwargs(s, Principal.SINK_INFLUX),
        group_id=s.sink.influx_group,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    denied = AIOKafkaProducer(**client_kwargs(s, Principal.SINK_INFLUX), request_timeout_ms=10_000)
    try:
        await denied.start()
        with pytest.raises(TopicAuthorizationFailedError):
            await denied.send_and_wait(TELEMETRY_RAW, b"x")
    finally:
        await denied.stop()
    # Another principal's password under the ingest user name: refused, and never logged.
    wrong = AIOKafkaProducer(**{**client_kwargs(s, Principal.INGEST), "sasl_plain_password": wrong_password})
    try:
        with pytest.raises(KafkaConnectionError):
            await wrong.start()
    finally:
        await wrong.stop()


def _mqtt_traffic(s: Settings, device: str, password: str, wrong_password: str, ca: Path) -> None:
    m = s.mqtt
    topic = device_topic(m.topic_root, "gangnam", "air_quality", device, "telemetry")
    good = TestClient(m.host, m.tls_port, device, password)
    good.client.tls_set(ca_certs=str(ca))
    try:
        assert good.connect().value == 0
        good.publish(topic, b'{"ts": 1, "seq": 1, "values": {"pm25": 3.0}}')
    finally:
        good.close()
    for user, pw in ((device, wrong_password), (m.ingest_username, password)):
        bad = TestClient(m.host, m.port, user, pw)
        try:
            assert bad.connect().is_failure
        finally:
            bad.close()


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")  # aiokafka: refused sockets
def test_no_configured_secret_in_the_logs_of_a_secured_run(tmp_path: Path, debug_log: Path) -> None:
    s = sandbox_settings(get_settings(), tmp_path, security="sasl_ssl", mqtt_tls=True)
    tls.ensure_ca(tmp_path / "tls")
    device, other = "aq-gangnam-911", "aq-mapo-912"
    passwords = {device: new_password(), other: new_password()}
    kafka = KafkaCluster(s)
    mosquitto = MosquittoService(s)
    entries = [
        prepare_entry(device, "gangnam", "air_quality", passwords[device]),
        prepare_entry(other, "mapo", "air_quality", passwords[other]),
    ]
    try:
        kafka.write_config()
        kafka.start()
        kafka.create_topics()
        mosquitto.write_config()
        mosquitto.apply_registry(entries, reload=False)
        mosquitto.start()
        asyncio.run(_kafka_traffic(s, s.kafka.jobs_password.get_secret_value()))
        _collect_refused_connections()
        _mqtt_traffic(s, device, passwords[device], passwords[other], tmp_path / "tls" / "ca.crt")
    finally:
        mosquitto.daemon.stop()
        kafka.daemon.stop()
    metrics = tmp_path / "metrics.txt"
    metrics.write_bytes(generate_latest(REGISTRY))

    secrets = configured_secrets(s, extra={f"device {d}": p for d, p in passwords.items()})
    assert {"kafka.admin_password", "kafka.ingest_password", "mqtt.ingest_password"} <= set(secrets)
    scanned = [*log_files(tmp_path), metrics]
    assert {p.name for p in scanned} >= {"python.log", "kafka.log", "mosquitto.log", "metrics.txt"}
    assert scan_paths(scanned, secrets) == []
    # The failures above were logged (and scanned): the scan looked at the right text.
    kafka_log = kafka.nodes[0].daemon.log_path.read_text()
    assert "Failed authentication" in kafka_log
    assert "is Denied operation = WRITE" in kafka_log
    assert "SaslAuthenticationFailed" in debug_log.read_text()


def test_shared_stack_logs_hold_none_of_its_secrets(stack_settings: Settings) -> None:
    state = stack_settings.stack.state_dir
    secrets = configured_secrets(stack_settings, env_files=[secrets_path(state)])
    assert secrets, "the shared stack has no secrets?"
    logs = log_files(state)
    assert {p.name for p in logs} >= {"mosquitto.log", "kafka.log"}
    findings = scan_paths(logs, secrets)
    assert findings == [], findings


async def test_shared_dead_letter_topics_hold_none_of_its_secrets(stack_settings: Settings) -> None:
    secrets = configured_secrets(stack_settings, env_files=[secrets_path(stack_settings.stack.state_dir)])
    kwargs = client_kwargs(stack_settings, Principal.ADMIN)
    findings = []
    for base in (TELEMETRY_DLQ, SINK_DLQ):
        findings += await scan_topic(kwargs, topic_name(base, stack_settings.kafka), secrets)
    assert findings == [], findings
