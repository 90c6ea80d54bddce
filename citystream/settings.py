"""All configuration, in one place.

Settings come from the environment (prefix ``CITYSTREAM_``, nested with ``__``, for example
``CITYSTREAM_KAFKA__BOOTSTRAP``), from ``.env`` in the working directory and from the
``secrets.env`` that ``citystream stack up`` writes under the state directory (generated
passwords and tokens, mode 0600). Every variable is listed in ``.env.example``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CITYSTREAM_"
SECRETS_FILE = "secrets.env"


def default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "citystream"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "citystream"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StackSettings(_Section):
    state_dir: Path = Field(default_factory=default_state_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    start_timeout_s: float = 120.0


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 1883
    plain_enabled: bool = True
    tls_enabled: bool = False
    tls_port: int = 8883
    require_client_cert: bool = False
    keepalive_s: int = 30
    max_queued_messages: int = 200_000
    max_inflight_messages: int = 1000
    topic_root: str = "city"
    ingest_username: str = "ingest"
    ingest_password: SecretStr = SecretStr("")
    session_expiry_s: int = 3600
    share_group: str = "ingest"


class KafkaSettings(_Section):
    bootstrap: str = "127.0.0.1:9092"
    controller_port: int = 9093
    version: str = "4.0.2"
    heap: str = "768m"
    topic_prefix: str = ""
    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int = 1
    raw_retention_ms: int = 3 * 24 * 3600 * 1000
    agg_retention_ms: int = 30 * 24 * 3600 * 1000
    dlq_retention_ms: int = 14 * 24 * 3600 * 1000
    alerts_retention_ms: int = 30 * 24 * 3600 * 1000


class InfluxSettings(_Section):
    url: str = "http://127.0.0.1:8086"
    version: str = "v2.7.12"
    org: str = "citystream"
    bucket_raw: str = "city"
    bucket_agg: str = "city_agg"
    raw_retention_s: int = 7 * 24 * 3600
    agg_retention_s: int = 400 * 24 * 3600
    admin_user: str = "citystream"
    admin_password: SecretStr = SecretStr("")
    admin_token: SecretStr = SecretStr("")
    sink_token: SecretStr = SecretStr("")
    dashboard_token: SecretStr = SecretStr("")


class IngestSettings(_Section):
    max_payload_bytes: int = 64 * 1024
    max_in_flight: int = 5000
    max_clock_skew_s: float = 300.0
    max_age_s: float = 7 * 24 * 3600.0
    metrics_port: int = 9101


class EvaluationSettings(_Section):
    nab_dir: Path | None = None
    """The NAB corpus folder; ``<repo>/../shared/nab`` when unset."""


class Settings(BaseSettings):
    """Root settings; build with :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    stack: StackSettings = Field(default_factory=StackSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    log_level: str = "INFO"
    language: str = "en"


def _state_dir_from_env() -> Path:
    raw = os.environ.get(f"{ENV_PREFIX}STACK__STATE_DIR")
    return Path(raw).expanduser() if raw else default_state_dir()


def secrets_path(state_dir: Path | None = None) -> Path:
    """Where the stack keeps the secrets it generated."""
    return (state_dir or _state_dir_from_env()) / SECRETS_FILE


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment beats ``.env`` beats generated secrets)."""
    env_files = [p for p in (secrets_path(), Path(".env")) if p.is_file()]
    return Settings(_env_file=env_files or None)


def reload_settings() -> Settings:
    """Drop the cached settings (after the stack wrote new secrets) and read them again."""
    get_settings.cache_clear()
    return get_settings()
