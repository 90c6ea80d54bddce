"""MQTT over TLS with the stack's CA, client certificates, the plain listener off.

Each fixture runs a Mosquitto of its own (own state directory, CA and free ports); the shared
broker is not touched.
"""

from __future__ import annotations

import gc
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from citystream.addressing import device_topic
from citystream.settings import Settings, get_settings
from ingest.registry import prepare_entry
from stack import tls
from stack.device_certs import issue_device_certificate
from stack.mosquitto import MosquittoService
from stack.process import port_open
from stack.sandbox import sandbox_settings
from tests.mqtt import TestClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]

DEVICE, OTHER = "aq-gangnam-901", "aq-mapo-902"
PAYLOAD = b'{"ts": 1, "seq": 1, "values": {"pm25": 3.0}}'


class Broker(NamedTuple):
    settings: Settings
    ca: Path
    passwords: dict[str, str]


def _broker(state: Path, *, require_client_cert: bool, plain: bool) -> Iterator[Broker]:
    s = sandbox_settings(
        get_settings(), state, mqtt_tls=True, mqtt_plain=plain, require_client_cert=require_client_cert
    )
    tls.ensure_ca(state / "tls")
    passwords = {DEVICE: "pw-" + DEVICE + "-0123456789", OTHER: "pw-" + OTHER + "-0123456789"}
    service = MosquittoService(s)
    service.write_config()
    service.apply_registry(
        [
            prepare_entry(DEVICE, "gangnam", "air_quality", passwords[DEVICE]),
            prepare_entry(OTHER, "mapo", "air_quality", passwords[OTHER]),
        ],
        reload=False,
    )
    try:
        service.start()
        yield Broker(s, state / "tls" / "ca.crt", passwords)
    finally:
        service.daemon.stop()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """TLS with server authentication, passwords for devices; the plain listener stays on."""
    yield from _broker(tmp_path_factory.mktemp("mqtt-tls"), require_client_cert=False, plain=True)


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """TLS with client certificates required, the plain listener off."""
    yield from _broker(tmp_path_factory.mktemp("mqtt-mtls"), require_client_cert=True, plain=False)


def _client(
    b: Broker,
    user: str | None,
    password: str | None,
    *,
    ca: Path | None,
    cert: tuple[Path, Path] | None = None,
) -> TestClient:
    m = b.settings.mqtt
    client = TestClient(m.host, m.tls_port, user, password)
    if ca is not None:
        certfile, keyfile = cert if cert is not None else (None, None)
        client.client.tls_set(
            ca_certs=str(ca),
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client


def _connects(client: TestClient) -> bool:
    """True only when the broker accepted the connection (CONNACK success)."""
    try:
        return client.connect(timeout_s=5).value == 0
    except (OSError, AssertionError):  # ssl.SSLError is an OSError; AssertionError: no CONNACK
        return False
    finally:
        client.client.loop_stop()
        client.client.disconnect()


def _topic(b: Broker, device_id: str, district: str) -> str:
    return device_topic(b.settings.mqtt.topic_root, district, "air_quality", device_id, "telemetry")


def test_registered_device_publishes_over_tls_with_the_stack_ca(tls_broker: Broker) -> None:
    b = tls_broker
    m = b.settings.mqtt
    listener = _client(b, m.ingest_username, m.ingest_password.get_secret_value(), ca=b.ca)
    device = _client(b, DEVICE, b.passwords[DEVICE], ca=b.ca)
    try:
        assert listener.connect().value == 0
        listener.subscribe(f"{m.topic_root}/#")
        assert device.connect().value == 0
        device.publish(_topic(b, DEVICE, "gangnam"), PAYLOAD)
        messages = listener.wait_messages(1)
        assert [(msg.topic, msg.payload) for msg in messages] == [(_topic(b, DEVICE, "gangnam"), PAYLOAD)]
    finally:
        device.close()
        listener.close()


def test_device_checking_against_another_ca_fails(tls_broker: Broker, tmp_path: Path) -> None:
    tls.ensure_ca(tmp_path)
    device = _client(tls_broker, DEVICE, tls_broker.passwords[DEVICE], ca=tmp_path / "ca.crt")
    with warnings.catch_warnings():
        # paho leaves the socket of a failed handshake to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(ssl.SSLCertVerificationError):
            device.client.connect(tls_broker.settings.mqtt.host, tls_broker.settings.mqtt.tls_port)
        gc.collect()


def test_plain_mqtt_on_the_tls_port_and_a_wrong_password_are_refused(tls_broker: Broker) -> None:
    assert not _connects(_client(tls_broker, DEVICE, tls_broker.passwords[DEVICE], ca=None))
    assert not _connects(_client(tls_broker, DEVICE, "not-the-password", ca=tls_broker.ca))
    assert _connects(_client(tls_broker, DEVICE, tls_broker.passwords[DEVICE], ca=tls_broker.ca))


def test_device_with_a_ca_signed_certificate_connects_as_its_common_name(
    mtls_broker: Broker, tmp_path: Path
) -> None:
    b = mtls_broker
    m = b.settings.mqtt
    cert = issue_device_certificate(b.settings, DEVICE, tmp_path / "certs")
    ingest_cert = issue_device_certificate(b.settings, m.ingest_username, tmp_path / "certs")
    listener = _client(b, None, None, ca=cert.ca, cert=(ingest_cert.cert, ingest_cert.key))
    device = _client(b, None, None, ca=cert.ca, cert=(cert.cert, cert.key))
    try:
        assert listener.connect().value == 0
        listener.subscribe(f"{m.topic_root}/#")
        assert device.connect().value == 0
        # The ACL of the certificate's CN applies: its own topic only.
        denied = device.publish(_topic(b, OTHER, "mapo"), PAYLOAD)
        assert device.puback[denied.mid].is_failure
        device.publish(_topic(b, DEVICE, "gangnam"), PAYLOAD)
        messages = listener.wait_messages(1)
        assert [msg.topic for msg in messages] == [_topic(b, DEVICE, "gangnam")]
    finally:
        device.close()
        listener.close()


def test_device_without_a_client_certificate_is_refused(mtls_broker: Broker, tmp_path: Path) -> None:
    b = mtls_broker
    assert not _connects(_client(b, DEVICE, b.passwords[DEVICE], ca=b.ca))
    # A certificate from another CA, with the right CN, is refused as well.
    other = tmp_path / "other"
    tls.ensure_ca(other)
    tls.issue_certificate(other, "forged", DEVICE, server=False)
    forged = (other / "forged.crt", other / "forged.key")
    assert not _connects(_client(b, DEVICE, b.passwords[DEVICE], ca=b.ca, cert=forged))


def test_plain_listener_can_be_turned_off(mtls_broker: Broker, tls_broker: Broker) -> None:
    off, on = mtls_broker.settings.mqtt, tls_broker.settings.mqtt
    assert not port_open(off.host, off.port)
    assert port_open(off.host, off.tls_port)
    assert port_open(on.host, on.port)
    conf = (mtls_broker.settings.stack.state_dir / "mosquitto" / "mosquitto.conf").read_text()
    assert f"listener {off.port} " not in conf
