"""Buffering, flushing and offset bookkeeping: commit only what was written.

Pure logic, no I/O, so it can be tested without a broker:

- :class:`Buffer` collects encoded points per bucket with the records they came from, and
  says when a flush is due (size or age);
- :class:`CommitQueue` holds the batches being written and releases their offsets strictly in
  the order the batches were taken, so a later batch that finished first never commits past
  an earlier one that is still retrying;
- :class:`OffsetTracker` does the same per record, for sinks whose records finish out of
  order (webhook deliveries run in parallel across alert keys).

Offsets are Kafka's "next offset to read": the last handled offset plus one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Partition = tuple[str, int]
"""(topic, partition)"""


class SourceRecord(Protocol):
    """What a point remembers of its Kafka record (for the dead-letter topic)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(slots=True)
class BucketLines:
    lines: list[str] = field(default_factory=list)
    sources: list[SourceRecord] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    """Points taken from the buffer to be written together, and the offsets they complete."""

    number: int
    buckets: dict[str, BucketLines]
    offsets: dict[Partition, int]
    origins: dict[str, list[int]]
    """Per latency kind, the origin times (epoch ms) of the records, for the latency histogram."""
    points: int
    done: bool = False

    def __len__(self) -> int:
        return self.points


class Buffer:
    """Points waiting for the next flush."""

    def __init__(
        self, batch_size: int, flush_interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._taken = 0
        self._reset()

    def _reset(self) -> None:
        self._buckets: dict[str, BucketLines] = {}
        self._offsets: dict[Partition, int] = {}
        self._origins: dict[str, list[int]] = {}
        self._points = 0
        self._since: float | None = None

    def __len__(self) -> int:
        return self._points

    def add(self, bucket: str, line: str, source: SourceRecord, kind: str, origin_ms: int | None) -> None:
        """One point; its record's offset is covered by :meth:`handled`."""
        lines = self._buckets.get(bucket)
        if lines is None:
            lines = self._buckets[bucket] = BucketLines()
        lines.lines.append(line)
        lines.sources.append(source)
        if origin_ms is not None:
            origins = self._origins.get(kind)
            if origins is None:
                origins = self._origins[kind] = []
            origins.append(origin_ms)
        self._points += 1
        if self._since is None:
            self._since = self._clock()

    def appenders(self, bucket: str, kind: str) -> tuple[list[str], list[SourceRecord], list[int]]:
        """The lists behind :meth:`add` for one bucket and latency kind, for a hot loop that
        appends to them directly and then calls :meth:`added` (lines and sources in step)."""
        lines = self._buckets.get(bucket)
        if lines is None:
            lines = self._buckets[bucket] = BucketLines()
        origins = self._origins.get(kind)
        if origins is None:
            origins = self._origins[kind] = []
        return lines.lines, lines.sources, origins

    def added(self, points: int) -> None:
        """``points`` were appended through :meth:`appenders`."""
        self._points += points
        if points and self._since is None:
            self._since = self._clock()

    def handled(self, partition: Partition, next_offset: int) -> None:
        """Every record of ``partition`` before ``next_offset`` is in the buffer or dealt with."""
        if next_offset > self._offsets.get(partition, -1):
            self._offsets[partition] = next_offset
        if self._since is None:
            self._since = self._clock()

    def due_in(self) -> float | None:
        """Seconds until a flush is due (0 when it is due now), ``None`` when empty."""
        if self._since is None:
            return None
        if self._points >= self.batch_size:
            return 0.0
        return max(0.0, self._since + self.flush_interval_s - self._clock())

    def ready(self) -> bool:
        due = self.due_in()
        return due is not None and due <= 0.0

    def take(self) -> Batch:
        """Everything buffered, as one batch; the buffer starts empty again."""
        self._taken += 1
        batch = Batch(self._taken, self._buckets, self._offsets, self._origins, self._points)
        self._reset()
        return batch

    def drop(self, partitions: set[Partition] | None = None) -> int:
        """Forget buffered points (all, or those of ``partitions``); returns how many."""
        if partitions is None:
            dropped = self._points
            self._reset()
            return dropped
        dropped = 0
        for lines in self._buckets.values():
            keep = [i for i, s in enumerate(lines.sources) if (s.topic, s.partition) not in partitions]
            dropped += len(lines.lines) - len(keep)
            lines.lines[:] = [lines.lines[i] for i in keep]
            lines.sources[:] = [lines.sources[i] for i in keep]
        for p in partitions:
            self._offsets.pop(p, None)
        self._points -= dropped
        if not self._points and not self._offsets:
            self._since = None
        # Latency origins cannot be told apart per partition; they only feed a histogram.
        return dropped


class CommitQueue:
    """Batches in flight; offsets are released in the order the batches were taken."""

    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def points(self) -> int:
        return sum(b.points for b in self._batches)

    def push(self, batch: Batch) -> None:
        self._batches.append(batch)

    def committable(self) -> tuple[dict[Partition, int], list[Batch]]:
        """Offsets of the leading finished batches (merged) and those batches, now removed."""
        offsets: dict[Partition, int] = {}
        finished: list[Batch] = []
        while self._batches and self._batches[0].done:
            batch = self._batches.popleft()
            finished.append(batch)
            for p, o in batch.offsets.items():
                if o > offsets.get(p, -1):
                    offsets[p] = o
        return offsets, finished

    def clear(self) -> list[Batch]:
        batches = list(self._batches)
        self._batches.clear()
        return batches


class OffsetTracker:
    """Per-record completion: a partition commits up to its first unfinished record."""

    def __init__(self) -> None:
        self._pending: dict[Partition, dict[int, int]] = {}
        """partition -> offset -> deliveries still running (insertion order = offset order)"""
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        self._open = 0

    @property
    def pending(self) -> int:
        """Records with unfinished work."""
        return self._open

    def add(self, partition: Partition, offset: int, work: int) -> None:
        """Record ``offset`` of ``partition`` has ``work`` parts to finish (0: done already)."""
        if work > 0:
            self._pending.setdefault(partition, {})[offset] = work
            self._open += 1
        if offset + 1 > self._next.get(partition, -1):
            self._next[partition] = offset + 1

    def finish(self, partition: Partition, offset: int) -> None:
        """One part of record ``offset`` finished."""
        records = self._pending.get(partition)
        if records is None or offset not in records:
            return
        records[offset] -= 1
        if records[offset] == 0:
            del records[offset]
            self._open -= 1

    def committable(self) -> dict[Partition, int]:
        """Next offsets that moved since the last call."""
        out: dict[Partition, int] = {}
        for partition, next_offset in self._next.items():
            records = self._pending.get(partition)
            upto = next(iter(records)) if records else next_offset
            if upto > self._committed.get(partition, -1):
                out[partition] = upto
        self._committed.update(out)
        return out

    def forget(self, partitions: set[Partition] | None = None) -> None:
        """Drop the state of revoked partitions (their records will be delivered again)."""
        for p in list(self._next) if partitions is None else partitions:
            self._open -= len(self._pending.pop(p, {}))
            self._next.pop(p, None)
            self._committed.pop(p, None)
