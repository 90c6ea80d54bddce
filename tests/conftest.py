"""Shared fixtures: the real local stack and per-test isolation (topics, groups, MQTT root, buckets)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from citystream.settings import Settings, get_settings


def isolated(settings: Settings, uid: str) -> Settings:
    """Settings whose topics, consumer groups, MQTT root and buckets belong to one test.

    The per-device rate limit is off: delivery tests push a few devices far beyond a real
    device's rate on purpose; the tests of the limit turn it on.
    """
    return settings.model_copy(
        update={
            "ingest": settings.ingest.model_copy(update={"device_rate_per_s": 0.0}),
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"t{uid}."}),
            "mqtt": settings.mqtt.model_copy(update={"topic_root": f"t{uid}", "share_group": f"g{uid}"}),
            "influx": settings.influx.model_copy(
                update={"bucket_raw": f"t{uid}-city", "bucket_agg": f"t{uid}-city-agg"}
            ),
        }
    )


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """Bring the local stack up (idempotent: a no-op when it already runs)."""
    from stack import manager

    settings, _ = manager.up(get_settings())
    return settings


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(stack_settings: Settings, uid: str) -> Iterator[Settings]:
    """Per-test settings with their own Kafka topics (created) and InfluxDB buckets."""
    from stack.kafka import ensure_topics

    s = isolated(stack_settings, uid)
    asyncio.run(ensure_topics(s))
    yield s
    asyncio.run(_delete_topics(s))
    _delete_buckets(s)


async def _delete_topics(s: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(s.kafka.topic_prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def _delete_buckets(s: Settings) -> None:
    from influxdb_client.client.influxdb_client import InfluxDBClient

    with InfluxDBClient(
        url=s.influx.url, token=s.influx.admin_token.get_secret_value(), org=s.influx.org
    ) as client:
        api = client.buckets_api()
        for name in (s.influx.bucket_raw, s.influx.bucket_agg):
            bucket = api.find_bucket_by_name(name)
            if bucket is not None:
                api.delete_bucket(bucket)
