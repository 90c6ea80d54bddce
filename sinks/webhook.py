"""The webhook sink: alert events from ``alerts.events`` to subscribers, signed, in order per alert.

``citystream sink webhook`` reads ``alerts.events`` and POSTs each event (the ``AlertEvent``
JSON of the kernel codec) to every subscriber whose filters (severities, districts, rules;
empty means all) match. Events of silenced alerts are not delivered (counted as
``silenced``). Each attempt is signed afresh (see :mod:`sinks.signing`).

Order: deliveries for one (subscriber, alert key) run one after another in offset order, each
with its own retries; different keys and subscribers proceed in parallel. A 2xx answer
delivers. Connection errors, timeouts, 408, 425, 429 and 5xx are retried with exponential
backoff and full jitter (``Retry-After`` honoured) up to ``webhook_max_attempts``; other 4xx
answers are final. Either way the event then goes to ``sinks.dlq`` with the subscriber and the
last error, and the next event of that alert follows.

A record's offset is committed once every delivery of it and of every record before it in its
partition is finished (delivered or dead-lettered); a crash re-delivers the unfinished ones,
so receivers dedupe by ``X-Citystream-Event-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from citystream import codec
from citystream.errors import ServiceUnavailableError
from citystream.kafka_client import Principal, client_kwargs
from citystream.model import AlertEvent
from citystream.settings import Settings, WebhookSubscriber
from citystream.topics import ALERTS_EVENTS, topic_name
from sinks.batch import OffsetTracker, Partition
from sinks.dlq import DeadLetters
from sinks.loop import ConsumerLoop
from sinks.metrics import HttpServer, WebhookMetrics, health_routes, process_registry
from sinks.retry import Backoff, parse_retry_after
from sinks.signing import signed_headers

logger = logging.getLogger(__name__)

STAGE = "sink.webhook"
RETRIABLE_STATUS = frozenset({408, 425, 429})
USER_AGENT = "citystream-webhook/1"


def matches(subscriber: WebhookSubscriber, event: AlertEvent) -> bool:
    """Whether the subscriber's filters (empty = everything) accept the event."""
    a = event.alert
    return (
        (not subscriber.severities or str(a.severity) in subscriber.severities)
        and (not subscriber.districts or a.district in subscriber.districts)
        and (not subscriber.rules or a.rule in subscriber.rules)
    )


@dataclass(slots=True)
class Delivery:
    subscriber: WebhookSubscriber
    event: AlertEvent
    body: bytes
    partition: Partition
    offset: int
    key: bytes | None


@dataclass(slots=True)
class Outcome:
    delivered: bool
    attempts: int
    reason: str = ""
    detail: str = ""


@dataclass(slots=True)
class _Lane:
    """The deliveries of one (subscriber, alert key), one at a time."""

    queue: deque[Delivery] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class Deliverer:
    """POSTs one delivery with retries; knows nothing about Kafka."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings, metrics: WebhookMetrics) -> None:
        s = settings.sink
        self._session = session
        self._max_attempts = max(1, s.webhook_max_attempts)
        self._timeout = aiohttp.ClientTimeout(total=s.webhook_timeout_s)
        self._backoff = Backoff(s.webhook_backoff_initial_s, s.webhook_backoff_max_s, s.retry_after_max_s)
        self._metrics = metrics

    async def deliver(self, d: Delivery) -> Outcome:
        sub = d.subscriber
        secret = sub.secret.get_secret_value()
        detail = ""
        for attempt in range(1, self._max_attempts + 1):
            headers = signed_headers(secret, d.body, d.event.event_id)
            headers.update(
                {
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    "X-Citystream-Attempt": str(attempt),
                }
            )
            retry_after: float | None = None
            try:
                async with self._session.post(
                    sub.url, data=d.body, headers=headers, timeout=self._timeout
                ) as resp:
                    status = resp.status
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._metrics.attempts.labels(sub.name, "error").inc()
                detail = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    self._metrics.attempts.labels(sub.name, "ok").inc()
                    return Outcome(True, attempt)
                self._metrics.attempts.labels(sub.name, str(status)).inc()
                detail = f"HTTP {status}"
                if status < 500 and status not in RETRIABLE_STATUS:
                    return Outcome(False, attempt, "webhook_rejected", detail)
            if attempt < self._max_attempts:
                delay = self._backoff.delay(attempt, retry_after)
                logger.info(
                    "webhook %s: event %s attempt %d failed (%s), retrying in %.2f s",
                    sub.name,
                    d.event.event_id,
                    attempt,
                    detail,
                    delay,
                )
                await asyncio.sleep(delay)
        return Outcome(False, self._max_attempts, "webhook_retries_exhausted", detail)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.sink.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.sink.on_assigned(assigned)


class WebhookSink(ConsumerLoop):
    """Consume alert events and deliver them; stop with :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        subscribers: Sequence[WebhookSubscriber] | None = None,
        registry: CollectorRegistry | None = None,
        metrics_port: int | None = None,
    ) -> None:
        super().__init__(settings)
        s = settings.sink
        self.subscribers = tuple(settings.sink.webhook_subscribers if subscribers is None else subscribers)
        self.registry = registry or process_registry()
        self.metrics = WebhookMetrics(self.registry)
        self.topic = topic_name(ALERTS_EVENTS, settings.kafka)
        self._tracker = OffsetTracker()
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._started = False
        self._paused = False
        self._failure: BaseException | None = None
        self._commit_lock = asyncio.Lock()
        self._dlq = DeadLetters(settings, STAGE, Principal.SINK_WEBHOOK)
        self._consumer: AIOKafkaConsumer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._deliverer: Deliverer | None = None
        app = web.Application()
        app.add_routes(health_routes(self.registry, self._live, self._ready))
        port = s.webhook_metrics_port if metrics_port is None else metrics_port
        self.http = HttpServer(app, s.http_host, port)

    async def _start(self) -> None:
        s = self.settings.sink
        if not self.subscribers:
            logger.warning("webhook sink: no subscribers configured; events are consumed and counted only")
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        self._deliverer = Deliverer(self._session, self.settings, self.metrics)
        await self._dlq.start()
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings, Principal.SINK_WEBHOOK),
            group_id=s.webhook_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._consumer.subscribe(topics=[self.topic], listener=_Rebalance(self))
        try:
            await self._consumer.start()
        except KafkaError as exc:
            raise ServiceUnavailableError(f"Kafka at {self.settings.kafka.bootstrap}: {exc}") from exc
        await self.http.start()
        self._started = True
        logger.info(
            "webhook sink: group %s, %d subscribers, metrics on port %d",
            s.webhook_group,
            len(self.subscribers),
            self.http.port,
        )

    async def _close(self) -> None:
        self._started = False
        await self._cancel_lanes()
        if self._consumer is not None:
            await self._consumer.stop()
        await self._dlq.stop()
        if self._session is not None:
            await self._session.close()
        await self.http.stop()

    def _live(self) -> tuple[bool, str]:
        return (self._started, "running" if self._started else "not running")

    def _ready(self) -> tuple[bool, str]:
        return (self._started, "ok" if self._started else "starting")

    # -- the loop ----------------------------------------------------------------------------

    async def _step(self) -> None:
        consumer = self._consumer
        assert consumer is not None  # noqa: S101  # set by _start
        if self._failure is not None:
            raise self._failure
        await self._commit()
        self._apply_backpressure()
        fetched = await consumer.getmany(timeout_ms=200, max_records=500)
        for tp, records in fetched.items():
            for record in records:
                if tp not in consumer.assignment():
                    break  # revoked while we were awaiting a dead letter
                await self._dispatch((tp.topic, tp.partition), record)

    async def _dispatch(self, partition: Partition, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = codec.decode(record.value or b"", AlertEvent)
        except (codec.DecodeError, codec.ValidationError) as exc:
            self.metrics.events.labels("dead_lettered").inc()
            await self._dlq.send(
                reason="decode_error",
                detail=f"not an AlertEvent: {exc}",
                source=f"{record.topic}/{record.partition}/{record.offset}",
                payload=record.value or b"",
                key=record.key,
            )
            self._tracker.add(partition, record.offset, 0)
            return
        if event.alert.silenced:
            self.metrics.events.labels("silenced").inc()
            self._tracker.add(partition, record.offset, 0)
            return
        targets = [s for s in self.subscribers if matches(s, event)]
        if not targets:
            self.metrics.events.labels("no_subscriber").inc()
            self._tracker.add(partition, record.offset, 0)
            return
        self.metrics.events.labels("dispatched").inc()
        body = codec.encode(event)
        self._tracker.add(partition, record.offset, len(targets))
        for sub in targets:
            self._submit(Delivery(sub, event, body, partition, record.offset, record.key))
        self.metrics.pending.set(self._tracker.pending)

    def _submit(self, d: Delivery) -> None:
        lane_key = (d.subscriber.name, d.event.alert.key)
        lane = self._lanes.get(lane_key)
        if lane is None:
            lane = self._lanes[lane_key] = _Lane()
        lane.queue.append(d)
        if lane.task is None:
            lane.task = asyncio.create_task(self._run_lane(lane_key, lane), name=f"webhook-{lane_key}")

    async def _run_lane(self, lane_key: tuple[str, str], lane: _Lane) -> None:
        deliverer = self._deliverer
        assert deliverer is not None  # noqa: S101  # set by _start
        try:
            while lane.queue:
                d = lane.queue[0]
                outcome = await deliverer.deliver(d)
                if outcome.delivered:
                    self.metrics.deliveries.labels(d.subscriber.name, "delivered").inc()
                    ack_ms = time.time_ns() // 1_000_000
                    self.metrics.latency.observe_many("alert", [(ack_ms - d.event.ts_ms) / 1000.0])
                else:
                    self.metrics.deliveries.labels(d.subscriber.name, "dead_lettered").inc()
                    await self._dlq.send(
                        reason=outcome.reason,
                        detail=f"subscriber {d.subscriber.name} ({d.subscriber.url}) after "
                        f"{outcome.attempts} attempts: {outcome.detail}",
                        source=f"{d.partition[0]}/{d.partition[1]}/{d.offset}",
                        payload=d.body,
                        key=d.key,
                        device_id=d.event.alert.device_id,
                    )
                lane.queue.popleft()
                self._tracker.finish(d.partition, d.offset)
                self.metrics.pending.set(self._tracker.pending)
        except Exception as exc:
            # A delivery that can neither finish nor be dead-lettered stops the sink.
            self._failure = exc
            raise
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(lane_key) is lane:
                del self._lanes[lane_key]

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        assert consumer is not None  # noqa: S101  # set by _start
        pending = self._tracker.pending
        limit = self.settings.sink.webhook_max_pending
        if not self._paused and pending >= limit:
            consumer.pause(*consumer.assignment())
            self._paused = True
            self.metrics.paused.set(1)
            logger.warning("%d events waiting for delivery (limit %d): partitions paused", pending, limit)
        elif self._paused and pending < limit // 2:
            consumer.resume(*consumer.paused())
            self._paused = False
            self.metrics.paused.set(0)

    async def _commit(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets = self._tracker.committable()
            assigned = consumer.assignment()
            commit = {tp: o for (t, p), o in offsets.items() if (tp := TopicPartition(t, p)) in assigned}
            if not commit:
                return
            try:
                await consumer.commit(commit)
            except KafkaError as exc:
                logger.warning("offset commit failed (%s); those events may be delivered again", exc)

    async def _drain(self, timeout_s: float) -> None:
        """Let running deliveries finish within ``timeout_s``, commit, cancel the rest."""
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        await self._commit()
        await self._cancel_lanes()

    async def _cancel_lanes(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lanes.clear()
        self._tracker.forget()

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._started and revoked:
            logger.info("partitions revoked (%d): finishing deliveries and committing", len(revoked))
            with contextlib.suppress(KafkaError):
                await self._drain(self.settings.sink.revoke_timeout_s)

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._paused = False
        self.metrics.paused.set(0)
        logger.info("partitions assigned: %d", len(assigned))
