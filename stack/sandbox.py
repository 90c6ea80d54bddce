"""Settings for a separate, throw-away stack instance: own state directory, free loopback ports.

Tests and fault-injection runs use it to start their own Mosquitto or Kafka (a secured broker,
a 3-node cluster) next to the shared local stack without touching it. The Kafka jars are
taken from the shared cache directory, so nothing is downloaded again.
"""

from __future__ import annotations

import random
import secrets
import socket
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from citystream.errors import StackError
from citystream.settings import Settings
from stack.secrets import KAFKA_GENERATED

PORT_RANGE = (20_000, 32_000)
"""Below Linux's ephemeral range (32768-60999), so outgoing connections cannot take them."""


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(offsets: list[int], attempts: int = 200) -> int:
    """A base port such that ``base + offset`` is free on 127.0.0.1 for every offset."""
    rng = random.Random()  # noqa: S311  # port picking, not security
    top = PORT_RANGE[1] - max(offsets)
    for _ in range(attempts):
        base = rng.randrange(PORT_RANGE[0], top)
        if all(_bindable(base + o) for o in offsets):
            return base
    msg = f"no free block of loopback ports for offsets {offsets}"
    raise StackError(msg)


def new_password() -> SecretStr:
    return SecretStr(secrets.token_urlsafe(24))


def sandbox_settings(
    base: Settings,
    state_dir: Path,
    *,
    brokers: int = 1,
    security: Literal["plaintext", "sasl_scram", "sasl_ssl"] = "plaintext",
    heap: str = "320m",
    mqtt_tls: bool = False,
    mqtt_plain: bool = True,
    require_client_cert: bool = False,
) -> Settings:
    """``base`` with its own state directory, ports and freshly generated passwords."""
    step = 10
    # Kafka broker i: base + 10 i, its controller base + 10 i + 1; MQTT at base + 10 n (+1 TLS).
    offsets = [o for i in range(brokers) for o in (i * step, i * step + 1)] + [
        brokers * step,
        brokers * step + 1,
    ]
    port = free_ports(offsets)
    passwords = {key.removeprefix("CITYSTREAM_KAFKA__").lower(): new_password() for key in KAFKA_GENERATED}
    return base.model_copy(
        update={
            "stack": base.stack.model_copy(update={"state_dir": state_dir, "start_timeout_s": 180.0}),
            "kafka": base.kafka.model_copy(
                update={
                    "bootstrap": f"127.0.0.1:{port}",
                    "controller_port": port + 1,
                    "port_step": step,
                    "brokers": brokers,
                    "replication_factor": min(3, brokers),
                    "min_insync_replicas": 2 if brokers >= 3 else 1,
                    "security": security,
                    "heap": heap,
                    "ssl_cafile": "",
                    "topic_prefix": "",
                    **passwords,
                }
            ),
            "mqtt": base.mqtt.model_copy(
                update={
                    "port": port + brokers * step,
                    "tls_port": port + brokers * step + 1,
                    "tls_enabled": mqtt_tls,
                    "plain_enabled": mqtt_plain,
                    "require_client_cert": require_client_cert,
                    "ingest_password": new_password(),
                }
            ),
        }
    )
