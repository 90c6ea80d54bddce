"""The Faust app of the stream jobs: topics, tables and the agents of each job.

```
telemetry.raw --[readings: dedup, detectors, quality]--> {app}-series, {app}-signals,
                                                          device.quality
{app}-series  --[windows: 1-minute windows, peers]-----> telemetry.agg.1m, {app}-signals
alerts.commands --[commands]---------------------------> {app}-signals
{app}-signals --[alerts: lifecycle]--------------------> alerts (compacted), alerts.events
```

Every topic name and the app id take ``kafka.topic_prefix``. State lives in in-memory tables
with changelog topics: a restarted worker reads its state back from them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import faust

from citystream.kafka_client import Principal, bootstrap_servers, sasl_credentials
from citystream.settings import Settings
from citystream.topics import (
    ALERTS,
    ALERTS_COMMANDS,
    ALERTS_EVENTS,
    DEVICE_QUALITY,
    TELEMETRY_AGG_1M,
    TELEMETRY_DLQ,
    TELEMETRY_RAW,
    topic_name,
)
from stream_jobs import commits, faust_codec, watchdog
from stream_jobs.catalog import Catalog
from stream_jobs.runtime import Stats, Tables, Topics


class Jobs(NamedTuple):
    app: faust.App
    settings: Settings
    topics: Topics
    tables: Tables
    catalog: Catalog
    stats: Stats


def app_id(settings: Settings) -> str:
    return f"{settings.kafka.topic_prefix}{settings.jobs.app_id}"


def catalog_of(settings: Settings) -> Catalog:
    """The detectors the settings ask for."""
    from stream_jobs import catalog as catalogs
    from stream_jobs.detectors.config import DetectorConfig

    if not settings.jobs.detectors_enabled:
        return catalogs.empty()
    if settings.jobs.detector_config is not None:
        return Catalog(DetectorConfig.load(settings.jobs.detector_config))
    return Catalog()


def broker_urls(settings: Settings) -> str:
    """Every bootstrap broker as Faust takes them (``kafka://a:9092;kafka://b:9092``), so the
    worker still finds the cluster when one of them is down."""
    return ";".join(f"kafka://{address}" for address in bootstrap_servers(settings.kafka).split(","))


def credentials(settings: Settings) -> faust.SASLCredentials | None:
    """The worker's own principal (``jobs``) when Kafka requires SASL; ``None`` in plaintext."""
    creds = sasl_credentials(settings, Principal.JOBS)
    return None if creds is None else faust.SASLCredentials(**creds)


def create_app(settings: Settings, catalog: Catalog | None = None) -> Jobs:
    """The configured app with every agent installed (not started)."""
    faust_codec.register()
    k = settings.kafka
    j = settings.jobs
    ident = app_id(settings)
    app = commits.App(
        ident,
        broker=broker_urls(settings),
        broker_credentials=credentials(settings),
        broker_session_timeout=j.session_timeout_s,
        broker_heartbeat_interval=min(3.0, j.session_timeout_s / 3),
        store="memory://",
        datadir=str(settings.stack.state_dir / "jobs" / ident),
        autodiscover=False,
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        topic_allow_declare=True,
        web_enabled=j.web_enabled,
        web_port=j.web_port,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=j.commit_interval_s,
        table_standby_replicas=0,
        broker_max_poll_records=j.batch_max,
        stream_buffer_maxsize=max(4096, 2 * j.batch_max),
        producer_linger=0.005,
        producer_max_batch_size=512 * 1024,
        key_serializer="raw",
        value_serializer="raw",
        logging_config=None,
    )

    def external(base: str) -> Any:
        return app.topic(topic_name(base, k), key_serializer="raw", value_serializer="raw")

    def internal(name: str) -> Any:
        return app.topic(
            f"{ident}-{name}",
            partitions=k.partitions,
            replicas=k.replication_factor,
            internal=True,
            key_serializer="raw",
            value_serializer="raw",
        )

    topics = Topics(
        raw=external(TELEMETRY_RAW),
        series=internal("series"),
        signals=internal("signals"),
        commands=external(ALERTS_COMMANDS),
        agg=external(TELEMETRY_AGG_1M),
        alerts=external(ALERTS),
        events=external(ALERTS_EVENTS),
        quality=external(DEVICE_QUALITY),
        dlq=external(TELEMETRY_DLQ),
    )

    def table(name: str) -> Any:
        t: Any = app.Table(name, partitions=k.partitions)
        # Keys and values (model Structs) go through the kernel codec, in the changelog too.
        t.key_serializer = t.value_serializer = faust_codec.NAME
        return t

    tables = Tables(devices=table("devices"), series=table("series"), alerts=table("alerts"))
    jobs = Jobs(app, settings, topics, tables, catalog or catalog_of(settings), Stats())

    from stream_jobs.agents import aggregate, alerts, dedup, quality

    devices = dedup.install(jobs)
    quality.install(jobs, devices)
    aggregate.install(jobs)
    alerts.install(jobs)
    if j.commit_stall_s > 0:
        watchdog.install(app, j.commit_stall_s, every_s=min(15.0, j.commit_stall_s))
    return jobs
