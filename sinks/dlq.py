"""The sinks' dead-letter topic: records that can never be written or delivered, with why."""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from citystream import codec
from citystream.errors import ServiceUnavailableError
from citystream.kafka_client import Principal, client_kwargs
from citystream.model import DlqRecord
from citystream.settings import Settings
from citystream.topics import SINK_DLQ, topic_name

logger = logging.getLogger(__name__)


class DeadLetters:
    """Sends :class:`DlqRecord` values to ``sinks.dlq`` and waits for the broker's ack."""

    def __init__(self, settings: Settings, stage: str, principal: Principal) -> None:
        self.topic = topic_name(SINK_DLQ, settings.kafka)
        self.stage = stage
        self._settings = settings
        self._principal = principal
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            **client_kwargs(self._settings, self._principal), acks="all", enable_idempotence=True, linger_ms=5
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            self._producer = None
            raise ServiceUnavailableError(f"Kafka at {self._settings.kafka.bootstrap}: {exc}") from exc

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(
        self,
        *,
        reason: str,
        detail: str,
        source: str,
        payload: bytes,
        key: bytes | None,
        device_id: str | None = None,
    ) -> None:
        record = DlqRecord(
            reason=reason,
            detail=detail[:2000],
            stage=self.stage,
            source=source,
            payload=payload,
            received_ms=time.time_ns() // 1_000_000,
            device_id=device_id,
        )
        if self._producer is None:
            raise ServiceUnavailableError("the dead-letter producer is not started")
        await self._producer.send_and_wait(self.topic, codec.encode(record), key=key)
        logger.warning("dead letter: %s from %s (%s)", reason, source, detail[:200])
