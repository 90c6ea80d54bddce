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
    """Reads a partition's committed offset from Kafka. Faust fills its own copy only when it
    seeks, which can be after the first records of a new assignment have arrived. One read of
    the whole group serves every partition for :data:`GROUP_OFFSETS_TTL_S`."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings = settings
        self.group = group
        self.lock = asyncio.Lock()
        self.offsets: dict[tuple[str, int], int] = {}
        self.read_at = -GROUP_OFFSETS_TTL_S

    async def __call__(self, tp: Any) -> int | None:
        async with self.lock:
            if time.monotonic() - self.read_at >= GROUP_OFFSETS_TTL_S:
                admin = AIOKafkaAdminClient(**client_kwargs(self.settings, Principal.JOBS))
                await admin.start()
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
    """An input order for one of the worker's agents."""
    reader = _readers.get(jobs.app)
    if reader is None:
        reader = _readers[jobs.app] = GroupOffsets(jobs.settings, jobs.app.conf.id)
    return InputOrder(jobs.app, reader)


class InputOrder:
    def __init__(self, app: Any, committed: Committed) -> None:
        self.app = app
        self.committed = committed
        self.next: dict[Any, int] = {}
        """Partition -> the next offset to apply."""
        self.rewinds: dict[Any, tuple[int, int]] = {}
        """Partition -> (offset rewound to, how many times)."""
        self.aside: dict[Any, dict[int, list[Any]]] = {}
        """Partition -> offset -> the copies of a record set aside (one reference held each)."""

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

    async def admit(self, events: list[Any]) -> Admitted:
        """The records of ``events`` to apply now; rewinds the partitions that have holes."""
        admitted: list[Any] = []
        adopted: list[Any] = []
        stopped: dict[Any, int] = {}
        for event in events:
            message = event.message
            tp, offset = message.tp, message.offset
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
            earliest = await consumer.earliest_offsets(tp)
        except (KafkaError, TimeoutError, OSError) as exc:
            logger.warning("no committed offset for %s/%d: %r", tp.topic, tp.partition, exc)
            return -1
        return int(earliest.get(tp) or 0)

    async def _rewind(self, tp: Any, offset: int) -> None:
        consumer = self.app.consumer
        gaps = getattr(consumer, "_gap", {}).get(tp)
        if gaps:  # the offsets Faust took as a gap of the log are to be read, not skipped
            gaps.chop(offset, max(iv.end for iv in gaps) + 1)
        try:
            await consumer.seek(tp, offset)
        except Exception:  # no longer assigned (a rebalance): it resets the positions anyway
            logger.warning("could not rewind %s/%d to %d", tp.topic, tp.partition, offset, exc_info=True)
