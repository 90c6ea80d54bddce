"""1-minute tumbling windows in event time, with a grace period for late data.

One :class:`SeriesWindows` per series (``district/sensor_type/metric``) holds its open windows:
per device, the values it sent in the window. That is all a closed window needs: count, mean,
min, max and the exact p95 of the values, and each device's mean for the peer detector.

Replays are recognised by where the values came from, not by remembering them: every value
carries the offset of its reading on its telemetry.raw partition, and a series remembers the
highest offset it has applied from each partition. The readings agent sends the values of one
partition in offset order, and a replay (after a restart or a rebalance) starts from an
earlier offset, so a value at or below the remembered offset has been counted already.

A window ``[start, start + 60 s)`` closes when the watermark passes its end. The watermark of
an aggregation partition is the lowest "highest device time" of the source partitions that
feed it, minus the grace (see :func:`effective_watermark`), so a window closes only when every
source has moved past it: the result does not depend on how the sources interleave or how fast
each is read. A source that has read all there is and stays quiet says so (``idle``) and stops
holding windows open. A value for a window that has already closed is late: it goes to the
dead-letter topic with reason ``late`` and is counted.

Persistence is incremental: the values added since the last state write become one
:class:`Chunk` (with the offsets applied so far), written under its own key, so a write costs
what was added, not what the windows hold. A chunk is deleted once every window it feeds has
closed and the series' record saying so has been written.

p95 is exact (linear interpolation between the two nearest ranks, as numpy's default).
"""

from __future__ import annotations

import enum
import math
from array import array
from collections.abc import Collection, Iterable, Mapping, Sequence

import msgspec

from citystream.model import Aggregate
from stream_jobs.messages import SeriesItem

WINDOW_MS = 60_000


class Verdict(enum.Enum):
    ADDED = "added"
    REPLAYED = "replayed"
    LATE = "late"


def window_start(ts: int) -> int:
    return ts - ts % WINDOW_MS


class Window:
    """One open window of one series: each device's values in it."""

    __slots__ = ("devices", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.devices: dict[str, array[float]] = {}

    @property
    def end(self) -> int:
        return self.start + WINDOW_MS

    def add(self, device_id: str, value: float) -> None:
        values = self.devices.get(device_id)
        if values is None:
            self.devices[device_id] = array("d", (value,))
        else:
            values.append(value)

    def values(self) -> list[float]:
        """Every value in the window, sorted."""
        out: list[float] = []
        for values in self.devices.values():
            out.extend(values)
        out.sort()
        return out

    def device_means(self) -> dict[str, float]:
        """Mean value per device (the peers of a district)."""
        return {device: math.fsum(v) / len(v) for device, v in self.devices.items()}


class Chunk(msgspec.Struct, frozen=True, array_like=True):
    """The values one state write added to a series (a table value)."""

    items: tuple[tuple[int, str, float], ...]
    """(window start, device_id, value)."""
    sources: dict[int, int]
    """Source partition -> highest offset applied when the chunk was written."""

    def latest_start(self) -> int:
        return max((start for start, _, _ in self.items), default=0)


class SeriesWindows:
    """The open windows of one series and what is needed to persist them (mutable)."""

    __slots__ = ("chunks", "closed_until", "deletable", "doomed", "next_chunk", "open", "pending", "sources")

    def __init__(self, closed_until: int = 0, sources: Mapping[int, int] | None = None) -> None:
        self.open: dict[int, Window] = {}
        self.closed_until = closed_until
        """Every window ending at or before this has closed (epoch ms)."""
        self.sources: dict[int, int] = dict(sources or {})
        """Source partition -> highest offset applied."""
        self.pending: list[tuple[int, str, float]] = []
        """Values added since the last chunk was taken."""
        self.chunks: dict[int, int] = {}
        """Number of each written chunk that still feeds an open window -> its latest window."""
        self.next_chunk = 0
        self.doomed: list[int] = []
        """Chunks whose windows all closed since the last state write."""
        self.deletable: list[int] = []
        """Chunks whose windows all closed before the last state write (which recorded that)."""

    def add(self, items: Iterable[SeriesItem], source: int, closed_until: int = 0) -> list[Verdict]:
        """Add the values one record of ``source`` carries; one verdict per item, in order.

        Windows ending at or before ``closed_until`` (or the series' own) are closed: a value for
        one of them is late, unless it was applied before (a replay).
        """
        closed_until = max(closed_until, self.closed_until)
        applied = self.sources.get(source, -1)
        top = applied
        verdicts: list[Verdict] = []
        for item in items:
            if item.offset <= applied:
                verdicts.append(Verdict.REPLAYED)
                continue
            top = max(top, item.offset)
            start = window_start(item.ts)
            if start + WINDOW_MS <= closed_until:
                verdicts.append(Verdict.LATE)
                continue
            window = self.open.get(start)
            if window is None:
                window = self.open[start] = Window(start)
            window.add(item.device_id, item.value)
            self.pending.append((start, item.device_id, item.value))
            verdicts.append(Verdict.ADDED)
        if top > applied:
            self.sources[source] = top
        return verdicts

    def take_chunk(self) -> tuple[int, Chunk] | None:
        """The values added since the last call, as a chunk to write, with its number."""
        if not self.pending:
            return None
        chunk = Chunk(tuple(self.pending), dict(self.sources))
        self.pending = []
        number = self.next_chunk
        self.next_chunk += 1
        latest = chunk.latest_start()
        if latest + WINDOW_MS <= self.closed_until:
            self.doomed.append(number)
        else:
            self.chunks[number] = latest
        return number, chunk

    def close(self, watermark: int) -> list[Window]:
        """Close every open window that ends at or before ``watermark``; return them, oldest first."""
        boundary = window_start(watermark)
        if boundary <= self.closed_until:
            return []
        self.closed_until = boundary
        done = [self.open.pop(start) for start in sorted(self.open) if start + WINDOW_MS <= boundary]
        for number, latest in list(self.chunks.items()):
            if latest + WINDOW_MS <= boundary:
                del self.chunks[number]
                self.doomed.append(number)
        return done

    def expire(self) -> list[int]:
        """Chunks to delete now; call before each state write, which records ``closed_until``.

        A chunk is deleted one write after the one that recorded its windows as closed: were it
        deleted first, a worker killed in between would restore those windows open and empty.
        """
        out, self.deletable, self.doomed = self.deletable, self.doomed, []
        return out

    @classmethod
    def restore(
        cls, closed_until: int, sources: Mapping[int, int], chunks: Mapping[int, Chunk]
    ) -> SeriesWindows:
        """The windows as written: the series' record (``closed_until``, ``sources``) and its chunks."""
        state = cls(closed_until, sources)
        for number in sorted(chunks):
            chunk = chunks[number]
            for source, offset in chunk.sources.items():
                if offset > state.sources.get(source, -1):
                    state.sources[source] = offset
            latest = chunk.latest_start()
            if latest + WINDOW_MS <= closed_until:
                state.deletable.append(number)
                continue
            state.chunks[number] = latest
            for start, device_id, value in chunk.items:
                if start + WINDOW_MS > closed_until:
                    window = state.open.get(start)
                    if window is None:
                        window = state.open[start] = Window(start)
                    window.add(device_id, value)
        state.next_chunk = max(chunks, default=-1) + 1
        return state


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between closest ranks."""
    if not sorted_values:
        return math.nan
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def summarize(series: str, window: Window, emitted_ms: int) -> Aggregate:
    """The Aggregate of a closed window (``series`` is ``district/sensor_type/metric``)."""
    district, sensor_type, metric = series.split("/", 2)
    return summarize_values(
        district, sensor_type, metric, window.start, window.values(), emitted_ms=emitted_ms
    )


def summarize_values(
    district: str, sensor_type: str, metric: str, start: int, values: Sequence[float], *, emitted_ms: int
) -> Aggregate:
    """The Aggregate of ``values`` (sorted ascending) of one window."""
    n = len(values)
    return Aggregate(
        district=district,
        sensor_type=sensor_type,
        metric=metric,
        window_start=start,
        window_end=start + WINDOW_MS,
        count=n,
        mean=math.fsum(values) / n if n else math.nan,
        min=values[0] if n else math.nan,
        max=values[-1] if n else math.nan,
        p95=percentile(values, 0.95),
        emitted_ms=emitted_ms,
    )


def effective_watermark(
    marks: Mapping[int, int], idle: Collection[int], sources: int, grace_ms: int
) -> int | None:
    """The closing watermark of one aggregation partition fed by ``sources`` source partitions.

    ``marks``: source partition -> highest device time it reported; ``idle``: sources that said
    they have read everything and got nothing new for a while. The slowest busy source holds
    windows back (one that has not reported yet holds everything); when every source is idle,
    everything reported has arrived and the highest mark counts. Minus the grace.
    """
    busy = [source for source in range(sources) if source not in idle]
    if any(source not in marks for source in busy) or not marks:
        return None
    base = min(marks[source] for source in busy) if busy else max(marks.values())
    return base - grace_ms
