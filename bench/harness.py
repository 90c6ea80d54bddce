"""Process orchestration of a benchmark run.

A run registers one simulated fleet in the device registry (its sensors, one gateway per
district and a probe device; one broker reload), then runs its segments one after the other.
A segment starts one system fresh on its own topic prefix, MQTT root, consumer groups and
buckets, proves it live with a probe reading, starts the load generator, samples once a second
(load progress, Kafka end offsets, consumer lag, the system's counters, CPU and RSS of every
process from /proc), waits for the pipeline to drain, stops the system, reads its topics back
for loss, duplicates and latency, and deletes what it created. The fleet is removed from the
registry at the end. Segments that would overrun the wall-clock budget are skipped, and say so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import secrets
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer, TopicPartition

from bench import accounting, procstats, systems, workloads
from bench.errors import BenchError
from bench.kafka_io import Kafka
from bench.latency import Latency, bucket_delta, bucket_summary, recovery_time
from bench.load import LoadSpec, LoadSummary, build_fleet
from bench.procstats import ProcMeter
from bench.workloads import Mode, SegmentSpec
from citystream.kafka_client import Principal, client_kwargs
from citystream.settings import Settings
from citystream.topics import DEVICES

logger = logging.getLogger(__name__)

TICK_S = 1.0
QUIET_S = 3.0
"""The raw topic counts as drained when it has not grown for this long (and lags are zero)."""
REPORT_RESERVE_S = 20.0
PROBE_DISTRICT, PROBE_SENSOR = "jongno", "noise"
HOP_ROLE = {"ours": "ingest", "cpipe": "cpipe", "quix": "quix-source"}
OWN_ROLES = {"ours": ("ingest", "jobs", "sink"), "cpipe": ("cpipe",), "quix": ("quix-source", "quix-windows")}


@dataclass(frozen=True)
class Config:
    mode: Mode
    workloads: tuple[str, ...]
    systems: tuple[str, ...]
    workdir: Path


class ProgressTail:
    """Follows the load generator's JSON-lines progress file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.done = 0
        self.failed = 0
        self.first_wall: float | None = None

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.pos += end + 1
        for row in data[: end + 1].splitlines():
            try:
                item = json.loads(row)
            except ValueError:
                continue
            if self.first_wall is None:
                self.first_wall = float(item["t"])
            self.done = int(item["done"])
            self.failed = int(item["failed"])


def series(timeline: Sequence[Mapping[str, float]], key: str, base: float = 0.0) -> list[tuple[float, float]]:
    return [(row["t"], row[key] - base) for row in timeline if key in row]


def lag_series(timeline: Sequence[Mapping[str, float]], key: str) -> list[tuple[float, float]]:
    if key == "bridge":
        return [(row["t"], max(0.0, row["sent"] - row["raw"])) for row in timeline]
    return series(timeline, f"{key}_lag")


STAGE_FLOW = {"bridge": ("sent", "raw"), "jobs": ("raw", "jobs"), "sink": ("raw", "sink")}
"""Stage -> (what flows into it, what it has done), as timeline columns."""


def growths(
    timeline: Sequence[Mapping[str, float]], stages: Sequence[str], start: float, end: float
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for stage in stages:
        inflow, done = STAGE_FLOW[stage]
        out[stage] = workloads.backlog_growth(series(timeline, inflow), series(timeline, done), start, end)
    return out


class StepWatch:
    """Stops a W2 run after the first step whose rate the load generator could not offer."""

    def __init__(self, spec: SegmentSpec, lags: Sequence[str]) -> None:
        self.spec = spec
        self.lags = lags
        self.ends = [sum(p.duration_s for p in spec.phases[: k + 1]) for k in range(len(spec.phases))]
        self.step = 0
        self.failed: str | None = None

    def check(self, timeline: Sequence[Mapping[str, float]], load0: float | None) -> str | None:
        if load0 is None or self.failed or self.step >= len(self.ends) - 1:
            return None
        start = load0 + (self.ends[self.step - 1] if self.step else 0.0)
        end = load0 + self.ends[self.step]
        now = timeline[-1]["t"]
        if now < end + 1.0:
            return None
        rate = self.spec.rates[self.step]
        offered = workloads.rate_between(series(timeline, "sent"), start + 1.0, end)
        growth = growths(timeline, self.lags, start + 2.0, end + 1.0)
        verdict = workloads.judge_step(rate, offered, growth, sent=0, received=0)
        self.step += 1
        if verdict.offered < workloads.OFFERED_SHARE * rate:
            self.failed = f"step {rate:,.0f} msg/s: {verdict.reason}"
        return self.failed


class Harness:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.settings = settings
        self.config = config
        self.mode = config.mode
        self.uid = "bn" + uuid.uuid4().hex[:6]
        self.id_prefix = f"{self.uid}-"
        self.devices = build_fleet(self.mode.fleet, 1, self.id_prefix)
        self.logins: list[tuple[str, str, str, str]] = []
        self.probe = systems.ProbeDevice(
            f"{self.id_prefix}probe", secrets.token_urlsafe(18), PROBE_DISTRICT, PROBE_SENSOR
        )
        self.quix: Path | None = None
        self.services: dict[str, int] = {}
        self.workdir = config.workdir / self.uid
        self.registered: list[str] = []

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        began = time.monotonic()
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        load_before = os.getloadavg()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if "cpipe" in self.config.systems:
            await asyncio.to_thread(systems.ensure_cpipe_tools)
        if "quix" in self.config.systems:
            self.quix = await asyncio.to_thread(systems.quix_python, self.settings)
        peers = [s for s in self.config.systems if s != "ours"]
        if peers and self.settings.kafka.security != "plaintext":
            raise BenchError(
                f"the peers ({', '.join(peers)}) connect to Kafka without credentials; "
                "run them against a plaintext stack or choose --systems ours"
            )
        self.services = procstats.service_pids(self.settings.stack.state_dir)
        missing = sorted(set(procstats.SERVICE_PID_FILES) - set(self.services))
        if missing:
            raise BenchError(f"{', '.join(missing)} not running here; start the stack: citystream stack up")
        candidates = [d.number for d in self.devices if d.sensor_type == "air_quality"]
        plan = workloads.plan(self.mode, self.config.workloads, self.config.systems, candidates)
        results: list[dict[str, Any]] = []
        try:
            await self.provision()
            for index, spec in enumerate(plan):
                elapsed = time.monotonic() - began
                estimate = workloads.estimate_s(spec, self.mode)
                if elapsed + estimate > self.mode.budget_s - REPORT_RESERVE_S:
                    logger.warning("skipping %s: %.0f s left, it needs about %.0f s", spec.name,
                                   self.mode.budget_s - elapsed, estimate)  # fmt: skip
                    results.append(self._header(spec) | {"skipped": "over the time budget"})
                    continue
                logger.info(
                    "segment %s (%d of %d), %.0f s into the run", spec.name, index + 1, len(plan), elapsed
                )
                try:
                    results.append(await self.segment(index, spec))
                except BenchError as exc:
                    logger.error("segment %s failed: %s", spec.name, exc)  # noqa: TRY400  # the message says it
                    results.append(self._header(spec) | {"error": str(exc)})
                except Exception as exc:  # one broken segment must not cost the whole report
                    logger.exception("segment %s failed", spec.name)
                    results.append(self._header(spec) | {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            await self.deprovision()
        about = await asyncio.to_thread(machine, self.settings, load_before, self.quix)
        return {
            "bench": "pipeline",
            "mode": self.mode.name,
            "started": started_at,
            "duration_s": round(time.monotonic() - began, 1),
            "machine": about,
            "config": {
                "fleet": self.mode.fleet,
                "repeats": self.mode.repeats,
                "workloads": list(self.config.workloads),
                "systems": list(self.config.systems),
                "mode": self.mode._asdict(),
            },
            "segments": results,
            "summary": workloads.summarise(results),
        }

    @staticmethod
    def _header(spec: SegmentSpec) -> dict[str, Any]:
        return {
            "name": spec.name,
            "workload": spec.workload,
            "system": spec.system,
            "repeat": spec.repeat,
            "rates": list(spec.rates),
        }

    # -- registry ----------------------------------------------------------------------------

    async def provision(self) -> None:
        """The fleet's sensors, a gateway per district and the probe device: one registry batch."""
        from ingest.registry import DeviceRegistry, prepare_entry
        from simulators import provision

        route = provision.plan_route(self.devices, "gateway", self.id_prefix)
        self.logins = [(x.client_id, x.username, x.password, x.district) for x in route.logins]

        def entries() -> list[tuple[Any, str]]:
            template = prepare_entry(
                self.id_prefix + "template", "jongno", "noise", secrets.token_urlsafe(18)
            )
            out: list[tuple[Any, str]] = [
                (
                    msgspec.structs.replace(
                        template, device_id=d.device_id, district=d.district, sensor_type=d.sensor_type,
                        lat=d.lat, lon=d.lon, interval_s=1.0,
                    ),
                    "",
                )
                for d in self.devices
            ]  # fmt: skip
            out += [
                (prepare_entry(x.username, x.district, "", x.password, gateway=True), x.password)
                for x in route.logins
            ]
            p = self.probe
            out.append((prepare_entry(p.device_id, p.district, p.sensor_type, p.password), p.password))
            return out

        prepared = await asyncio.to_thread(entries)
        self.registered = [e.device_id for e, _ in prepared]
        await DeviceRegistry(self.settings).add_many(prepared)
        logger.info("registered %d devices, %d gateways and a probe", len(self.devices), len(route.logins))

    async def deprovision(self) -> None:
        from ingest.registry import DeviceRegistry

        if not self.registered:
            return
        producer = AIOKafkaProducer(
            **client_kwargs(self.settings, Principal.REGISTRY), acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            sends = [await producer.send(DEVICES, None, key=device.encode()) for device in self.registered]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
        await DeviceRegistry(self.settings).apply()
        logger.info("removed %d registry entries", len(self.registered))
        self.registered = []

    # -- one segment -------------------------------------------------------------------------

    async def segment(self, index: int, spec: SegmentSpec) -> dict[str, Any]:
        uid = f"{self.uid}s{index:02d}"
        workdir = self.workdir / uid
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = systems.Context(self.settings, uid, uid, workdir, self.probe)
        system = systems.make(spec.system, ctx, self.quix)
        result = self._header(spec) | {"uid": uid, "label": system.label}
        async with Kafka(self.settings) as kafka:
            try:
                t_start = time.monotonic()
                try:
                    await system.start(kafka)
                finally:
                    result["startup_s"] = round(time.monotonic() - t_start, 1)
                tps = await kafka.partitions(system.raw_topic)
                await asyncio.sleep(0.5)  # late probes land before the window opens
                raw_start = await kafka.end_offsets(tps)
                measured = await self.measure(
                    kafka=kafka, system=system, spec=spec, tps=tps, raw_start=raw_start, workdir=workdir
                )
            except BaseException:
                system.stop()
                await self.cleanup(kafka, system, uid)
                raise
            result["exit_codes"] = system.stop()
            if logs := system.logs():
                result["logs"] = logs
            # After the stop: what a system delivers while shutting down has arrived, not been lost.
            measured["raw_end"] = await kafka.end_offsets(tps)
            t_account = time.monotonic()
            try:
                await self.settle(
                    kafka=kafka, system=system, spec=spec, result=result, m=measured, raw_start=raw_start
                )
            finally:
                await self.cleanup(kafka, system, uid)
            result["account_s"] = round(time.monotonic() - t_account, 1)
        result["segment_s"] = round(time.monotonic() - t_start, 1)
        return result

    async def cleanup(self, kafka: Kafka, system: systems.System, uid: str) -> None:
        await kafka.delete_topics_containing(uid)
        if isinstance(system, systems.Ours):
            await system.cleanup()

    async def measure(
        self,
        *,
        kafka: Kafka,
        system: systems.System,
        spec: SegmentSpec,
        tps: list[TopicPartition],
        raw_start: dict[TopicPartition, int],
        workdir: Path,
    ) -> dict[str, Any]:
        """Run the load and sample until it has drained; everything the accounting needs."""
        raw0 = sum(raw_start.values())
        progress_path, summary_path = workdir / "progress.jsonl", workdir / "load-summary.json"
        load_spec = LoadSpec(
            fleet=self.mode.fleet, seed=1, id_prefix=self.id_prefix, root=system.ctx.root, qos=1,
            phases=list(spec.phases), spikes=list(spec.spikes), flat_out=spec.flat_out, logins=self.logins,
            progress_path=str(progress_path), summary_path=str(summary_path),
        )  # fmt: skip
        spec_path = workdir / "load.json"
        spec_path.write_bytes(msgspec.json.encode(load_spec))
        spec_path.chmod(0o600)  # it holds the gateway passwords
        roles: dict[str, list[int]] = {**system.roles(), **{k: [v] for k, v in self.services.items()}}
        meter = ProcMeter(roles)
        before = system.counters()
        sink_before = system.sink_latency() if isinstance(system, systems.Ours) else {}
        t0 = time.monotonic()
        wall0 = time.time()
        meter.start(t0)
        load = systems.Child(
            "loadgen",
            [sys.executable, "-m", "bench.load", str(spec_path)],
            cwd=workdir,
            log=workdir / "loadgen.log",
        )
        meter.add_role("loadgen", [load.pid], time.monotonic())
        tail = ProgressTail(progress_path)
        try:
            stopped, timeline = await self.sample_load(
                kafka=kafka, system=system, spec=spec, tps=tps, raw0=raw0, tail=tail, t0=t0, wall0=wall0,
                meter=meter, load=load,
            )  # fmt: skip
        finally:
            load.stop()
        if not summary_path.exists():
            raise BenchError(f"the load generator left no summary:\n{load.tail()}")
        summary = msgspec.json.decode(summary_path.read_bytes(), type=LoadSummary)
        drain_started = time.monotonic()
        drained: list[dict[str, float]] = []
        await self.drain(kafka=kafka, system=system, tps=tps, raw0=raw0, tail=tail, t0=t0,
                         timeline=drained, meter=meter, sent=summary.sent)  # fmt: skip
        timeline = await self.drained(
            kafka=kafka, system=system, meter=meter, timeline=timeline, drained=drained
        )
        system.check_alive()
        return {
            "load": summary,
            "stopped": stopped,
            "timeline": timeline,
            "meter": meter,
            "counters_before": before,
            "counters_after": system.counters(),
            "sink_before": sink_before,
            "sink_after": system.sink_latency() if isinstance(system, systems.Ours) else {},
            "load0": None if tail.first_wall is None else tail.first_wall - wall0,
            "drain_s": round(time.monotonic() - drain_started, 1),
        }

    async def sample_load(
        self,
        *,
        kafka: Kafka,
        system: systems.System,
        spec: SegmentSpec,
        tps: list[TopicPartition],
        raw0: int,
        tail: ProgressTail,
        t0: float,
        wall0: float,
        meter: ProcMeter,
        load: systems.Child,
    ) -> tuple[str | None, list[dict[str, float]]]:
        """Sample every ``TICK_S`` while the load runs (stopping a W2 step that fell behind); why
        the load was stopped early, if it was, and the samples."""
        lags = ["bridge", *system.groups] if spec.system == "ours" else ["bridge"]
        watch = StepWatch(spec, lags) if spec.workload == "W2" else None
        limit = (spec.messages / 1000.0 if spec.flat_out else spec.duration_s * 2) + 60.0
        timeline: list[dict[str, float]] = []
        stopped: str | None = None
        while load.alive():
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - t0) % TICK_S))
            timeline.append(
                await self.sample(kafka=kafka, system=system, tps=tps, raw0=raw0, tail=tail, t0=t0)
            )
            meter.sample(time.monotonic())
            load0 = None if tail.first_wall is None else tail.first_wall - wall0
            reason = watch.check(timeline, load0) if watch else None
            if reason is None and time.monotonic() - t0 > limit:
                reason = f"the load took longer than {limit:.0f} s"
            if reason is not None and stopped is None:
                stopped = reason
                logger.info("%s: stopping the load: %s", spec.name, reason)
                load.proc.terminate()
        return stopped, timeline

    async def drained(
        self,
        *,
        kafka: Kafka,
        system: systems.System,
        meter: ProcMeter,
        timeline: list[dict[str, float]],
        drained: list[dict[str, float]],
    ) -> list[dict[str, float]]:
        """The segment's timeline: the samples of the load, then those of the drain."""
        return timeline + drained

    async def drain(
        self,
        *,
        kafka: Kafka,
        system: systems.System,
        tps: list[TopicPartition],
        raw0: int,
        tail: ProgressTail,
        t0: float,
        timeline: list[dict[str, float]],
        meter: ProcMeter,
        sent: int,
    ) -> None:
        """Sample until the raw topic holds what was sent (or stopped growing) and lags are zero."""
        started = time.monotonic()
        last_raw, last_change = -1.0, time.monotonic()
        while True:
            row = await self.sample(kafka=kafka, system=system, tps=tps, raw0=raw0, tail=tail, t0=t0)
            timeline.append(row)
            meter.sample(time.monotonic())
            steady = row["raw"] == last_raw
            if not steady:
                last_raw, last_change = row["raw"], time.monotonic()
            # A late probe can make up for one message still on its way: wait for a quiet sample too.
            raw_done = (row["raw"] >= sent and steady) or time.monotonic() - last_change > QUIET_S
            lag_done = all(row.get(f"{g}_lag", 0.0) == 0 for g in system.groups)
            if (raw_done and lag_done) or time.monotonic() - started > self.mode.drain_s:
                return
            await asyncio.sleep(0.5)

    async def sample(
        self,
        *,
        kafka: Kafka,
        system: systems.System,
        tps: list[TopicPartition],
        raw0: int,
        tail: ProgressTail,
        t0: float,
    ) -> dict[str, float]:
        tail.poll()
        raw_end = await kafka.total_end(tps)
        row: dict[str, float] = {
            "t": round(time.monotonic() - t0, 2),
            "sent": float(tail.done),
            "failed": float(tail.failed),
            "raw": float(raw_end - raw0),
        }
        for stage, group in system.groups.items():
            committed = sum((await kafka.committed(group, tps)).values())
            row[stage] = float(max(0, committed - raw0))
            row[f"{stage}_lag"] = float(max(0, raw_end - committed))
        row.update(system.counters())
        return row

    # -- after the segment -------------------------------------------------------------------

    async def settle(
        self,
        *,
        kafka: Kafka,
        system: systems.System,
        spec: SegmentSpec,
        result: dict[str, Any],
        m: dict[str, Any],
        raw_start: dict[TopicPartition, int],
    ) -> None:
        load: LoadSummary = m["load"]
        ours = isinstance(system, systems.Ours)
        acc = await accounting.account(
            kafka,
            system,
            load,
            raw_start=raw_start,
            raw_end=m["raw_end"],
            events_topic=system.events_topic if isinstance(system, systems.Ours) else None,
            latency=not spec.flat_out,
        )
        ledger = acc.ledger.result()
        timeline: list[dict[str, float]] = m["timeline"]
        meter: ProcMeter = m["meter"]
        hop_messages = ledger.received + ledger.unexpected
        figures: dict[str, float] = {
            "offered_rate": round(load.sent / load.duration_s, 1) if load.duration_s else 0.0,
            "hop_rate": round(acc.hop_rate(), 1),
            "sent": float(load.sent),
            "lost": float(ledger.lost),
            "duplicates": float(ledger.duplicates),
            **acc.figures(),
        }
        consumed = {stage: timeline[-1].get(stage, 0.0) for stage in system.groups} if timeline else {}
        for stage in system.groups:
            if timeline:
                figures[f"{stage}_backlog_end"] = timeline[-1].get(f"{stage}_lag", 0.0)
        counters = {
            k: m["counters_after"].get(k, 0.0) - m["counters_before"].get(k, 0.0) for k in m["counters_after"]
        }
        per_role = self.role_figures(spec.system, meter, hop_messages, consumed, counters)
        figures.update(per_role)
        if m["load0"] is not None and not spec.flat_out:
            a, b = m["load0"] + workloads.WARMUP_S, m["load0"] + spec.duration_s
            for stage in ("sent", "raw", *system.groups):
                figures[f"{stage}_rate"] = round(workloads.rate_between(series(timeline, stage), a, b), 1)
        result.update(
            load={
                "planned": load.planned, "sent": load.sent, "failed": load.failed,
                "duration_s": load.duration_s, "rate": load.rate, "offset_ms": load.offset_ms,
                "stopped_early": load.stopped_early, "failures": load.failures, "per_phase": load.per_phase,
            },
            stopped=m["stopped"],
            drain_s=m["drain_s"],
            ledger=ledger.as_dict(),
            latency={hop: lat.summary() for hop, lat in acc.hops.items() if lat.count},
            hdr={hop: lat.encoded() for hop, lat in acc.hops.items() if lat.count},
            counters=counters,
            consumed=consumed,
            undecodable=acc.undecodable,
            not_broker_stamped=acc.not_broker_stamped,
            appended_per_s=sorted(acc.appended_per_s.items()),
            timeline=timeline,
            load0=m["load0"],
        )  # fmt: skip
        if ours and isinstance(system, systems.Ours):
            await self.settle_ours(
                system=system, result=result, figures=figures, acc=acc, load=load, m=m, unique=ledger.unique
            )
        if spec.workload == "W2":
            result["steps"] = self.steps(spec, result, acc, load)
        if spec.workload == "W3":
            result["burst"] = self.burst(spec, acc, timeline, m["load0"])
        result["figures"] = figures

    def role_figures(
        self,
        system: str,
        meter: ProcMeter,
        hop_messages: int,
        consumed: Mapping[str, float],
        counters: Mapping[str, float],
    ) -> dict[str, float]:
        """CPU seconds, CPU seconds per million messages and peak RSS of every role."""
        handled = {
            "jobs": consumed.get("jobs", 0.0),
            "sink": consumed.get("sink", 0.0),
            "quix-windows": consumed.get("quix-windows", 0.0),
            "influxd": counters.get("sink_points", 0.0),
        }
        out: dict[str, float] = {}
        own_cpu = 0.0
        for role, usage in meter.usage.items():
            messages = handled.get(role, float(hop_messages))
            out[f"{role}_cpu_s"] = round(usage.cpu_s, 3)
            out[f"{role}_cpu_s_per_million"] = round(usage.cpu_s / messages * 1e6, 2) if messages else 0.0
            out[f"{role}_peak_rss_mib"] = round(usage.peak_rss_bytes / 2**20, 1)
            if role in OWN_ROLES[system]:
                own_cpu += usage.cpu_s
        hop = HOP_ROLE[system]
        out["hop_cpu_s_per_million"] = out.get(f"{hop}_cpu_s_per_million", 0.0)
        out["hop_peak_rss_mib"] = out.get(f"{hop}_peak_rss_mib", 0.0)
        out["system_cpu_s_per_million"] = round(own_cpu / hop_messages * 1e6, 2) if hop_messages else 0.0
        if system == "quix":
            out["windows_cpu_s_per_million"] = out.get("quix-windows_cpu_s_per_million", 0.0)
            out["windows_peak_rss_mib"] = out.get("quix-windows_peak_rss_mib", 0.0)
        return out

    async def settle_ours(
        self,
        *,
        system: systems.Ours,
        result: dict[str, Any],
        figures: dict[str, float],
        acc: accounting.Accounts,
        load: LoadSummary,
        m: dict[str, Any],
        unique: int,
    ) -> None:
        from bench import influx_io

        delta = bucket_delta(m["sink_after"], m["sink_before"])
        influx = bucket_summary(delta) if delta else {}
        if influx:
            # The sink measures from the device timestamp; move it onto the wall clock like the rest.
            for k in ("p50", "p90", "p99", "p999"):
                influx[k] = round(max(0.0, influx[k] - load.offset_ms), 1)
            for k in ("p50", "p99", "p999"):
                figures[f"device_influx_{k}_ms"] = influx[k]
            if "max_le_ms" in influx:
                figures["device_influx_max_le_ms"] = influx["max_le_ms"]
        result["latency"]["device_influx"] = influx
        try:
            written = await asyncio.to_thread(
                influx_io.count_readings, self.settings.influx, system.buckets[0], self.probe.device_id
            )
        except Exception as exc:  # a failed count must not lose the rest of the figures
            logger.warning("counting the readings in InfluxDB failed: %r", exc)
            written = -1
        result["influx"] = {
            "readings_written": written,
            "unique_in_kafka": unique,
            "missing": unique - written,
        }
        figures["influx_missing"] = float(unique - written) if written >= 0 else -1.0
        rules = accounting.alert_rules(acc.alerts)
        result["alerts"] = {
            "raised": len(acc.alerts),
            "by_rule": rules,
            "matched": acc.alert_latency.count,
            "unmatched": acc.alerts_unmatched,
            "spiked_devices": len({s[0] for s in load.spikes}),
            "spiked_devices_alerted": accounting.spike_hits(acc.alerts, load.spikes),
            "latency": acc.alert_latency.summary(),
        }
        figures["alerts_raised"] = float(len(acc.alerts))

    def steps(
        self, spec: SegmentSpec, result: dict[str, Any], acc: accounting.Accounts, load: LoadSummary
    ) -> dict[str, Any]:
        timeline: list[dict[str, float]] = result["timeline"]
        load0: float | None = result["load0"]
        verdicts = []
        start = 0.0
        for k, (phase, rate) in enumerate(zip(spec.phases, spec.rates, strict=True)):
            end = start + phase.duration_s
            if k >= len(load.per_phase) or load.per_phase[k] == 0 or load0 is None:
                break
            a, b = load0 + start, load0 + end
            growth = growths(timeline, ("bridge", "jobs", "sink"), a + 2.0, b + 1.0)
            offered = workloads.rate_between(series(timeline, "sent"), a + 1.0, b)
            received = acc.per_phase_unique[k] if k < len(acc.per_phase_unique) else 0
            verdict = workloads.judge_step(rate, offered, growth, load.per_phase[k], received)
            verdicts.append(verdict)
            if load.stopped_early and verdict.offered < workloads.OFFERED_SHARE * rate:
                break  # the run was stopped here; later steps were cut short or never ran
            start = end
        return {
            "knee": workloads.knee(verdicts),
            "knees": {stage: workloads.stage_knee(verdicts, stage) for stage in STAGE_FLOW},
            "limited_by_load_generator": workloads.generator_limited(verdicts),
            "steps": [v._asdict() for v in verdicts],
        }

    def burst(
        self,
        spec: SegmentSpec,
        acc: accounting.Accounts,
        timeline: list[dict[str, float]],
        load0: float | None,
    ) -> dict[str, Any]:
        before, burst = spec.phases[0].duration_s, spec.phases[1].duration_s
        warm = min(workloads.WARMUP_S, before / 2)
        steady = Latency()
        for second, latency in acc.timeline.seconds.items():
            if warm <= second < before:
                steady.merge(latency)
        baseline = steady.percentile(99.0)
        p99 = acc.timeline.percentile_series(99.0)
        burst_end = int(before + burst)
        out: dict[str, Any] = {
            "steady_p99_ms": baseline,
            "recovery_s": recovery_time(p99, baseline, burst_end) if steady.count else None,
            "p99_per_s": p99,
        }
        if load0 is not None:
            for lag in ("jobs", "sink"):
                points = lag_series(timeline, lag)
                steady_lag = [v for t, v in points if load0 + warm <= t < load0 + before]
                level = max(steady_lag, default=0.0)
                after = [(round(t - load0), v) for t, v in points if t >= load0 + before + burst]
                out[f"{lag}_lag_recovery_s"] = recovery_time(
                    after, max(level, 1.0), burst_end, hold=1, slack=1.0
                )
        return out


def machine(settings: Settings, load_before: tuple[float, float, float], quix: Path | None) -> dict[str, Any]:
    from stack.manager import Stack

    cpu = "unknown"
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    try:
        services = {r.name: r.version for r in Stack(settings).status()}
    except Exception:  # the report still says what it knows
        services = {}
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "services": services,
        "quixstreams": systems.quix_version(quix) if quix else None,
        "tools": systems.describe(settings),
        "load_avg_at_start": [round(x, 2) for x in load_before],
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
