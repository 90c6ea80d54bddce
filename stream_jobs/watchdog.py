"""Commit watchdog: a worker whose commits stopped behind a hole stops itself.

Faust commits an input partition up to the first record that is not acknowledged. A record
that is never acknowledged (lost between Faust's buffers and an agent) freezes the commits of
its partition, or lets them creep on an offset at a time, while the worker keeps processing
what follows: the lag grows without bound and a restart would replay everything since. The
watchdog notes the highest acknowledged offset of each partition and, when the commits have
not reached it ``jobs.commit_stall_s`` later, logs it and stops the worker
(:func:`stream_jobs.runtime.fail_stop`); the restarted worker resumes from the committed offset
with the state written before it, so nothing is lost or counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from stream_jobs.runtime import fail_stop

logger = logging.getLogger(__name__)


class Pending(NamedTuple):
    topic: str
    partition: int
    committed: int
    """The next offset to commit."""
    last_acked: int
    """The highest offset acknowledged and not committed yet."""


def pending(committed: Mapping[Any, int | None], acked: Mapping[Any, Iterable[int]]) -> list[Pending]:
    """Partitions with acknowledged records beyond their committed offset (keys: Faust TPs)."""
    out = []
    for tp, offsets in acked.items():
        at = committed.get(tp)
        last = max(offsets, default=None)
        if at is not None and last is not None and last >= at:
            out.append(Pending(tp.topic, tp.partition, at, last))
    return out


class CommitWatch:
    """For each partition, the highest acknowledged offset at some moment and that moment;
    :meth:`stuck` returns the partitions whose commits have not reached it ``stall_s`` later.

    Commits normally pass what was acknowledged within one commit interval. A partition whose
    commit stays behind a record that is never acknowledged does not, even when Faust lets the
    commit creep on an offset at a time (it counts some missing offsets as a gap of the log).
    """

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.targets: dict[tuple[str, int], tuple[int, float]] = {}

    def stuck(self, found: list[Pending], now: float) -> list[Pending]:
        out = []
        targets: dict[tuple[str, int], tuple[int, float]] = {}
        for p in found:
            key = (p.topic, p.partition)
            target = self.targets.get(key)
            if target is None or p.committed > target[0]:
                target = (p.last_acked, now)
            elif now - target[1] >= self.stall_s:
                out.append(p)
            targets[key] = target
        self.targets = targets
        return out


def install(app: Any, stall_s: float, every_s: float) -> CommitWatch:
    watch = CommitWatch(stall_s)

    async def check() -> None:
        consumer = app.consumer
        try:  # Faust keeps these on its consumer; no public accessor
            found = pending(consumer._committed_offset, consumer._acked)
        except AttributeError:
            return
        for p in watch.stuck(found, time.monotonic()):
            fail_stop(
                f"commits of {p.topic}/{p.partition} at offset {p.committed} have not reached the "
                f"records acknowledged {stall_s:.0f} s ago (up to offset {p.last_acked})"
            )

    app.timer(every_s, name="commit-watchdog")(check)
    return watch
