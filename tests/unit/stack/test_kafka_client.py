"""``citystream.kafka_client``: the keyword arguments every stage connects to Kafka with."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from citystream.errors import ConfigError
from citystream.kafka_client import (
    Principal,
    bootstrap_servers,
    client_kwargs,
    password_env,
    principal_password,
    sasl_credentials,
)
from citystream.settings import KafkaSettings, Settings, StackSettings
from stack import tls
from stack.secrets import KAFKA_GENERATED


def _settings(tmp_path: Path, **kafka: object) -> Settings:
    return Settings(
        stack=StackSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache"),
        kafka=KafkaSettings(**kafka),
    )


def test_plaintext_gives_the_bootstrap_only(tmp_path: Path) -> None:
    assert client_kwargs(_settings(tmp_path), Principal.INGEST) == {"bootstrap_servers": "127.0.0.1:9092"}
    assert sasl_credentials(_settings(tmp_path), Principal.INGEST) is None


def test_sasl_scram_authenticates_as_the_process_principal(tmp_path: Path) -> None:
    s = _settings(tmp_path, security="sasl_scram", sink_influx_password=SecretStr("sink-pw-0123456789"))
    assert client_kwargs(s, Principal.SINK_INFLUX) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "sink-influx",
        "sasl_plain_password": "sink-pw-0123456789",
    }


def test_sasl_ssl_checks_the_broker_against_the_stack_ca(tmp_path: Path) -> None:
    tls.ensure_ca(tmp_path / "tls")
    s = _settings(tmp_path, security="sasl_ssl", jobs_password=SecretStr("jobs-pw-0123456789"))
    kwargs = client_kwargs(s, Principal.JOBS)
    assert kwargs["security_protocol"] == "SASL_SSL"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    creds = sasl_credentials(s, Principal.JOBS)
    assert creds is not None
    assert (creds["username"], creds["mechanism"]) == ("jobs", "SCRAM-SHA-512")


def test_missing_password_or_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CITYSTREAM_KAFKA__INGEST_PASSWORD"):
        client_kwargs(_settings(tmp_path, security="sasl_scram"), Principal.INGEST)
    with pytest.raises(ConfigError, match="CA file"):
        client_kwargs(
            _settings(tmp_path, security="sasl_ssl", ingest_password=SecretStr("x" * 20)), Principal.INGEST
        )


def test_one_address_stands_for_the_local_cluster() -> None:
    assert bootstrap_servers(KafkaSettings(brokers=3, bootstrap="127.0.0.1:9092")) == (
        "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
    )
    assert bootstrap_servers(KafkaSettings(brokers=3, bootstrap="a:1,b:2")) == "a:1,b:2"
    assert bootstrap_servers(KafkaSettings()) == "127.0.0.1:9092"


def test_every_principal_has_a_generated_password_variable() -> None:
    names = {password_env(p) for p in Principal} | {password_env("controller")}
    assert names == set(KAFKA_GENERATED)
    k = KafkaSettings(controller_password=SecretStr("c" * 20))
    assert principal_password(k, "controller") == "c" * 20
    with pytest.raises(ConfigError):
        principal_password(k, "mallory")
