"""The InfluxDB sink: Kafka topics -> batched line protocol -> InfluxDB, at least once.

``citystream sink influx`` consumes ``telemetry.raw``, ``devices.status`` (raw bucket) and
``telemetry.agg.1m``, ``alerts.events``, ``device.quality`` (aggregate bucket). The loop:

1. ``getmany`` records, decode them with the kernel codec, turn each into one line
   (:func:`sinks.lineproto.line`) and buffer it (:class:`sinks.batch.Buffer`);
2. when the buffer is full or old enough, write it as one batch with the async
   ``influxdb-client`` (up to ``max_in_flight_writes`` batches at once, in requests of at most
   8 MB); the write is awaited, so a failure holds the batch back;
3. commit a batch's offsets only after InfluxDB acknowledged it and every batch taken before
   it (:class:`sinks.batch.CommitQueue`).

Retriable failures (connection refused, timeouts, 429, 5xx) are retried forever with capped
exponential backoff that honours ``Retry-After``; meanwhile the buffer fills up to
``max_buffered_points`` and then the assigned partitions are paused, so memory stays bounded
while InfluxDB is down, and resumed when writes succeed again. A batch InfluxDB rejects
(400 parse error, 422 partial write) is split in halves until the bad points are isolated; they
go to the ``sinks.dlq`` topic with InfluxDB's reason, the good ones are written. Records that
do not decode go there too. Points are identified by (measurement, tags, time), so writing a
record again after a crash or a rebalance overwrites it with the same values: no duplicates.

Latency: ``citystream_sink_influx_latency_seconds{kind}`` observes, for every record, the time
from its origin (device time for readings and status, emission for aggregates, event time for
alerts) to InfluxDB's acknowledgement of the write that carried it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import operator
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from prometheus_client import CollectorRegistry

from citystream import codec
from citystream.errors import CitystreamError, ConfigError, ServiceUnavailableError
from citystream.kafka_client import Principal, client_kwargs
from citystream.model import Aggregate, AlertEvent, DeviceStatus, QualityScore, Reading
from citystream.settings import Settings
from citystream.topics import (
    ALERTS_EVENTS,
    DEVICE_QUALITY,
    DEVICE_STATUS,
    TELEMETRY_AGG_1M,
    TELEMETRY_RAW,
    topic_name,
)
from sinks.batch import Batch, Buffer, CommitQueue, Partition
from sinks.dlq import DeadLetters
from sinks.lineproto import LineProtocolError, line_encoder
from sinks.loop import ConsumerLoop
from sinks.metrics import HttpServer, InfluxSinkMetrics, health_routes, process_registry
from sinks.retry import Backoff, parse_retry_after

logger = logging.getLogger(__name__)

STAGE = "sink.influx"
_MS: WritePrecision = WritePrecision.MS  # type: ignore[assignment]  # the generated enum holds str constants


# -- errors ----------------------------------------------------------------------------------


class WriteFailedError(CitystreamError):
    """A write that may succeed later (InfluxDB down, overloaded, or misconfigured)."""

    retriable = True

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class PointsRejectedError(CitystreamError):
    """InfluxDB refused (some of) the points for good: parse error, type conflict, retention."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class BatchTooLargeError(CitystreamError):
    """HTTP 413: the request body is over InfluxDB's limit; split it."""


def classify(exc: BaseException) -> CitystreamError:
    """The project error for a failed write (``retriable`` tells whether to try again)."""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"HTTP {status}: {getattr(exc, 'message', None) or exc.reason}"
        if status in (400, 422):
            return PointsRejectedError(message, status=status)
        if status == 413:
            return BatchTooLargeError(message)
        retry_after = parse_retry_after(getattr(exc, "retry_after", None))
        # 401/403/404 (token, bucket) need an operator; holding the data back loses nothing.
        return WriteFailedError(message, status=status, retry_after=retry_after)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return WriteFailedError(f"{type(exc).__name__}: {exc}")
    raise exc


# -- writer ----------------------------------------------------------------------------------


Rejected = list[tuple[int, str]]
"""(index of the line in the batch, InfluxDB's reason)"""

MAX_REQUEST_BYTES = 8_000_000
"""Bodies stay well below InfluxDB's default limit (25 MB): InfluxDB syncs its WAL once per
request, so few large requests write far more points per second than many small ones."""


def chunks(lines: list[str], max_bytes: int = MAX_REQUEST_BYTES) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of ``lines`` whose newline-joined UTF-8 body stays within ``max_bytes``
    (a single longer line gets a range of its own)."""
    if not lines:
        return []
    sizes = map(len, lines) if all(map(str.isascii, lines)) else map(len, map(str.encode, lines))
    # ends[i]: bytes of lines[0..i] with a newline each (all C-level iteration).
    ends = list(map(operator.add, itertools.accumulate(sizes), itertools.count(1)))
    ranges: list[tuple[int, int]] = []
    lo, base = 0, 0
    while lo < len(lines):
        hi = max(bisect.bisect_right(ends, base + max_bytes, lo), lo + 1)
        ranges.append((lo, hi))
        lo, base = hi, ends[hi - 1]
    return ranges


class InfluxWriter:
    """Writes lines to a bucket, retrying what may succeed later and isolating rejected points."""

    def __init__(
        self,
        api: WriteApiAsync,
        org: str,
        backoff: Backoff,
        metrics: InfluxSinkMetrics,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_requests: int = 4,
    ) -> None:
        self._api = api
        self._requests = asyncio.Semaphore(max_requests)
        # influxdb-client hands aiohttp the body as bytes, and aiohttp warns about any body over
        # 1 MiB sent that way; a few MB to InfluxDB is what this writer does on purpose.
        warnings.filterwarnings(
            "ignore", message="Sending a large body directly with raw bytes", category=ResourceWarning
        )
        self._org = org
        self._backoff = backoff
        self._metrics = metrics
        self._sleep = sleep
        self.failing = False
        self.last_error = ""

    async def write(self, bucket: str, lines: list[str]) -> Rejected:
        """Write every line that InfluxDB accepts; returns the ones it never will."""
        rejected: Rejected = []
        # Requests of one batch go out together (InfluxDB parses them on several cores),
        # at most ``max_requests`` at once across the batches in flight.
        await asyncio.gather(
            *(self._write_range(bucket, lines, lo, hi, rejected) for lo, hi in chunks(lines))
        )
        return sorted(rejected)

    async def _write_range(self, bucket: str, lines: list[str], lo: int, hi: int, rejected: Rejected) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._post(bucket, lines, lo, hi)
            except (PointsRejectedError, BatchTooLargeError) as exc:
                self._metrics.write_errors.labels("rejected").inc()
                if hi - lo == 1:
                    rejected.append((lo, str(exc)))
                    return
                # Split to find the bad points; rewriting good ones is harmless (idempotent).
                mid = (lo + hi) // 2
                await self._write_range(bucket, lines, lo, mid, rejected)
                await self._write_range(bucket, lines, mid, hi, rejected)
                return
            except WriteFailedError as exc:
                self._metrics.write_errors.labels("retriable").inc()
                delay = self._backoff.delay(attempt, exc.retry_after)
                if not self.failing or attempt % 10 == 0:
                    logger.warning(
                        "write of %d points to %s failed (%s), attempt %d, retrying in %.2f s",
                        hi - lo,
                        bucket,
                        exc,
                        attempt,
                        delay,
                    )
                self.failing = True
                self.last_error = str(exc)
                self._metrics.failing.set(1)
                await self._sleep(delay)
            else:
                if self.failing:
                    logger.info("writes to %s succeed again after %d attempts", bucket, attempt)
                self.failing = False
                self._metrics.failing.set(0)
                return

    async def _post(self, bucket: str, lines: list[str], lo: int, hi: int) -> None:
        body = "\n".join(lines[lo:hi])
        async with self._requests:
            t0 = time.perf_counter()
            try:
                ok = await self._api.write(bucket=bucket, org=self._org, record=body, write_precision=_MS)
            except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise classify(exc) from exc
        if not ok:
            raise WriteFailedError("InfluxDB answered the write with an unexpected status")
        self._metrics.write_seconds.observe(time.perf_counter() - t0)
        self._metrics.points.labels(bucket).inc(hi - lo)


# -- routing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """How records of one topic are decoded, where they are written, what their latency is."""

    kind: str
    model: type[Any]
    bucket: str
    origin: Callable[[Any], int] | None


def routes(settings: Settings) -> dict[str, Route]:
    """Real topic name -> route."""
    raw, agg = settings.influx.bucket_raw, settings.influx.bucket_agg
    table = {
        TELEMETRY_RAW: Route("reading", Reading, raw, attrgetter("ts")),
        DEVICE_STATUS: Route("status", DeviceStatus, raw, attrgetter("ts_ms")),
        TELEMETRY_AGG_1M: Route("aggregate", Aggregate, agg, attrgetter("emitted_ms")),
        ALERTS_EVENTS: Route("alert", AlertEvent, agg, attrgetter("ts_ms")),
        DEVICE_QUALITY: Route("quality", QualityScore, agg, None),
    }
    return {topic_name(base, settings.kafka): route for base, route in table.items()}


def sink_token(settings: Settings) -> str:
    token = settings.sink.influx_token.get_secret_value() or settings.influx.sink_token.get_secret_value()
    if not token:
        msg = "no InfluxDB token for the sink: set CITYSTREAM_SINK__INFLUX_TOKEN or run 'citystream stack up'"
        raise ConfigError(msg)
    return token


# -- the sink --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Bad:
    record: ConsumerRecord[bytes, bytes]
    reason: str
    detail: str


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, sink: InfluxSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.sink.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.sink.on_assigned(assigned)


class InfluxSink(ConsumerLoop):
    """One sink process: consume, buffer, write, commit. Stop it with :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        token: str | None = None,
        registry: CollectorRegistry | None = None,
        metrics_port: int | None = None,
    ) -> None:
        super().__init__(settings)
        s = settings.sink
        self._token = token or sink_token(settings)
        self.registry = registry or process_registry()
        self.metrics = InfluxSinkMetrics(self.registry)
        self.routes = routes(settings)
        self._buffer = Buffer(s.batch_size, s.flush_interval_s)
        self._queue = CommitQueue()
        self._flushes: dict[int, asyncio.Task[None]] = {}
        self._commit_lock = asyncio.Lock()
        self._epoch = 0
        self._paused = False
        self._started = False
        self._backoff = Backoff(s.retry_initial_s, s.retry_max_s, s.retry_after_max_s)
        self._dlq = DeadLetters(settings, STAGE, Principal.SINK_INFLUX)
        self._consumer: AIOKafkaConsumer | None = None
        self._client: InfluxDBClientAsync | None = None
        self._writer: InfluxWriter | None = None
        port = s.influx_metrics_port if metrics_port is None else metrics_port
        app = web.Application()
        app.add_routes(health_routes(self.registry, self._live, self._ready))
        self.http = HttpServer(app, s.http_host, port)

    # -- lifecycle ---------------------------------------------------------------------------

    async def _start(self) -> None:
        s, i = self.settings.sink, self.settings.influx
        self._client = InfluxDBClientAsync(
            url=i.url, token=self._token, org=i.org, timeout=int(s.write_timeout_s * 1000)
        )
        self._writer = InfluxWriter(
            self._client.write_api(), i.org, self._backoff, self.metrics, max_requests=s.max_write_requests
        )
        await self._dlq.start()
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings, Principal.SINK_INFLUX),
            group_id=s.influx_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer.subscribe(topics=list(self.routes), listener=_Rebalance(self))
        try:
            await self._consumer.start()
        except KafkaError as exc:
            raise ServiceUnavailableError(f"Kafka at {self.settings.kafka.bootstrap}: {exc}") from exc
        await self.http.start()
        self._started = True
        logger.info(
            "influx sink: group %s, topics %s, metrics on port %d",
            s.influx_group,
            ", ".join(self.routes),
            self.http.port,
        )

    async def _close(self) -> None:
        self._started = False
        for task in self._flushes.values():
            task.cancel()
        await asyncio.gather(*self._flushes.values(), return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        await self._dlq.stop()
        if self._client is not None:
            await self._client.close()
        await self.http.stop()

    def _live(self) -> tuple[bool, str]:
        return (self._started, "running" if self._started else "not running")

    def _ready(self) -> tuple[bool, str]:
        if not self._started or self._writer is None:
            return False, "starting"
        if self._writer.failing:
            return False, f"InfluxDB writes failing: {self._writer.last_error}"
        return True, "ok"

    # -- the loop ----------------------------------------------------------------------------

    async def _step(self) -> None:
        consumer = self._consumer
        assert consumer is not None  # noqa: S101  # set by _start
        await self._reap()
        max_in_flight = self.settings.sink.max_in_flight_writes
        while self._buffer.ready() and len(self._flushes) < max_in_flight:
            self._launch()
        self._apply_backpressure()
        due = self._buffer.due_in()
        timeout_s = 0.2 if due is None else min(0.2, due)
        if self._paused or (self._buffer.ready() and len(self._flushes) >= max_in_flight):
            # Nothing to fetch until a write finishes: wait for one (polling keeps us in the group).
            if self._flushes:
                await asyncio.wait(
                    list(self._flushes.values()), timeout=0.2, return_when=asyncio.FIRST_COMPLETED
                )
            timeout_s = 0.0
        epoch = self._epoch
        fetched = await consumer.getmany(
            timeout_ms=int(timeout_s * 1000), max_records=self.settings.sink.batch_size
        )
        if fetched and epoch == self._epoch:
            await self._ingest(fetched, epoch)

    async def _ingest(
        self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], epoch: int
    ) -> None:
        buffer = self._buffer
        marks: list[tuple[Partition, int]] = []
        bad: list[_Bad] = []
        decode = codec.decode
        for tp, records in fetched.items():
            route = self.routes[tp.topic]
            model, origin = route.model, route.origin
            encode = line_encoder(model)
            lines, sources, origins = buffer.appenders(route.bucket, route.kind)
            before = len(lines)
            for record in records:
                value = record.value
                if value is None:
                    bad.append(_Bad(record, "tombstone", "record without a value"))
                    continue
                try:
                    obj = decode(value, model)
                    text = encode(obj)
                except (codec.DecodeError, codec.ValidationError) as exc:
                    bad.append(_Bad(record, "decode_error", f"not a {model.__name__}: {exc}"))
                    continue
                except LineProtocolError as exc:
                    bad.append(_Bad(record, exc.reason, exc.detail))
                    continue
                lines.append(text)
                sources.append(record)
                if origin is not None:
                    origins.append(origin(obj))
            buffer.added(len(lines) - before)
            self.metrics.records.labels(tp.topic).inc(len(records))
            marks.append(((tp.topic, tp.partition), records[-1].offset + 1))
        for b in bad:
            if b.reason == "tombstone":
                # A deleted key on a compacted topic: nothing to write, nothing wrong.
                self.metrics.skipped.labels("tombstone").inc()
                continue
            await self._dead_letter(b.record, b.reason, b.detail)
        # The offsets count as handled only now that the bad records are in the DLQ.
        if epoch == self._epoch:
            for partition, next_offset in marks:
                buffer.handled(partition, next_offset)
        self.metrics.buffered.set(len(buffer) + self._queue.points)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str, detail: str) -> None:
        self.metrics.dead_letters.labels(reason).inc()
        route = self.routes.get(record.topic)
        keyed_by_device = route is not None and route.kind in ("reading", "status", "quality")
        await self._dlq.send(
            reason=reason,
            detail=detail,
            source=f"{record.topic}/{record.partition}/{record.offset}",
            payload=record.value or b"",
            key=record.key,
            device_id=record.key.decode(errors="replace") if keyed_by_device and record.key else None,
        )

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        assert consumer is not None  # noqa: S101  # set by _start
        held = len(self._buffer) + self._queue.points
        limit = self.settings.sink.max_buffered_points
        if not self._paused and held >= limit:
            consumer.pause(*consumer.assignment())
            self._paused = True
            self.metrics.paused.set(1)
            logger.warning("holding %d points (limit %d): partitions paused", held, limit)
        elif self._paused and held + self.settings.sink.batch_size <= limit:
            consumer.resume(*consumer.paused())
            self._paused = False
            self.metrics.paused.set(0)
            logger.info("holding %d points: partitions resumed", held)

    # -- flushing and committing ------------------------------------------------------------

    def _launch(self) -> None:
        batch = self._buffer.take()
        self._queue.push(batch)
        self._flushes[batch.number] = asyncio.create_task(self._flush(batch), name=f"flush-{batch.number}")

    async def _flush(self, batch: Batch) -> None:
        writer = self._writer
        assert writer is not None  # noqa: S101  # set by _start
        for bucket, lines in batch.buckets.items():
            rejected = await writer.write(bucket, lines.lines)
            for index, reason in rejected:
                await self._dead_letter(lines.sources[index], "influx_rejected", reason)
        ack_ms = time.time_ns() // 1_000_000
        for kind, origins in batch.origins.items():
            self.metrics.latency.observe_many(kind, [(ack_ms - o) / 1000.0 for o in origins])
        batch.done = True

    async def _reap(self) -> None:
        """Raise a flush's unexpected error; commit the offsets of leading finished batches."""
        for number, task in list(self._flushes.items()):
            if task.done():
                del self._flushes[number]
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]  # checked not None
        await self._commit()

    async def _commit(self) -> None:
        async with self._commit_lock:
            offsets, _ = self._queue.committable()
            if not offsets or self._consumer is None:
                return
            assigned = self._consumer.assignment()
            commit = {
                tp: o for (topic, p), o in offsets.items() if (tp := TopicPartition(topic, p)) in assigned
            }
            if not commit:
                return
            try:
                await self._consumer.commit(commit)
            except KafkaError as exc:
                # The records will be read and written again: the points are idempotent.
                logger.warning("offset commit failed (%s); those records will be written again", exc)
                return
            self.metrics.commits.inc()
        self.metrics.buffered.set(len(self._buffer) + self._queue.points)

    async def _drain(self, timeout_s: float) -> None:
        """Write what is buffered, commit what got written within ``timeout_s``, forget the rest."""
        if len(self._buffer) or self._buffer.due_in() is not None:
            self._launch()
        tasks = list(self._flushes.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(CitystreamError):
            await self._reap()
        self._flushes.clear()
        lost = sum(b.points for b in self._queue.clear())
        if lost:
            logger.warning("%d points not written in time; their records will be consumed again", lost)
        self.metrics.buffered.set(0)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._epoch += 1
        if self._started and revoked:
            logger.info("partitions revoked (%d): flushing and committing", len(revoked))
            await self._drain(self.settings.sink.revoke_timeout_s)

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._paused = False
        self.metrics.paused.set(0)
        logger.info("partitions assigned: %d", len(assigned))
