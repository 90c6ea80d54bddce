"""A simulator run end to end: plan, labels, provisioning, publishing, summary."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from citystream.settings import Settings
from simulators import labels, provision
from simulators.errors import ScenarioError
from simulators.fleet import Device
from simulators.generator import Message, Plan
from simulators.publisher import Pacing, Progress, Publisher, Route, Summary
from simulators.scenario import Scenario, parse_start, validate

logger = logging.getLogger(__name__)


def now_ms() -> int:
    """The current instant rounded down to the second (the start of a ``now`` scenario)."""
    return int(time.time()) * 1000


def override(
    scenario: Scenario,
    *,
    duration_s: float | None = None,
    rate: float | None = None,
    compression: float | None = None,
    seed: int | None = None,
    qos: int | None = None,
    connection: str | None = None,
    start: str | None = None,
) -> Scenario:
    """The scenario with command-line overrides applied and checked."""
    changes: dict[str, object] = {}
    if duration_s is not None:
        changes["duration"] = duration_s
    if compression is not None:
        changes["time_compression"] = compression
        changes["rate"] = None
    if rate is not None:
        changes["rate"] = rate
    if seed is not None:
        changes["seed"] = seed
    if qos is not None:
        changes["qos"] = qos
    if connection is not None:
        changes["connection"] = connection
    if start is not None:
        changes["start"] = start
    result = msgspec.structs.replace(scenario, **changes)
    problems = validate(result)
    if problems:
        raise ScenarioError("; ".join(problems))
    return result


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (call from the task to stop): a run given it as
    ``stop`` ends in order, with offline status and a summary. A second signal cancels the
    task outright."""
    stop = asyncio.Event()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set() and task is not None:
            task.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop


def stale_start(scenario: Scenario, settings: Settings) -> str | None:
    """A warning when ingest would dead-letter the scenario's readings as too old."""
    start = parse_start(scenario.start)
    if start is None:
        return None
    age_days = (now_ms() - start) / 86_400_000
    if age_days * 86400 <= settings.ingest.max_age_s:
        return None
    day = time.strftime("%Y-%m-%d", time.gmtime(start / 1000 + 9 * 3600))
    return (
        f"the scenario's clock starts on {day}, {age_days:.0f} days ago; ingest dead-letters "
        f"readings older than {settings.ingest.max_age_s / 86400:g} days: --start now feeds the pipeline"
    )


def pacing_of(scenario: Scenario) -> Pacing:
    return Pacing(scenario.rate, scenario.time_compression)


@dataclass
class RunResult:
    summary: Summary
    route: Route
    expected: dict[str, int]
    """Telemetry messages per device id that the plan says will be sent."""


async def publish(
    settings: Settings,
    devices: list[Device],
    messages: Iterable[Message],
    *,
    mode: str,
    id_prefix: str,
    root: str,
    qos: int,
    start_ms: int,
    pacing: Pacing,
    total: int,
    on_progress: Callable[[Progress], None] | None = None,
    status: bool = True,
    clear_status: bool = False,
    deprovision: bool = False,
    register_devices: bool = True,
    stop: asyncio.Event | None = None,
) -> tuple[Summary, Route]:
    """Provision credentials for ``devices``, publish ``messages`` and summarise."""
    route = provision.plan_route(devices, provision.choose_mode(mode, len(devices)), id_prefix)
    await provision.provision(settings, route, devices, register_devices=register_devices)
    try:
        publisher = Publisher(
            settings.mqtt, route, devices, root, qos=qos, status=status, clear_status=clear_status
        )
        summary = await publisher.run(
            messages, start_ms=start_ms, pacing=pacing, total=total, on_progress=on_progress, stop=stop
        )
    finally:
        if deprovision:
            await provision.deprovision(settings, route)
    return summary, route


async def run_scenario(
    settings: Settings,
    scenario: Scenario,
    *,
    root: str | None = None,
    id_prefix: str | None = None,
    start_ms: int | None = None,
    labels_path: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    status: bool = True,
    clear_status: bool = False,
    deprovision: bool = False,
    register_devices: bool = True,
    stop: asyncio.Event | None = None,
) -> RunResult:
    """Run a scenario against the broker in ``settings``; the label file is written first."""
    if start_ms is None and scenario.start == "now":
        start_ms = now_ms()
    plan = Plan(
        scenario,
        root=root or settings.mqtt.topic_root,
        start_ms=start_ms,
        id_prefix=id_prefix,
    )
    if labels_path is not None:
        count = labels.write(labels_path, plan.labels())
        logger.info("wrote %d labels to %s", count, labels_path)
    expected = plan.expected_counts()
    prefix = scenario.id_prefix if id_prefix is None else id_prefix
    summary, route = await publish(
        settings,
        plan.devices,
        plan.messages(),
        mode=scenario.connection,
        id_prefix=prefix,
        root=plan.root,
        qos=plan.qos,
        start_ms=plan.start_ms,
        pacing=pacing_of(scenario),
        total=sum(expected.values()),
        on_progress=on_progress,
        status=status,
        clear_status=clear_status,
        deprovision=deprovision,
        register_devices=register_devices,
        stop=stop,
    )
    return RunResult(summary, route, expected)
