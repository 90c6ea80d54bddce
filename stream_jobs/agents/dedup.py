"""The ``readings`` agent on ``telemetry.raw``: per device, dedup, detectors and quality.

It takes batches, decodes each record at the edge (a record that is not a Reading goes to the
dead-letter topic), hands each reading to :func:`stream_jobs.device.on_reading` and sends what
the batch produced: the values to the window partitions (one record per source and target
partition, with the source's watermark), the signals to the alert lifecycle and the finished
quality minutes to ``device.quality``. Then it writes the state of the devices it touched.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
import zlib
from collections.abc import Awaitable, Iterable
from typing import Any

import msgspec

from citystream import codec
from citystream.model import QualityScore, Reading
from citystream.sensors import SENSOR_TYPES
from stream_jobs import device, input_order
from stream_jobs.app import Jobs
from stream_jobs.messages import SeriesBatch, SeriesItem, Signal
from stream_jobs.runtime import StateBuffer, guarded, reject, send_all, stored

logger = logging.getLogger(__name__)

PARTITION_KEY = "~partition/"
ADVANCE_EVERY_MS = 10_000
"""Event time between two runs of the timer detectors while data flows."""


class PartitionMark(msgspec.Struct, array_like=True):
    """Progress of one telemetry.raw partition."""

    watermark: int = -1
    """Highest device time seen."""
    skew: float | None = None
    """The fleet's clock reference on this partition (:func:`stream_jobs.device.fleet_skew`)."""


class Envelope(msgspec.Struct, kw_only=True):
    """A record of the signals topic: a signal or an operator command."""

    signal: Signal | None = None
    command: Any = None


def series_partition(series: str, partitions: int) -> int:
    """The window partition of a series (stable across processes)."""
    return zlib.crc32(series.encode()) % partitions


class DeviceJob:
    """State and sends of the per-device job; shared by the agent and the timer."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        s = jobs.settings.jobs
        self.partitions = jobs.settings.kafka.partitions
        self.cache: dict[str, device.DeviceWork] = {}
        self.marks: dict[int, PartitionMark] = {}
        self.mark_wall: dict[int, float] = {}
        """Wall time at which each partition's watermark last moved (to run time on when idle)."""
        self.last_read: dict[int, tuple[int, float]] = {}
        """Partition -> (offset of the last record read, wall time it was read)."""
        self.announced_idle: set[int] = set()
        self.advanced: dict[int, int] = {}
        """Partition -> event time the devices were last run on to."""
        self.started = time.monotonic()
        self.intervals: dict[str, float] = {}
        """device_id -> reporting interval (s) from the device registry, when known."""
        self.lock = asyncio.Lock()
        self.order = input_order.for_jobs(jobs)
        self.state = StateBuffer(jobs.tables.devices, s.state_flush_s)
        self.ctx = device.Context(
            catalog=jobs.catalog,
            heartbeat_ms=int(s.signal_heartbeat_s * 1000),
            tail_ms=jobs_tail_ms(jobs),
            timeliness_bound_ms=int(s.timeliness_bound_s * 1000),
            dedup_window=s.dedup_window,
            expected_per_minute=self.expected_per_minute,
        )
        self.grace_ms = int(s.grace_s * 1000)
        self.idle_s = s.idle_source_s

    def interval_s(self, device_id: str, sensor_type: str) -> float:
        known = self.intervals.get(device_id)
        if known:
            return known
        kind = SENSOR_TYPES.get(sensor_type)
        return kind.interval_s if kind else 60.0

    def expected_per_minute(self, device_id: str, sensor_type: str) -> float:
        return 60.0 / self.interval_s(device_id, sensor_type)

    def work(self, device_id: str) -> device.DeviceWork | None:
        work = self.cache.get(device_id)
        if work is None:
            raw = stored(self.jobs.tables.devices.data.get(device_id))
            if raw is None:
                return None
            record = (
                raw
                if isinstance(raw, device.DeviceRecord)
                else msgspec.convert(raw, device.DeviceRecord, strict=False)
            )
            work = self.cache[device_id] = device.DeviceWork.load(record, self.jobs.catalog)
        return work

    def mark(self, partition: int) -> PartitionMark:
        mark = self.marks.get(partition)
        if mark is None:
            raw = stored(self.jobs.tables.devices.data.get(f"{PARTITION_KEY}{partition}"))
            mark = PartitionMark() if raw is None else msgspec.convert(raw, PartitionMark, strict=False)
            self.marks[partition] = mark
            self.mark_wall[partition] = time.monotonic()
        return mark

    def latest(self) -> dict[str, dict[str, Any]]:
        """device_id -> {"ts": device time, "values": {...}} of the latest reading (for dashboards)."""
        out: dict[str, dict[str, Any]] = {}
        for device_id in list(self.jobs.tables.devices.data.keys()):
            work = None if device_id.startswith(PARTITION_KEY) else self.work(device_id)
            if work is not None and work.record.latest_ts >= 0:
                out[device_id] = {"ts": work.record.latest_ts, "values": work.record.latest}
        return out

    def forget(self) -> None:
        """Drop the working copies (after a rebalance the tables are the truth)."""
        self.cache.clear()
        self.marks.clear()

    async def process(self, events: list[Any], adopted: Iterable[Any] = ()) -> None:
        """Apply a batch; its events (and ``adopted``, see :mod:`stream_jobs.input_order`) are
        acknowledged with the state write after it."""
        self.state.hold(events)
        self.state.adopt(adopted)
        await self._process(events)
        if self.state.due():
            await self.flush()

    async def flush(self) -> None:
        """Write the state the processed batches left behind; acknowledge their input."""
        self.jobs.stats.add("state_writes", await self.state.flush(self.jobs.app.consumer))

    def _changed(self, work: device.DeviceWork) -> None:
        catalog = self.jobs.catalog
        self.state.changed(work.record.partition, work.record.device_id, lambda: work.dump(catalog))

    def _moved(self, partition: int) -> None:
        mark = self.marks[partition]
        self.state.changed(partition, f"{PARTITION_KEY}{partition}", lambda: mark)

    async def _process(self, events: list[Any]) -> None:
        stats = self.jobs.stats
        topics = self.jobs.topics
        out = device.Outputs()
        touched: dict[str, device.DeviceWork] = {}
        moved: set[int] = set()
        bad: list[Awaitable[Any]] = []
        groups: dict[tuple[int, int], list[SeriesItem]] = {}
        for event in events:
            message = event.message
            partition = message.partition
            self.last_read[partition] = (message.offset, time.monotonic())
            self.announced_idle.discard(partition)
            try:
                reading = codec.decode(message.value, Reading)
                if not all(math.isfinite(v) for v in reading.values.values()):
                    bad.append(reject(stats, topics, message, "not_finite", "a value is not finite"))
                    continue
            except (codec.DecodeError, TypeError) as exc:
                bad.append(reject(stats, topics, message, "invalid_reading", exc))
                continue
            try:
                work = self.work(reading.device_id)
                if work is None:
                    work = self.cache[reading.device_id] = device.DeviceWork.new(reading, partition)
                elif work.record.partition != partition:
                    work.record.partition = partition
                first = len(out.items)
                mark = self.mark(partition)
                mark.skew = device.fleet_skew(mark.skew, reading.skew_ms)
                device.on_reading(work, reading, message.offset, self.ctx, out, skew_reference=mark.skew)
                for item in out.items[first:]:
                    target = series_partition(item.series, self.partitions)
                    groups.setdefault((partition, target), []).append(item)
                touched[reading.device_id] = work
                if reading.ts > mark.watermark:
                    mark.watermark = reading.ts
                    self.mark_wall[partition] = time.monotonic()
                moved.add(partition)
            except Exception as exc:  # one bad reading must not stop the job
                logger.exception(
                    "reading failed topic=%s partition=%s offset=%s",
                    message.topic,
                    message.partition,
                    message.offset,
                )
                bad.append(
                    reject(stats, topics, message, "processing_error", exc, device_id=reading.device_id)
                )
        due = {
            p: 0
            for p in moved
            if self.marks[p].watermark - self.advanced.get(p, -ADVANCE_EVERY_MS) >= ADVANCE_EVERY_MS
        }
        if due:
            touched.update(self.advance(due, out))
        stats.add("readings", len(events))
        stats.add("duplicates", out.duplicates)
        stats.add("replayed", out.replayed)
        await self.send(out, groups, moved, bad)
        for work in touched.values():
            self._changed(work)
        for partition in moved:
            self._moved(partition)

    async def send(
        self,
        out: device.Outputs,
        groups: dict[tuple[int, int], list[SeriesItem]],
        moved: set[int],
        extra: list[Awaitable[Any]],
    ) -> None:
        """Send a batch's outputs and wait until Kafka has them all.

        Every source partition that moved sends one record to every window partition (empty
        ones carry its watermark), after its items, so a window partition knows how far each
        source has got.
        """
        topics = self.jobs.topics
        sends: list[Awaitable[Any]] = list(extra)
        for source in sorted(moved):
            watermark = self.marks[source].watermark
            for target in range(self.partitions):
                batch = SeriesBatch(
                    source=source, watermark=watermark, items=tuple(groups.get((source, target), ()))
                )
                sends.append(topics.series.send(value=codec.encode(batch), partition=target))
        for signal in out.signals:
            sends.append(
                topics.signals.send(key=signal.key.encode(), value=codec.encode(Envelope(signal=signal)))
            )
        sends.extend(self._quality(out.quality))
        self.jobs.stats.add("signals", len(out.signals))
        self.jobs.stats.add("series_items", len(out.items))
        await send_all(sends)

    def _quality(self, scores: list[QualityScore]) -> list[Awaitable[Any]]:
        self.jobs.stats.add("quality", len(scores))
        return [
            self.jobs.topics.quality.send(key=q.device_id.encode(), value=codec.encode(q)) for q in scores
        ]

    async def idle_partitions(self) -> set[int]:
        """Assigned partitions processed to their end that got nothing new for ``idle_source_s``.

        "Processed" is what this agent applied, not the consumer's position: after a restart
        the position runs ahead while a backlog waits in Faust's buffers, and a source said idle
        too early would let the windows close before its readings arrive.
        """
        idle = set()
        wall = time.monotonic()
        consumer = self.jobs.app.consumer
        committed = getattr(consumer, "_committed_offset", {})  # Faust keeps no public copy
        topic = self.jobs.topics.raw.get_topic_name()
        for tp in consumer.assignment():
            if tp.topic != topic:
                continue
            last = self.last_read.get(tp.partition)
            offset, at = last if last is not None else (-1, self.started)
            if wall - at < self.idle_s:
                continue
            try:
                highwater = consumer.highwater(tp)
            except (KeyError, AttributeError, AssertionError):
                continue
            done = offset + 1 if last is not None else committed.get(tp) or 0
            if highwater is not None and done >= highwater:
                idle.add(tp.partition)
        return idle

    async def announce_idle(self) -> None:
        """Tell the window partitions which sources are idle (once per quiet spell)."""
        new = await self.idle_partitions() - self.announced_idle
        if not new:
            return
        sends: list[Awaitable[Any]] = []
        for source in sorted(new):
            batch = SeriesBatch(source=source, watermark=self.mark(source).watermark, idle=True)
            value = codec.encode(batch)
            sends.extend(
                self.jobs.topics.series.send(value=value, partition=t) for t in range(self.partitions)
            )
        await send_all(sends)
        self.announced_idle |= new
        logger.info("raw partitions %s idle (processed to the end, quiet %.0f s)", sorted(new), self.idle_s)

    def advance(self, partitions: dict[int, int], out: device.Outputs) -> dict[str, device.DeviceWork]:
        """Run event time on for every device of ``partitions`` (partition -> extra ms): close
        quality minutes and run the timer detectors (``silent``).

        A partition's time is the median of its devices' latest device times (plus the extra,
        the wall time since a quiet partition last moved): unlike the highest time seen, one
        device or gateway running ahead does not make the others look silent.
        """
        works: list[device.DeviceWork] = []
        latest: dict[int, list[int]] = {}
        for device_id in list(self.jobs.tables.devices.data.keys()):
            if device_id.startswith(PARTITION_KEY):
                continue
            work = self.work(device_id)
            if work is None or work.record.partition not in partitions or work.record.latest_ts < 0:
                continue
            works.append(work)
            latest.setdefault(work.record.partition, []).append(work.record.latest_ts)
        clock = {p: int(statistics.median_low(ts)) + partitions[p] for p, ts in latest.items()}
        changed: dict[str, device.DeviceWork] = {}
        for work in works:
            rec = work.record
            interval = self.interval_s(rec.device_id, rec.sensor_type)
            if device.on_watermark(
                work, clock[rec.partition], grace_ms=self.grace_ms, interval_s=interval, ctx=self.ctx, out=out
            ):
                changed[rec.device_id] = work
        for partition in partitions:
            self.advanced[partition] = self.marks[partition].watermark
        return changed

    async def tick(self) -> None:
        """Run time on while partitions are quiet (their watermark plus the wall time since it
        last moved), and tell the window partitions which sources are idle."""
        await self.announce_idle()
        if not self.marks:
            return
        out = device.Outputs()
        wall = time.monotonic()
        quiet_ms = {
            p: int((wall - self.mark_wall.get(p, wall)) * 1000)
            for p, m in self.marks.items()
            if m.watermark >= 0
        }
        changed = self.advance(quiet_ms, out)
        if not changed:
            return
        await self.send(out, {}, set(), [])
        for work in changed.values():
            self._changed(work)


def jobs_tail_ms(jobs: Jobs) -> int:
    """How long after a condition ended signals keep coming (the longest clear hold, and more)."""
    from stream_jobs.agents.alerts import policies_of

    return policies_of(jobs.settings).longest_hold_ms() + 2 * int(
        jobs.settings.jobs.signal_heartbeat_s * 1000
    )


def install(jobs: Jobs) -> DeviceJob:
    job = DeviceJob(jobs)
    s = jobs.settings.jobs

    async def readings(stream: Any) -> None:
        async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
            async with job.lock:
                admitted = await job.order.admit(list(events))
                await guarded("readings", job.process(admitted.events, admitted.adopted))

    jobs.app.agent(jobs.topics.raw, name="readings")(readings)

    async def forget(*_: Any, **__: Any) -> None:
        async with job.lock:
            await guarded("device state", job.flush())
            job.forget()
            job.order.reset()

    async def flush() -> None:
        async with job.lock:
            if job.state.due():
                await guarded("device state", job.flush())

    jobs.app.timer(max(s.state_flush_s, 0.1), name="device-state")(flush)

    jobs.app.on_partitions_revoked.connect(forget)

    async def latest(web: Any, _request: Any) -> Any:
        """``GET /latest/``: the latest values and device time of every device of this worker."""
        return web.json(job.latest())

    jobs.app.page("/latest/")(latest)
    return job
