from __future__ import annotations

from typing import Any, NamedTuple

from stream_jobs.runtime import StateBuffer
from stream_jobs.watchdog import CommitWatch, Hole, holes


class TP(NamedTuple):
    topic: str
    partition: int


def test_state_is_written_in_the_order_of_the_last_change() -> None:
    buffer = StateBuffer(table=None, flush_s=1.0)
    buffer.changed(0, "~partition/0", lambda: "mark after batch 1")
    buffer.changed(0, "series-a", lambda: "a")
    buffer.changed(0, "series-b", lambda: "b")
    buffer.changed(0, "~partition/0", lambda: "mark after batch 2")
    buffer.changed(0, "series-a", lambda: "a again")
    buffer.changed(0, "~partition/0", lambda: "mark after batch 3")
    assert list(buffer.dirty) == ["series-b", "series-a", "~partition/0"]
    assert buffer.dirty["~partition/0"][1]() == "mark after batch 3"


def test_a_hole_at_the_committed_offset_is_found() -> None:
    raw, series = TP("raw", 0), TP("series", 3)
    committed: dict[Any, int | None] = {raw: 100, series: 50, TP("raw", 1): None}
    acked = {raw: [105, 106, 104], series: [50, 51], TP("raw", 1): [7]}
    assert holes(committed, acked) == [Hole("raw", 0, 100, 104, 3)]
    # Faust tolerates a gap of exactly one record, and nothing acknowledged is no hole.
    assert holes({raw: 100}, {raw: [101, 102]}) == []
    assert holes({raw: 100}, {raw: []}) == []


def test_only_a_hole_that_lasts_is_stuck() -> None:
    watch = CommitWatch(stall_s=60.0)
    hole = Hole("raw", 0, 100, 104, 3)
    assert watch.stuck([hole], now=0.0) == []
    assert watch.stuck([hole], now=59.0) == []
    assert watch.stuck([hole], now=60.0) == [hole]
    # A commit creeping on behind a hole is still stuck.
    crept = hole._replace(committed=101)
    assert watch.stuck([crept], now=61.0) == [crept]
    # A sample without a hole starts the clock again; another partition has its own.
    assert watch.stuck([], now=62.0) == []
    other = Hole("raw", 1, 5, 9, 1)
    assert watch.stuck([crept, other], now=63.0) == []
    assert watch.stuck([crept, other], now=123.0) == [crept, other]
