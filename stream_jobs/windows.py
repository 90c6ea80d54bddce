"""1-minute tumbling windows in event time, with a grace period for late data: pure logic.

One :class:`SeriesWindows` value per series (``district/sensor_type/metric``) holds the open
windows with the (device, seq, ts, value) of every reading in them. Keeping the reading ids
makes adding idempotent: a reading delivered twice (a replay after a restart) counts once.

A window ``[start, start + 60 s)`` closes when the watermark passes its end. The watermark of
an aggregation partition is the lowest "highest device time" of the source partitions that
feed it, minus the grace (see :func:`effective_watermark`), so a window closes only when every
source has moved past it: the result does not depend on how the sources interleave or how fast
each is read. A source that has read all there is and stays quiet says so (``idle``) and stops
holding windows open. A reading
for a window that has already closed is late: it goes to the dead-letter topic with reason
``late`` and is counted. A closed window keeps its reading ids for ``keep_ms`` of event time,
so a replayed reading is recognised as a duplicate rather than reported as late.

p95 is exact (linear interpolation between the two nearest ranks, as numpy's default): a
minute of one series is small.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Iterable, Mapping, Sequence

import msgspec

from citystream.model import Aggregate
from stream_jobs.messages import SeriesItem

WINDOW_MS = 60_000


class Contribution(msgspec.Struct, frozen=True, array_like=True):
    device_id: str
    seq: int
    ts: int
    value: float


class Window(msgspec.Struct, frozen=True, array_like=True):
    start: int
    items: tuple[Contribution, ...] = ()

    @property
    def end(self) -> int:
        return self.start + WINDOW_MS


class ClosedWindow(msgspec.Struct, frozen=True, array_like=True):
    start: int
    ids: tuple[tuple[str, int], ...] = ()


class SeriesWindows(msgspec.Struct, frozen=True, kw_only=True):
    open: tuple[Window, ...] = ()
    """Open windows, oldest first."""
    closed: tuple[ClosedWindow, ...] = ()
    """Recently closed windows (their reading ids only), oldest first."""
    closed_until: int = 0
    """Every window ending at or before this has closed (epoch ms)."""
    last_offset: int = -1
    """Offset of the last input record applied (for replays after a restart)."""


class Verdict(enum.Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    LATE = "late"


def window_start(ts: int) -> int:
    return ts - ts % WINDOW_MS


def add(
    state: SeriesWindows, items: Iterable[SeriesItem], closed_until: int = 0
) -> tuple[SeriesWindows, list[Verdict]]:
    """Add readings of one series to their windows; one verdict per item, in order.

    Windows ending at or before ``closed_until`` (or the series' own ``closed_until``) are
    closed: their readings are late, or duplicates when the window still remembers them.
    """
    closed_until = max(closed_until, state.closed_until)
    by_start = {w.start: w for w in state.open}
    touched: dict[int, dict[tuple[str, int], Contribution]] = {}
    closed_ids: dict[int, set[tuple[str, int]]] | None = None
    verdicts: list[Verdict] = []
    for item in items:
        start = window_start(item.ts)
        ident = (item.device_id, item.seq)
        if start + WINDOW_MS <= closed_until:
            if closed_ids is None:
                closed_ids = {c.start: set(c.ids) for c in state.closed}
            seen = closed_ids.get(start)
            verdicts.append(Verdict.DUPLICATE if seen is not None and ident in seen else Verdict.LATE)
            continue
        bucket = touched.get(start)
        if bucket is None:
            old = by_start.get(start)
            bucket = touched[start] = {(c.device_id, c.seq): c for c in old.items} if old else {}
        if ident in bucket:
            verdicts.append(Verdict.DUPLICATE)
            continue
        bucket[ident] = Contribution(item.device_id, item.seq, item.ts, item.value)
        verdicts.append(Verdict.ADDED)
    if Verdict.ADDED not in verdicts:
        return state, verdicts
    for start, bucket in touched.items():
        by_start[start] = Window(start, tuple(bucket.values()))
    new_open = tuple(by_start[start] for start in sorted(by_start))
    return msgspec.structs.replace(state, open=new_open), verdicts


def close(state: SeriesWindows, watermark: int, keep_ms: int) -> tuple[SeriesWindows, list[Window]]:
    """Close every open window that ends at or before ``watermark``; return them, oldest first."""
    boundary = window_start(watermark)
    if boundary <= state.closed_until:
        return state, []
    done = [w for w in state.open if w.end <= boundary]
    still = tuple(w for w in state.open if w.end > boundary)
    kept = tuple(c for c in state.closed if c.start + WINDOW_MS + keep_ms > boundary)
    if done:
        newly = tuple(ClosedWindow(w.start, tuple((c.device_id, c.seq) for c in w.items)) for w in done)
        kept = tuple(c for c in kept + newly if c.start + WINDOW_MS + keep_ms > boundary)
    return SeriesWindows(open=still, closed=kept, closed_until=boundary, last_offset=state.last_offset), done


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
    values = sorted(c.value for c in window.items)
    return summarize_values(district, sensor_type, metric, window.start, values, emitted_ms=emitted_ms)


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


def device_means(window: Window) -> dict[str, float]:
    """Mean value per device in a window (the peers of a district)."""
    sums: dict[str, list[float]] = {}
    for c in window.items:
        sums.setdefault(c.device_id, []).append(c.value)
    return {device: math.fsum(v) / len(v) for device, v in sums.items()}


class SourceMark(msgspec.Struct, frozen=True, array_like=True):
    watermark: int
    """Highest device time the source partition has reported."""
    last_offset: int
    """Offset (on the aggregation partition) of the last record from this source."""


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
