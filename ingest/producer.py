"""The bridge's Kafka side: batches per partition, acks=all, idempotent, never drops a record.

Records are queued per (topic, partition) lane; each lane builds record batches and hands them
to aiokafka (``send_batch``). While a batch is on its way the lane keeps collecting, so batches
grow with the load. When Kafka acknowledges a batch, its records go back to the caller
(``on_delivered``), which acknowledges the MQTT messages behind them.

A batch that fails (Kafka unreachable beyond the request timeout, a fenced or reset producer)
is never dropped: the writer stops submitting, waits until every outstanding batch has resolved,
replaces the producer (a new idempotent producer id, so sequence numbers start clean), puts the
failed records back at the head of their lanes in their original order and resumes. Until
then nothing behind them is acknowledged over MQTT, and the broker keeps the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from citystream.errors import ServiceUnavailableError
from citystream.kafka_client import Principal, client_kwargs
from citystream.settings import Settings

logger = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """One record to write, and what the caller needs back when Kafka acknowledged it."""

    key: bytes
    value: bytes
    timestamp_ms: int
    """The Kafka record timestamp: when the bridge received the message."""
    mid: int
    """The MQTT packet id to acknowledge; 0 for QoS 0 messages."""
    generation: int
    """The MQTT connection the message came on."""
    device_ms: int
    """The device timestamp of a reading, -1 for other records."""
    output: int
    """Index of the topic in ``KafkaWriter.topics``."""


Delivered = Callable[[list[Outgoing]], None]
METADATA_RETRY_S = 0.5
"""Least time between metadata refreshes while Kafka does not answer."""
STALL_S = 5.0
"""Records waiting this long with no delivery make the writer not ready (Kafka is away)."""


class Lane:
    """The records waiting for one partition of one topic."""

    __slots__ = ("failed", "outstanding", "partition", "queue", "topic", "wake")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.queue: deque[Outgoing] = deque()
        self.failed: list[list[Outgoing]] = []
        self.outstanding = 0
        self.wake = asyncio.Event()


class KafkaWriter:
    """Writes records to a fixed set of topics with at-least-once delivery callbacks."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        on_delivered: Delivered,
        *,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self.settings = settings
        self._factory = producer_factory or self._new_producer
        self.topics = list(topics)
        self.on_delivered = on_delivered
        self.produced = 0
        self.failures = 0
        self.restarts = 0
        self.last_error = ""
        self._producer: AIOKafkaProducer | None = None
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._outstanding = 0
        self._queued = 0
        self._progress = time.monotonic()
        self._lanes: list[list[Lane]] = []
        self._lane_by_key: list[dict[bytes, Lane]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._recovery: asyncio.Task[None] | None = None
        self._partitioner = DefaultPartitioner()
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------

    def _new_producer(self) -> AIOKafkaProducer:
        i = self.settings.ingest
        compression = None if i.compression in ("", "none") else i.compression
        producer = AIOKafkaProducer(
            **client_kwargs(self.settings, Principal.INGEST),
            client_id=f"citystream-ingest-{i.instance}",
            acks="all",
            enable_idempotence=True,
            linger_ms=i.linger_ms,
            max_batch_size=i.max_batch_bytes,
            compression_type=compression,
            request_timeout_ms=i.request_timeout_ms,
            retry_backoff_ms=200,
        )
        throttle_metadata_updates(producer.client, METADATA_RETRY_S)
        return producer

    async def _start_producer(self) -> AIOKafkaProducer:
        """A started producer; retries with backoff until Kafka answers."""
        backoff = 0.25
        while True:
            producer = self._factory()
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                await _stop_quietly(producer)
                self.last_error = f"Kafka unreachable: {exc!r}"
                if self._closing:
                    raise ServiceUnavailableError(self.last_error) from exc
                logger.warning("%s; retrying in %.1f s", self.last_error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.ingest.reconnect_max_s)
            else:
                return producer

    async def start(self) -> None:
        """Connect (waiting for Kafka if needed), learn the partitions and start the lanes."""
        self._producer = await self._start_producer()
        for topic in self.topics:
            partitions = sorted(await self._producer.partitions_for(topic))
            if not partitions:
                raise ServiceUnavailableError(f"topic {topic} has no partitions (does it exist?)")
            self._lanes.append([Lane(topic, p) for p in partitions])
            self._lane_by_key.append({})
        loop = asyncio.get_running_loop()
        for lanes in self._lanes:
            for lane in lanes:
                self._tasks.append(
                    loop.create_task(self._run_lane(lane), name=f"lane-{lane.topic}-{lane.partition}")
                )
        self._ready.set()

    @property
    def ready(self) -> bool:
        """A producer is up and records do not wait longer than ``STALL_S`` without progress."""
        stalled = self._queued > 0 and time.monotonic() - self._progress > STALL_S
        return self._ready.is_set() and not self._closing and not stalled

    @property
    def in_flight(self) -> int:
        """Records accepted by :meth:`put` and not yet delivered."""
        return self._queued

    # -- the hot path ----------------------------------------------------------------------

    def lane(self, topic: int, key: bytes) -> Lane:
        lane = self._lane_by_key[topic].get(key)
        if lane is None:
            lanes = self._lanes[topic]
            index = self._partitioner(key, list(range(len(lanes))), None)
            lane = self._lane_by_key[topic][key] = lanes[index]
        return lane

    def put(self, record: Outgoing) -> None:
        """Queue a record for ``topics[record.output]``, partitioned by key like Kafka's default."""
        lane = self.lane(record.output, record.key)
        lane.queue.append(record)
        if not self._queued:
            self._progress = time.monotonic()
        self._queued += 1
        self._drained.clear()
        lane.wake.set()

    async def _run_lane(self, lane: Lane) -> None:
        queue = lane.queue
        while True:
            if not queue:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            await self._ready.wait()
            producer = self._producer
            if producer is None:  # replaced right now; wait for the new one
                continue
            batch = producer.create_batch()
            taken: list[Outgoing] = []
            while queue:
                record = queue[0]
                if batch.append(timestamp=record.timestamp_ms, key=record.key, value=record.value) is None:
                    break
                taken.append(queue.popleft())
            batch.close()
            try:
                future = await producer.send_batch(batch, lane.topic, partition=lane.partition)
            except (KafkaError, TimeoutError) as exc:
                # Not enqueued (the previous batch failed or never drained): keep the order.
                queue.extendleft(reversed(taken))
                self.last_error = f"enqueue on {lane.topic}[{lane.partition}]: {exc!r}"
                await asyncio.sleep(0.05)
                continue
            lane.outstanding += 1
            self._outstanding += 1
            self._idle.clear()
            future.add_done_callback(partial(self._done, lane, taken))

    def _done(self, lane: Lane, records: list[Outgoing], future: asyncio.Future[Any]) -> None:
        lane.outstanding -= 1
        self._outstanding -= 1
        error = None if not future.cancelled() and future.exception() is None else _error_of(future)
        if error is None:
            self._queued -= len(records)
            self._progress = time.monotonic()
            if not self._queued:
                self._drained.set()
            self.produced += len(records)
            self.on_delivered(records)
        else:
            self.failures += 1
            self.last_error = f"{lane.topic}[{lane.partition}]: {error!r}"
            lane.failed.append(records)
            if self._recovery is None:
                self._ready.clear()  # now, before any lane submits again
                self._recovery = asyncio.get_running_loop().create_task(
                    self._recover(), name="producer-recovery"
                )
        if self._outstanding == 0:
            self._idle.set()

    async def _recover(self) -> None:
        logger.warning("a Kafka batch failed (%s); replacing the producer and resending", self.last_error)
        started = time.monotonic()
        try:
            await self._idle.wait()  # every batch of the failed producer has resolved
            old = self._producer
            self._producer = None
            if old is not None:
                await _stop_quietly(old)
            self._producer = await self._start_producer()
            for lanes in self._lanes:
                for lane in lanes:
                    if lane.failed:
                        resend = [r for records in lane.failed for r in records]
                        lane.failed.clear()
                        lane.queue.extendleft(reversed(resend))
                        lane.wake.set()
            self.restarts += 1
            logger.warning("Kafka producer replaced after %.1f s; resending", time.monotonic() - started)
        finally:
            self._recovery = None
            if self._producer is not None:
                self._ready.set()

    # -- shutdown ---------------------------------------------------------------------------

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every queued record is delivered; ``False`` on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        if self._producer is not None:
            await _stop_quietly(self._producer)
            self._producer = None
        self._ready.clear()


def throttle_metadata_updates(client: Any, min_interval_s: float) -> None:
    """Make a failed metadata refresh of an aiokafka client answer after ``min_interval_s``.

    aiokafka's sender waits for a forced metadata refresh while a partition has no known
    leader, and a refresh against a broker that is down fails at once: without this, the
    sender retries in a tight loop (a busy core and two error lines per attempt) for as long
    as Kafka is away.
    """
    force = client.force_metadata_update

    def throttled() -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()

        def settle(refresh: asyncio.Future[bool]) -> None:
            ok = not refresh.cancelled() and refresh.exception() is None and bool(refresh.result())
            if ok:
                _resolve(answer, True)
            else:
                loop.call_later(min_interval_s, _resolve, answer, False)

        force().add_done_callback(settle)
        return answer

    client.force_metadata_update = throttled


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _error_of(future: asyncio.Future[Any]) -> BaseException:
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or RuntimeError("no error")


async def _stop_quietly(producer: AIOKafkaProducer, timeout_s: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await producer.stop()
    except (KafkaError, OSError, TimeoutError) as exc:
        logger.warning("stopping the Kafka producer: %r", exc)
