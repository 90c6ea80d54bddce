"""Offset commits that never pass an unprocessed record and never stall behind a processed one.

Faust commits each input partition up to the end of the first run of consecutive acknowledged
offsets (``Consumer._new_offset``). Three habits of that bookkeeping go wrong around rebalances
and restarts, which is when a smart-city worker most needs them right:

1. The offsets Faust takes as a gap of the log (records it did not see, seen as a jump of the
   read offset) are merged into the list of acknowledged offsets without removing the offsets
   already there. Every offset in both then appears twice, each duplicate breaks the run, and
   each commit passes one offset only: after a restart with a backlog (records delivered, then
   delivered again after the seek to the committed offset) a partition's commit crept on one
   offset per commit interval behind thousands of records long processed, and its lag did not
   drain.
2. A gap recorded on a jump of the read offset includes the record that was delivered (the gap
   runs to its offset inclusive), so a commit could pass a record still being processed.
3. A run that starts one offset after the committed offset is committed as if that first offset
   were a gap of the log, even when its record is still being processed; and records
   acknowledged after a rebalance for an earlier assignment (Faust acknowledges the records it
   skips because they were fetched before the rebalance) count as done for the new one.

:class:`Consumer` replaces that bookkeeping: the commit advances from the committed offset over
offsets that are acknowledged or known absent from the log (:func:`next_commit`), gaps exclude
the record delivered, and an acknowledgement from an earlier assignment does not count (the
record is delivered again from the committed offset). Offsets that
:class:`~stream_jobs.input_order.InputOrder` gives up on after its rewinds are recorded as absent
with :func:`mark_absent`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock


def next_commit(committed: int | None, acked: Iterable[int], absent: Iterable[tuple[int, int]]) -> int | None:
    """The offset to commit next, or ``None`` when the commit cannot move.

    ``committed`` is the next offset to process (the committed offset; ``None`` when nothing is
    committed, and then the lowest acknowledged offset is the start); ``acked`` are the offsets
    whose records are processed (in any order, repeats allowed); ``absent`` are half-open ranges
    ``[begin, end)`` of offsets the log does not hold. The commit moves over consecutive offsets
    that are acknowledged or absent, and stops at the first that is neither.
    """
    done = set(acked)
    if not done:
        return None
    start = committed if committed is not None else min(done)
    spans = sorted((begin, end) for begin, end in absent if end > start)
    at, i = start, 0
    while True:
        if at in done:
            at += 1
            continue
        while i < len(spans) and spans[i][1] <= at:
            i += 1
        if i < len(spans) and spans[i][0] <= at:
            at = spans[i][1]
            continue
        break
    return at if at > start else None


def mark_absent(consumer: Any, tp: Any, begin: int, end: int) -> None:
    """Record the offsets ``[begin, end)`` of ``tp`` as absent from the log, so that commits
    pass them (Faust keeps one interval tree of them per partition)."""
    gaps = getattr(consumer, "_gap", None)
    if gaps is not None and end > begin:
        gaps[tp].addi(begin, end)
        gaps[tp].merge_overlaps()


def release(consumer: Any, message: Any) -> None:
    """Let go of ``message`` without acknowledging it: its record is to be read again and
    processed, so this copy must never make its offset committable (later acknowledgements of
    it, by whoever still holds a reference, are no-ops)."""
    with ack_lock:
        message.decref()
        _disregard(consumer, message)


def _disregard(consumer: Any, message: Any) -> None:
    """Mark ``message`` acknowledged without telling the consumer's commit bookkeeping."""
    message.acked = True
    unacked = getattr(consumer, "_unacked_messages", None)
    if unacked is not None:
        unacked.discard(message)


class Consumer(faust_aiokafka.Consumer):
    """Faust's Kafka consumer with the commit bookkeeping of this module."""

    logger = logging.getLogger("faust.transport.drivers")  # log as Faust's consumer does

    def _new_offset(self, tp: Any) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        committed = self._committed_offset[tp]
        offset = next_commit(committed, acked, ((iv.begin, iv.end) for iv in gaps))
        floor = offset if offset is not None else committed
        if floor is not None:  # forget what the commit has passed (and repeats)
            kept = sorted({o for o in acked if o >= floor})
            acked[:] = kept
            index = self._acked_index[tp]
            index.clear()
            index.update(kept)
            if gaps:
                gaps.chop(0, floor)
        return offset

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        # Faust passes the offset of the record it is delivering as ``offset_to``: that record
        # is not absent, it is about to be processed.
        await super()._add_gap(tp, offset_from, offset_to - 1)

    def ack(self, message: Any) -> bool:
        generation = getattr(message, "generation_id", None)
        if generation is not None and generation != self.app.consumer_generation_id:
            # Read before the last rebalance: the partition is read again from its committed
            # offset, so this acknowledgement says nothing about the current assignment.
            with ack_lock:
                _disregard(self, message)
            return False
        return bool(super().ack(message))


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class App(faust.App):
    """The Faust app of the stream jobs, on the consumer of this module."""

    logger = logging.getLogger("faust.app")  # log as Faust's app does

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
