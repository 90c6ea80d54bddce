"""InputOrder: an agent gets each partition's records in offset order, or the consumer is rewound."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any, NamedTuple

from intervaltree import IntervalTree

from stream_jobs.input_order import MAX_REWINDS, InputOrder


class TP(NamedTuple):
    topic: str
    partition: int


RAW = TP("telemetry.raw", 0)
OTHER = TP("telemetry.raw", 1)


class FakeMessage:
    """Faust's reference counting: acknowledged to the consumer when the count drops to zero."""

    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self.offset = tp, offset
        self.refcount = 1
        self.acked = False

    def incref(self) -> None:
        self.refcount += 1

    def decref(self) -> int:
        self.refcount = max(self.refcount - 1, 0)
        return self.refcount

    def ack(self, consumer: FakeConsumer | None) -> None:
        if not self.acked and self.decref() == 0:
            self.acked = True
            if consumer is not None:
                consumer.acks.append((self.tp, self.offset))


class FakeConsumer:
    def __init__(self, committed: dict[TP, int | None], earliest: int = 0) -> None:
        self.acks: list[tuple[TP, int]] = []
        """The offsets acknowledged to the consumer (committable)."""
        self._gap: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)
        self._unacked_messages: set[Any] = set()
        self._committed_offset = committed
        """Faust's copy of the committed offsets."""
        self.group: dict[TP, int] = {tp: o for tp, o in committed.items() if o is not None}
        """The group's committed offsets in Kafka."""
        self.earliest = earliest
        self.seeks: list[tuple[TP, int]] = []

        self.highwaters: dict[TP, int] = {}
        self.flow_active = True

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp)


def in_order(consumer: FakeConsumer) -> InputOrder:
    async def committed(tp: Any) -> int | None:
        return consumer.group.get(tp)

    async def earliest(tp: Any) -> int:
        return consumer.earliest

    return InputOrder(SimpleNamespace(consumer=consumer), committed, earliest)


def events(tp: TP, *offsets: int) -> list[Any]:
    return [SimpleNamespace(message=FakeMessage(tp, o)) for o in offsets]


def offsets(evs: list[Any]) -> list[int]:
    return [e.message.offset for e in evs]


def faust_done(evs: list[Any]) -> None:
    """What Faust does at the end of a batch: drop its own reference."""
    for e in evs:
        e.message.ack(None)


async def test_records_in_order_from_the_committed_offset_pass() -> None:
    consumer = FakeConsumer({RAW: 7})
    order = in_order(consumer)
    assert offsets((await order.admit(events(RAW, 7, 8, 9))).events) == [7, 8, 9]
    assert offsets((await order.admit(events(RAW, 10))).events) == [10]
    assert consumer.seeks == []


async def test_a_hole_rewinds_and_what_was_set_aside_waits_for_its_copy() -> None:
    """Faust delivered 9.. but never 7 and 8 (the committed offset is 7)."""
    consumer = FakeConsumer({RAW: 7, OTHER: 3})
    order = in_order(consumer)
    batch = [*events(RAW, 9, 10), *events(OTHER, 3, 4)]
    first = await order.admit(batch)
    faust_done(batch)
    assert offsets(first.events) == [3, 4]  # the other partition goes on
    assert first.adopted == []
    assert consumer.seeks == [(RAW, 7)]
    aside = batch[:2]
    assert not any(e.message.acked for e in aside)  # the commit cannot pass them
    # The records come again from 7, in order; the copies set aside go with their new copies.
    again = await order.admit(events(RAW, 7, 8, 9, 10, 11))
    assert offsets(again.events) == [7, 8, 9, 10, 11]
    assert again.adopted == aside
    for e in again.adopted:
        e.message.ack(None)  # acknowledged with the state write after the batch
    assert all(e.message.acked for e in aside)
    assert consumer.seeks == [(RAW, 7)]


async def test_nothing_committed_starts_from_the_first_offset() -> None:
    """Records cleared by a rebalance before anything was committed are not read again by Faust."""
    consumer = FakeConsumer({RAW: None}, earliest=0)
    order = in_order(consumer)
    assert (await order.admit(events(RAW, 26, 27))).events == []
    assert consumer.seeks == [(RAW, 0)]


async def test_replays_below_the_next_offset_pass_to_the_state_which_skips_them() -> None:
    consumer = FakeConsumer({RAW: 5})
    order = in_order(consumer)
    await order.admit(events(RAW, 5, 6, 7))
    assert offsets((await order.admit(events(RAW, 6, 7, 8))).events) == [6, 7, 8]
    assert consumer.seeks == []


async def test_a_rebalance_starts_again_from_the_committed_offset_and_releases_what_was_set_aside() -> None:
    consumer = FakeConsumer({RAW: 5})
    order = in_order(consumer)
    await order.admit(events(RAW, 5, 6))
    aside = events(RAW, 9)
    await order.admit(aside)
    faust_done(aside)
    order.reset()
    assert consumer.acks == []  # never processed: the commit must not pass it
    aside[0].message.ack(consumer)
    assert consumer.acks == []  # a late acknowledgement of the released copy counts neither
    consumer._committed_offset[RAW] = 40
    assert offsets((await order.admit(events(RAW, 40))).events) == [40]
    assert consumer.seeks == [(RAW, 7)]


async def test_offsets_missing_from_the_log_are_accepted_after_the_rewinds() -> None:
    consumer = FakeConsumer({RAW: 3})
    order = in_order(consumer)
    for _ in range(MAX_REWINDS):
        assert (await order.admit(events(RAW, 5))).events == []
    last = await order.admit(events(RAW, 5, 6))
    assert offsets(last.events) == [5, 6]
    assert len(last.adopted) == MAX_REWINDS
    assert len(consumer.seeks) == MAX_REWINDS
    # The commit may pass offsets 3 and 4: Faust counts them as a gap of the log.
    assert [(iv.begin, iv.end) for iv in consumer._gap[RAW]] == [(3, 5)]


async def test_a_partition_faust_has_not_sought_yet_starts_from_the_group_offset_in_kafka() -> None:
    """Records of a new assignment can arrive before Faust has its copy of the committed offsets."""
    consumer = FakeConsumer({RAW: None})
    consumer.group[RAW] = 9000
    order = in_order(consumer)
    assert offsets((await order.admit(events(RAW, 9000, 9001))).events) == [9000, 9001]
    assert consumer.seeks == []


async def test_a_partition_whose_last_records_do_not_come_is_rewound_once_per_quiet_spell() -> None:
    """Faust dropped 10..14 (fetched while its flow was suspended) and, nothing being committed,
    never read them again; no later record shows the hole."""
    consumer = FakeConsumer({RAW: None, OTHER: None}, earliest=0)
    order = in_order(consumer)
    await order.admit([*events(RAW, *range(10)), *events(OTHER, 0, 1)])
    consumer.highwaters = {RAW: 15, OTHER: 2}  # OTHER is read to its end
    assert await order.catch_up(quiet_s=60.0) == []  # not quiet long enough
    assert await order.catch_up(quiet_s=0.0) == [RAW]
    assert consumer.seeks == [(RAW, 10)]
    assert await order.catch_up(quiet_s=60.0) == []  # once per quiet spell
    again = await order.admit(events(RAW, 10, 11, 12, 13, 14))
    assert offsets(again.events) == [10, 11, 12, 13, 14]
    assert await order.catch_up(quiet_s=0.0) == []
    consumer.flow_active = False  # a rebalance: Faust seeks the partitions itself
    consumer.highwaters[RAW] = 20
    assert await order.catch_up(quiet_s=0.0) == []
