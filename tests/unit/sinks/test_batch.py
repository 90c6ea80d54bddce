"""Buffering and offset bookkeeping: only written records are ever committed."""

from __future__ import annotations

from dataclasses import dataclass

from sinks.batch import Buffer, CommitQueue, OffsetTracker


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = b"{}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_flush_is_due_when_full() -> None:
    buffer = Buffer(batch_size=3, flush_interval_s=60, clock=Clock())
    assert buffer.due_in() is None
    for i in range(2):
        buffer.add("city", f"l{i}", Rec("t", 0, i), "reading", 1000 + i)
    assert not buffer.ready()
    buffer.add("city", "l2", Rec("t", 0, 2), "reading", 1002)
    assert buffer.ready()


def test_flush_is_due_when_old_enough_even_without_points() -> None:
    clock = Clock()
    buffer = Buffer(batch_size=100, flush_interval_s=0.5, clock=clock)
    # Only records that went to the dead-letter topic: their offsets still need a commit.
    buffer.handled(("t", 0), 5)
    assert buffer.due_in() == 0.5
    clock.now += 0.5
    assert buffer.ready()
    batch = buffer.take()
    assert batch.points == 0
    assert batch.offsets == {("t", 0): 5}


def test_take_hands_over_everything_and_starts_empty() -> None:
    buffer = Buffer(batch_size=10, flush_interval_s=1, clock=Clock())
    buffer.add("city", "a", Rec("raw", 0, 7), "reading", 1)
    buffer.add("agg", "b", Rec("agg", 1, 3), "aggregate", 2)
    buffer.add("city", "c", Rec("raw", 0, 8), "reading", 3)
    buffer.handled(("raw", 0), 9)
    buffer.handled(("agg", 1), 4)
    buffer.handled(("raw", 0), 6)  # never moves back
    batch = buffer.take()
    assert batch.number == 1
    assert len(batch) == 3
    assert batch.buckets["city"].lines == ["a", "c"]
    assert [s.offset for s in batch.buckets["city"].sources] == [7, 8]
    assert batch.buckets["agg"].lines == ["b"]
    assert batch.offsets == {("raw", 0): 9, ("agg", 1): 4}
    assert batch.origins == {"reading": [1, 3], "aggregate": [2]}
    assert len(buffer) == 0
    assert buffer.due_in() is None
    assert buffer.take().number == 2


def test_drop_forgets_revoked_partitions_only() -> None:
    buffer = Buffer(batch_size=10, flush_interval_s=1, clock=Clock())
    buffer.add("city", "a", Rec("raw", 0, 1), "reading", 1)
    buffer.add("city", "b", Rec("raw", 1, 1), "reading", 1)
    buffer.handled(("raw", 0), 2)
    buffer.handled(("raw", 1), 2)
    assert buffer.drop({("raw", 0)}) == 1
    batch = buffer.take()
    assert batch.buckets["city"].lines == ["b"]
    assert batch.offsets == {("raw", 1): 2}


def test_commit_queue_releases_offsets_in_batch_order() -> None:
    buffer = Buffer(batch_size=1, flush_interval_s=1, clock=Clock())
    queue = CommitQueue()
    batches = []
    for offset in (10, 20, 30):
        buffer.add("city", "x", Rec("raw", 0, offset - 1), "reading", None)
        buffer.handled(("raw", 0), offset)
        batches.append(buffer.take())
        queue.push(batches[-1])
    assert queue.points == 3
    batches[1].done = True  # the second finished first: nothing may be committed yet
    assert queue.committable() == ({}, [])
    batches[0].done = True
    offsets, finished = queue.committable()
    assert offsets == {("raw", 0): 20}
    assert [b.number for b in finished] == [1, 2]
    assert len(queue) == 1
    assert queue.clear() == [batches[2]]


def test_offset_tracker_commits_up_to_the_first_unfinished_record() -> None:
    tracker = OffsetTracker()
    p = ("events", 0)
    tracker.add(p, 0, 1)
    tracker.add(p, 1, 2)
    tracker.add(p, 2, 0)  # nothing to deliver
    tracker.add(p, 3, 1)
    assert tracker.pending == 3
    assert tracker.committable() == {p: 0}
    tracker.finish(p, 3)
    assert tracker.committable() == {}
    tracker.finish(p, 0)
    assert tracker.committable() == {p: 1}
    tracker.finish(p, 1)
    assert tracker.committable() == {}
    tracker.finish(p, 1)
    assert tracker.committable() == {p: 4}
    assert tracker.pending == 0
    tracker.finish(p, 99)  # unknown: ignored
    assert tracker.committable() == {}


def test_offset_tracker_forgets_revoked_partitions() -> None:
    tracker = OffsetTracker()
    tracker.add(("e", 0), 0, 1)
    tracker.add(("e", 1), 0, 1)
    tracker.forget({("e", 0)})
    assert tracker.pending == 1
    tracker.forget()
    assert tracker.pending == 0
    assert tracker.committable() == {}


def test_appenders_feed_the_same_batch_as_add() -> None:
    buffer = Buffer(batch_size=2, flush_interval_s=60, clock=Clock())
    lines, sources, origins = buffer.appenders("city", "reading")
    lines.append("a")
    sources.append(Rec("raw", 0, 1))
    origins.append(5)
    buffer.added(1)
    assert not buffer.ready()
    buffer.add("city", "b", Rec("raw", 0, 2), "reading", 6)
    assert buffer.ready()
    batch = buffer.take()
    assert batch.buckets["city"].lines == ["a", "b"]
    assert batch.origins == {"reading": [5, 6]}
