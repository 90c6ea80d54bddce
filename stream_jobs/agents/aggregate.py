"""The ``windows`` agent on ``{app}-series``: 1-minute windows per (district, sensor_type, metric).

Each record holds the values one source partition sent to this window partition in one batch,
with the source's watermark. The agent adds the values to their windows
(:mod:`stream_jobs.windows`), closes the windows every source has passed (minus the grace),
and sends their aggregates to ``telemetry.agg.1m`` and the ``peer`` and district-wide
signals (:mod:`stream_jobs.district`). Late values go to the dead-letter topic (reason
``late``). A timer closes windows when sources fall idle.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

import msgspec

from citystream import codec
from stream_jobs import district, input_order, windows
from stream_jobs.agents.dedup import PARTITION_KEY, Envelope, jobs_tail_ms, series_partition
from stream_jobs.app import Jobs
from stream_jobs.messages import SeriesBatch, SeriesItem
from stream_jobs.runtime import StateBuffer, guarded, now_ms, reject, send_all, stored

logger = logging.getLogger(__name__)

CHUNK_MARK = "@"
"""Table keys ``{series}@{n}`` hold the chunks of a series' open windows."""


class SeriesPartition(msgspec.Struct, kw_only=True):
    """Progress of one window partition."""

    sources: dict[int, int] = {}
    """Source partition -> the highest device time it reported."""
    idle: list[int] = []
    """Sources that said they are idle (caught up and quiet)."""
    closed_until: int = 0
    """Windows ending at or before this have closed (for every series of the partition)."""
    last_offset: int = -1


class WindowJob:
    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        s = jobs.settings.jobs
        self.grace_ms = int(s.grace_s * 1000)
        self.ctx = district.Context(
            catalog=jobs.catalog,
            heartbeat_ms=int(s.signal_heartbeat_s * 1000),
            tail_ms=jobs_tail_ms(jobs),
        )
        self.records: dict[str, district.SeriesRecord] = {}
        self.live: dict[str, dict[str, Any]] = {}
        self.windows: dict[str, windows.SeriesWindows] = {}
        self.parts: dict[int, SeriesPartition] = {}
        self.open: dict[int, set[str]] = {}
        """Window partition -> series with open windows."""
        self.touched: dict[str, int] = {}
        """Series changed since the last state write -> their partition."""
        self.expiring: dict[str, int] = {}
        """Series with chunks to delete at the next state write -> their partition."""
        self.moved: set[int] = set()
        """Partitions whose progress changed since the last state write."""
        self.partitions = jobs.settings.kafka.partitions
        self.lock = asyncio.Lock()
        self.order = input_order.for_jobs(jobs)
        self.state = StateBuffer(jobs.tables.series, s.state_flush_s)

    def part(self, partition: int) -> SeriesPartition:
        """The progress of a window partition, loading it and its series on first use."""
        part = self.parts.get(partition)
        if part is None:
            raw = stored(self.jobs.tables.series.data.get(f"{PARTITION_KEY}{partition}"))
            part = SeriesPartition() if raw is None else msgspec.convert(raw, SeriesPartition, strict=False)
            self.parts[partition] = part
            self.open[partition] = set()
            self._load(partition)
        return part

    def _load(self, partition: int) -> None:
        heads: dict[str, district.SeriesRecord] = {}
        chunks: dict[str, dict[int, windows.Chunk]] = {}
        for key, value in list(self.jobs.tables.series.data.items()):
            if key.startswith(PARTITION_KEY):
                continue
            series, mark, number = key.partition(CHUNK_MARK)
            if series_partition(series, self.partitions) != partition:
                continue
            data = stored(value)
            if data is None:
                continue
            if mark:
                chunks.setdefault(series, {})[int(number)] = msgspec.convert(
                    data, windows.Chunk, strict=False
                )
            else:
                heads[series] = msgspec.convert(data, district.SeriesRecord, strict=False)
        for series in sorted(heads.keys() | chunks.keys()):
            head = heads.get(series) or district.SeriesRecord()
            state = windows.SeriesWindows.restore(head.closed_until, head.sources, chunks.get(series, {}))
            self.records[series] = head
            self.live[series] = district.load(head, series, self.jobs.catalog)
            self.windows[series] = state
            if state.open:
                self.open[partition].add(series)
            if state.deletable:
                self.expiring[series] = partition

    def series(self, series: str) -> windows.SeriesWindows:
        """The windows of a series (new if its partition never had it)."""
        state = self.windows.get(series)
        if state is None:
            state = self.windows[series] = windows.SeriesWindows()
            self.records[series] = district.SeriesRecord()
            self.live[series] = {}
        return state

    def forget(self) -> None:
        self.records.clear()
        self.live.clear()
        self.windows.clear()
        self.parts.clear()
        self.open.clear()
        self.touched.clear()
        self.expiring.clear()
        self.moved.clear()

    async def process(self, events: list[Any], adopted: Iterable[Any] = ()) -> None:
        """Apply a batch; its events (and ``adopted``, see :mod:`stream_jobs.input_order`) are
        acknowledged with the state write after it."""
        self.state.hold(events)
        self.state.adopt(adopted)
        await self._process(events)
        if self.state.due():
            await self.flush()

    async def flush(self) -> None:
        """Write what the processed batches changed, in an order a crash at any point can
        restore from: the new chunks, the chunks to delete (their windows were recorded closed
        by an earlier write), the series records, then the partitions' progress. Then
        acknowledge the input behind it."""
        catalog = self.jobs.catalog
        touched, self.touched = self.touched, {}
        expiring, self.expiring = self.expiring, {}
        for series, q in touched.items():
            taken = self.windows[series].take_chunk()
            if taken is not None:
                number, chunk = taken
                self.state.put(q, f"{series}{CHUNK_MARK}{number}", chunk)
        for series, q in {**expiring, **touched}.items():
            state = self.windows[series]
            for number in state.expire():
                self.state.delete(q, f"{series}{CHUNK_MARK}{number}")
            if state.deletable:
                self.expiring[series] = q
        for series, q in touched.items():
            state, record, live = self.windows[series], self.records[series], self.live[series]
            record.closed_until = state.closed_until
            record.sources = dict(state.sources)
            self.state.changed(q, series, functools.partial(district.dump, record, live, series, catalog))
        moved, self.moved = self.moved, set()
        for q in sorted(moved):
            part = self.parts[q]
            self.state.put(q, f"{PARTITION_KEY}{q}", part)
        self.jobs.stats.add("state_writes", await self.state.flush(self.jobs.app.consumer))

    async def _process(self, events: list[Any]) -> None:
        stats = self.jobs.stats
        topics = self.jobs.topics
        sends: list[Awaitable[Any]] = []
        touched: dict[str, int] = {}
        partitions: set[int] = set()
        for event in events:
            message = event.message
            q, offset = message.partition, message.offset
            part = self.part(q)
            if offset <= part.last_offset:
                stats.add("series_replayed")
                continue
            part.last_offset = offset
            partitions.add(q)
            try:
                batch = codec.decode(message.value, SeriesBatch)
            except (codec.DecodeError, TypeError) as exc:
                sends.append(reject(stats, topics, message, "invalid_series", exc))
                continue
            by_series: dict[str, list[SeriesItem]] = {}
            for item in batch.items:
                by_series.setdefault(item.series, []).append(item)
            for series, items in by_series.items():
                try:
                    self._add(message, series, items, source=batch.source, touched=touched, sends=sends)
                except Exception as exc:  # one bad series must not stop the job
                    logger.exception(
                        "series failed topic=%s partition=%s offset=%s series=%s",
                        message.topic,
                        q,
                        offset,
                        series,
                    )
                    sends.append(reject(stats, topics, message, "processing_error", exc))
            if batch.watermark > part.sources.get(batch.source, -1):
                part.sources[batch.source] = batch.watermark
            if batch.idle:
                if batch.source not in part.idle:
                    part.idle = sorted({*part.idle, batch.source})
            elif batch.source in part.idle:
                part.idle = [p for p in part.idle if p != batch.source]
        for q in sorted(partitions):
            self._close(q, touched, sends)
        await self._commit(sends, touched, partitions)

    def _add(
        self,
        message: Any,
        series: str,
        items: list[SeriesItem],
        *,
        source: int,
        touched: dict[str, int],
        sends: list[Awaitable[Any]],
    ) -> None:
        q = message.partition
        closed_until = self.parts[q].closed_until
        state = self.series(series)
        verdicts = state.add(items, source, closed_until)
        touched[series] = q
        if state.open:
            self.open[q].add(series)
        for item, verdict in zip(items, verdicts, strict=True):
            if verdict is windows.Verdict.LATE:
                sends.append(self._late(message, item, closed_until))
            elif verdict is windows.Verdict.REPLAYED:
                self.jobs.stats.add("window_replayed")

    def _late(self, message: Any, item: SeriesItem, closed_until: int) -> Awaitable[Any]:
        detail = f"{item.series} at {item.ts} is in a window that closed (closed until {closed_until})"
        self.jobs.stats.add("late")
        cut = _Reissued(message, codec.encode(item))
        return reject(self.jobs.stats, self.jobs.topics, cut, "late", detail, device_id=item.device_id)

    def _close(self, q: int, touched: dict[str, int], sends: list[Awaitable[Any]]) -> None:
        part = self.parts[q]
        watermark = windows.effective_watermark(part.sources, part.idle, self.partitions, self.grace_ms)
        if watermark is None:
            return
        boundary = windows.window_start(watermark)
        if boundary <= part.closed_until:
            return
        part.closed_until = boundary
        emitted = now_ms()
        topics = self.jobs.topics
        for series in sorted(self.open[q]):
            state = self.windows[series]
            done = state.close(watermark)
            if not done:
                continue
            touched[series] = q
            if not state.open:
                self.open[q].discard(series)
            record, live = self.records[series], self.live[series]
            for window in done:
                aggregate, signals = district.on_closed(
                    record, live, series, window, ctx=self.ctx, emitted_ms=emitted
                )
                sends.append(topics.agg.send(key=series.encode(), value=codec.encode(aggregate)))
                for signal in signals:
                    sends.append(
                        topics.signals.send(
                            key=signal.key.encode(), value=codec.encode(Envelope(signal=signal))
                        )
                    )
                self.jobs.stats.add("aggregates")
                self.jobs.stats.add("signals", len(signals))

    async def _commit(
        self, sends: list[Awaitable[Any]], touched: dict[str, int], partitions: set[int]
    ) -> None:
        """Outputs first: the changes are written (by :meth:`flush`) only once Kafka has them."""
        await send_all(sends)
        self.touched.update(touched)
        self.moved |= partitions

    async def tick(self) -> None:
        """Close what idle sources were holding open (idle markers can come without items)."""
        sends: list[Awaitable[Any]] = []
        touched: dict[str, int] = {}
        before = {q: p.closed_until for q, p in self.parts.items()}
        for q in sorted(self.parts):
            self._close(q, touched, sends)
        changed = {q for q, p in self.parts.items() if p.closed_until != before.get(q)}
        if touched or changed:
            await self._commit(sends, touched, changed)


class _Reissued:
    """A Kafka message seen with another value (a late item, cut out of its batch)."""

    def __init__(self, message: Any, value: bytes) -> None:
        self.topic = message.topic
        self.partition = message.partition
        self.offset = message.offset
        self.value = value


def install(jobs: Jobs) -> WindowJob:
    job = WindowJob(jobs)
    s = jobs.settings.jobs

    async def windows_agent(stream: Any) -> None:
        async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
            async with job.lock:
                admitted = await job.order.admit(list(events))
                await guarded("windows", job.process(admitted.events, admitted.adopted))

    jobs.app.agent(jobs.topics.series, name="windows")(windows_agent)

    async def tick() -> None:
        async with job.lock:
            await guarded("windows timer", job.tick())

    jobs.app.timer(s.timer_interval_s, name="windows-idle")(tick)

    async def forget(*_: Any, **__: Any) -> None:
        async with job.lock:
            await guarded("windows state", job.flush())
            job.forget()
            job.order.reset()

    async def flush() -> None:
        async with job.lock:
            if job.state.due():
                await guarded("windows state", job.flush())

    jobs.app.timer(max(s.state_flush_s, 0.1), name="windows-state")(flush)

    jobs.app.on_partitions_revoked.connect(forget)
    return job
