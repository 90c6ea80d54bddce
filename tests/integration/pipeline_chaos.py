"""A chaos round on a 3-broker cluster: the pipeline's processes running, a broker and a worker killed.

The round runs, on a :class:`~stack.kafka_cluster.KafkaCluster` of the test's own, a Mosquitto
of its own, two bridges (``python -m ingest``, instances ``1`` and ``2`` on one MQTT shared
subscription) and two stream workers (``python -m stream_jobs``, one consumer group). Devices
publish at a steady rate over MQTT. Mid-stream one worker and, a few milliseconds later, one
broker (the jobs group's coordinator) get SIGKILL. The round measures, from the kills:

- ``leaders_s``: until every partition of the run's topics and of ``__consumer_offsets`` is
  led by a surviving broker (per a survivor's metadata);
- ``rebalance_s``: until the group has one member left and it owns every partition of
  ``telemetry.raw``;
- ``resumed_s``: until the group's committed offset of every ``telemetry.raw`` partition has
  moved past where it stood at the kill (the survivor processes the dead worker's partitions).

Then it checks that every ``(device, seq)`` published is in ``telemetry.raw`` and that every
1-minute window that has closed holds exactly the readings sent for it, and restarts the broker.

Device time runs at ``event_speed`` times the wall clock from a minute boundary, so that a
short run closes several windows; the grace (in device time) divided by that speed is how long
a partition may stall in wall time before its readings would come late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from citystream import codec
from citystream.kafka_client import bootstrap_servers
from citystream.model import Aggregate, DlqRecord, Reading
from citystream.settings import Settings
from citystream.topics import TELEMETRY_AGG_1M, TELEMETRY_DLQ, TELEMETRY_RAW, topic_name
from stack.failover import GroupProbe, GroupView, MetadataProbe, TopicLayout, wait_topic_layouts
from stack.kafka import ensure_topics
from stack.kafka_cluster import KafkaCluster
from stack.mosquitto import MosquittoService
from stack.secrets import write_env_file
from stream_jobs.app import app_id
from stream_jobs.messages import SeriesBatch
from tests.conftest import isolated
from tests.helpers import read_topic, wait_for
from tests.integration.ingest_support import BridgeProcess, Device, Publisher, register_fleet
from tests.jobs_worker import JobsWorker

MINUTE_MS = 60_000
DISTRICTS = ("gangnam", "mapo", "jongno", "songpa")
METRICS = ("pm25", "pm10")

Series = tuple[str, str, int]
"""(district, metric, window start)."""
Row = tuple[int, float, float, float, float]
"""count, mean, min, max, p95 (mean and p95 rounded to 9 places)."""


@dataclass
class ChaosReport:
    victim_broker: int
    devices: int
    published: int = 0
    in_raw: int = 0
    missing: list[tuple[str, int]] = field(default_factory=list)
    raw_duplicates: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    leaders_s: float | None = None
    rebalance_s: float | None = None
    resumed_s: float | None = None
    survivor_partitions: list[int] = field(default_factory=list)
    """Partitions of telemetry.raw the surviving worker owned at the end."""
    members_after: int = 0
    windows_expected: int = 0
    windows_emitted: int = 0
    window_mismatches: dict[Series, tuple[Row | None, Row]] = field(default_factory=dict)
    """Window -> (emitted, expected) where they differ (``None``: never emitted)."""
    extra_windows: list[Series] = field(default_factory=list)
    agg_reemitted: int = 0
    """Windows emitted more than once (after the takeover)."""
    agg_consistent: bool = True
    """Whether every window emitted more than once came with the same result each time."""
    series_missing: dict[tuple[str, int], list[tuple[int, int]]] = field(default_factory=dict)
    """Readings in telemetry.raw (where: partition, offset) but in no record of the workers'
    ``{app}-series`` topic, where the readings agent hands them to the windows agent: tells
    which agent lost what a window lacks."""
    moved: list[int] = field(default_factory=list)
    """Partitions of telemetry.raw the killed worker owned (the survivor took them over)."""
    committed_at_kill: dict[int, int] = field(default_factory=dict)
    """The group's committed offset of each telemetry.raw partition right after the worker died."""
    rejoin_s: float | None = None
    wall_s: float = 0.0

    def summary(self) -> str:
        def secs(v: float | None) -> str:
            return f"{v:.1f} s" if v is not None else "never"

        first = sorted(self.window_mismatches.items())[:3]
        return (
            f"killed broker {self.victim_broker or '-'} and worker 1 (when asked); survivors lead every "
            "partition after "
            f"{secs(self.leaders_s)}; worker 2 owns all {len(self.survivor_partitions)} partitions after "
            f"{secs(self.rebalance_s)} and processes them again after {secs(self.resumed_s)}; "
            f"{self.devices} devices published {self.published}, in telemetry.raw {self.in_raw} distinct, "
            f"missing {len(self.missing)}, duplicates {self.raw_duplicates}, dead letters "
            f"{sum(self.dead_letters.values())} {dict(self.dead_letters)}; windows closed "
            f"{self.windows_expected}, emitted {self.windows_emitted}, wrong {len(self.window_mismatches)}, "
            f"emitted twice {self.agg_reemitted} (consistent {self.agg_consistent}), readings not handed "
            f"to the windows {len(self.series_missing)} {sorted(self.series_missing.items())[:4]} "
            f"(the killed worker's partitions {self.moved}, committed offsets at the kill "
            f"{self.committed_at_kill}); broker back in every "
            f"ISR after {secs(self.rejoin_s)}; round {self.wall_s:.0f} s"
            + (f"; wrong windows (emitted, expected): {first}" if first else "")
        )


@dataclass(frozen=True)
class RoundConfig:
    devices_per_partition: int = 4
    rate_hz: float = 8.0
    """Readings per second per device (wall time)."""
    event_speed: float = 2.0
    """Device seconds per wall second."""
    windows: int = 2
    """Full 1-minute windows of device time the run must close."""
    grace_s: float = 40.0
    """The workers' grace, in device time (``grace_s / event_speed`` of wall-time stall)."""
    before_kill_s: float = 10.0
    kill_broker: bool = True
    kill_worker: bool = True
    """Both by default; one alone tells which of the two a finding comes from."""
    session_timeout_s: float = 10.0
    """The workers' group session timeout: how soon the group gives up on the killed worker."""
    timeout_s: float = 90.0


def child_env(s: Settings) -> dict[str, str]:
    """What a bridge or worker subprocess needs on top of its usual variables: this stack."""
    k, m = s.kafka, s.mqtt
    return {
        "CITYSTREAM_STACK__STATE_DIR": str(s.stack.state_dir),
        "CITYSTREAM_KAFKA__BOOTSTRAP": bootstrap_servers(k),
        "CITYSTREAM_KAFKA__PARTITIONS": str(k.partitions),
        "CITYSTREAM_KAFKA__REPLICATION_FACTOR": str(k.replication_factor),
        "CITYSTREAM_KAFKA__MIN_INSYNC_REPLICAS": str(k.min_insync_replicas),
        "CITYSTREAM_KAFKA__SECURITY": k.security,
        "CITYSTREAM_MQTT__HOST": m.host,
        "CITYSTREAM_MQTT__PORT": str(m.port),
        "CITYSTREAM_MQTT__TLS_ENABLED": "false",
        "CITYSTREAM_MQTT__PLAIN_ENABLED": "true",
    }


def spread_devices(uid: str, partitions: int, per_partition: int) -> list[Device]:
    """Devices whose keys cover every partition ``per_partition`` times, over several districts."""
    partitioner = DefaultPartitioner()
    counts: Counter[int] = Counter()
    devices: list[Device] = []
    i = 0
    while len(devices) < partitions * per_partition:
        device_id = f"t{uid}-c{i:03d}"
        i += 1
        p = partitioner(device_id.encode(), list(range(partitions)), list(range(partitions)))
        if counts[p] >= per_partition:
            continue
        counts[p] += 1
        district = DISTRICTS[len(devices) % len(DISTRICTS)]
        devices.append(Device(device_id, district, "air_quality", f"pw-{uid}-{i}"))
    return devices


def values(index: int, seq: int) -> dict[str, float]:
    return {
        "pm25": 10.0 + ((seq * 7 + index * 13) % 97) / 4,
        "pm10": 30.0 + ((seq * 11 + index * 5) % 61) / 2,
    }


def row(vs: list[float]) -> Row:
    p95 = statistics.quantiles(vs, n=20, method="inclusive")[18]
    return (len(vs), round(statistics.fmean(vs), 9), min(vs), max(vs), round(p95, 9))


class Fleet:
    """The devices' MQTT clients and a steady publishing loop; remembers what was sent."""

    def __init__(self, s: Settings, devices: list[Device], cfg: RoundConfig) -> None:
        self.settings = s
        self.devices = devices
        self.publishers = [Publisher(s, d) for d in devices]
        self.cfg = cfg
        self.step_ms = round(1000 * cfg.event_speed / cfg.rate_hz)
        self.last_seq = int((cfg.windows * MINUTE_MS + cfg.grace_s * 1000 + 2000) // self.step_ms)
        self.sent: dict[tuple[str, int], Reading] = {}

    def connect(self) -> None:
        for p in self.publishers:
            p.connect()

    async def run(self) -> None:
        """Every device publishes seq 0..last_seq at ``rate_hz``; device time starts at the
        minute boundary two minutes back (within the bridge's clock-skew bound throughout)."""
        now = int(time.time() * 1000)
        base_ms = now - now % MINUTE_MS - 2 * MINUTE_MS
        next_at = time.monotonic()
        for seq in range(self.last_seq + 1):
            ts = base_ms + seq * self.step_ms
            for index, (device, publisher) in enumerate(zip(self.devices, self.publishers, strict=True)):
                vs = values(index, seq)
                body = json.dumps({"ts": ts, "seq": seq, "values": vs}).encode()
                publisher.publish(device.topic(self.settings), body)
                self.sent[device.device_id, seq] = Reading(
                    device_id=device.device_id,
                    district=device.district,
                    sensor_type=device.sensor_type,
                    ts=ts,
                    seq=seq,
                    values=vs,
                    received_ms=0,
                )
            next_at += 1 / self.cfg.rate_hz
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def wait_published(self) -> None:
        for p in self.publishers:
            p.wait_published(60)

    def close(self) -> None:
        for p in self.publishers:
            with contextlib.suppress(Exception):
                p.close()

    def expected_windows(self) -> dict[Series, Row]:
        """Every window the run closes: its end is at or before the last device time minus the grace."""
        last = max(r.ts for r in self.sent.values())
        watermark = last - int(self.cfg.grace_s * 1000)
        closed_before = watermark - watermark % MINUTE_MS
        groups: dict[Series, list[float]] = {}
        for r in self.sent.values():
            start = r.ts - r.ts % MINUTE_MS
            if start + MINUTE_MS <= closed_before:
                for metric, v in r.values.items():
                    groups.setdefault((r.district, metric, start), []).append(v)
        return {key: row(vs) for key, vs in groups.items()}


async def _topics(s: Settings) -> list[str]:
    """The run's topics (its prefix), the workers' internal ones included."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(s.kafka.topic_prefix))
    finally:
        await admin.close()


async def _read_to_end(s: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its end offsets as they are when the read starts."""
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                msg = f"could not read {topic} to its end in 60 s"
                raise AssertionError(msg)
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            records += [r for recs in batch.values() for r in recs]
        return records
    finally:
        await consumer.stop()


async def _read_raw(s: Settings) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """``(device, seq)`` -> where each copy of it is in telemetry.raw (partition, offset)."""
    where: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for r in await _read_to_end(s, topic_name(TELEMETRY_RAW, s.kafka)):
        if r.value is not None:
            reading = codec.decode(r.value, Reading)
            where.setdefault((reading.device_id, reading.seq), []).append((r.partition, r.offset))
    return where


async def _handed_to_windows(s: Settings, topic: str) -> set[tuple[str, int]]:
    """``(device, seq)`` of every reading the readings agent sent to the windows agent."""
    return {
        (item.device_id, item.seq)
        for r in await _read_to_end(s, topic)
        if r.value is not None
        for item in codec.decode(r.value, SeriesBatch).items
    }


async def _read_aggregates(s: Settings) -> list[Aggregate]:
    records = await read_topic(s.kafka.bootstrap, topic_name(TELEMETRY_AGG_1M, s.kafka), timeout_s=10)
    return [codec.decode(r.value, Aggregate) for r in records if r.value is not None]


def _table(aggs: list[Aggregate]) -> tuple[dict[Series, Row], int, bool]:
    """Window -> row; how many windows came more than once; whether a repeat differed."""
    table: dict[Series, Row] = {}
    seen: Counter[Series] = Counter()
    consistent = True
    for a in aggs:
        key = (a.district, a.metric, a.window_start)
        r: Row = (a.count, round(a.mean, 9), a.min, a.max, round(a.p95, 9))
        seen[key] += 1
        consistent &= table.setdefault(key, r) == r
    return table, sum(1 for c in seen.values() if c > 1), consistent


async def chaos_round(cluster: KafkaCluster, uid: str, log_dir: Path, cfg: RoundConfig) -> ChaosReport:
    """Run the round described in the module docstring; the caller asserts on the report."""
    started = time.monotonic()
    s = isolated(cluster.settings, uid)
    s = s.model_copy(update={"kafka": s.kafka.model_copy(update={"bootstrap": bootstrap_servers(s.kafka)})})
    k = s.kafka
    raw = topic_name(TELEMETRY_RAW, k)
    group = app_id(s)
    await ensure_topics(s)
    write_env_file(s.stack.state_dir / "secrets.env", {
        "CITYSTREAM_MQTT__INGEST_PASSWORD": s.mqtt.ingest_password.get_secret_value(),
    })  # fmt: skip
    mosquitto = MosquittoService(s)
    devices = spread_devices(uid, k.partitions, cfg.devices_per_partition)
    env = child_env(s)
    bridges = [BridgeProcess(s, log_dir, instance=str(i)) for i in (1, 2)]
    workers = [
        JobsWorker(
            s,
            log_dir / f"worker-{i}.log",
            grace_s=str(cfg.grace_s),
            idle_source_s="3",
            timer_interval_s="1",
            commit_interval_s="1",
            detectors_enabled="false",
            session_timeout_s=str(cfg.session_timeout_s),
        )
        for i in (1, 2)
    ]
    for b in bridges:
        b.env.update(env)
    for w in workers:
        w.env.update(env)
    fleet = Fleet(s, devices, cfg)
    probe = MetadataProbe(cluster)
    groups = GroupProbe(s, group)
    victim = 0
    rejoin: asyncio.Task[float | None] | None = None
    try:
        await asyncio.to_thread(mosquitto.write_config)
        await asyncio.to_thread(mosquitto.start)
        await register_fleet(s, uid, 0, extra=devices)
        await asyncio.gather(*(asyncio.to_thread(b.start) for b in bridges))
        for w in workers:
            w.start()
        await probe.start()
        await groups.start()
        partitions = set(range(k.partitions))

        def two_workers_share_raw(v: GroupView) -> bool:
            owned = [p for parts in v.owners(raw).values() for p in parts]
            return v.state == "Stable" and len(v.members) == 2 and sorted(owned) == sorted(partitions)

        if await groups.wait(two_workers_share_raw, cfg.timeout_s) is None:
            msg = f"the two workers never shared {raw}:\n{workers[0].tail(3000)}\n{workers[1].tail(3000)}"
            raise AssertionError(msg)
        await asyncio.to_thread(fleet.connect)
        topics = [*await _topics(s), "__consumer_offsets"]

        publishing = asyncio.create_task(fleet.run())
        await asyncio.sleep(cfg.before_kill_s)
        coordinator = await groups.coordinator()
        survivors = [n.node_id for n in cluster.nodes if n.node_id != coordinator]
        report = ChaosReport(victim_broker=coordinator if cfg.kill_broker else 0, devices=len(devices))
        # The worker first, then where the group stands (it commits no more), then the broker.
        if cfg.kill_worker:
            await asyncio.to_thread(workers[0].kill)
        before = await groups.view()
        report.committed_at_kill = {
            tp.partition: o for tp, o in sorted(before.committed.items()) if tp.topic == raw
        }
        if cfg.kill_broker:
            victim = coordinator
            await asyncio.to_thread(cluster.kill, victim)

        def led_by_survivors(layout: TopicLayout) -> bool:
            return all(leader in survivors for leader, _ in layout.values())

        def one_worker_owns_raw(v: GroupView) -> bool:
            owners = v.owners(raw)
            return len(owners) == 1 and next(iter(owners.values())) == partitions

        def every_partition_moved(v: GroupView) -> bool:
            return all(
                v.committed.get(TopicPartition(raw, p), -1) > before.committed.get(TopicPartition(raw, p), -1)
                for p in partitions
            )

        async def nothing() -> None:
            return None

        leaders, rebalance, resumed = await asyncio.gather(
            wait_topic_layouts(probe, topics, survivors[0], led_by_survivors, cfg.timeout_s)
            if cfg.kill_broker
            else nothing(),
            groups.wait(one_worker_owns_raw, cfg.timeout_s) if cfg.kill_worker else nothing(),
            groups.wait(every_partition_moved, cfg.timeout_s),
        )
        report.leaders_s = leaders[0] if leaders else None
        report.rebalance_s = rebalance[0] if rebalance else None
        report.resumed_s = resumed[0] if resumed else None

        def victim_in_every_isr(layout: TopicLayout) -> bool:
            return all(victim in isr for _, isr in layout.values())

        async def restart_victim() -> float | None:
            """The killed broker back, while the round goes on; seconds until it is in every ISR."""
            await asyncio.to_thread(cluster.node(victim).daemon.start)
            back = await wait_topic_layouts(probe, topics, survivors[0], victim_in_every_isr, cfg.timeout_s)
            return back[0] if back else None

        rejoin = asyncio.create_task(restart_victim() if victim else nothing())
        await publishing
        await asyncio.to_thread(fleet.wait_published)
        report.published = len(fleet.sent)

        where: dict[tuple[str, int], list[tuple[int, int]]] = {}

        async def everything_in_raw() -> bool:
            nonlocal where
            where = await _read_raw(s)
            return set(fleet.sent) <= set(where)

        with contextlib.suppress(AssertionError):  # what is missing shows in the report
            await wait_for(everything_in_raw, 60, "every reading in telemetry.raw", interval_s=2.0)
        report.in_raw = len(where)
        report.missing = sorted(set(fleet.sent) - set(where))
        report.raw_duplicates = sum(len(copies) - 1 for copies in where.values())

        expected = fleet.expected_windows()
        report.windows_expected = len(expected)
        table: dict[Series, Row] = {}

        async def all_windows() -> bool:
            nonlocal table
            table, report.agg_reemitted, report.agg_consistent = _table(await _read_aggregates(s))
            return set(expected) <= set(table)

        with contextlib.suppress(AssertionError):  # what is missing shows in the report
            await wait_for(all_windows, cfg.timeout_s, "every closed window", interval_s=2.0)
        report.windows_emitted = len(table)
        report.window_mismatches = {
            key: (table.get(key), want) for key, want in expected.items() if table.get(key) != want
        }
        report.extra_windows = sorted(set(table) - set(expected))
        lost = sorted(set(where) - await _handed_to_windows(s, f"{group}-series"))
        report.series_missing = {key: where[key] for key in lost}

        dlq = await read_topic(s.kafka.bootstrap, topic_name(TELEMETRY_DLQ, k), timeout_s=5)
        report.dead_letters = dict(Counter(codec.decode(r.value, DlqRecord).reason for r in dlq if r.value))
        final = await groups.view()
        owners = final.owners(raw)
        report.members_after = len(final.members)
        report.survivor_partitions = sorted(next(iter(owners.values()))) if len(owners) == 1 else []
        report.moved = sorted(
            {q for member, parts in before.owners(raw).items() if member not in final.members for q in parts}
        )

        report.rejoin_s = await rejoin
        victim = 0
        report.wall_s = time.monotonic() - started
        return report
    finally:
        if rejoin is not None and not rejoin.done():
            rejoin.cancel()
        fleet.close()
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.kill()
            w.stop()
        for b in bridges:
            b.close()
        await groups.close()
        await probe.close()
        await asyncio.to_thread(mosquitto.daemon.stop)
        if victim:
            await asyncio.to_thread(cluster.node(victim).daemon.start)
