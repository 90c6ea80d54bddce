"""How each process connects to Kafka: bootstrap list, security protocol, its own principal.

Every process authenticates as its own principal, whose ACLs allow only the topics and
consumer groups it needs (``stack/kafka_acls.py``). With ``kafka.security = "plaintext"``
(the default local stack) the keyword arguments carry the bootstrap list only.

    producer = AIOKafkaProducer(**client_kwargs(settings, Principal.INGEST), acks="all")

Faust takes the same credentials as ``faust.SASLCredentials(**sasl_credentials(...))``.
"""

from __future__ import annotations

import ssl
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from citystream.errors import ConfigError
from citystream.settings import KafkaSettings, Settings


class Principal(StrEnum):
    """Kafka users, one per process (the value is the SASL user name)."""

    ADMIN = "admin"
    INGEST = "ingest"
    REGISTRY = "registry"
    JOBS = "jobs"
    SINK_INFLUX = "sink-influx"
    SINK_WEBHOOK = "sink-webhook"
    MONITOR = "monitor"


SECURITY_PROTOCOLS = {"plaintext": "PLAINTEXT", "sasl_scram": "SASL_PLAINTEXT", "sasl_ssl": "SASL_SSL"}


def password_env(principal: Principal | str) -> str:
    """The variable that holds a principal's password, e.g. ``CITYSTREAM_KAFKA__SINK_INFLUX_PASSWORD``."""
    return f"CITYSTREAM_KAFKA__{str(principal).upper().replace('-', '_')}_PASSWORD"


def principal_password(kafka: KafkaSettings, principal: Principal | str) -> str:
    """The configured password of a principal (``controller`` included); empty when unset."""
    field = f"{str(principal).replace('-', '_')}_password"
    value = getattr(kafka, field, None)
    if not isinstance(value, SecretStr):
        msg = f"unknown Kafka principal {principal!r}"
        raise ConfigError(msg)
    return value.get_secret_value()


def bootstrap_servers(kafka: KafkaSettings) -> str:
    """The bootstrap list; one address stands for every broker of a local ``kafka.brokers`` cluster."""
    if kafka.brokers == 1 or "," in kafka.bootstrap:
        return kafka.bootstrap
    host, _, port = kafka.bootstrap.rpartition(":")
    host = host or "127.0.0.1"
    return ",".join(f"{host}:{int(port) + i * kafka.port_step}" for i in range(kafka.brokers))


def cafile(settings: Settings) -> Path:
    """The CA file clients check the brokers' certificates against."""
    k = settings.kafka
    return Path(k.ssl_cafile) if k.ssl_cafile else settings.stack.state_dir / "tls" / "ca.crt"


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+, the broker's certificate checked against the CA and its host name."""
    path = cafile(settings)
    if not path.is_file():
        msg = (
            f"Kafka CA file {path} is missing: run 'citystream stack up' or set CITYSTREAM_KAFKA__SSL_CAFILE"
        )
        raise ConfigError(msg)
    context = ssl.create_default_context(cafile=str(path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def sasl_credentials(settings: Settings, principal: Principal) -> dict[str, Any] | None:
    """``username``, ``password``, ``mechanism`` and ``ssl_context`` (``None`` without TLS);
    ``None`` in plaintext mode. Matches ``faust.SASLCredentials``' keyword arguments."""
    k = settings.kafka
    if k.security == "plaintext":
        return None
    password = principal_password(k, principal)
    if not password:
        msg = (
            f"no Kafka password for principal {principal.value}: set {password_env(principal)} "
            "or run 'citystream stack up'"
        )
        raise ConfigError(msg)
    return {
        "username": principal.value,
        "password": password,
        "mechanism": k.sasl_mechanism,
        "ssl_context": ssl_context(settings) if k.security == "sasl_ssl" else None,
    }


def client_kwargs(settings: Settings, principal: Principal) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producer, consumer and admin client."""
    k = settings.kafka
    kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(k)}
    creds = sasl_credentials(settings, principal)
    if creds is None:
        return kwargs
    kwargs.update(
        security_protocol=SECURITY_PROTOCOLS[k.security],
        sasl_mechanism=creds["mechanism"],
        sasl_plain_username=creds["username"],
        sasl_plain_password=creds["password"],
    )
    if creds["ssl_context"] is not None:
        kwargs["ssl_context"] = creds["ssl_context"]
    return kwargs
