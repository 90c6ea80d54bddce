from __future__ import annotations

from typing import Any, NamedTuple

from stream_jobs.runtime import StateBuffer
from stream_jobs.watchdog import CommitWatch, Pending, pending


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


def test_records_acknowledged_beyond_the_commit_are_pending() -> None:
    raw, series = TP("raw", 0), TP("series", 3)
    committed: dict[Any, int | None] = {raw: 100, series: 50, TP("raw", 1): None}
    acked = {raw: [105, 106, 104], series: [], TP("raw", 1): [7]}
    assert pending(committed, acked) == [Pending("raw", 0, 100, 106)]
    assert pending({raw: 100}, {raw: [90]}) == []  # stale: already committed


def test_commits_that_do_not_reach_what_was_acknowledged_are_stuck() -> None:
    watch = CommitWatch(stall_s=60.0)
    assert watch.stuck([Pending("raw", 0, 100, 5000)], now=0.0) == []
    # Healthy: the commit passes what was acknowledged; a new target is taken.
    assert watch.stuck([Pending("raw", 0, 5001, 9000)], now=3.0) == []
    assert watch.stuck([Pending("raw", 0, 9001, 12000)], now=62.0) == []
    # Stuck: the commit creeps on an offset at a time but never reaches 12,000.
    assert watch.stuck([Pending("raw", 0, 9002, 15000)], now=100.0) == []
    late = Pending("raw", 0, 9030, 20000)
    assert watch.stuck([late], now=122.0) == [late]
    # Nothing pending (everything committed) clears it; each partition has its own clock.
    assert watch.stuck([], now=130.0) == []
    other = Pending("raw", 1, 5, 9)
    assert watch.stuck([other], now=131.0) == []
    assert watch.stuck([other], now=191.0) == [other]
