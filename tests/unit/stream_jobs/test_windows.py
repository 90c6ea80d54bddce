from __future__ import annotations

import statistics

import pytest

from stream_jobs.messages import SeriesItem
from stream_jobs.windows import (
    WINDOW_MS,
    SeriesWindows,
    Verdict,
    add,
    close,
    effective_watermark,
    percentile,
    summarize,
)

T0 = 1_764_000_000_000  # a minute boundary
S = "gangnam/air_quality/pm25"


def item(device: str, seq: int, ts: int, value: float) -> SeriesItem:
    return SeriesItem(S, device, seq, ts, value)


def test_readings_land_in_their_minute_and_close_when_the_watermark_passes() -> None:
    items = [item("a", i, T0 + i * 10_000, float(i)) for i in range(12)]  # two minutes
    state, verdicts = add(SeriesWindows(), items)
    assert verdicts == [Verdict.ADDED] * 12
    assert [w.start for w in state.open] == [T0, T0 + WINDOW_MS]
    state, done = close(state, T0 + WINDOW_MS - 1, keep_ms=0)
    assert done == []
    state, done = close(state, T0 + WINDOW_MS, keep_ms=0)
    assert [w.start for w in done] == [T0]
    aggregate = summarize(S, done[0], emitted_ms=0)
    assert (aggregate.district, aggregate.sensor_type, aggregate.metric) == ("gangnam", "air_quality", "pm25")
    assert aggregate.count == 6
    assert (aggregate.min, aggregate.max, aggregate.mean) == (0.0, 5.0, 2.5)
    assert aggregate.p95 == statistics.quantiles([0, 1, 2, 3, 4, 5], n=20, method="inclusive")[18]
    assert aggregate.window_end == T0 + WINDOW_MS


def test_order_of_arrival_does_not_change_the_result() -> None:
    items = [item(d, i, T0 + i * 7_000 + k, float(i * 3 + k)) for i in range(8) for k, d in enumerate("abc")]
    forward, _ = add(SeriesWindows(), items)
    backward, _ = add(SeriesWindows(), list(reversed(items)))
    a = [summarize(S, w, 0) for w in close(forward, T0 + 10 * WINDOW_MS, 0)[1]]
    b = [summarize(S, w, 0) for w in close(backward, T0 + 10 * WINDOW_MS, 0)[1]]
    assert a == b


def test_a_reading_delivered_twice_counts_once() -> None:
    state, verdicts = add(SeriesWindows(), [item("a", 1, T0, 1.0), item("a", 1, T0, 1.0)])
    assert verdicts == [Verdict.ADDED, Verdict.DUPLICATE]
    state, verdicts = add(state, [item("a", 1, T0, 1.0)])
    assert verdicts == [Verdict.DUPLICATE]
    assert close(state, T0 + WINDOW_MS, 0)[1][0].items.__len__() == 1


def test_late_within_grace_updates_the_window_and_after_it_is_late() -> None:
    state, _ = add(SeriesWindows(), [item("a", 1, T0 + 1_000, 1.0)])
    # The watermark is the sources' time minus the grace: still before the window's end.
    state, done = close(state, T0 + 50_000, keep_ms=120_000)
    assert done == []
    state, verdicts = add(state, [item("b", 1, T0 + 2_000, 3.0)])
    assert verdicts == [Verdict.ADDED]
    state, done = close(state, T0 + WINDOW_MS + 5_000, keep_ms=120_000)
    assert summarize(S, done[0], 0).count == 2
    state, verdicts = add(state, [item("c", 1, T0 + 3_000, 9.0), item("a", 1, T0 + 1_000, 1.0)])
    assert verdicts == [Verdict.LATE, Verdict.DUPLICATE]
    assert state.open == ()


def test_closed_windows_forget_their_ids_after_keep() -> None:
    state, _ = add(SeriesWindows(), [item("a", 1, T0, 1.0)])
    state, _ = close(state, T0 + WINDOW_MS, keep_ms=WINDOW_MS)
    assert len(state.closed) == 1
    state, _ = close(state, T0 + 3 * WINDOW_MS, keep_ms=WINDOW_MS)
    assert state.closed == ()
    _, verdicts = add(state, [item("a", 1, T0, 1.0)])
    assert verdicts == [Verdict.LATE]


def test_an_explicit_closed_boundary_makes_items_late() -> None:
    _, verdicts = add(
        SeriesWindows(), [item("a", 1, T0, 1.0), item("a", 2, T0 + WINDOW_MS, 2.0)], T0 + WINDOW_MS
    )
    assert verdicts == [Verdict.LATE, Verdict.ADDED]


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
