"""How the Faust app connects: every bootstrap broker, and the ``jobs`` principal under SASL."""

from __future__ import annotations

from pathlib import Path

import faust
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr

from citystream.settings import KafkaSettings, Settings, StackSettings
from stream_jobs.app import broker_urls, create_app, credentials


def _settings(tmp_path: Path, **kafka: object) -> Settings:
    return Settings(
        stack=StackSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache"),
        kafka=KafkaSettings(**kafka),
    )


def test_every_broker_of_a_local_cluster_is_a_bootstrap_url(tmp_path: Path) -> None:
    s = _settings(tmp_path, bootstrap="127.0.0.1:29092", brokers=3, port_step=10)
    assert broker_urls(s) == "kafka://127.0.0.1:29092;kafka://127.0.0.1:29102;kafka://127.0.0.1:29112"
    listed = _settings(tmp_path, bootstrap="10.0.0.1:9092,10.0.0.2:9092")
    assert broker_urls(listed) == "kafka://10.0.0.1:9092;kafka://10.0.0.2:9092"


def test_the_app_is_given_every_broker(tmp_path: Path) -> None:
    s = _settings(tmp_path, bootstrap="127.0.0.1:29092", brokers=3, port_step=10)
    app = create_app(s).app
    assert [str(u) for u in app.conf.broker] == [
        "kafka://127.0.0.1:29092",
        "kafka://127.0.0.1:29102",
        "kafka://127.0.0.1:29112",
    ]


def test_plaintext_needs_no_credentials(tmp_path: Path) -> None:
    assert credentials(_settings(tmp_path)) is None


def test_sasl_scram_logs_in_as_the_jobs_principal(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        security="sasl_scram",
        sasl_mechanism="SCRAM-SHA-512",
        jobs_password=SecretStr("jobs-pw-0123456789"),
        ingest_password=SecretStr("ingest-pw-0123456789"),
    )
    creds = credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("jobs", "jobs-pw-0123456789")
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT
