"""The MQTT to Kafka bridge: at-least-once, validated, with a dead-letter topic.

Flow of one message::

    paho (on the loop) -> Validator -> Reading | DeviceStatus | DlqRecord -> KafkaWriter lane
        -> Kafka acks the batch (acks=all, idempotent) -> MQTT PUBACK for every message in it

A QoS 1 message is acknowledged to the broker only after Kafka acknowledged the record made
from it (the reading, the status or the dead-letter record). The broker never has more than
``ingest.max_in_flight`` unacknowledged messages out to the bridge (MQTT 5 Receive Maximum),
so while Kafka is away the bridge holds at most that many and the broker queues the rest in
the persistent session. After a crash, whatever was not acknowledged comes again (duplicates
are possible, losses are not); readings carry ``(device_id, seq)`` so consumers can drop them.

Records are keyed by device id, and one device's messages go through one lane in arrival
order, so they are ordered per device in Kafka. With several bridges on the shared
subscription the broker spreads one device's messages over the bridges, and only the
per-device sequence numbers order them.

Each device may sustain ``ingest.device_rate_per_s`` readings a second after a burst of
``ingest.device_burst`` (a token bucket per device, :mod:`ingest.ratelimit`, on the bridge's
receive time). Readings beyond that are dead-lettered as ``rate_limited`` before their payload
is read, and acknowledged once that record is in Kafka like any other: nothing is lost, and
``telemetry.raw`` and the stages after it see at most each device's rate, whatever one device
sends. A throttled device is logged at most once a minute, by id, never with its payload. Each
bridge limits what it receives, so with several bridges on the shared subscription a device
may get up to that many times its rate through.

A message for a device the bridge does not know yet (registered a moment ago) waits for a
registry sync before it is dead-lettered as ``unknown_device``; messages of that topic behind
it wait with it, so the order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import NamedTuple, NoReturn

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, ProcessCollector

from citystream import codec
from citystream.addressing import TELEMETRY
from citystream.errors import RejectedMessageError
from citystream.model import DlqRecord
from citystream.settings import Settings
from citystream.topics import DEVICE_STATUS, TELEMETRY_DLQ, TELEMETRY_RAW, topic_name
from ingest import reasons
from ingest.metrics import HttpEndpoints, Stats, StatsCollector
from ingest.mqtt import MqttSource
from ingest.producer import KafkaWriter, Outgoing
from ingest.ratelimit import DeviceRateLimiter
from ingest.registry import RegistryFollower
from ingest.validate import Validator, device_hint

logger = logging.getLogger(__name__)

RAW, DLQ, STATUS = 0, 1, 2
"""Output indexes (``KafkaWriter.topics`` and ``Stats.produced``)."""
STAGE = "ingest"
REGISTRY_RETRY_S = 1.0


class Inbound(NamedTuple):
    """One MQTT message as the bridge received it."""

    mid: int
    """0 for QoS 0 messages (nothing to acknowledge)."""
    topic: bytes
    payload: bytes
    received_ms: int
    generation: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Bridge:
    """One bridge instance: MQTT session, registry view, validator, Kafka writer, metrics."""

    def __init__(self, settings: Settings, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.stats = Stats()
        self.follower = RegistryFollower(settings, on_change=self._registry_changed)
        self.validator = Validator(settings, self.follower.entries)
        topics = [topic_name(t, settings.kafka) for t in (TELEMETRY_RAW, TELEMETRY_DLQ, DEVICE_STATUS)]
        self.writer = KafkaWriter(settings, topics, self._delivered)
        self.mqtt = MqttSource(settings, self._on_publish, client_id=client_id)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(self.stats, self._gauges))
        ProcessCollector(registry=self.registry)  # CPU and memory, for the pipeline monitor
        self.http = HttpEndpoints(self.registry, self.readiness)
        i = settings.ingest
        self.max_payload_bytes = i.max_payload_bytes
        self.limiter = DeviceRateLimiter(i.device_rate_per_s, i.device_burst)
        self._limit = f"{i.device_rate_per_s:g} readings/s, burst {i.device_burst}"
        self._limit_detail = f"over the device's rate limit ({self._limit})"
        self._last_seq: dict[str, int] = {}
        self._held: deque[Inbound] = deque()
        self._held_topics: set[bytes] = set()
        self._synced_ms = 0
        """Messages received before this time were checked against an up-to-date registry."""
        self._tasks: list[asyncio.Task[None]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, *, metrics_port: int | None = None) -> None:
        """Kafka first (waiting for it), then the registry, then MQTT; raises if MQTT refuses us."""
        i = self.settings.ingest
        port = i.metrics_port if metrics_port is None else metrics_port
        if port >= 0:
            await self.http.start(i.metrics_host, port)
        await self.writer.start()
        await self.follower.start()
        self._synced_ms = now_ms()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow_registry(), name="registry-follower"))
        first: asyncio.Future[None] = loop.create_future()
        self._tasks.append(loop.create_task(self.mqtt.run(first), name="mqtt"))
        await first
        self.started = True
        logger.info(
            "bridge %s up: %s -> %s",
            self.mqtt.client_id,
            self.mqtt.subscription,
            ", ".join(self.writer.topics),
        )

    async def _follow_registry(self) -> None:
        while True:
            try:
                await self.follower.run()
            except Exception:
                logger.exception("following the device registry failed; retrying")
                await asyncio.sleep(REGISTRY_RETRY_S)

    async def stop(self) -> None:
        """Graceful shutdown: stop reading, deliver what is in flight, acknowledge it, disconnect."""
        self.mqtt.pause()
        timeout = self.settings.ingest.shutdown_timeout_s
        if not await self.writer.flush(timeout):
            logger.warning(
                "%d records not delivered after %.0f s; the broker will send them again",
                self.writer.in_flight,
                timeout,
            )
        await self.mqtt.close()
        for task in [*self._tasks, *([self._sync_task] if self._sync_task else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.writer.close()
        await self.follower.stop()
        await self.http.stop()
        summary = {**self.stats.snapshot(), "acked": self.mqtt.acked, "not_acked": self.mqtt.not_acked}
        logger.info("bridge stopped: %s", codec.encode(summary).decode())

    # -- health ---------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, object]]:
        mqtt_ok = self.mqtt.connected and self.mqtt.subscribed
        kafka_ok = self.writer.ready
        detail: dict[str, object] = {"mqtt": mqtt_ok, "kafka": kafka_ok, "in_flight": self.in_flight}
        if not mqtt_ok:
            detail["mqtt_error"] = self.mqtt.last_error
        if not kafka_ok:
            detail["kafka_error"] = self.writer.last_error
        return mqtt_ok and kafka_ok, detail

    @property
    def in_flight(self) -> int:
        return self.writer.in_flight + len(self._held)

    def _gauges(self) -> dict[str, float]:
        return {
            "in_flight": self.in_flight,
            "in_flight_limit": self.settings.ingest.max_in_flight,
            "mqtt_connected": float(self.mqtt.connected),
            "mqtt_connects": self.mqtt.connects,
            "mqtt_acked": self.mqtt.acked,
            "mqtt_not_acked": self.mqtt.not_acked,
            "kafka_ready": float(self.writer.ready),
            "kafka_batch_failures": self.writer.failures,
            "kafka_producer_restarts": self.writer.restarts,
            "registry_devices": len(self.follower.entries),
            "rate_limit_buckets": len(self.limiter),
            "rate_limited_devices": self.limiter.throttled_devices(now_ms()),
        }

    # -- the hot path ---------------------------------------------------------------------

    def _on_publish(self, mid: int, qos: int, topic: bytes, payload: bytes, dup: bool) -> None:
        stats = self.stats
        stats.received += 1
        if dup:
            stats.redelivered += 1
        message = Inbound(
            mid if qos else 0, topic, payload, time.time_ns() // 1_000_000, self.mqtt.generation
        )
        if self._held_topics and topic in self._held_topics:
            self._hold(message)
        else:
            self._process(message)

    def _process(self, message: Inbound) -> None:
        validator = self.validator
        received_ms = message.received_ms
        try:
            try:
                route = validator.route(message.topic.decode())
            except UnicodeDecodeError:
                raise RejectedMessageError(reasons.TOPIC_SHAPE, "the topic is not UTF-8") from None
            if route.kind == TELEMETRY:
                if not self.limiter.take(route.device_id, received_ms):
                    self._over_limit(route.device_id, received_ms)
                reading = validator.reading(route, message.payload, received_ms)
                last = self._last_seq.get(route.device_id)
                if last is not None and reading.seq <= last:
                    self.stats.duplicates += 1
                else:
                    self._last_seq[route.device_id] = reading.seq
                self.writer.put(
                    Outgoing(
                        route.key,
                        codec.encode(reading),
                        received_ms,
                        message.mid,
                        message.generation,
                        reading.ts,
                        RAW,
                    )
                )
            else:
                status = validator.status(route, message.payload, received_ms)
                self.writer.put(
                    Outgoing(
                        route.key,
                        codec.encode(status),
                        received_ms,
                        message.mid,
                        message.generation,
                        -1,
                        STATUS,
                    )
                )
        except RejectedMessageError as exc:
            if exc.reason == reasons.UNKNOWN_DEVICE and received_ms >= self._synced_ms:
                self._hold(message)
                return
            self._dead_letter(exc.reason, exc.detail, message)
        except Exception as exc:  # a bug must not stop the bridge nor lose the message
            self.stats.internal_errors += 1
            logger.exception("internal error on a message from %r", message.topic[:200])
            self._dead_letter(reasons.INTERNAL_ERROR, repr(exc)[:500], message)

    def _over_limit(self, device_id: str, received_ms: int) -> NoReturn:
        """Reject a reading over the device's limit; report the device at most once a minute."""
        report = self.limiter.report(device_id, received_ms)
        if report is not None:
            window = "" if report.since_s is None else f" in the last {report.since_s:.0f} s"
            logger.warning(
                "device %s is over its rate limit (%s): %d readings dead-lettered as %s%s",
                device_id,
                self._limit,
                report.throttled,
                reasons.RATE_LIMITED,
                window,
            )
        raise RejectedMessageError(reasons.RATE_LIMITED, self._limit_detail)

    def _dead_letter(self, reason: str, detail: str, message: Inbound) -> None:
        source = message.topic.decode("utf-8", "replace")
        device_id = device_hint(self.validator.root, source)
        record = DlqRecord(
            reason=reason,
            detail=detail,
            stage=STAGE,
            source=source,
            payload=message.payload[: self.max_payload_bytes],
            received_ms=message.received_ms,
            device_id=device_id,
        )
        self.stats.dead_letter(reason, device_id)
        logger.debug("dead-letter %s from %s: %s", reason, source, detail)
        key = (device_id or source).encode()
        self.writer.put(
            Outgoing(key, codec.encode(record), message.received_ms, message.mid, message.generation, -1, DLQ)
        )

    def _delivered(self, records: list[Outgoing]) -> None:
        """Kafka acknowledged these records: acknowledge their MQTT messages, measure."""
        generation = self.mqtt.generation
        produced = self.stats.produced
        produce_latency = self.stats.produce_latency.observe
        device_latency = self.stats.device_latency.observe
        now = time.time_ns() // 1_000_000
        mids: list[int] = []
        stale = 0
        for record in records:
            if record.mid:
                if record.generation == generation:
                    mids.append(record.mid)
                else:
                    stale += 1
            produced[record.output] += 1
            produce_latency(now - record.timestamp_ms)
            if record.device_ms >= 0:
                device_latency(now - record.device_ms)
        self.mqtt.ack_many(generation, mids)
        self.mqtt.not_acked += stale

    # -- devices the bridge does not know yet -----------------------------------------------

    def _hold(self, message: Inbound) -> None:
        self._held.append(message)
        self._held_topics.add(message.topic)
        if self._sync_task is None:
            self._sync_task = asyncio.get_running_loop().create_task(
                self._sync_and_release(), name="registry-sync"
            )

    async def _sync_and_release(self) -> None:
        try:
            while self._held:
                started = now_ms()
                try:
                    synced = await self.follower.sync()
                except KafkaError as exc:
                    logger.warning("registry sync failed (%r); %d messages wait", exc, len(self._held))
                    synced = False
                if not synced:
                    await asyncio.sleep(REGISTRY_RETRY_S)
                    continue
                self._synced_ms = started
                held, self._held = self._held, deque()
                self._held_topics = set()
                for message in held:
                    if message.topic in self._held_topics:
                        self._hold(message)
                    else:
                        self._process(message)
        finally:
            self._sync_task = None

    def _registry_changed(self, device_id: str) -> None:
        self.validator.invalidate()
