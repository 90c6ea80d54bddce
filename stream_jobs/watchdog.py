"""Commit watchdog: a worker whose commits stopped behind a hole stops itself.

Faust commits an input partition up to the first record that is not acknowledged. A record
that is never acknowledged (lost between Faust's buffers and an agent) freezes the commits of
its partition for good while the worker keeps processing what follows: the lag grows without
bound and a restart would replay everything since. The watchdog looks for that state (records
acknowledged beyond a gap at the committed offset) and, when a partition's gap outlives
``jobs.commit_stall_s``, logs it and stops the worker (:func:`stream_jobs.runtime.fail_stop`);
the restarted worker resumes from the committed offset with the state written before it, so
nothing is lost or counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from stream_jobs.runtime import fail_stop

logger = logging.getLogger(__name__)


class Hole(NamedTuple):
    topic: str
    partition: int
    committed: int
    """The next offset to commit: the first record not acknowledged."""
    first_acked: int
    acked: int
    """How many records beyond the hole are acknowledged and waiting."""


def holes(committed: Mapping[Any, int | None], acked: Mapping[Any, Iterable[int]]) -> list[Hole]:
    """Partitions whose acknowledged records start beyond the committed offset (keys: Faust TPs)."""
    out = []
    for tp, offsets in acked.items():
        done = list(offsets)
        at = committed.get(tp)
        if at is None or not done:
            continue
        first = min(done)
        if first > at + 1:  # Faust itself tolerates a gap of one record
            out.append(Hole(tp.topic, tp.partition, at, first, len(done)))
    return out


class CommitWatch:
    """Remembers since when each partition has had a hole; :meth:`stuck` returns the holes of
    the partitions that have had one for ``stall_s`` without a break. A commit that creeps on
    (Faust counts some offsets of a hole as a gap of the log) does not reset the clock: only
    a sample without a hole does."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.since: dict[tuple[str, int], float] = {}

    def stuck(self, found: list[Hole], now: float) -> list[Hole]:
        holes = {(h.topic, h.partition): h for h in found}
        self.since = {k: self.since.get(k, now) for k in holes}
        return [h for k, h in holes.items() if now - self.since[k] >= self.stall_s]


def install(app: Any, stall_s: float, every_s: float) -> CommitWatch:
    watch = CommitWatch(stall_s)

    async def check() -> None:
        consumer = app.consumer
        try:  # Faust keeps these on its consumer; no public accessor
            found = holes(consumer._committed_offset, consumer._acked)
        except AttributeError:
            return
        for hole in watch.stuck(found, time.monotonic()):
            fail_stop(
                f"commits of {hole.topic}/{hole.partition} stuck at offset {hole.committed} for "
                f"{stall_s:.0f} s with {hole.acked} records acknowledged from offset {hole.first_acked}"
            )

    app.timer(every_s, name="commit-watchdog")(check)
    return watch
