"""Broker failover drill on a local Kafka cluster: kill a broker mid-stream, measure, verify.

A producer (``acks=all``, idempotent) sends a numbered stream per key to a topic with
replication factor 3 and min in-sync replicas 2. Mid-stream one broker gets SIGKILL. The drill
measures how long until every partition that broker led has a new leader among the survivors
(from the survivors' metadata), how long the producer went without an acknowledgement, then
reads the topic back and checks that every acknowledged ``key:seq`` is there. Optionally it
restarts the broker and measures until it is back in every partition's in-sync replicas.

The probes serve larger drills too (``tests/integration/pipeline_chaos.py`` runs the pipeline's
own processes on the cluster): :meth:`MetadataProbe.layouts` follows several topics at once,
:class:`GroupProbe` follows a consumer group's members, their partitions and its committed
offsets (to time a rebalance after a worker died, and the moment every partition moves again).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.metadata import MetadataRequest

from citystream.errors import StackError
from citystream.kafka_client import Principal, client_kwargs
from citystream.settings import Settings
from stack.kafka_cluster import KafkaCluster

T = TypeVar("T")

logger = logging.getLogger(__name__)

Layout = dict[int, tuple[int, tuple[int, ...]]]
"""partition -> (leader node id, in-sync replica node ids)."""
TopicLayout = dict[tuple[str, int], tuple[int, tuple[int, ...]]]
"""(topic, partition) -> (leader node id, in-sync replica node ids)."""


@dataclass
class FailoverReport:
    victim: int
    partitions_led: list[int]
    """Partitions the victim led when it was killed."""
    sent: int = 0
    acknowledged: int = 0
    failed_sends: int = 0
    read_back: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: int = 0
    leader_failover_s: float | None = None
    """Kill -> every partition led by a survivor (per the survivors' metadata)."""
    producer_stall_s: float = 0.0
    """Longest time without an acknowledgement, from the kill on."""
    isr_after: Layout = field(default_factory=dict)
    rejoin_s: float | None = None
    """Restart -> the victim is in every partition's in-sync replicas again."""

    def summary(self) -> str:
        rejoin = f"{self.rejoin_s:.1f} s" if self.rejoin_s is not None else "-"
        failover = f"{self.leader_failover_s:.1f} s" if self.leader_failover_s is not None else "never"
        return (
            f"killed node {self.victim} (leader of partitions {self.partitions_led}); "
            f"new leaders after {failover}; longest producer stall {self.producer_stall_s:.1f} s; "
            f"sent {self.sent}, acknowledged {self.acknowledged}, failed {self.failed_sends}, "
            f"read back {self.read_back}, missing {len(self.missing)}, duplicates {self.duplicates}; "
            f"restarted node back in all ISRs after {rejoin}"
        )


class MetadataProbe:
    """Partition leaders and ISRs as one chosen broker sees them."""

    def __init__(self, cluster: KafkaCluster) -> None:
        self.cluster = cluster
        kwargs = client_kwargs(cluster.settings, Principal.ADMIN)
        self._client = AIOKafkaClient(request_timeout_ms=3000, **kwargs)

    async def start(self) -> None:
        await self._client.bootstrap()

    async def close(self) -> None:
        await self._client.close()

    async def layout(self, topic: str, node_id: int) -> Layout:
        return {p: where for (_, p), where in (await self.layouts([topic], node_id)).items()}

    async def layouts(self, topics: list[str], node_id: int) -> TopicLayout:
        """Leaders and ISRs of every partition of ``topics`` as ``node_id`` sees them."""
        response = await self._client.send(node_id, MetadataRequest(topics))
        out: TopicLayout = {}
        for t in response.to_object()["topics"]:
            for p in t["partitions"]:
                out[t["topic"], p["partition"]] = (p["leader"], tuple(sorted(p["isr"])))
        return out


@dataclass(frozen=True)
class GroupView:
    """One look at a consumer group: its members' partitions and its committed offsets."""

    state: str
    members: dict[str, frozenset[TopicPartition]]
    """Member id -> the partitions assigned to it."""
    committed: dict[TopicPartition, int]

    def owners(self, topic: str) -> dict[str, set[int]]:
        """Member id -> the partitions of ``topic`` it owns."""
        return {m: {tp.partition for tp in tps if tp.topic == topic} for m, tps in self.members.items()}


class GroupProbe:
    """A consumer group seen through the admin API: members, assignments, committed offsets.

    The assignment is read from the group coordinator (``DescribeGroups``) in the consumer
    protocol's wire form, which Faust's assignor uses too.
    """

    def __init__(self, settings: Settings, group: str, request_timeout_s: float = 5.0) -> None:
        self.group = group
        self.timeout_s = request_timeout_s
        self._admin = AIOKafkaAdminClient(
            request_timeout_ms=int(request_timeout_s * 1000), **client_kwargs(settings, Principal.ADMIN)
        )

    async def start(self) -> None:
        await self._admin.start()

    async def close(self) -> None:
        await self._admin.close()

    async def coordinator(self) -> int:
        node: int = await asyncio.wait_for(self._admin.find_coordinator(self.group), self.timeout_s)
        return node

    async def view(self) -> GroupView:
        responses = await asyncio.wait_for(self._admin.describe_consumer_groups([self.group]), self.timeout_s)
        state, members = "Dead", {}
        for response in responses:
            for g in response.to_object()["groups"]:
                if g["error_code"]:
                    raise for_code(g["error_code"])(f"describing group {self.group}")
                state = g["state"]
                for m in g["members"]:
                    raw = m["member_assignment"]
                    tps = ConsumerProtocolMemberAssignment.decode(raw).partitions() if raw else []
                    members[m["member_id"]] = frozenset(tps)
        offsets = await asyncio.wait_for(self._admin.list_consumer_group_offsets(self.group), self.timeout_s)
        committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        return GroupView(state, members, committed)

    async def wait(
        self, holds: Callable[[GroupView], bool], timeout_s: float, interval_s: float = 0.2
    ) -> tuple[float, GroupView] | None:
        """Poll until ``holds``; (seconds waited, the view) or ``None`` (errors count as "not yet")."""
        return await poll_until(self.view, holds, timeout_s, interval_s=interval_s)


async def _read_back(
    kwargs: dict[str, Any], topic: str, partitions: list[int], expect: int, timeout_s: float
) -> list[bytes]:
    consumer = AIOKafkaConsumer(**kwargs, enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    values: list[bytes] = []
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    try:
        await consumer.start()
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while len(values) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            values += [r.value for recs in batch.values() for r in recs if r.value is not None]
        # Drain what is left: duplicates, and records of earlier drills on the same topic.
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            if not batch:
                break
            values += [r.value for recs in batch.values() for r in recs if r.value is not None]
    finally:
        await consumer.stop()
    return values


class _Stream:
    """A numbered stream per key at a fixed rate; remembers what was sent and when acks came."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, rate: int, keys: int) -> None:
        self.producer, self.topic, self.rate, self.keys = producer, topic, rate, keys
        self.run_id = secrets.token_hex(4)
        """Prefix of this drill's values, so that earlier drills on the topic do not count."""
        self.acks: list[float] = []
        self.pending: list[asyncio.Future[Any]] = []
        self.expected: set[bytes] = set()
        self.stop = asyncio.Event()

    def _on_ack(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.acks.append(time.monotonic())

    async def run(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            for k in range(self.keys):
                value = f"{self.run_id}:dev-{k}:{seq}".encode()
                fut = await self.producer.send(self.topic, value, key=f"dev-{k}".encode())
                fut.add_done_callback(self._on_ack)
                self.pending.append(fut)
                self.expected.add(value)
            seq += 1
            next_at += self.keys / self.rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def longest_gap_after(self, t0: float) -> float:
        edges = [t0, *sorted(t for t in self.acks if t >= t0)]
        return max((b - a for a, b in itertools.pairwise(edges)), default=0.0)


async def _verify(
    report: FailoverReport, stream: _Stream, kwargs: dict[str, Any], partitions: list[int], timeout_s: float
) -> None:
    """Read the topic back: what of this drill's stream is missing, what came twice."""
    everything = await _read_back(kwargs, stream.topic, partitions, len(stream.expected), timeout_s)
    values = [v for v in everything if v.startswith(f"{stream.run_id}:".encode())]
    report.read_back = len(values)
    got = Counter(values)
    report.missing = sorted(v.decode() for v in stream.expected - set(got))
    report.duplicates = sum(c - 1 for c in got.values() if c > 1)


async def _wait_layout(
    probe: MetadataProbe, topic: str, node_id: int, holds: Callable[[Layout], bool], timeout_s: float
) -> tuple[float, Layout] | None:
    """Poll one broker's metadata until ``holds``; (seconds waited, layout) or ``None``."""
    return await poll_until(
        lambda: probe.layout(topic, node_id), lambda layout: bool(layout) and holds(layout), timeout_s
    )


async def wait_topic_layouts(
    probe: MetadataProbe,
    topics: list[str],
    node_id: int,
    holds: Callable[[TopicLayout], bool],
    timeout_s: float,
) -> tuple[float, TopicLayout] | None:
    """``_wait_layout`` over several topics at once (a pipeline's topics, ``__consumer_offsets``)."""
    return await poll_until(
        lambda: probe.layouts(topics, node_id), lambda layout: bool(layout) and holds(layout), timeout_s
    )


async def poll_until(
    fetch: Callable[[], Awaitable[T]],
    holds: Callable[[T], bool],
    timeout_s: float,
    *,
    interval_s: float = 0.1,
) -> tuple[float, T] | None:
    """Fetch until ``holds`` is true of what came back; (seconds waited, that value) or ``None``
    after ``timeout_s``. A Kafka error or a timeout while fetching counts as "not yet"."""
    t0 = time.monotonic()
    while time.monotonic() < t0 + timeout_s:
        try:
            value = await fetch()
        except (KafkaError, TimeoutError):
            pass
        else:
            if holds(value):
                return time.monotonic() - t0, value
        await asyncio.sleep(interval_s)
    return None


async def broker_failover_drill(
    cluster: KafkaCluster,
    topic: str,
    *,
    victim: int | None = None,
    rate: int = 500,
    keys: int = 24,
    before_s: float = 3.0,
    after_s: float = 4.0,
    timeout_s: float = 60.0,
    restart: bool = True,
    also_kill: Callable[[], None] | None = None,
) -> FailoverReport:
    """Run the drill; ``victim`` defaults to the broker leading the most partitions.

    ``also_kill`` runs right after the broker is killed (in a thread): a chaos round kills a
    stream worker or a bridge there too and checks afterwards that the others carried on.
    """
    kwargs = client_kwargs(cluster.settings, Principal.ADMIN)
    probe = MetadataProbe(cluster)
    await probe.start()
    try:
        before = await probe.layout(topic, cluster.nodes[0].node_id)
        if victim is None:
            victim = Counter(leader for leader, _ in before.values()).most_common(1)[0][0]
        survivors = [n.node_id for n in cluster.nodes if n.node_id != victim]
        report = FailoverReport(victim, sorted(p for p, (leader, _) in before.items() if leader == victim))

        producer = AIOKafkaProducer(
            **kwargs,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=int(timeout_s * 1000),
        )
        await producer.start()
        stream = _Stream(producer, topic, rate, keys)
        task = asyncio.create_task(stream.run())
        try:
            await asyncio.sleep(before_s)
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim)
            logger.info("failover drill: killed node %d", victim)
            if also_kill is not None:
                await asyncio.to_thread(also_kill)
            moved = await _wait_layout(
                probe,
                topic,
                survivors[0],
                lambda lay: all(ld in survivors for ld, _ in lay.values()),
                timeout_s,
            )
            if moved is not None:
                report.leader_failover_s, report.isr_after = moved
            await asyncio.sleep(after_s)
        finally:
            stream.stop.set()
            await task
            results = await asyncio.gather(*stream.pending, return_exceptions=True)
            await producer.stop()
        report.sent = len(stream.pending)
        report.failed_sends = sum(1 for r in results if isinstance(r, BaseException))
        report.acknowledged = report.sent - report.failed_sends
        report.producer_stall_s = stream.longest_gap_after(killed_at)

        await _verify(report, stream, kwargs, sorted(before), timeout_s)

        if restart:
            await asyncio.to_thread(cluster.node(victim).daemon.start)
            back = await _wait_layout(
                probe,
                topic,
                survivors[0],
                lambda lay: all(victim in isr for _, isr in lay.values()),
                timeout_s,
            )
            if back is None:
                msg = f"node {victim} did not rejoin the in-sync replicas within {timeout_s:.0f} s"
                raise StackError(msg)
            report.rejoin_s = back[0]
        logger.info("failover drill: %s", report.summary())
        return report
    finally:
        await probe.close()
