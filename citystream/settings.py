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
from typing import Literal

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
    max_queued_messages: int = 1_000_000
    """Messages the broker keeps per client session while the client reads slower than the
    devices send (the bridge during a burst); beyond it the broker drops them. A few
    hundred bytes of broker memory each: the default holds 100 s of 10,000 msg/s in a few
    hundred MB."""
    max_inflight_messages: int = 1000
    topic_root: str = "city"
    ingest_username: str = "ingest"
    ingest_password: SecretStr = SecretStr("")
    session_expiry_s: int = 3600
    share_group: str = "ingest"
    """Bridges with the same group split the load (``$share/{group}/{root}/#``). Empty: one bridge
    on the plain ``{root}/#``, which Mosquitto restores after a crash (it does not persist shared
    subscriptions)."""


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
    brokers: int = Field(default=1, ge=1, le=9)
    """How many brokers the local stack runs (KRaft, each one broker and controller). Broker i
    (from 0) listens on the bootstrap port + i * port_step, its controller on controller_port +
    i * port_step. Set replication_factor and min_insync_replicas to match (3 and 2)."""
    port_step: int = 100
    security: Literal["plaintext", "sasl_scram", "sasl_ssl"] = "plaintext"
    """plaintext; sasl_scram (SASL_PLAINTEXT with SCRAM, ACLs); sasl_ssl (the same over TLS)."""
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    ssl_cafile: str = ""
    """CA that signed the brokers' certificates (sasl_ssl); empty means the stack's own CA."""
    admin_password: SecretStr = SecretStr("")
    """Principal ``admin``: the stack itself (topics, credentials, ACLs); a super user."""
    controller_password: SecretStr = SecretStr("")
    """Brokers and controllers among themselves (SASL/PLAIN on the controller listener)."""
    ingest_password: SecretStr = SecretStr("")
    registry_password: SecretStr = SecretStr("")
    jobs_password: SecretStr = SecretStr("")
    sink_influx_password: SecretStr = SecretStr("")
    sink_webhook_password: SecretStr = SecretStr("")
    monitor_password: SecretStr = SecretStr("")


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
    metrics_host: str = "127.0.0.1"
    instance: str = "1"
    """Bridge instance name; the MQTT client id is ``citystream-{share_group}-{instance}`` and
    must stay the same across restarts so that the broker keeps the session for it."""
    max_future_s: float = 24 * 3600.0
    """Device timestamps further ahead than this are dead-lettered (beyond the skew bound
    they are only flagged)."""
    max_batch_bytes: int = 512 * 1024
    linger_ms: int = 0
    compression: str = "none"
    request_timeout_ms: int = 30_000
    reconnect_max_s: float = 15.0
    shutdown_timeout_s: float = 30.0
    device_rate_per_s: float = Field(default=20.0, ge=0)
    """Readings per second one device may sustain (a token bucket per device, refilled at this
    rate); readings beyond it are dead-lettered as ``rate_limited``. 0 turns the limit off."""
    device_burst: int = Field(default=100, ge=1)
    """Readings one device may send at once before ``device_rate_per_s`` applies (the bucket's
    size). A device's backlog released after an outage arrives at the bridge's pace, so this
    bounds the backlog that passes (100 is 100 minutes of a device reporting every minute)."""


class EvaluationSettings(_Section):
    nab_dir: Path | None = None
    """The NAB corpus folder; ``<repo>/../shared/nab`` when unset."""


class WebhookSubscriber(_Section):
    """One receiver of signed alert webhooks; an empty filter matches everything."""

    name: str
    url: str
    secret: SecretStr
    severities: tuple[str, ...] = ()
    districts: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()


class SinkSettings(_Section):
    """The InfluxDB sink, the webhook sink and the alert acknowledgement API."""

    influx_group: str = "sink-influx"
    influx_token: SecretStr = SecretStr("")
    """Token the InfluxDB sink writes with; empty means ``influx.sink_token``."""
    batch_size: int = 20_000
    flush_interval_s: float = 0.5
    max_in_flight_writes: int = 3
    """Batches being written at once; their offsets are committed in order."""
    max_write_requests: int = 4
    """HTTP write requests at once (a batch goes out in requests of at most 1 MB)."""
    max_buffered_points: int = 100_000
    write_timeout_s: float = 10.0
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    retry_after_max_s: float = 60.0
    revoke_timeout_s: float = 10.0
    rollup_every: str = "10m"
    rollup_lookback_h: int = 3
    http_host: str = "127.0.0.1"
    influx_metrics_port: int = 9102
    webhook_metrics_port: int = 9103
    webhook_group: str = "sink-webhook"
    webhook_subscribers: list[WebhookSubscriber] = Field(default_factory=list)
    """JSON list in the environment: ``[{"name", "url", "secret", "severities", "districts", "rules"}]``."""
    webhook_max_attempts: int = 8
    webhook_backoff_initial_s: float = 0.5
    webhook_backoff_max_s: float = 60.0
    webhook_timeout_s: float = 10.0
    webhook_max_pending: int = 10_000
    signature_tolerance_s: int = 300
    api_port: int = 9104
    api_token: SecretStr = SecretStr("")


class MonitorSettings(_Section):
    """The pipeline monitor (``sinks/monitor.py``): what it samples and how it writes."""

    interval_s: float = 10.0
    scrape_timeout_s: float = 5.0
    targets: dict[str, str] = Field(default_factory=dict)
    """Prometheus endpoints, instance name -> URL; empty means the local ingest and sink ports."""
    services: dict[str, str] = Field(
        default_factory=lambda: {
            "mosquitto": "mosquitto/mosquitto.pid",
            "kafka": "kafka/kafka.pid",
            "influxdb": "influxdb/influxd.pid",
        }
    )
    """Local services sampled from /proc: name -> pid file under ``stack.state_dir``."""
    consumer_groups: list[str] = Field(default_factory=list)
    """Kafka consumer groups whose lag is reported; empty means every group."""
    write_token: SecretStr = SecretStr("")
    """Token the monitor writes with; empty means ``influx.sink_token``."""
    max_buffered_points: int = 20_000


class JobsSettings(_Section):
    """The Faust stream jobs (``citystream jobs``): windows, dedup, alerts, quality."""

    app_id: str = "citystream-jobs"
    """Faust app id (the consumer group and the prefix of its internal topics)."""
    web_enabled: bool = False
    web_port: int = 6066
    metrics_port: int = Field(default=9105, ge=0, le=65535)
    """Prometheus ``/metrics`` of the worker (0: off)."""
    metrics_host: str = "127.0.0.1"
    grace_s: float = 60.0
    """Event-time grace for late readings: a window closes when the watermark passes its end
    plus this."""
    idle_source_s: float = 10.0
    """Wall seconds a source partition, read to its end, may stay quiet before it stops holding
    windows open."""
    dedup_window: int = Field(default=64, ge=1, le=64)
    """How many sequence numbers below a device's highest one are remembered (out-of-order)."""
    batch_max: int = 4000
    batch_within_s: float = 0.2
    commit_interval_s: float = 2.8
    """How often the worker commits its input offsets (after flushing what it produced)."""
    state_flush_s: float = Field(default=1.0, ge=0.0)
    """How often the per-device and per-series state is written to the changelogs. The input
    records of a batch are acknowledged only once the state they left behind is written, so a
    restarted worker resumes exactly where its state is; longer means fewer changelog records
    (a device reporting every second is written once per interval) and more to replay. 0: after
    every batch."""
    commit_stall_s: float = Field(default=180.0, ge=0.0)
    """A worker whose commits of a partition stay stuck behind an unacknowledged record this
    long stops itself, to be started again from the committed offset (0: never)."""
    session_timeout_s: float = Field(default=60.0, ge=6.0)
    """How long the group waits for a worker that stopped heartbeating (killed, hung) before it
    hands that worker's partitions to the others."""
    nice: int = Field(default=10, ge=0, le=19)
    """CPU niceness the worker adds to its own at start. On a machine it shares with the bridge
    and the broker it yields the CPU to them: the broker's queue of unread messages is bounded,
    while the worker's input waits in Kafka and is caught up later. Alone on a machine it
    changes nothing (0: keep the niceness it was started with)."""
    timer_interval_s: float = 5.0
    """How often the silent-device and quality timer runs (wall seconds)."""
    detectors_enabled: bool = True
    """Off: aggregation, dedup and quality only (no detector, no alert)."""
    detector_config: Path | None = None
    """A JSON or YAML file overriding detector entries (see stream_jobs/detectors/config.py)."""
    signal_heartbeat_s: float = 30.0
    """While a condition holds (or may still clear an alert), re-send it this often (event time)."""
    timeliness_bound_s: float = 10.0
    """A reading is timely when the bridge received it within this of its device time."""
    min_duration_s: dict[str, float] = Field(default_factory=dict)
    """Per rule: how long a condition must hold before an alert is raised (overrides defaults)."""
    clear_hold_s: dict[str, float] = Field(default_factory=dict)
    """Per rule: how long a condition must be gone before an alert clears (overrides defaults)."""
    flap_window_s: float = 1800.0
    flap_max_raises: int = 3
    """More raises than this within the flap window mark an alert as flapping: it then stays
    open until its condition has been gone for four times the clear hold."""


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
    sink: SinkSettings = Field(default_factory=SinkSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
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
