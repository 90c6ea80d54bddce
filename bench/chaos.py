"""The chaos run: kill -9 every stage and service while a seeded load streams, then account.

``python -m bench.chaos`` (``make chaos``, ``citystream chaos``) runs the whole pipeline on the
local stack with its own topic prefix, MQTT root, consumer groups and InfluxDB buckets: the
bridge, one stream jobs worker, the InfluxDB sink and the webhook sink as processes, and a
webhook receiver in this process. A seeded fleet (:mod:`bench.chaos_load`) publishes once a
second per device at QoS 1; a few air-quality devices get a seeded pm10 spike far above the
"very bad" band, long enough for the threshold rule, so the alerts to expect are known.

Each round kills (SIGKILL) the bridge, the jobs worker, the InfluxDB sink, the webhook sink,
Kafka, InfluxDB and Mosquitto, one at a time, in a seeded order, after a seeded wait; each comes
back after a seeded pause. The next fault waits until the pipeline has caught up (or a cap
passed). After the last round the load runs on for a while, stops, and the pipeline drains.

Then every (device, seq) the fleet sent is accounted for: in ``telemetry.raw`` (duplicates
counted), in InfluxDB's raw bucket (exactly once, or lost); every closed 1-minute window of
``agg_1m`` in InfluxDB and on ``telemetry.agg.1m`` against the aggregates computed from the
payloads that were sent; every ``raised`` alert on ``alerts.events``, in InfluxDB and at the
webhook receiver against the spike plan. The table is printed and written with the details to
``bench/results/chaos.json`` and ``chaos.md``.

The detectors run with a chaos configuration: only the pm10 threshold, alerting at "very bad".
The run tests delivery and exactly-once effects through crashes, not detector quality, and the
statistical detectors' alerts on a random fleet would not be known in advance. The expected
alerts are the spiked devices' own and those of their districts whose 1-minute pm10 mean the
spike lifts above the band for the rule's minimum duration (worked out from the aggregates).

The bridge runs alone on the plain subscription (an empty share group): Mosquitto 2.0 does not
write shared subscriptions to its database, so after a kill -9 and restart the readings devices
publish before the bridge has subscribed again match no subscriber and are dropped.
``--shared-subscription`` runs the default shared subscription to show that loss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import logging
import math
import os
import random
import secrets
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bench.chaos_load import ChaosLoad, SeriesKey
from bench.errors import BenchError
from bench.kafka_io import Kafka, Record
from bench.ledger import FIRST, Ledger
from bench.load import LoadSpec, Phase, Spike, build_fleet
from bench.systems import Child, Context, Ours, Probe, ProbeDevice, decode_reading, free_port
from citystream import codec
from citystream.model import Aggregate, AlertEvent, AlertEventKind
from citystream.sensors import SENSOR_TYPES
from citystream.settings import Settings, get_settings
from citystream.topics import ALERTS_EVENTS, DEVICE_QUALITY, TELEMETRY_AGG_1M, topic_name
from stack.process import Daemon
from stream_jobs.windows import WINDOW_MS, window_start

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STAGES = ("bridge", "jobs", "sink-influx", "sink-webhook")
SERVICES = ("kafka", "influxdb", "mosquitto")
COMPONENTS = STAGES + SERVICES
SPIKE_SENSOR, SPIKE_METRIC = "air_quality", "pm10"
VERY_BAD = 150.0
"""Upper edge of pm10's "bad" band (AirKorea): above it is "very bad"."""
HYSTERESIS = 5.0
SPIKE_FACTOR = 5.0
PROBE_DISTRICT, PROBE_SENSOR, PROBE_METRIC = "jongno", "noise", "laeq"
READY_TIMEOUT_S = 120.0
CATCH_UP_CAP_S = 120.0
DRAIN_CAP_S = 900.0
QUIET_S = 8.0
POLL_S = 0.5


@dataclass(frozen=True)
class Plan:
    """Everything the seed decides."""

    seed: int
    fleet: int
    rounds: int
    gap_s: tuple[float, float]
    """Seconds between the pipeline catching up and the next kill."""
    pause_s: tuple[float, float]
    """Seconds a killed component stays down."""
    lead_s: float
    tail_s: float
    spikes: int
    spike_s: float
    shared_subscription: bool = False

    def faults(self) -> list[tuple[int, str, float, float]]:
        """(round, component, wait before the kill, pause before the restart), in order."""
        rng = random.Random(self.seed)
        out = []
        for r in range(self.rounds):
            for component in rng.sample(COMPONENTS, len(COMPONENTS)):
                out.append((r + 1, component, rng.uniform(*self.gap_s), rng.uniform(*self.pause_s)))
        return out

    def spike_plan(self, candidates: Sequence[int], span_s: float) -> list[Spike]:
        """``spikes`` seeded devices, each spiked once, starting within the fault schedule."""
        rng = random.Random(self.seed * 7919 + 1)
        chosen = rng.sample(list(candidates), min(self.spikes, len(candidates)))
        latest = max(self.lead_s, span_s - self.spike_s)
        out = []
        for device in sorted(chosen):
            start = rng.uniform(self.lead_s * 0.5, latest)
            out.append(Spike(device, round(start, 1), round(start + self.spike_s, 1), SPIKE_FACTOR))
        return out


def plan_for(args: argparse.Namespace) -> Plan:
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
    shared = bool(args.shared_subscription)
    if args.quick:
        return Plan(
            args.seed, args.fleet or 100, rounds, (4.0, 10.0), (1.0, 4.0), 30.0, 60.0, 3, 180.0, shared
        )
    return Plan(args.seed, args.fleet or 300, rounds, (8.0, 20.0), (2.0, 8.0), 45.0, 90.0, 5, 180.0, shared)


def detector_config() -> dict[str, Any]:
    """Only the pm10 threshold, alerting at "very bad"; every other detector off."""
    from stream_jobs.detectors.config import AQ_LABELS, METRIC_DEFAULTS

    metrics: dict[str, list[dict[str, Any]]] = {f"{t}/{m}": [] for t, m in METRIC_DEFAULTS}
    metrics[f"{SPIKE_SENSOR}/{SPIKE_METRIC}"] = [
        {
            "name": "threshold",
            "params": {
                "bounds": [30.0, 80.0, VERY_BAD],
                "labels": list(AQ_LABELS),
                "alert_level": 3,
                "hysteresis": HYSTERESIS,
            },
        }
    ]
    return {"metrics": metrics, "devices": {t: [] for t in SENSOR_TYPES}}


# -- the components ----------------------------------------------------------------------------


class Stage:
    """One pipeline process that can be killed and started again with the same settings."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.workdir = workdir
        self.child: Child | None = None
        self.starts = 0

    def start(self) -> None:
        self.child = Child(
            self.name, self.argv, env=self.env, cwd=REPO, log=self.workdir / f"{self.name}.log"
        )
        self.starts += 1

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def kill(self) -> None:
        if self.child is not None and self.child.alive():
            self.child.proc.send_signal(signal.SIGKILL)
            self.child.proc.wait(10)
        if self.child is not None:
            self.child.stop()  # closes the log; ends descendants left behind

    def stop(self) -> int | None:
        return self.child.stop() if self.child is not None else None


@dataclass
class Fault:
    round: int
    component: str
    wait_s: float
    pause_s: float
    killed_at_s: float = 0.0
    """Seconds from the start of the load."""
    restart_s: float = 0.0
    """From the restart call until the component was ready again."""
    recovered_s: float = 0.0
    """From the kill until the component was ready again."""
    caught_up_s: float | None = None
    """From the kill until the pipeline had caught up (None: not within the cap)."""
    error: str = ""


@dataclass
class Watch:
    """Pipeline progress, sampled from Kafka."""

    raw: int = 0
    """Records appended to the raw topic since the load started."""
    raw_end: int = 0
    jobs_done: int = 0
    """Offsets the jobs worker committed on the raw topic (summed over its partitions)."""
    sink_done: int = 0
    """Offsets the InfluxDB sink committed on the raw topic."""
    jobs_lag: int = 0
    sink_lag: int = 0
    webhook_lag: int = 0
    agg: int = 0
    ok: bool = False


@dataclass
class Receiver:
    """The webhook subscriber: every delivery, by event id."""

    deliveries: list[tuple[str, str, str]] = field(default_factory=list)
    """(event id, kind, alert key)."""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = codec.decode(body, AlertEvent)
        except (codec.DecodeError, codec.ValidationError):
            return web.Response(status=400)
        self.deliveries.append((event.event_id, str(event.kind), event.alert.key))
        return web.Response(status=204)


class Chaos:
    def __init__(self, settings: Settings, plan: Plan) -> None:
        self.settings = settings
        self.plan = plan
        self.uid = "cx" + secrets.token_hex(3)
        self.workdir = settings.stack.state_dir / "chaos" / self.uid
        self.id_prefix = f"{self.uid}-"
        self.devices = build_fleet(plan.fleet, plan.seed, self.id_prefix)
        self.probe = ProbeDevice(
            f"{self.id_prefix}probe", secrets.token_urlsafe(18), PROBE_DISTRICT, PROBE_SENSOR
        )
        self.ctx = Context(settings, self.uid, self.uid, self.workdir, self.probe)
        self.ours = Ours(self.ctx)
        self.stages: dict[str, Stage] = {}
        self.receiver = Receiver()
        self.faults: list[Fault] = []
        self.unexpected_exits: list[tuple[float, str, int | None]] = []
        self.killing: set[str] = set()
        self.t0 = 0.0
        self.watch = Watch()
        self.registered: list[str] = []
        self.timeline: list[dict[str, float]] = []
        self.load: ChaosLoad | None = None

    # -- set-up ------------------------------------------------------------------------------

    def stage_env(self, webhook_url: str) -> dict[str, str]:
        config = self.workdir / "detectors.json"
        config.write_text(json.dumps(detector_config()))
        s = self.settings
        subscriber = [{"name": "chaos", "url": webhook_url, "secret": secrets.token_urlsafe(24)}]
        return {
            **self.ours.env(),
            "CITYSTREAM_JOBS__DETECTOR_CONFIG": str(config),
            "CITYSTREAM_SINK__WEBHOOK_GROUP": f"{self.ctx.prefix}{s.sink.webhook_group}",
            "CITYSTREAM_SINK__WEBHOOK_SUBSCRIBERS": json.dumps(subscriber),
            "CITYSTREAM_SINK__WEBHOOK_METRICS_PORT": str(free_port()),
            "CITYSTREAM_SINK__WEBHOOK_BACKOFF_MAX_S": "5",
            "CITYSTREAM_SINK__API_TOKEN": "",
        } | self.subscription_env()

    def subscription_env(self) -> dict[str, str]:
        """One bridge on the plain subscription, which Mosquitto restores after a crash (unless
        the run is to show what the shared subscription loses then)."""
        if self.plan.shared_subscription:
            return {}
        return {"CITYSTREAM_MQTT__SHARE_GROUP": "", "CITYSTREAM_INGEST__INSTANCE": self.uid}

    async def provision(self) -> list[tuple[str, str, str, str]]:
        from ingest.registry import DeviceRegistry, prepare_entry
        from simulators import provision

        route = provision.plan_route(self.devices, "gateway", self.id_prefix)
        await provision.provision(self.settings, route, self.devices)
        p = self.probe
        await DeviceRegistry(self.settings).add_many(
            [(prepare_entry(p.device_id, p.district, p.sensor_type, p.password), p.password)]
        )
        self.registered = [*route.registered, p.device_id]
        return [(x.client_id, x.username, x.password, x.district) for x in route.logins]

    async def deprovision(self) -> None:
        from ingest.registry import DeviceRegistry

        if self.registered:
            await DeviceRegistry(self.settings).remove(*self.registered)
            self.registered = []

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        began = time.monotonic()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.workdir.mkdir(parents=True, exist_ok=True)
        app = web.Application()
        app.router.add_post("/hook", self.receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        hook_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        env = self.stage_env(f"http://127.0.0.1:{hook_port}/hook")
        py = sys.executable
        for name, argv in (
            ("bridge", [py, "-m", "ingest"]),
            ("jobs", [py, "-m", "stream_jobs"]),
            ("sink-influx", [py, "-m", "sinks", "influx"]),
            ("sink-webhook", [py, "-m", "sinks", "webhook"]),
        ):
            stage_env = env | {"CITYSTREAM_LOG_LEVEL": "INFO"} if name == "jobs" else env
            self.stages[name] = Stage(name, argv, stage_env, self.workdir)
        result: dict[str, Any] = {}
        try:
            logins = await self.provision()
            async with Kafka(self.settings) as kafka:
                await self.ours.create_topics(kafka)
                for stage in self.stages.values():
                    stage.start()
                await self.wait_ready(kafka)
                result = await self.chaos(kafka, logins)
                result["accounting"] = await self.account(kafka, result)
        finally:
            for stage in reversed(list(self.stages.values())):
                stage.stop()
            await runner.cleanup()
            await self.cleanup()
        result["started"] = started
        result["wall_s"] = round(time.monotonic() - began, 1)
        return result

    async def wait_ready(self, kafka: Kafka) -> None:
        """A probe reading has reached the raw topic and every consumer group is stable."""
        probe = Probe(self.settings, self.ctx.root, self.probe)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            tps = await kafka.partitions(self.ours.raw_topic)
            while await kafka.total_end(tps) == 0:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"no probe reading reached {self.ours.raw_topic}")
                probe.publish()
                await asyncio.sleep(0.5)
        finally:
            probe.close()
        for group in self.groups().values():
            while (await _group_state(kafka, group))[0] != "Stable":
                self.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"consumer group {group} did not become stable")
                await asyncio.sleep(0.3)

    def groups(self) -> dict[str, str]:
        s = self.settings
        return {
            "jobs": self.ours.groups["jobs"],
            "sink-influx": self.ours.groups["sink"],
            "sink-webhook": f"{self.ctx.prefix}{s.sink.webhook_group}",
        }

    def check_alive(self) -> None:
        for stage in self.stages.values():
            if stage.name not in self.killing and not stage.alive():
                child = stage.child
                raise BenchError(f"{stage.name} exited:\n{child.tail() if child else ''}")

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    async def chaos(self, kafka: Kafka, logins: list[tuple[str, str, str, str]]) -> dict[str, Any]:
        plan = self.plan
        faults = plan.faults()
        span = plan.lead_s + sum(w + p for _, _, w, p in faults)
        candidates = [d.number for d in self.devices if d.sensor_type == SPIKE_SENSOR]
        spikes = plan.spike_plan(candidates, span)
        spec = LoadSpec(
            fleet=plan.fleet, seed=plan.seed, id_prefix=self.id_prefix, root=self.ctx.root, qos=1,
            phases=[Phase(duration_s=24 * 3600.0, interval_s=1.0)], spikes=spikes, logins=logins,
        )  # fmt: skip
        load = self.load = ChaosLoad(self.settings.mqtt, spec, self.devices, SPIKE_METRIC)
        await asyncio.to_thread(load.connect)
        raw_tps = await kafka.partitions(self.ours.raw_topic)
        raw0 = await kafka.total_end(raw_tps)
        tps = {"raw": raw_tps}
        for key, topic in (("agg", TELEMETRY_AGG_1M), ("events", ALERTS_EVENTS), ("quality", DEVICE_QUALITY)):
            tps[key] = await kafka.partitions(topic_name(topic, self.ours.kafka))
        watcher = asyncio.create_task(self.watch_loop(tps, raw0))
        supervisor = asyncio.create_task(self.supervise())
        try:
            return await self._chaos(load, faults, spikes=spikes, logins=logins, raw0=raw0)
        finally:
            for task in (watcher, supervisor):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _chaos(
        self,
        load: ChaosLoad,
        faults: list[tuple[int, str, float, float]],
        *,
        spikes: list[Spike],
        logins: list[tuple[str, str, str, str]],
        raw0: int,
    ) -> dict[str, Any]:
        plan = self.plan
        self.t0 = time.monotonic()
        start_ms = load.start()
        stopped_at = 0.0
        try:
            await asyncio.sleep(plan.lead_s)
            for round_no, component, wait_s, pause_s in faults:
                fault = Fault(round_no, component, round(wait_s, 1), round(pause_s, 1))
                self.faults.append(fault)
                await asyncio.sleep(wait_s)
                await self.inject(fault)
                logger.info(
                    "round %d: %s killed at %.0f s, ready after %.1f s, caught up after %s s",
                    round_no, component, fault.killed_at_s, fault.recovered_s, fault.caught_up_s,
                )  # fmt: skip
                if load.error is not None:
                    raise BenchError(f"the load failed: {load.error!r}")
            await asyncio.sleep(plan.tail_s)
        finally:
            await asyncio.to_thread(load.stop)
            stopped_at = self.now()
        unacked = await asyncio.to_thread(load.wait_acked, 180.0)
        drain_s = await self.drain()
        return {
            "uid": self.uid,
            "plan": {
                "seed": plan.seed, "fleet": plan.fleet, "rounds": plan.rounds, "gap_s": plan.gap_s,
                "pause_s": plan.pause_s, "lead_s": plan.lead_s, "tail_s": plan.tail_s,
                "spikes": [[self.devices[s.device].device_id, s.start_s, s.end_s, s.factor] for s in spikes],
            },
            "load": {
                "start_ms": start_ms, "published": load.published, "unacked_at_end": unacked,
                "refused": load.refused, "duration_s": stopped_at, "gateways": len(logins),
                **load.reconnects(),
            },
            "drain_s": drain_s,
            "faults": [f.__dict__ for f in self.faults],
            "unexpected_exits": self.unexpected_exits,
            "raw0": raw0,
            "timeline": self.timeline,
        }  # fmt: skip

    def _load(self) -> ChaosLoad:
        if self.load is None:
            raise BenchError("the load has not started")
        return self.load

    # -- one fault -----------------------------------------------------------------------------

    async def inject(self, fault: Fault) -> None:
        name = fault.component
        load = self._load()
        self.killing.add(name)
        fault.killed_at_s = self.now()
        t_kill = time.monotonic()
        try:
            await asyncio.to_thread(self.kill, name)
            await asyncio.sleep(fault.pause_s)
            t_restart = time.monotonic()
            await asyncio.to_thread(self.restart, name)
            await self.wait_component(name)
            fault.restart_s = round(time.monotonic() - t_restart, 1)
            fault.recovered_s = round(time.monotonic() - t_kill, 1)
        except Exception as exc:
            fault.error = f"{type(exc).__name__}: {exc}"
            logger.exception("fault %s", name)
            raise
        finally:
            self.killing.discard(name)
        # Caught up: what the broker had acknowledged is in Kafka, and the jobs worker and the
        # sink have committed past what the raw topic held when the component was back.
        acked, raw_end = load.acked, 0
        deadline = t_kill + CATCH_UP_CAP_S
        while time.monotonic() < deadline:
            w = self.watch
            if w.ok and not raw_end:
                raw_end = w.raw_end
            if raw_end and w.ok and w.raw >= acked and min(w.jobs_done, w.sink_done) >= raw_end:
                fault.caught_up_s = round(time.monotonic() - t_kill, 1)
                return
            await asyncio.sleep(POLL_S)

    def kill(self, name: str) -> None:
        from stack.manager import Stack

        if name in self.stages:
            self.stages[name].kill()
            return
        stack = Stack(self.settings)
        service = {"kafka": stack.kafka, "influxdb": stack.influx, "mosquitto": stack.mosquitto}[name]
        daemon = service.daemon
        if not isinstance(daemon, Daemon):
            raise BenchError(f"{name}: only a single local node can be killed")
        if not daemon.kill():
            raise BenchError(f"{name} was not running")

    def restart(self, name: str) -> None:
        from stack.manager import Stack

        if name in self.stages:
            self.stages[name].start()
            return
        stack = Stack(self.settings)
        service = {"kafka": stack.kafka, "influxdb": stack.influx, "mosquitto": stack.mosquitto}[name]
        service.start()

    async def wait_component(self, name: str) -> None:
        """Until the restarted component does its work again."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if await self.ready(name):
                return
            await asyncio.sleep(0.2)
        raise BenchError(f"{name} was not ready {READY_TIMEOUT_S:.0f} s after its restart")

    async def ready(self, name: str) -> bool:
        if name == "bridge":
            return self.stages[name].alive() and _http_ok(f"http://127.0.0.1:{self.ours.ingest_port}/readyz")
        if name in self.stages:
            if not self.stages[name].alive():
                return False
            try:
                async with Kafka(self.settings) as kafka:
                    state, members = await kafka.group_state(self.groups()[name])
            except Exception:  # Kafka busy: not ready yet
                return False
            return state == "Stable" and members >= 1
        # A service: healthy (its start() waited for that) and the bridge connected to it again.
        return _http_ok(f"http://127.0.0.1:{self.ours.ingest_port}/readyz")

    # -- watching ------------------------------------------------------------------------------

    async def supervise(self) -> None:
        """Restart a stage that exited by itself (and say so in the report)."""
        while True:
            await asyncio.sleep(1.0)
            for stage in self.stages.values():
                if stage.name in self.killing or stage.alive():
                    continue
                code = stage.child.proc.returncode if stage.child is not None else None
                logger.warning("%s exited by itself (code %s); starting it again", stage.name, code)
                self.unexpected_exits.append((self.now(), stage.name, code))
                stage.stop()
                stage.start()

    async def watch_loop(self, tps: dict[str, list[TopicPartition]], raw0: int) -> None:
        kafka: Kafka | None = None
        failed = False
        while True:
            try:
                if kafka is None:
                    kafka = Kafka(self.settings)
                    await asyncio.wait_for(kafka.__aenter__(), 10)
                self.watch = await asyncio.wait_for(self.sample(kafka, tps, raw0), 10)
            except Exception as exc:  # Kafka is down or restarting: try again with a new client
                if self.watch.ok or not failed:
                    logger.info("watch: Kafka not answering: %r", exc)
                failed = True
                self.watch = Watch()
                if kafka is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(kafka.__aexit__(), 5)
                kafka = None
            load = self.load
            w = self.watch
            self.timeline.append(
                {
                    "t": self.now(), "acked": float(load.acked if load else 0), "raw": float(w.raw),
                    "jobs_lag": float(w.jobs_lag), "sink_lag": float(w.sink_lag), "ok": float(w.ok),
                }
            )  # fmt: skip
            await asyncio.sleep(POLL_S)

    async def sample(self, kafka: Kafka, tps: dict[str, list[TopicPartition]], raw0: int) -> Watch:
        """Where the topics end and what each group has committed (on partitions known up front:
        asking for the end of a partition the client has no metadata for can wait forever)."""
        raw_tps = tps["raw"]
        raw_ends = await kafka.end_offsets(raw_tps)
        raw = sum(raw_ends.values())
        sink_tps = raw_tps + tps["agg"] + tps["events"] + tps["quality"]
        ends = raw_ends | await kafka.end_offsets(sink_tps[len(raw_tps) :])
        groups = self.groups()
        jobs = await kafka.committed(groups["jobs"], raw_tps)
        sink = await kafka.committed(groups["sink-influx"], sink_tps)
        webhook = await kafka.committed(groups["sink-webhook"], tps["events"])

        def lag(committed: dict[TopicPartition, int]) -> int:
            return sum(max(0, ends[tp] - offset) for tp, offset in committed.items())

        return Watch(
            raw=raw - raw0, raw_end=raw, jobs_done=sum(jobs.values()),
            sink_done=sum(sink[tp] for tp in raw_tps), jobs_lag=lag(jobs), sink_lag=lag(sink),
            webhook_lag=lag(webhook), agg=sum(ends[tp] for tp in tps["agg"]), ok=True,
        )  # fmt: skip

    async def drain(self) -> float:
        """Until nothing moves: the raw and aggregate topics stay put and every lag is zero."""
        started = time.monotonic()
        # Event-time windows close once every source partition has been idle for a while.
        settle = self.settings.jobs.idle_source_s + 2 * self.settings.jobs.timer_interval_s
        last: tuple[int, int] = (-1, -1)
        last_change = time.monotonic()
        while time.monotonic() - started < DRAIN_CAP_S:
            await asyncio.sleep(1.0)
            w = self.watch
            if not w.ok:
                continue
            if (w.raw, w.agg) != last:
                last, last_change = (w.raw, w.agg), time.monotonic()
            lags = w.jobs_lag + w.sink_lag + w.webhook_lag
            quiet = time.monotonic() - last_change
            if int(time.monotonic() - started) % 30 == 0:
                logger.info("draining: %s", w)
            if lags == 0 and quiet >= QUIET_S and time.monotonic() - started >= settle:
                break
        return round(time.monotonic() - started, 1)

    # -- accounting ----------------------------------------------------------------------------

    async def account(self, kafka: Kafka, run: dict[str, Any]) -> dict[str, Any]:
        load = self._load()
        sent = load.per_device()
        raw_topic = self.ours.raw_topic
        raw_tps = await kafka.partitions(raw_topic)

        # Kafka telemetry.raw: every (device, seq), duplicates counted; the probe's readings.
        kafka_ledger = Ledger(sent)
        kafka_probe = Ledger({self.probe.device_id: 1_000_000})
        probe_values: dict[SeriesKey, list[float]] = {}
        probe_id = self.probe.device_id
        max_ts = load.max_ts

        def on_raw(records: list[Record]) -> None:
            nonlocal max_ts
            for record in records:
                d = decode_reading(record)
                if d is None:
                    continue
                if d.device == probe_id:
                    raw = msgspec.json.decode(record.value or b"")
                    key = (PROBE_DISTRICT, PROBE_SENSOR, PROBE_METRIC, window_start(d.ts))
                    if kafka_probe.tick(probe_id, d.seq) == FIRST:
                        probe_values.setdefault(key, []).append(float(raw["values"][PROBE_METRIC]))
                        max_ts = max(max_ts, d.ts)
                    continue
                kafka_ledger.tick(d.device, d.seq)

        await kafka.scan(raw_tps, on_raw)
        in_kafka = kafka_ledger.result()

        # InfluxDB's raw bucket: every (device, seq) once.
        influx_ledger = Ledger(sent)
        rows = await asyncio.to_thread(_influx_seqs, self.settings, self.ours.buckets[0], probe_id)
        for device, seq in rows:
            influx_ledger.tick(device, seq)
        in_influx = influx_ledger.result()
        influx_dupes = in_influx.duplicates

        # Aggregates: every window the pipeline has closed.
        grace_ms = int(self.settings.jobs.grace_s * 1000)
        closed_until = window_start(max_ts - grace_ms)
        expected = load.expected_aggregates(probe_values, closed_until)
        agg_influx = await asyncio.to_thread(_influx_aggregates, self.settings, self.ours.buckets[1])
        agg_kafka, agg_kafka_records = await _kafka_aggregates(
            kafka, topic_name(TELEMETRY_AGG_1M, self.ours.kafka)
        )
        cmp_influx = compare_aggregates(expected, agg_influx, closed_until)
        cmp_kafka = compare_aggregates(expected, agg_kafka, closed_until)

        # Alerts: raised once per spiked device, nothing else.
        expected_keys = {f"threshold:{SPIKE_METRIC}:{d}" for d in load.spike_windows}
        expected_keys |= district_alerts(expected, self.settings)
        raised_kafka = await _raised_events(kafka, topic_name(ALERTS_EVENTS, self.ours.kafka))
        raised_influx = await asyncio.to_thread(_influx_raised, self.settings, self.ours.buckets[1])
        webhook_raised: dict[str, set[str]] = {}
        webhook_deliveries = 0
        for event_id, kind, key in self.receiver.deliveries:
            if kind == AlertEventKind.RAISED:
                webhook_deliveries += 1
                webhook_raised.setdefault(key, set()).add(event_id)
        low_inside = min(load.spikes.low_inside.values(), default=math.nan)
        high_outside = max(load.spikes.high_outside.values(), default=math.nan)
        spike_check = {
            "metric": SPIKE_METRIC,
            "very_bad_above": VERY_BAD,
            "lowest_inside_spikes": low_inside,
            "highest_outside_spikes": high_outside,
            "clean": low_inside > VERY_BAD + HYSTERESIS and high_outside < VERY_BAD - HYSTERESIS,
        }
        return {
            "sent": in_kafka.expected,
            "kafka": in_kafka.as_dict(),
            "influx": in_influx.as_dict() | {"duplicates": influx_dupes},
            "probe_readings": sum(len(v) for v in probe_values.values()),
            "aggregates": {
                "closed_until_ms": closed_until,
                "expected_windows": len(expected),
                "influx": cmp_influx,
                "kafka": cmp_kafka,
                "kafka_records": agg_kafka_records,
                "kafka_duplicate_records": agg_kafka_records - len(agg_kafka),
            },
            "alerts": {
                "expected": sorted(expected_keys),
                "kafka": _alert_verdict(expected_keys, {k: len(v) for k, v in raised_kafka.items()}),
                "influx": _alert_verdict(expected_keys, raised_influx),
                "webhook": _alert_verdict(expected_keys, {k: len(v) for k, v in webhook_raised.items()})
                | {"deliveries": webhook_deliveries},
            },
            "spike_check": spike_check,
        }

    async def cleanup(self) -> None:
        if self.load is not None:
            await asyncio.to_thread(self.load.close)
        with contextlib.suppress(Exception):
            async with Kafka(self.settings) as kafka:
                await kafka.delete_topics_containing(self.uid)
        with contextlib.suppress(Exception):
            await self.ours.cleanup()
        with contextlib.suppress(Exception):
            await self.deprovision()
        jobs_dir = self.settings.stack.state_dir / "jobs" / f"{self.ctx.prefix}{self.settings.jobs.app_id}"
        shutil.rmtree(jobs_dir, ignore_errors=True)


# -- reading results back --------------------------------------------------------------------


async def _group_state(kafka: Kafka, group: str) -> tuple[str, int]:
    """(state, members); ``Unknown`` while Kafka cannot say (no coordinator yet, restarting)."""
    try:
        return await kafka.group_state(group)
    except KafkaError:
        return "Unknown", 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310  # local URL
            return bool(resp.status == 200)
    except OSError:
        return False


def _flux_csv(settings: Settings, flux: str) -> list[dict[str, str]]:
    from influxdb_client.client.influxdb_client import InfluxDBClient

    i = settings.influx
    with InfluxDBClient(url=i.url, token=i.admin_token.get_secret_value(), org=i.org, timeout=300_000) as c:
        text = c.query_api().query_raw(flux, dialect=_dialect()).data.decode()
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row or (len(row) > 1 and row[1] == "result" and header is not None and row == header):
            continue
        if not any(row):
            header = None
            continue
        if header is None:
            header = row
            continue
        rows.append(dict(zip(header, row, strict=False)))
    return rows


def _dialect() -> Any:
    from influxdb_client.domain.dialect import Dialect

    return Dialect(header=True, annotations=[], delimiter=",")


RANGE = "range(start: 0, stop: 2100-01-01T00:00:00Z)"


def _influx_seqs(settings: Settings, bucket: str, exclude: str) -> list[tuple[str, int]]:
    flux = (
        f'from(bucket: "{bucket}") |> {RANGE} '
        '|> filter(fn: (r) => r._measurement == "reading" and r._field == "seq") '
        f'|> filter(fn: (r) => r.device_id != "{exclude}") '
        '|> keep(columns: ["device_id", "_value"])'
    )
    return [(r["device_id"], int(r["_value"])) for r in _flux_csv(settings, flux)]


def _influx_aggregates(settings: Settings, bucket: str) -> dict[SeriesKey, Aggregate]:
    flux = (
        f'from(bucket: "{bucket}") |> {RANGE} |> filter(fn: (r) => r._measurement == "agg_1m") '
        '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") '
        '|> keep(columns: ["_time", "district", "sensor_type", "metric", '
        '"count", "mean", "min", "max", "p95"])'
    )
    out: dict[SeriesKey, Aggregate] = {}
    for r in _flux_csv(settings, flux):
        start = _epoch_ms(r["_time"])
        key = (r["district"], r["sensor_type"], r["metric"], start)
        out[key] = Aggregate(
            district=key[0], sensor_type=key[1], metric=key[2], window_start=start,
            window_end=start + WINDOW_MS, count=int(r["count"]), mean=float(r["mean"]), min=float(r["min"]),
            max=float(r["max"]), p95=float(r["p95"]), emitted_ms=0,
        )  # fmt: skip
    return out


def _influx_raised(settings: Settings, bucket: str) -> dict[str, int]:
    flux = (
        f'from(bucket: "{bucket}") |> {RANGE} '
        '|> filter(fn: (r) => r._measurement == "alert" and r.event == "raised" and r._field == "value") '
        '|> keep(columns: ["_time", "alert_key"])'
    )
    out: dict[str, int] = {}
    for r in _flux_csv(settings, flux):
        out[r["alert_key"]] = out.get(r["alert_key"], 0) + 1
    return out


def _epoch_ms(rfc3339: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


async def _kafka_aggregates(kafka: Kafka, topic: str) -> tuple[dict[SeriesKey, Aggregate], int]:
    """The last aggregate per window on the topic, and how many records it holds."""
    out: dict[SeriesKey, Aggregate] = {}
    count = 0

    def handle(records: list[Record]) -> None:
        nonlocal count
        for record in records:
            a = codec.decode(record.value or b"", Aggregate)
            out[(a.district, a.sensor_type, a.metric, a.window_start)] = a
            count += 1

    await kafka.scan(await kafka.partitions(topic), handle)
    return out, count


async def _raised_events(kafka: Kafka, topic: str) -> dict[str, set[str]]:
    """Alert key -> event ids of its ``raised`` events."""
    out: dict[str, set[str]] = {}

    def handle(records: list[Record]) -> None:
        for record in records:
            event = codec.decode(record.value or b"", AlertEvent)
            if event.kind is AlertEventKind.RAISED:
                out.setdefault(event.alert.key, set()).add(event.event_id)

    await kafka.scan(await kafka.partitions(topic), handle)
    return out


def district_alerts(expected: dict[SeriesKey, Aggregate], settings: Settings) -> set[str]:
    """District alerts the spikes must raise: the threshold over the series of window means of
    each district's pm10 (subject ``{district}/{sensor_type}``), with the rule's hysteresis,
    minimum duration and clear hold, as the stream jobs apply them."""
    from stream_jobs.alerts import DEFAULT_POLICIES

    policy = DEFAULT_POLICIES["threshold"]
    min_ms = int(settings.jobs.min_duration_s.get("threshold", policy.min_duration_ms / 1000) * 1000)
    hold_ms = int(settings.jobs.clear_hold_s.get("threshold", policy.clear_hold_ms / 1000) * 1000)
    series: dict[str, list[tuple[int, float]]] = {}
    for (district, sensor_type, metric, start), agg in expected.items():
        if sensor_type == SPIKE_SENSOR and metric == SPIKE_METRIC:
            series.setdefault(district, []).append((start, agg.mean))
    keys = set()
    for district, points in series.items():
        level_high = is_open = False
        since: int | None = None
        normal_since: int | None = None
        for start, mean in sorted(points):
            level_high = mean > (VERY_BAD - HYSTERESIS if level_high else VERY_BAD)
            if level_high:
                normal_since = None
                since = start if since is None else since
                if not is_open and start - since >= min_ms:
                    is_open = True
                    keys.add(f"threshold:{SPIKE_METRIC}:{district}/{SPIKE_SENSOR}")
            else:
                since = None
                normal_since = start if normal_since is None else normal_since
                if is_open and start - normal_since >= hold_ms:
                    is_open = False
    return keys


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))


def aggregates_equal(a: Aggregate, b: Aggregate) -> bool:
    return a.count == b.count and all(
        _same(getattr(a, f), getattr(b, f)) for f in ("mean", "min", "max", "p95")
    )


def compare_aggregates(
    expected: dict[SeriesKey, Aggregate], got: dict[SeriesKey, Aggregate], closed_until: int
) -> dict[str, Any]:
    """Equal / different / missing per expected window; windows that should not be there."""
    equal = different = missing = 0
    examples: list[dict[str, Any]] = []
    for key, want in expected.items():
        have = got.get(key)
        if have is None:
            missing += 1
        elif aggregates_equal(want, have):
            equal += 1
            continue
        else:
            different += 1
        if len(examples) < 10:
            examples.append(
                {"window": list(key), "expected": msgspec.to_builtins(want),
                 "got": msgspec.to_builtins(have) if have is not None else None}
            )  # fmt: skip
    extra = sorted(k for k in got if k not in expected and k[3] + WINDOW_MS <= closed_until)
    return {
        "equal": equal,
        "different": different,
        "missing": missing,
        "unexpected": len(extra),
        "unexpected_examples": [list(k) for k in extra[:5]],
        "examples": examples,
    }


def _alert_verdict(expected: set[str], raised: dict[str, int]) -> dict[str, Any]:
    return {
        "raised": sum(1 for k in raised if k in expected),
        "raised_more_than_once": sorted(k for k in expected if raised.get(k, 0) > 1),
        "missing": sorted(k for k in expected if k not in raised),
        "extra": sorted(k for k in raised if k not in expected),
    }


# -- the report --------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> list[tuple[str, str]]:
    acc = result["accounting"]
    k, i = acc["kafka"], acc["influx"]
    agg = acc["aggregates"]
    al = acc["alerts"]
    rows: list[tuple[str, str]] = [
        ("sent (device, seq)", f"{acc['sent']:,}"),
        ("not acknowledged by the broker at the end", str(result["load"]["unacked_at_end"])),
        ("in Kafka telemetry.raw (unique)", f"{k['unique']:,}"),
        ("duplicates in Kafka telemetry.raw", f"{k['duplicates']:,}"),
        ("lost before Kafka", f"{k['lost']:,}"),
        ("in InfluxDB raw bucket (unique)", f"{i['unique']:,}"),
        ("more than once in InfluxDB", f"{i['duplicates']:,}"),
        ("lost (not in InfluxDB)", f"{i['lost']:,}"),
        ("closed 1-minute windows expected", f"{agg['expected_windows']:,}"),
        (
            "aggregates in InfluxDB equal / different / missing / unexpected",
            "{equal} / {different} / {missing} / {unexpected}".format(**agg["influx"]),
        ),
        (
            "aggregates on telemetry.agg.1m equal / different / missing / unexpected",
            "{equal} / {different} / {missing} / {unexpected}".format(**agg["kafka"]),
        ),
        ("aggregate records re-emitted on telemetry.agg.1m", str(agg["kafka_duplicate_records"])),
    ]
    for where in ("kafka", "influx", "webhook"):
        v = al[where]
        rows.append(
            (
                f"alerts ({where}) expected / raised / missing / extra / more than once",
                f"{len(al['expected'])} / {v['raised']} / {len(v['missing'])} / {len(v['extra'])} / "
                f"{len(v['raised_more_than_once'])}",
            )
        )
    rows.append(("spike plan clean (spiked pm10 > 155, others < 145)", str(acc["spike_check"]["clean"])))
    by_component: dict[str, list[dict[str, Any]]] = {}
    for f in result["faults"]:
        by_component.setdefault(f["component"], []).append(f)
    for component in COMPONENTS:
        faults = by_component.get(component, [])
        if not faults:
            continue
        ready = ", ".join(f"{f['recovered_s']:.1f}" for f in faults)
        caught = ", ".join("-" if f["caught_up_s"] is None else f"{f['caught_up_s']:.1f}" for f in faults)
        rows.append(
            (
                f"kill -9 {component}: kills; ready again / caught up after (s)",
                f"{len(faults)}; {ready} / {caught}",
            )
        )
    rows.append(("stages that exited by themselves", str(len(result["unexpected_exits"]))))
    return rows


def verdict(result: dict[str, Any]) -> bool:
    acc = result["accounting"]
    agg = acc["aggregates"]
    alerts_ok = all(
        acc["alerts"][w]["raised"] == len(acc["alerts"]["expected"])
        and not acc["alerts"][w]["missing"]
        and not acc["alerts"][w]["extra"]
        and not acc["alerts"][w]["raised_more_than_once"]
        for w in ("kafka", "influx")
    )
    return bool(
        acc["influx"]["lost"] == 0
        and acc["influx"]["duplicates"] == 0
        and agg["influx"]["different"] + agg["influx"]["missing"] + agg["influx"]["unexpected"] == 0
        and alerts_ok
    )


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        "# Chaos run",
        "",
        f"`{command}`, started {result['started']}, wall time {result['wall_s']:.0f} s, "
        f"seed {result['plan']['seed']}, {result['plan']['fleet']} devices at 1 msg/s (QoS 1), "
        f"{result['plan']['rounds']} rounds. Verdict: **{'pass' if result['pass'] else 'FAIL'}**.",
        "",
        "| what | count |",
        "|---|---|",
        *(f"| {a} | {b} |" for a, b in table(result)),
        "",
        "## Faults",
        "",
        "| round | component | at (s) | down (s) | ready again (s) | caught up (s) |",
        "|---|---|---|---|---|---|",
    ]
    for f in result["faults"]:
        caught = "-" if f["caught_up_s"] is None else f"{f['caught_up_s']:.1f}"
        lines.append(
            f"| {f['round']} | {f['component']} | {f['killed_at_s']:.0f} | {f['pause_s']:.1f} | "
            f"{f['recovered_s']:.1f} | {caught} |"
        )
    return "\n".join(lines) + "\n"


def print_table(result: dict[str, Any]) -> None:
    rows = table(result)
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"  {a:<{width}}  {b}")
    print(f"  {'verdict':<{width}}  {'PASS' if result['pass'] else 'FAIL'}")


# -- entry points --------------------------------------------------------------------------------


def quiet_clients() -> None:
    """The run's own Kafka clients complain at every broker restart; that is the point of it."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def stop_on_sigterm() -> None:
    """SIGTERM (an interrupted make, a CI timeout) stops a run like Ctrl-C: the processes it
    started are stopped on the way out instead of being left running."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run_chaos(args: argparse.Namespace) -> int:
    from stack.manager import Stack

    settings = get_settings()
    down = [s.name for s in Stack(settings).status() if not s.healthy]
    if down:
        print(f"not running: {', '.join(down)}; start the stack: citystream stack up", file=sys.stderr)
        return 2
    quiet_clients()
    plan = plan_for(args)
    command = " ".join(["python -m bench.chaos", *sys.argv[1:]]) if args.command is None else args.command
    stop_on_sigterm()
    result = asyncio.run(Chaos(settings, plan).run())
    result["plan"] = result.get("plan", {})
    result["pass"] = verdict(result)
    result["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / "chaos.md").write_text(markdown(result, command))
    print_table(result)
    print(f"wrote {args.out / 'chaos.json'} and {args.out / 'chaos.md'}")
    return 0 if result["pass"] else 1


def main(argv: list[str] | None = None) -> int:
    from bench.cli import chaos_arguments
    from citystream.logs import configure_logging

    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    chaos_arguments(p)
    args = p.parse_args(argv)
    args.command = None
    configure_logging(os.environ.get("CITYSTREAM_LOG_LEVEL", "INFO"))
    quiet_clients()
    return run_chaos(args)


if __name__ == "__main__":
    sys.exit(main())
