from __future__ import annotations

import random
import statistics

import msgspec
import pytest

from citystream import codec
from stream_jobs.messages import SeriesItem
from stream_jobs.windows import (
    WINDOW_MS,
    Chunk,
    SeriesWindows,
    Verdict,
    Window,
    effective_watermark,
    percentile,
    summarize,
)

T0 = 1_764_000_000_000  # a minute boundary
S = "gangnam/air_quality/pm25"


def item(device: str, seq: int, ts: int, value: float, offset: int | None = None) -> SeriesItem:
    return SeriesItem(S, device, seq, ts, value, seq if offset is None else offset)


def aggregates(done: list[Window]) -> list[tuple[int, int, float, float, float, float]]:
    out = []
    for window in done:
        a = summarize(S, window, emitted_ms=0)
        out.append((a.window_start, a.count, a.mean, a.min, a.max, a.p95))
    return out


def test_readings_land_in_their_minute_and_close_when_the_watermark_passes() -> None:
    state = SeriesWindows()
    verdicts = state.add([item("a", i, T0 + i * 10_000, float(i)) for i in range(12)], source=0)
    assert verdicts == [Verdict.ADDED] * 12
    assert sorted(state.open) == [T0, T0 + WINDOW_MS]
    assert state.close(T0 + WINDOW_MS - 1) == []
    done = state.close(T0 + WINDOW_MS)
    assert [w.start for w in done] == [T0]
    aggregate = summarize(S, done[0], emitted_ms=0)
    assert (aggregate.district, aggregate.sensor_type, aggregate.metric) == ("gangnam", "air_quality", "pm25")
    assert aggregate.count == 6
    assert (aggregate.min, aggregate.max, aggregate.mean) == (0.0, 5.0, 2.5)
    assert aggregate.p95 == statistics.quantiles([0, 1, 2, 3, 4, 5], n=20, method="inclusive")[18]
    assert aggregate.window_end == T0 + WINDOW_MS
    assert done[0].device_means() == {"a": 2.5}


def test_order_of_arrival_does_not_change_the_result() -> None:
    items = [
        item(d, i * 3 + k, T0 + i * 7_000 + k, float(i * 3 + k) / 7)
        for i in range(30)
        for k, d in enumerate("abc")
    ]
    shuffled = list(items)
    random.Random(3).shuffle(shuffled)
    forward, backward = SeriesWindows(), SeriesWindows()
    forward.add(items, source=0)
    for one in shuffled:  # one record each, from sources that each report in their own order
        backward.add([one], source=one.seq)
    assert aggregates(forward.close(T0 + 10 * WINDOW_MS)) == aggregates(backward.close(T0 + 10 * WINDOW_MS))


def test_a_replayed_value_counts_once() -> None:
    state = SeriesWindows()
    assert state.add([item("a", 1, T0, 1.0, offset=10), item("b", 1, T0, 2.0, offset=11)], source=0) == [
        Verdict.ADDED,
        Verdict.ADDED,
    ]
    # A replay of the source from an earlier offset: what was applied is recognised, the rest added.
    verdicts = state.add([item("b", 1, T0, 2.0, offset=11), item("c", 1, T0, 4.0, offset=12)], source=0)
    assert verdicts == [Verdict.REPLAYED, Verdict.ADDED]
    # The same offset on another source is another reading.
    assert state.add([item("d", 1, T0, 8.0, offset=11)], source=1) == [Verdict.ADDED]
    assert aggregates(state.close(T0 + WINDOW_MS))[0][1] == 4


def test_late_within_grace_updates_the_window_and_after_it_is_late() -> None:
    state = SeriesWindows()
    state.add([item("a", 1, T0 + 1_000, 1.0)], source=0)
    # The watermark is the sources' time minus the grace: still before the window's end.
    assert state.close(T0 + 50_000) == []
    assert state.add([item("b", 2, T0 + 2_000, 3.0)], source=0) == [Verdict.ADDED]
    done = state.close(T0 + WINDOW_MS + 5_000)
    assert summarize(S, done[0], 0).count == 2
    verdicts = state.add([item("c", 3, T0 + 3_000, 9.0), item("a", 1, T0 + 1_000, 1.0)], source=0)
    assert verdicts == [Verdict.LATE, Verdict.REPLAYED]
    assert state.open == {}
    # A late value is applied too: its replay is not reported as late again.
    assert state.add([item("c", 3, T0 + 3_000, 9.0)], source=0) == [Verdict.REPLAYED]


def test_an_explicit_closed_boundary_makes_items_late() -> None:
    verdicts = SeriesWindows().add(
        [item("a", 1, T0, 1.0), item("a", 2, T0 + WINDOW_MS, 2.0)], source=0, closed_until=T0 + WINDOW_MS
    )
    assert verdicts == [Verdict.LATE, Verdict.ADDED]


def roundtrip(chunk: Chunk) -> Chunk:
    """A chunk as a restarted worker reads it back from the changelog (plain JSON data)."""
    return msgspec.convert(msgspec.json.decode(codec.encode(chunk)), Chunk, strict=False)


def test_restoring_the_written_chunks_gives_the_same_windows() -> None:
    rng = random.Random(5)
    state = SeriesWindows()
    written: dict[int, Chunk] = {}
    offset = 0
    for step in range(5):  # five state writes, a few records between them
        for _ in range(3):
            batch = []
            for _ in range(7):
                offset += 1
                batch.append(
                    item(rng.choice("abcd"), offset, T0 + step * 20_000 + rng.randrange(20_000), rng.random())
                )
            state.add(batch, source=2)
        taken = state.take_chunk()
        assert taken is not None
        written[taken[0]] = roundtrip(taken[1])
    assert state.take_chunk() is None  # nothing new
    restored = SeriesWindows.restore(0, {}, written)
    assert restored.sources == state.sources == {2: offset}
    assert restored.next_chunk == state.next_chunk == 5
    end = T0 + 3 * WINDOW_MS
    assert aggregates(restored.close(end)) == aggregates(state.close(end))


def test_chunks_are_deleted_one_write_after_their_windows_closed() -> None:
    state = SeriesWindows()
    state.add([item("a", 1, T0 + 1_000, 1.0)], source=0)
    first = state.take_chunk()
    state.add([item("a", 2, T0 + WINDOW_MS + 1_000, 2.0)], source=0)
    second = state.take_chunk()
    assert first is not None
    assert second is not None
    assert state.expire() == []  # a write: nothing closed yet
    state.close(T0 + WINDOW_MS)  # the first minute closes
    assert state.expire() == []  # this write records the close ...
    assert state.expire() == [first[0]]  # ... the next one deletes the chunk
    assert state.chunks == {second[0]: T0 + WINDOW_MS}
    # A worker restarted from a record that says the first minute closed skips that chunk's
    # values and deletes it at its first write.
    restored = SeriesWindows.restore(
        T0 + WINDOW_MS, {0: 2}, {first[0]: roundtrip(first[1]), second[0]: roundtrip(second[1])}
    )
    assert sorted(restored.open) == [T0 + WINDOW_MS]
    assert restored.expire() == [first[0]]


def test_a_chunk_of_already_closed_windows_is_still_written_then_deleted() -> None:
    state = SeriesWindows()
    state.add([item("a", 1, T0 + 1_000, 1.0)], source=0)
    state.close(T0 + WINDOW_MS)  # added and closed between two writes
    taken = state.take_chunk()
    assert taken is not None  # written: a crash before the close is recorded needs it
    assert state.expire() == []
    assert state.expire() == [taken[0]]


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert percentile(values, 0.95) == pytest.approx(4.0 + 0.8 * 6.0)
    assert percentile([7.0], 0.95) == 7.0


def test_the_watermark_is_held_by_the_slowest_busy_source() -> None:
    marks = {0: T0 + 100_000, 1: T0 + 40_000}
    assert effective_watermark(marks, (), sources=2, grace_ms=10_000) == T0 + 30_000
    # A source that has not reported yet holds everything.
    assert effective_watermark(marks, (), sources=3, grace_ms=0) is None
    # ... unless it is idle (read to its end and quiet), like source 1 here.
    assert effective_watermark(marks, (1, 2), sources=3, grace_ms=10_000) == T0 + 90_000
    # Every source is idle: all that was reported has arrived.
    assert effective_watermark(marks, (0, 1, 2), sources=3, grace_ms=0) == T0 + 100_000
    assert effective_watermark({}, (0,), sources=1, grace_ms=0) is None
