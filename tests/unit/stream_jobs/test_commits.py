"""Commit bookkeeping: the commit passes processed or absent offsets only, and never stalls."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from intervaltree import IntervalTree

from stream_jobs import commits
from stream_jobs.commits import next_commit

TP = ("telemetry.raw", 0)


def test_a_run_of_acknowledged_offsets_from_the_committed_offset_is_committed() -> None:
    assert next_commit(100, [100, 101, 102], []) == 103
    assert next_commit(100, [102, 100, 101], []) == 103  # acknowledged out of order


def test_the_commit_stops_at_the_first_offset_not_processed() -> None:
    assert next_commit(100, [100, 101, 103, 104], []) == 102
    assert next_commit(100, [101, 102, 103], []) is None  # 100 is still being processed


def test_repeated_offsets_do_not_hold_the_commit_back() -> None:
    """Faust's own merge left every offset twice, and each commit then moved by one offset."""
    acked = [o for o in range(7076, 13539) for _ in (0, 1)]
    assert next_commit(7076, acked, [(7076, 13539)]) == 13539


def test_absent_offsets_are_passed_but_only_up_to_what_is_processed() -> None:
    assert next_commit(10, [10, 11, 15, 16], [(12, 15)]) == 17
    assert next_commit(10, [10, 11], [(12, 15)]) == 15  # 15 is delivered, not processed yet
    assert next_commit(10, [11], [(10, 11)]) == 12  # a head offset absent from the log


def test_stale_acknowledgements_below_the_committed_offset_are_ignored() -> None:
    assert next_commit(500, [3, 4, 5, 500, 501], [(0, 3)]) == 502
    assert next_commit(500, [3, 4, 5], []) is None


def test_nothing_committed_starts_from_the_lowest_acknowledged_offset() -> None:
    assert next_commit(None, [0, 1, 2], []) == 3
    assert next_commit(None, [], []) is None


def fake_consumer(committed: int | None, acked: list[int], gaps: list[tuple[int, int]]) -> Any:
    tree = IntervalTree()
    for begin, end in gaps:
        tree.addi(begin, end)
    return SimpleNamespace(
        _acked=defaultdict(list, {TP: list(acked)}),
        _acked_index=defaultdict(set, {TP: set(acked)}),
        _gap=defaultdict(IntervalTree, {TP: tree}),
        _committed_offset=defaultdict(lambda: None, {TP: committed}),
        _unacked_messages=set(),
        app=SimpleNamespace(consumer_generation_id=7),
    )


def test_the_consumer_forgets_what_the_commit_passed_and_keeps_the_rest() -> None:
    consumer = fake_consumer(100, [99, 100, 101, 101, 104, 105], [(102, 103)])
    assert commits.Consumer._new_offset(consumer, TP) == 103
    assert consumer._acked[TP] == [104, 105]
    assert consumer._acked_index[TP] == {104, 105}
    assert list(consumer._gap[TP]) == []
    # Nothing to pass: the acknowledged offsets wait, the stale ones go.
    consumer = fake_consumer(100, [98, 102], [])
    assert commits.Consumer._new_offset(consumer, TP) is None
    assert consumer._acked[TP] == [102]


class Message:
    generation_id = 6
    acked = False
    tp = TP
    offset = 100


def test_an_acknowledgement_from_an_earlier_assignment_does_not_count() -> None:
    consumer = fake_consumer(100, [], [])
    message = Message()
    consumer._unacked_messages.add(message)
    assert commits.Consumer.ack(consumer, message) is False
    assert message.acked
    assert consumer._unacked_messages == set()
    assert consumer._acked[TP] == []


def test_absent_offsets_are_recorded_as_a_gap() -> None:
    consumer = fake_consumer(3, [], [])
    commits.mark_absent(consumer, TP, 3, 5)
    commits.mark_absent(consumer, TP, 5, 5)
    assert [(iv.begin, iv.end) for iv in consumer._gap[TP]] == [(3, 5)]
