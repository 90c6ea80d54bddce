"""Kafka for the benchmark: per-run topics, end offsets, consumer lag, reading a topic back.

Every topic a run creates carries ``message.timestamp.type=LogAppendTime``: the broker stamps
each record when it appends it, so a record's timestamp minus the device timestamp in it is the
device-to-Kafka latency, the same way for our bridge, the C pipe and the Quix Streams source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord

from citystream.kafka_client import Principal, client_kwargs
from citystream.settings import KafkaSettings, Settings
from citystream.topics import topic_specs

logger = logging.getLogger(__name__)

LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
LOG_APPEND_TIME_TYPE = 1
"""``ConsumerRecord.timestamp_type`` of a broker-stamped record."""

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class Kafka:
    """One admin client and one consumer for the harness's bookkeeping (``async with``).

    It connects as the stack's admin principal (``citystream.kafka_client``): it creates and
    deletes a run's topics and reads every one of them back.
    """

    def __init__(self, settings: Settings) -> None:
        self.client = client_kwargs(settings, Principal.ADMIN)
        self.admin = AIOKafkaAdminClient(**self.client, request_timeout_ms=30_000)
        self.consumer = AIOKafkaConsumer(**self.client, enable_auto_commit=False)

    async def __aenter__(self) -> Kafka:
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    # -- topics ----------------------------------------------------------------------------

    async def create_pipeline_topics(self, kafka: KafkaSettings) -> list[str]:
        """Every pipeline topic under ``kafka.topic_prefix``, broker-stamped."""
        topics = [
            NewTopic(
                s.name, s.partitions, kafka.replication_factor, topic_configs={**s.config, **LOG_APPEND_TIME}
            )
            for s in topic_specs(kafka)
        ]
        return await self._create(topics)

    async def create_topic(self, name: str, partitions: int, replication: int = 1) -> list[str]:
        return await self._create(
            [NewTopic(name, partitions, replication, topic_configs=dict(LOG_APPEND_TIME))]
        )

    async def _create(self, topics: list[NewTopic]) -> list[str]:
        existing = set(await self.admin.list_topics())
        wanted = [t for t in topics if t.name not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await self.admin.create_topics(wanted)
        return [t.name for t in wanted]

    async def delete_topics_containing(self, marker: str) -> list[str]:
        """Delete every topic whose name holds ``marker`` (a run's unique id)."""
        names = [t for t in await self.admin.list_topics() if marker in t]
        if names:
            try:
                await self.admin.delete_topics(names)
            except KafkaError as exc:
                logger.warning("deleting %d topics of %s: %r", len(names), marker, exc)
        return names

    async def partitions(self, topic: str, timeout_s: float = 10.0) -> list[TopicPartition]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            parts = self.consumer.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            if asyncio.get_running_loop().time() > deadline:
                raise KafkaError(f"topic {topic} has no partitions")
            await self.consumer._client.force_metadata_update()  # no public way
            await asyncio.sleep(0.2)

    # -- offsets ---------------------------------------------------------------------------

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(list(tps))
        return ends

    async def total_end(self, tps: Sequence[TopicPartition]) -> int:
        return sum((await self.end_offsets(tps)).values())

    async def committed(self, group: str, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets of ``group`` on ``tps`` (0 where it has none yet)."""
        try:
            got = await self.admin.list_consumer_group_offsets(group, partitions=list(tps))
        except KafkaError:
            return dict.fromkeys(tps, 0)
        return {tp: max(0, got[tp].offset) if tp in got else 0 for tp in tps}

    async def group_state(self, group: str) -> tuple[str, int]:
        """(state, members) of a consumer group (``Dead`` when it does not exist)."""
        result = await self.admin.describe_consumer_groups([group])
        info: Any = result[0].to_object()["groups"][0]
        return str(info["state"]), len(info["members"])

    # -- reading back ----------------------------------------------------------------------

    async def scan(
        self,
        tps: Iterable[TopicPartition],
        handle: Callable[[list[Record]], None],
        *,
        start: dict[TopicPartition, int] | None = None,
        end: dict[TopicPartition, int] | None = None,
    ) -> int:
        """Feed every record of ``tps`` in ``[start, end)`` (default: all) to ``handle`` in batches."""
        parts = list(tps)
        consumer = AIOKafkaConsumer(
            **self.client,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            consumer.assign(parts)
            ends = end or await consumer.end_offsets(parts)
            remaining = set()
            for tp in parts:
                first = (start or {}).get(tp, 0)
                if ends[tp] > first:
                    consumer.seek(tp, first)
                    remaining.add(tp)
            count = 0
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=50_000)
                for tp, records in batch.items():
                    limit = ends[tp]
                    kept = (
                        [r for r in records if r.offset < limit] if records[-1].offset >= limit else records
                    )
                    if kept:
                        handle(kept)
                        count += len(kept)
                    if records[-1].offset + 1 >= limit:
                        remaining.discard(tp)
                if not batch:
                    for tp in list(remaining):
                        if await consumer.position(tp) >= ends[tp]:
                            remaining.discard(tp)
            return count
        finally:
            await consumer.stop()
