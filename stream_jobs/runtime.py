"""What the agents share: topics, tables, counters, and the two habits every agent follows.

1. Outputs first, state second. An agent sends the records a batch produced, waits until Kafka
   has them, and only then writes the state the batch left behind (to the table's changelog).
   Faust flushes the producer before it commits offsets, so after a crash the restored state is
   never ahead of what was sent: the records after the committed offset are processed again,
   and every state value remembers the last input offset it applied, so nothing counts twice.
2. A bad record never stops an agent: it goes to ``telemetry.dlq`` with its reason and its
   ``topic/partition/offset``, is logged with the same, and is counted.

Table values are written with :func:`persist` under an explicit changelog partition (the
partition of the input they belong to), because a batch mixes partitions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import msgspec

from citystream import codec
from citystream.model import DlqRecord

logger = logging.getLogger(__name__)

STAGE = "stream_jobs"
STATE_WAIT_WARN_S = 30.0
"""How long state records may take to reach Kafka before the wait is logged as an error."""
EXIT_FAILED = 70
"""The worker's exit code when it stops itself (a failed write, stuck commits): its supervisor
starts it again, and it resumes from the committed offsets and the state written before them."""


class Topics(NamedTuple):
    raw: Any
    series: Any
    signals: Any
    commands: Any
    agg: Any
    alerts: Any
    events: Any
    quality: Any
    dlq: Any


class Tables(NamedTuple):
    devices: Any
    """device_id -> DeviceRecord; ``~partition/{p}`` -> PartitionMark (raw partitions)."""
    series: Any
    """series key -> SeriesRecord; ``~partition/{p}`` -> SeriesPartition (series partitions)."""
    alerts: Any
    """alert key -> Track; ``~silences/{p}`` -> silences of that signals partition."""


class Stats:
    """Counters of what the jobs did, logged every minute and readable in tests."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()

    def add(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] += n

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))


def now_ms() -> int:
    return int(time.time() * 1000)


class StateBuffer:
    """Changed table values, written together every ``flush_s``, and the input events behind them.

    The events of a batch are held (their acknowledgement deferred) until the state they left
    behind has been written: Faust commits only acknowledged offsets, so after a crash the
    restored state is never behind the committed offset (nor ahead of it by more than the
    events processed again, which every state value skips by its last input offset).
    """

    def __init__(self, table: Any, flush_s: float) -> None:
        self.table = table
        self.flush_s = flush_s
        self.dirty: dict[str, tuple[int, Callable[[], Any]]] = {}
        self.held: list[Any] = []
        self.flushed = time.monotonic()

    def hold(self, events: Iterable[Any]) -> None:
        """Defer the acknowledgement of ``events`` (Faust acks them once at the end of the batch)."""
        for event in events:
            event.message.incref()
            self.held.append(event)

    def adopt(self, events: Iterable[Any]) -> None:
        """Acknowledge ``events``, which already hold a reference, with the next write."""
        self.held.extend(events)

    def changed(self, partition: int, key: str, value: Callable[[], Any]) -> None:
        """``key`` (of changelog partition ``partition``) is to be written; ``value`` makes it.

        Values are written in the order of their last change, so a partition's progress mark,
        changed after the values of the batch it covers, reaches the changelog after them: a
        worker killed half-way through a write restores a mark that never claims input whose
        state is missing (Kafka keeps the order of one producer's records in a partition).
        """
        self.dirty.pop(key, None)
        self.dirty[key] = (partition, value)

    def put(self, partition: int, key: str, value: Any) -> None:
        """``key`` is to be written with ``value`` as it will be at the write."""
        self.changed(partition, key, lambda: value)

    def delete(self, partition: int, key: str) -> None:
        """``key`` (of changelog partition ``partition``) is to be deleted."""
        self.changed(partition, key, _nothing)

    def due(self) -> bool:
        return time.monotonic() - self.flushed >= self.flush_s

    async def flush(self, consumer: Any) -> int:
        """Write every changed value, wait until Kafka has them all, then acknowledge the held
        events; returns the count written.

        The wait matters: Faust's flush before a commit gives up on a slow producer buffer, so
        an acknowledged offset could otherwise be committed before the state it depends on.
        """
        dirty, self.dirty = self.dirty, {}
        held, self.held = self.held, []
        self.flushed = time.monotonic()
        written = [persist(self.table, partition, key, value()) for key, (partition, value) in dirty.items()]
        pending = {asyncio.ensure_future(w) for w in written}
        waited = 0.0
        while pending:
            _, pending = await asyncio.wait(pending, timeout=STATE_WAIT_WARN_S)
            waited += STATE_WAIT_WARN_S
            if pending:  # the input stays unacknowledged (and is replayed after a restart)
                logger.error(
                    "%d of %d state records not in Kafka after %.0f s; %d input records held",
                    len(pending),
                    len(written),
                    waited,
                    len(held),
                )
        for done in written:
            await done  # raises what a failed write raised
        for event in held:
            event.message.ack(consumer)
        return len(dirty)


def persist(table: Any, partition: int, key: str, value: Any) -> Awaitable[Any]:
    """Set a table value and log it to the changelog partition ``partition``; ``None`` deletes
    the key (a tombstone, which compaction then removes).

    The changelog gets the value's bytes as they are now: Faust serialises a buffered changelog
    record only when it sends it, and the agents keep mutating their working copies, so a lazy
    record could carry the state of a later batch whose outputs are not in Kafka yet (a restarted
    worker would then skip that batch's input as already done). The table keeps the same bytes
    (the agents work on their own copies and read the table only to load them: bytes are a
    fraction of the objects' memory); :func:`stored` reads them.
    """
    if value is None:
        table.data.pop(key, None)
        deleted: Awaitable[Any] = table.send_changelog(partition, key, None)
        return deleted
    raw = msgspec.Raw(codec.encode(value))
    table.data[key] = raw
    sent: Awaitable[Any] = table.send_changelog(partition, key, raw)
    return sent


def stored(value: Any) -> Any:
    """A table value as plain data: what :func:`persist` wrote (bytes) or what Faust restored
    from the changelog (already decoded); ``None`` when the key was deleted."""
    if isinstance(value, msgspec.Raw):
        return _table_decoder.decode(value)
    return value


_table_decoder = msgspec.json.Decoder()


def _nothing() -> None:
    return None


def fail_stop(what: str, exc: BaseException | None = None) -> None:
    """Stop the worker at once after a failure it cannot repair in place (a record Kafka refused
    after its retries, commits that stopped moving). Nothing is lost: the input behind anything
    unwritten is not committed, so the restarted worker processes it again from the state written
    before it. A worker that carried on instead would hold state ahead of its outputs."""
    logger.critical("stopping the worker: %s", what, exc_info=exc)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_FAILED)


async def guarded(name: str, step: Awaitable[None]) -> None:
    """Run one agent step; a failure that escapes it (Kafka refused an output or a state write:
    every bad input record is handled inside) stops the worker, see :func:`fail_stop`."""
    try:
        await step
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        fail_stop(f"{name} failed: {type(exc).__name__}: {exc}", exc)


async def send_all(sends: Iterable[Awaitable[Any]]) -> None:
    """Enqueue every record, then wait until Kafka acknowledged them all."""
    pending = [await s for s in sends]
    if pending:
        await asyncio.gather(*pending)


def source_of(message: Any) -> str:
    return f"{message.topic}/{message.partition}/{message.offset}"


def dlq_record(message: Any, reason: str, detail: str, device_id: str | None = None) -> DlqRecord:
    value = message.value
    return DlqRecord(
        reason=reason,
        detail=detail[:500],
        stage=STAGE,
        source=source_of(message),
        payload=value if isinstance(value, bytes) else codec.encode(value),
        received_ms=now_ms(),
        device_id=device_id,
    )


def reject(
    stats: Stats,
    topics: Topics,
    message: Any,
    reason: str,
    exc: BaseException | str,
    *,
    device_id: str | None = None,
) -> Awaitable[Any]:
    """Log, count and dead-letter one bad input record; returns the send to await."""
    detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    logger.warning(
        "rejected record topic=%s partition=%s offset=%s reason=%s: %s",
        message.topic,
        message.partition,
        message.offset,
        reason,
        detail,
    )
    stats.add(f"dlq_{reason}")
    key = (device_id or message.topic).encode()
    send: Awaitable[Any] = topics.dlq.send(
        key=key, value=codec.encode(dlq_record(message, reason, detail, device_id))
    )
    return send
