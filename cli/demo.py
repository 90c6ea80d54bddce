"""``citystream demo``: the whole pipeline on a simulated Seoul fleet, with a live summary.

Starts the bridge, the stream worker, the InfluxDB sink and the pipeline monitor as child
processes (logs under ``<state_dir>/demo/``), then the simulator; shows rates per stage, open
alerts and where the data is until Ctrl-C or ``--duration`` seconds, and shuts down in order
(simulator, bridge, worker, sinks) so that everything in flight is flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from citystream import codec
from citystream.model import AlertEvent, AlertEventKind
from citystream.settings import Settings, get_settings
from citystream.topics import (
    ALERTS_EVENTS,
    DEVICE_QUALITY,
    TELEMETRY_AGG_1M,
    TELEMETRY_DLQ,
    TELEMETRY_RAW,
    topic_name,
)

logger = logging.getLogger(__name__)

WATCHED = (TELEMETRY_RAW, TELEMETRY_DLQ, TELEMETRY_AGG_1M, ALERTS_EVENTS, DEVICE_QUALITY)


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=handle, stderr=handle
        )
        handle.close()

    @property
    def state(self) -> str:
        if self.proc is None:
            return "not started"
        return "running" if self.proc.returncode is None else f"exited {self.proc.returncode}"

    async def stop(self, sig: int, timeout_s: float) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


@dataclass
class Summary:
    """What the live view shows, updated from Kafka offsets and alert events."""

    totals: dict[str, int] = field(default_factory=dict)
    history: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    open_alerts: dict[str, str] = field(default_factory=dict)
    raised: int = 0
    cleared: int = 0

    def observe(self, topic: str, total: int, now: float) -> None:
        self.totals[topic] = total
        hist = self.history.setdefault(topic, deque(maxlen=8))
        hist.append((now, total))

    def rate(self, topic: str) -> float:
        hist = self.history.get(topic)
        if not hist or len(hist) < 2:
            return 0.0
        (t0, n0), (t1, n1) = hist[0], hist[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def on_alert(self, event: AlertEvent) -> None:
        if event.kind is AlertEventKind.RAISED:
            self.raised += 1
        if event.kind is AlertEventKind.CLEARED:
            self.cleared += 1
            self.open_alerts.pop(event.alert.key, None)
        else:
            self.open_alerts[event.alert.key] = event.alert.severity.value


def _render(summary: Summary, children: list[Child], settings: Settings, started: float) -> Group:
    stages = Table(title=f"citystream demo, {time.monotonic() - started:.0f} s", expand=False)
    stages.add_column("topic")
    stages.add_column("records", justify="right")
    stages.add_column("per second", justify="right")
    for base in WATCHED:
        topic = topic_name(base, settings.kafka)
        stages.add_row(base, f"{summary.totals.get(topic, 0):,}", f"{summary.rate(topic):,.0f}")
    alerts = Table(title="alerts")
    alerts.add_column("open by severity")
    alerts.add_column("raised", justify="right")
    alerts.add_column("cleared", justify="right")
    by_severity: dict[str, int] = {}
    for severity in summary.open_alerts.values():
        by_severity[severity] = by_severity.get(severity, 0) + 1
    alerts.add_row(
        ", ".join(f"{k}: {v}" for k, v in sorted(by_severity.items())) or "none",
        str(summary.raised),
        str(summary.cleared),
    )
    procs = Table(title="processes")
    procs.add_column("process")
    procs.add_column("state")
    procs.add_column("log")
    for child in children:
        procs.add_row(child.name, child.state, str(child.log))
    where = Table(title="where the data is", show_header=False)
    where.add_row("Kafka", settings.kafka.bootstrap)
    where.add_row(
        "InfluxDB",
        f"{settings.influx.url} org {settings.influx.org}, "
        f"buckets {settings.influx.bucket_raw} / {settings.influx.bucket_agg}",
    )
    where.add_row("dashboards", "dashboards/generated/ (Grafana via compose/)")
    return Group(stages, alerts, procs, where)


async def _watch_offsets(settings: Settings, summary: Summary, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        while not stop.is_set():
            now = time.monotonic()
            for base in WATCHED:
                topic = topic_name(base, settings.kafka)
                parts = consumer.partitions_for_topic(topic) or set()
                if not parts:
                    await consumer._client.force_metadata_update()
                    continue
                ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
                summary.observe(topic, sum(ends.values()), now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    finally:
        await consumer.stop()


async def _watch_alerts(settings: Settings, summary: Summary, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        topic_name(ALERTS_EVENTS, settings.kafka),
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        summary.on_alert(codec.decode(record.value, AlertEvent))
                    except (codec.DecodeError, codec.ValidationError):
                        logger.warning("undecodable alert event at offset %d", record.offset)
    finally:
        await consumer.stop()


async def run_demo(scenario: str, duration_s: float, rate: int | None) -> int:
    settings = get_settings()
    from stack import manager

    settings, _ = await asyncio.to_thread(manager.up, settings)
    logs = settings.stack.state_dir / "demo"
    exe = [sys.executable, "-m", "cli.main"]
    services = [
        Child("ingest", [*exe, "ingest"], logs / "ingest.log"),
        Child("jobs", [*exe, "jobs"], logs / "jobs.log"),
        Child("sink-influx", [*exe, "sink", "influx"], logs / "sink-influx.log"),
    ]
    from cli.stages import registered_names

    if "monitor" in registered_names():
        services.append(Child("monitor", [*exe, "monitor"], logs / "monitor.log"))
    sim_argv = [*exe, "simulate", "--scenario", scenario, "--no-progress"]
    # The scenario runs at its own pace; a year of scenario time keeps it going until the demo
    # stops it, so every device keeps one increasing seq counter.
    sim_argv += ["--duration", str(365 * 24 * 3600)]
    if rate:
        sim_argv += ["--rate", str(rate)]
    simulator = Child("simulator", sim_argv, logs / "simulator.log")
    children = [*services, simulator]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    summary = Summary()
    started = time.monotonic()
    console = Console()
    for child in services:
        await child.start()
    await asyncio.sleep(3)
    await simulator.start()
    watchers = [
        asyncio.create_task(_watch_offsets(settings, summary, stop)),
        asyncio.create_task(_watch_alerts(settings, summary, stop)),
    ]
    deadline = started + duration_s if duration_s > 0 else None
    with Live(_render(summary, children, settings, started), console=console, refresh_per_second=1) as live:
        while not stop.is_set():
            live.update(_render(summary, children, settings, started))
            if deadline is not None and time.monotonic() >= deadline:
                break
            if any(c.proc is not None and c.proc.returncode not in (None, 0) for c in services):
                console.print("[red]a pipeline process exited; see its log[/red]")
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        console.print("stopping: simulator, bridge, worker, sinks ...")
        await simulator.stop(signal.SIGINT, 30)
        await asyncio.sleep(2)  # let the last messages cross the bridge
        for child in services:
            await child.stop(signal.SIGTERM, 60)
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
        live.update(_render(summary, children, settings, started))
    failed = [c.name for c in services if c.proc is not None and c.proc.returncode not in (0, -15)]
    if failed:
        console.print(f"[red]exited with errors: {', '.join(failed)}; logs in {logs}[/red]")
        return 1
    console.print(f"done; logs in {logs}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    return asyncio.run(run_demo(args.scenario, args.duration, args.rate))


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="the whole pipeline on simulated Seoul sensors, live summary")
    demo.add_argument(
        "--scenario", default="seoul-live", help="scenario name (default: seoul-live, real time)"
    )
    demo.add_argument("--duration", type=float, default=0, help="wall seconds; 0 runs until Ctrl-C")
    demo.add_argument("--rate", type=int, default=None, help="messages per second (default: the scenario's)")
    demo.set_defaults(func=_demo)
