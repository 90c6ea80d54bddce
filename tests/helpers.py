"""Helpers for integration tests: create buckets, read topics, wait on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules

from citystream.settings import Settings


def create_buckets(s: Settings) -> None:
    """Create the test's own buckets (the stack creates the real ones at set-up)."""
    with InfluxDBClient(
        url=s.influx.url, token=s.influx.admin_token.get_secret_value(), org=s.influx.org
    ) as client:
        org = client.organizations_api().find_organizations(org=s.influx.org)[0]
        api = client.buckets_api()
        for name in (s.influx.bucket_raw, s.influx.bucket_agg):
            if api.find_bucket_by_name(name) is None:
                api.create_bucket(
                    bucket_name=name,
                    org=org.id,
                    retention_rules=BucketRetentionRules(type="expire", every_seconds=86400),
                )


async def read_topic(
    bootstrap: str, topic: str, *, expect: int | None = None, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """All records of a topic from the beginning; waits until ``expect`` records arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] = set()
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for recs in batch.values():
                records.extend(recs)
            if expect is not None and len(records) >= expect:
                break
            if expect is None and not batch:
                break
        return records
    finally:
        await consumer.stop()


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval_s: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
