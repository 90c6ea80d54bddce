"""Each input partition's records reach an agent in offset order, without holes.

Faust can leave records out around a rebalance. Records fetched before Faust seeks a partition
back to its committed offset can still be delivered after that seek: they move the consumer's
read offset ahead, so the records read again from the committed offset are dropped as already
read (and the offsets between are taken as a gap of the log, committable without being
processed). And records cleared from the agent queues by a rebalance are not read again when
the partition has no committed offset yet (the seek back skips it). An agent would then apply
later records of the partition but never the missing ones, and since every state value skips
input at or below the last offset it applied, not even a restart would replay them: their
readings would be lost, and the partition's commits would stall at the first missing record.

Records at the end of what was written can go missing the same way, with no later record to
show the hole: :meth:`InputOrder.catch_up` (a timer) rewinds a partition that got nothing for a
while although the log holds records from its next offset on.

So each batch goes through :meth:`InputOrder.admit`. Per partition it knows the next offset to
apply (after an assignment: the committed offset, or the partition's first offset when nothing
is committed). A record beyond it means records are missing: the batch's records of that
partition from there on are set aside, the consumer is rewound to the first missing offset, and
the records come again in order. A record set aside stays unacknowledged until its copy read
again is acknowledged with the agent's next state write, so the offset commit can never pass a
record whose state is not written. Records below the next offset (replays) pass, and the state
skips what it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from citystream.kafka_client import Principal, client_kwargs
from citystream.settings import Settings
from stream_jobs import commits

if TYPE_CHECKING:
    from stream_jobs.app import Jobs

logger = logging.getLogger(__name__)

Committed = Callable[[Any], Awaitable[int | None]]
"""Partition -> its committed offset in the worker's group (``None``: nothing committed)."""
Earliest = Callable[[Any], Awaitable[int]]
"""Partition -> its first offset in the log."""

MAX_REWINDS = 20
"""Rewinds to the same offset before the missing records are taken as absent from the log."""


class Admitted(NamedTuple):
    events: list[Any]
    """The records to apply now, in order."""
    adopted: list[Any]
    """Records set aside earlier whose copies are among ``events``: acknowledge them with those
    (they hold one reference each, taken when they were set aside)."""


GROUP_OFFSETS_TTL_S = 10.0
"""How long one read of the group's committed offsets serves the partitions that start after it
(a rebalance starts every input partition of every agent at once; a copy a little old is safe:
an offset read earlier is never ahead of the one committed since, and the state skips replays)."""


class GroupOffsets:
    """Reads a partition's committed offset, and its first offset, from Kafka with clients of its
    own. Faust fills its copy of the committed offsets only when it seeks, which can be after the
    first records of a new assignment have arrived; and asking Faust's consumer for the first
    offsets goes through the consumer's thread, which waits for the worker during a rebalance
    while the worker waits for the agent (a deadlock). One read of the whole group, or of a
    topic's first offsets, serves every partition for :data:`GROUP_OFFSETS_TTL_S`."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings = settings
        self.group = group
        self.lock = asyncio.Lock()
        self.offsets: dict[tuple[str, int], int] = {}
        self.read_at = -GROUP_OFFSETS_TTL_S
        self.firsts: dict[tuple[str, int], int] = {}
        self.firsts_read_at: dict[str, float] = {}

    async def earliest(self, tp: Any) -> int:
        """The partition's first offset (read with every partition of its topic)."""
        async with self.lock:
            key = (tp.topic, tp.partition)
            age = time.monotonic() - self.firsts_read_at.get(tp.topic, -GROUP_OFFSETS_TTL_S)
            if key not in self.firsts or age >= GROUP_OFFSETS_TTL_S:
                consumer = AIOKafkaConsumer(
                    **client_kwargs(self.settings, Principal.JOBS), enable_auto_commit=False
                )
                await asyncio.wait_for(consumer.start(), 15)
                try:
                    await asyncio.wait_for(consumer.topics(), 15)  # the cluster's metadata
                    numbers = (consumer.partitions_for_topic(tp.topic) or set()) | {tp.partition}
                    tps = [TopicPartition(tp.topic, p) for p in sorted(numbers)]
                    firsts = await asyncio.wait_for(consumer.beginning_offsets(tps), 15)
                finally:
                    await consumer.stop()
                self.firsts.update({(t.topic, t.partition): o for t, o in firsts.items()})
                self.firsts_read_at[tp.topic] = time.monotonic()
            return self.firsts.get(key, 0)

    async def __call__(self, tp: Any) -> int | None:
        async with self.lock:
            if time.monotonic() - self.read_at >= GROUP_OFFSETS_TTL_S:
                admin = AIOKafkaAdminClient(**client_kwargs(self.settings, Principal.JOBS))
                await asyncio.wait_for(admin.start(), 15)
                try:
                    offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(self.group), 15)
                finally:
                    await admin.close()
                self.offsets = {(p.topic, p.partition): m.offset for p, m in offsets.items() if m.offset >= 0}
                self.read_at = time.monotonic()
        return self.offsets.get((tp.topic, tp.partition))


_readers: weakref.WeakKeyDictionary[Any, GroupOffsets] = weakref.WeakKeyDictionary()
"""App -> the one reader of its group's offsets, shared by its agents."""


def for_jobs(jobs: Jobs) -> InputOrder:
    """An input order for one of the worker's agents; a timer of the app catches up its
    partitions whose last records are not delivered (:meth:`InputOrder.catch_up`)."""
    reader = _readers.get(jobs.app)
    if reader is None:
        reader = _readers[jobs.app] = GroupOffsets(jobs.settings, jobs.app.conf.id)
    order = InputOrder(jobs.app, reader, reader.earliest)
    quiet_s = max(jobs.settings.jobs.idle_source_s, 1.0)

    async def catch_up() -> None:
        try:
            await order.catch_up(quiet_s)
        except Exception:  # a timer must keep running; the next round tries again
            logger.exception("catching up the input partitions failed")

    jobs.app.timer(quiet_s / 2, name=f"input-order-{id(order):x}")(catch_up)
    return order


class InputOrder:
    def __init__(self, app: Any, committed: Committed, earliest: Earliest) -> None:
        self.app = app
        self.committed = committed
        self.earliest = earliest
        self.next: dict[Any, int] = {}
        """Partition -> the next offset to apply."""
        self.rewinds: dict[Any, tuple[int, int]] = {}
        """Partition -> (offset rewound to, how many times)."""
        self.aside: dict[Any, dict[int, list[Any]]] = {}
        """Partition -> offset -> the copies of a record set aside (one reference held each)."""
        self.seen_at: dict[Any, float] = {}
        """Partition -> when a record of it last came (or the partition was last caught up)."""

    def reset(self) -> None:
        """Forget the positions (on a rebalance the consumer seeks to the committed offsets)
        and release the records set aside, unprocessed: they are read again from the committed
        offset, so they must not count as acknowledged."""
        consumer = self.app.consumer
        for kept in self.aside.values():
            for copies in kept.values():
                for event in copies:
                    commits.release(consumer, event.message)
        self.next.clear()
        self.rewinds.clear()
        self.aside.clear()
        self.seen_at.clear()

    async def admit(self, events: list[Any]) -> Admitted:
        """The records of ``events`` to apply now; rewinds the partitions that have holes."""
        admitted: list[Any] = []
        adopted: list[Any] = []
        stopped: dict[Any, int] = {}
        now = time.monotonic()
        for event in events:
            message = event.message
            tp, offset = message.tp, message.offset
            self.seen_at[tp] = now
            if tp in stopped:
                self._set_aside(tp, event)
                continue
            expected = self.next.get(tp)
            if expected is None:
                expected = await self._start(tp)
                if expected < 0:
                    expected = offset
                logger.info(
                    "%s/%d starts at offset %d (first record delivered: %d)",
                    tp.topic,
                    tp.partition,
                    expected,
                    offset,
                )
            if offset > expected:
                at, times = self.rewinds.get(tp, (expected, 0))
                times = times + 1 if at == expected else 1
                if times <= MAX_REWINDS:
                    self.rewinds[tp] = (expected, times)
                    self.next[tp] = expected
                    stopped[tp] = expected
                    self._set_aside(tp, event)
                    continue
                logger.error(
                    "offsets %d to %d of %s/%d not delivered after %d rewinds; taken as absent",
                    expected,
                    offset - 1,
                    tp.topic,
                    tp.partition,
                    MAX_REWINDS,
                )
                commits.mark_absent(self.app.consumer, tp, expected, offset)
            if offset >= expected:
                self.next[tp] = offset + 1
                self.rewinds.pop(tp, None)
            adopted.extend(self.aside.get(tp, {}).pop(offset, ()))
            admitted.append(event)
        for tp, offset in stopped.items():
            logger.warning(
                "records missing from %s/%d at offset %d: rewinding the consumer",
                tp.topic,
                tp.partition,
                offset,
            )
            await self._rewind(tp, offset)
        return Admitted(admitted, adopted)

    async def catch_up(self, quiet_s: float) -> list[Any]:
        """Rewind the partitions whose last records are not coming: nothing arrived for
        ``quiet_s`` although the log holds records from the next offset on. Faust drops the
        records it fetched while its flow was suspended for a rebalance or a recovery, counting
        on its seek back to the committed offset, which does nothing when the partition has no
        committed offset yet. A record missing before others shows up as a hole in
        :meth:`admit`; missing at the end of what was written, only here. The partitions
        rewound."""
        consumer = self.app.consumer
        if not getattr(consumer, "flow_active", True):  # a rebalance or recovery: it seeks
            return []
        now = time.monotonic()
        rewound = []
        for tp, expected in list(self.next.items()):
            if now - self.seen_at.get(tp, now) < quiet_s or tp in self.aside:
                continue
            try:
                highwater = consumer.highwater(tp)
            except (KeyError, AttributeError, AssertionError):  # no longer assigned
                continue
            if highwater is None or expected >= highwater:
                continue
            self.seen_at[tp] = now  # once per quiet spell
            logger.warning(
                "offsets %d to %d of %s/%d not delivered for %.0f s: rewinding the consumer",
                expected,
                highwater - 1,
                tp.topic,
                tp.partition,
                quiet_s,
            )
            await self._rewind(tp, expected)
            rewound.append(tp)
        return rewound

    def _set_aside(self, tp: Any, event: Any) -> None:
        event.message.incref()
        self.aside.setdefault(tp, {}).setdefault(event.message.offset, []).append(event)

    async def _start(self, tp: Any) -> int:
        """Where a newly assigned partition's records should start: its committed offset, or
        its first offset when nothing is committed; -1 when Kafka cannot say (the first record
        then counts as the start)."""
        consumer = self.app.consumer
        known = getattr(consumer, "_committed_offset", {}).get(tp)  # Faust keeps no public copy
        if known:
            return int(known)
        try:
            committed = await self.committed(tp)
            if committed is not None:
                return committed
            return await self.earliest(tp)
        except (KafkaError, TimeoutError, OSError) as exc:
            logger.warning("no committed offset for %s/%d: %r", tp.topic, tp.partition, exc)
            return -1

    async def _rewind(self, tp: Any, offset: int) -> None:
        consumer = self.app.consumer
        gaps = getattr(consumer, "_gap", {}).get(tp)
        if gaps:  # the offsets Faust took as a gap of the log are to be read, not skipped
            gaps.chop(offset, max(iv.end for iv in gaps) + 1)
        try:
            await consumer.seek(tp, offset)
        except Exception:  # no longer assigned (a rebalance): it resets the positions anyway
            logger.warning("could not rewind %s/%d to %d", tp.topic, tp.partition, offset, exc_info=True)
