"""The soak: the whole pipeline for a long time at a steady share of its knee, on the real local stack.

It reuses the benchmark harness: one fleet registered in the device registry, our pipeline
(bridge, stream jobs worker, InfluxDB sink) started fresh on its own topic prefix, MQTT root,
consumer groups and buckets, and the load generator at one steady rate (by default 70 % of the
whole pipeline's W2 knee in ``bench/results/pipeline.json``). Every ``SAMPLE_S`` seconds it
records the RSS and CPU of each process (ours, the load generator and the services), the lag
of every consumer group of ours on every topic it reads, and the counts that give the
throughput. After the load it waits for the pipeline to drain, stops it, reads the raw topic
back for loss and counts the readings in InfluxDB, scans each process's log for errors and
judges the run (``bench.soak_verdicts``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bench import procstats, systems, workloads
from bench import soak_verdicts as verdicts
from bench.errors import BenchError
from bench.harness import Config, Harness, ProgressTail, machine
from bench.kafka_io import Kafka
from bench.load import Phase
from bench.procstats import ProcMeter
from bench.workloads import SegmentSpec
from citystream.settings import Settings

logger = logging.getLogger(__name__)

KNEE_SHARE = 0.7
MINUTES = 30.0
WARMUP_MIN = 5.0
SAMPLE_S = 10.0
DRAIN_S = 180.0
"""Longest wait after the load for the raw topic to hold what was sent and the lags to be zero."""
LOAD_SLACK_S = 120.0
"""The load generator is stopped when it runs this much longer than planned."""
OURS = ("ingest", "jobs", "sink")
OTHERS = ("loadgen", "mosquitto", "kafka", "influxd")
LABELS = {
    "ingest": "bridge (python -m ingest)",
    "jobs": "stream jobs worker (python -m stream_jobs)",
    "sink": "InfluxDB sink (python -m sinks influx)",
    "loadgen": "load generator (not ours)",
    "mosquitto": "Mosquitto (shared service)",
    "kafka": "Kafka (shared service)",
    "influxd": "InfluxDB (shared service)",
}
DEFAULT_FLEET = workloads.QUICK.fleet
"""Sensors when the rate is given (the quick benchmark's fleet, on which the knee was measured)."""
STATE_READINGS = 60
"""Readings a device sends before its state stops growing (the detectors' longest window)."""
CLEAN_EXITS = (0, -15)
"""Exit codes of a process stopped with SIGTERM that shut down by itself or by the signal."""


@dataclass(frozen=True)
class SoakConfig:
    rate: float
    rate_source: str
    """Where the rate came from (the knee it is a share of, or ``--rate``)."""
    minutes: float
    warmup_s: float
    fleet: int
    workdir: Path

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0


def knee_config(results: Path, share: float = KNEE_SHARE) -> tuple[float, int, str]:
    """(rate, fleet, source) from a saved pipeline benchmark: ``share`` of its W2 knee."""
    try:
        data = json.loads(results.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read the knee from {results}: {exc}; give --rate") from exc
    rate = verdicts.knee_rate(data.get("summary", {}), share)
    if rate is None:
        raise BenchError(f"{results} has no W2 knee; run `citystream bench --workload W2` or give --rate")
    w2: dict[str, Any] = next((s for s in data.get("segments", []) if s.get("workload") == "W2"), {})
    fleet = int(data.get("config", {}).get("fleet") or DEFAULT_FLEET)
    knee = rate / share
    source = (
        f"{share:.0%} of the W2 knee {knee:,.0f} msg/s in {results.name} "
        f"({data.get('mode', '?')} run of {w2.get('uid', data.get('started', '?'))})"
    )
    return rate, fleet, source


def settled_fleet(rate: float, warmup_s: float) -> int:
    """The most sensors that, sharing ``rate`` msg/s, each send ``STATE_READINGS`` readings within
    80% of the warm-up: with more, the per-device state would still be filling (and RSS growing)
    when the growth is measured."""
    return max(1, int(rate * warmup_s * 0.8 / STATE_READINGS))


class Soak(Harness):
    """One long segment of our pipeline at a steady rate, sampled every ``SAMPLE_S`` seconds."""

    def __init__(self, settings: Settings, config: SoakConfig) -> None:
        mode = workloads.QUICK._replace(name="soak", fleet=config.fleet, drain_s=DRAIN_S)
        super().__init__(settings, Config(mode=mode, workloads=(), systems=("ours",), workdir=config.workdir))
        self.soak = config
        self.timeline: list[dict[str, float]] = []
        """Samples of the load so far (kept here so that a failed run still reports them)."""
        self.partitions: dict[str, list[TopicPartition]] = {}
        self.logs: dict[str, Path] = {}

    def spec(self) -> SegmentSpec:
        interval = self.soak.fleet / self.soak.rate
        phase = Phase(self.soak.duration_s, interval)
        return SegmentSpec("soak", "ours", 0, (phase,), rates=(self.soak.rate,))

    async def run(self) -> dict[str, Any]:
        began = time.monotonic()
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        load_before = os.getloadavg()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.services = procstats.service_pids(self.settings.stack.state_dir)
        missing = sorted(set(procstats.SERVICE_PID_FILES) - set(self.services))
        if missing:
            raise BenchError(f"{', '.join(missing)} not running here; start the stack: citystream stack up")
        spec = self.spec()
        segment: dict[str, Any] = self._header(spec)
        try:
            await self.provision()
            logger.info(
                "soak: %.0f msg/s from %d sensors for %.0f min (warm-up %.0f min)",
                self.soak.rate, self.soak.fleet, self.soak.minutes, self.soak.warmup_s / 60,
            )  # fmt: skip
            segment = await self.segment(0, spec)
        except Exception as exc:  # the samples taken so far still make a report
            logger.exception("the soak failed")
            segment |= {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            await self.deprovision()
        about = await asyncio.to_thread(machine, self.settings, load_before, None)
        return {
            "bench": "soak",
            "started": started_at,
            "duration_s": round(time.monotonic() - began, 1),
            "machine": about,
            "config": {
                "rate": self.soak.rate,
                "rate_source": self.soak.rate_source,
                "minutes": self.soak.minutes,
                "warmup_s": self.soak.warmup_s,
                "fleet": self.soak.fleet,
                "interval_s": round(self.soak.fleet / self.soak.rate, 3),
                "sample_s": SAMPLE_S,
            },
            "segment": {k: v for k, v in segment.items() if k not in ("timeline", "hdr", "appended_per_s")},
            "timeline": self.timeline,
            "verdicts": judge(self.soak, self.timeline, segment, self.logs),
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
        """Sample every ``SAMPLE_S`` while the load runs, with each group's lag per topic and the
        RSS of every process (into ``self.timeline``, so a failed run still reports them); stop
        the load when a stage exits."""
        self.logs = {c.name: c.log_path for c in system.children} | {"loadgen": load.log_path}
        limit = spec.duration_s + LOAD_SLACK_S
        due = SAMPLE_S
        while load.alive():
            await asyncio.sleep(1.0)
            if time.monotonic() - t0 < due:
                continue
            due += SAMPLE_S
            row = await self.sample(kafka=kafka, system=system, tps=tps, raw0=raw0, tail=tail, t0=t0)
            meter.sample(time.monotonic())
            row |= await self.topic_lags(kafka, system)
            row |= rss_row(meter)
            row["load1"] = round(os.getloadavg()[0], 2)
            self.timeline.append(row)
            if len(self.timeline) % 30 == 0:
                lags = {g: row.get(f"{g}_lag") for g in system.groups}
                logger.info("soak: %.0f s, %d sent, raw-topic lags %s", row["t"], row["sent"], lags)
            dead = [c.name for c in system.children if not c.alive()]
            reason = f"{', '.join(dead)} exited" if dead else None
            if reason is None and time.monotonic() - t0 > limit:
                reason = f"the load took longer than {limit:.0f} s"
            if reason is not None:
                logger.warning("soak: stopping the load: %s", reason)
                load.proc.terminate()
                return reason, self.timeline
        return None, self.timeline

    async def drained(
        self,
        *,
        kafka: Kafka,
        system: systems.System,
        meter: ProcMeter,
        timeline: list[dict[str, float]],
        drained: list[dict[str, float]],
    ) -> list[dict[str, float]]:
        """The samples of the load and one after the drain, with the lags and RSS then."""
        if drained:
            after = drained[-1] | await self.topic_lags(kafka, system) | rss_row(meter)
            self.timeline.append(after | {"drained": 1.0})
        return self.timeline

    async def topic_lags(self, kafka: Kafka, system: systems.System) -> dict[str, float]:
        """``lag/<stage>/<topic>``: what each consumer group of ours has not committed, per topic."""
        out: dict[str, float] = {}
        for stage, group in system.groups.items():
            try:
                committed = await kafka.admin.list_consumer_group_offsets(group)
            except KafkaError as exc:
                logger.warning("offsets of %s: %r", group, exc)
                continue
            for topic in sorted({tp.topic for tp in committed}):
                if topic not in self.partitions:
                    self.partitions[topic] = await kafka.partitions(topic)
                tps = self.partitions[topic]
                ends = await kafka.end_offsets(tps)
                lag = sum(
                    max(0, ends[tp] - max(0, committed[tp].offset if tp in committed else 0)) for tp in tps
                )
                out[f"lag/{stage}/{topic.removeprefix(system.ctx.prefix)}"] = float(lag)
        return out


def rss_row(meter: ProcMeter) -> dict[str, float]:
    """``rss/<role>`` (bytes) and ``cpu/<role>`` (seconds) of the meter's latest sample of each role."""
    out: dict[str, float] = {}
    for role, usage in meter.usage.items():
        if usage.samples:
            out[f"rss/{role}"] = float(usage.samples[-1][2])
            out[f"cpu/{role}"] = round(usage.cpu_s, 2)
    return out


def series(timeline: Sequence[Mapping[str, float]], key: str) -> list[tuple[float, float]]:
    return [(row["t"], row[key]) for row in timeline if key in row and "drained" not in row]


def judge(
    config: SoakConfig,
    timeline: Sequence[Mapping[str, float]],
    segment: Mapping[str, Any],
    logs: Mapping[str, Path],
) -> dict[str, Any]:
    """Every verdict of the soak, and whether it passed."""
    load0 = segment.get("load0")
    sampled = [row["t"] for row in timeline if "drained" not in row]
    if load0 is None or not sampled:
        return {"ok": False, "reason": "no samples of the load", "window": None}
    after_warmup = load0 + config.warmup_s
    load_end = min(load0 + config.duration_s, sampled[-1])
    window = {
        "load_start_s": round(load0, 1),
        "after_warmup_s": round(after_warmup, 1),
        "load_end_s": round(load_end, 1),
        "rss_first_minute": [round(after_warmup, 1), round(after_warmup + verdicts.RSS_WINDOW_S, 1)],
        "rss_last_minute": [round(load_end - verdicts.RSS_WINDOW_S, 1), round(load_end, 1)],
    }
    rss = {
        role: verdicts.rss_verdict(role, series(timeline, f"rss/{role}"), after_warmup, load_end)._asdict()
        for role in (*OURS, *OTHERS)
    }
    lag_keys = sorted({k for row in timeline for k in row if k.startswith("lag/")})
    lags = {
        key.removeprefix("lag/"): verdicts.lag_verdict(
            key.removeprefix("lag/"), series(timeline, key), after_warmup, load_end, config.rate
        )._asdict()
        for key in lag_keys
    }
    throughput = {
        name: round(verdicts.rate_between(series(timeline, key), after_warmup, load_end), 1)
        for name, key in (
            ("offered", "sent"), ("into_kafka", "raw"), ("bridge_received", "ingest_received"),
            ("jobs_committed", "jobs"), ("sink_committed", "sink"), ("sink_points_written", "sink_points"),
        )
    }  # fmt: skip
    load = verdicts.load_verdict(config.rate, throughput["offered"])
    found: list[verdicts.LogLine] = []
    for process, path in sorted(logs.items()):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        found += verdicts.scan_log(process, lines)
    ledger = segment.get("ledger") or {}
    influx = segment.get("influx") or {}
    written = influx.get("readings_written", -1)
    loss = verdicts.loss_verdict(
        int(ledger.get("expected", 0)),
        int(ledger.get("lost", 0)),
        int(ledger.get("duplicates", 0)),
        int(influx["missing"]) if written is not None and written >= 0 and "missing" in influx else None,
    )
    exits = segment.get("exit_codes") or {}
    unexpected = [x for x in found if x.expected is None]
    checks = {
        "rss": all(rss[r]["ok"] for r in OURS),
        "lag": bool(lags) and all(v["ok"] for v in lags.values()),
        "logs": not unexpected,
        "loss": loss.ok and bool(ledger),
        "load": load.ok,
        "exits": bool(exits) and all(code in CLEAN_EXITS for code in exits.values()),
        "completed": "error" not in segment and not segment.get("stopped"),
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "window": window,
        "rss": rss,
        "lag": lags,
        "throughput": throughput,
        "load": load._asdict(),
        "loss": loss._asdict(),
        "exit_codes": exits,
        "logs": [x._asdict() for x in found],
        "expected_logs": [e._asdict() for e in verdicts.EXPECTED_LOGS],
        "load_avg": load_avg(timeline),
        "limits": {
            "rss_growth": verdicts.RSS_GROWTH_LIMIT,
            "rss_window_s": verdicts.RSS_WINDOW_S,
            "lag_margin_s": verdicts.LAG_MARGIN_S,
            "lag_bound_s": verdicts.LAG_BOUND_S,
        },
    }


def load_avg(timeline: Sequence[Mapping[str, float]]) -> dict[str, float] | None:
    values = [row["load1"] for row in timeline if "load1" in row]
    if not values:
        return None
    return {"min": min(values), "median": sorted(values)[len(values) // 2], "max": max(values)}
