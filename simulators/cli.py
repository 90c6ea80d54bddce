"""``citystream simulate``: run a scenario, or replay a CSV series as one device."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.stages import SubParsers
    from simulators.publisher import Route, Summary
    from simulators.scenario import Scenario


def register(sub: SubParsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="publish a simulated Seoul sensor fleet (a scenario) or replay a CSV series",
        description=(
            "Run a scenario (built-in name or YAML file) against the MQTT broker: provisions the "
            "devices or district gateways in the device registry, writes the ground-truth labels, "
            "publishes at the scenario's pace and prints a summary. Or replay a CSV series "
            "(timestamp,value) as one device."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", metavar="NAME|FILE", help="built-in scenario name or YAML path")
    source.add_argument("--replay", metavar="FILE.csv", type=Path, help="replay a timestamp,value CSV")
    source.add_argument("--list", action="store_true", help="list the built-in scenarios")
    p.add_argument("--duration", type=float, metavar="S", help="scenario seconds to run (scenario mode)")
    p.add_argument("--rate", type=float, metavar="N", help="messages per second; 0 sends as fast as possible")
    p.add_argument("--compression", type=float, metavar="X", help="scenario seconds per wall-clock second")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (scenario mode)")
    p.add_argument("--labels", type=Path, metavar="FILE", help="write the ground-truth labels (JSON lines)")
    p.add_argument("--qos", type=int, choices=(0, 1), help="telemetry QoS (default: the scenario's)")
    p.add_argument(
        "--connection",
        choices=("auto", "device", "gateway"),
        help="one client per device or per district gateway",
    )
    p.add_argument(
        "--start",
        metavar="ISO|now",
        help="scenario start instant (default: the scenario's; 'now' to feed the live pipeline)",
    )
    p.add_argument("--root", metavar="ROOT", help="MQTT topic root (default: settings mqtt.topic_root)")
    p.add_argument("--id-prefix", metavar="P", help="prefix of every device id")
    p.add_argument(
        "--dry-run", action="store_true", help="generate only; print counts and the sequence digest"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--deprovision", action="store_true", help="remove the registry entries afterwards")
    p.add_argument(
        "--clear-status",
        action="store_true",
        help="delete the retained status messages at the end (for throwaway topic roots)",
    )
    replay = p.add_argument_group("replay")
    replay.add_argument("--device", metavar="ID", help="device id the series is published as")
    replay.add_argument("--district", default="jung", help="district of the replayed device (default: jung)")
    replay.add_argument("--sensor-type", default="traffic", help="sensor type (default: traffic)")
    replay.add_argument(
        "--metric", default="vehicle_count", help="metric the values go to (default: vehicle_count)"
    )
    replay.add_argument("--scale", type=float, default=1.0, help="multiply every value (default: 1)")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    if args.replay is not None:
        return _replay(args)
    return _scenario(args)


def _list() -> int:
    import textwrap

    from simulators import scenario

    for name in scenario.builtin_names():
        s = scenario.load(name)
        print(f"{name:<18} {s.fleet.size:>5} devices, {s.duration}, {len(s.incidents)} incidents")
        print(textwrap.fill(s.description, width=100, initial_indent=" " * 19, subsequent_indent=" " * 19))
    return 0


def _scenario(args: argparse.Namespace) -> int:
    import asyncio

    from citystream.settings import get_settings
    from simulators import run, scenario
    from simulators.progress import ProgressDisplay

    settings = get_settings()
    s = run.override(
        scenario.load(args.scenario),
        duration_s=args.duration,
        rate=args.rate,
        compression=args.compression,
        seed=args.seed,
        qos=args.qos,
        connection=args.connection,
        start=args.start,
    )
    if args.dry_run:
        return _dry_run(s, args, settings.mqtt.topic_root)
    pace = run.pacing_of(s).describe()
    span = scenario.format_duration(s.duration)
    print(f"scenario {s.name}: {s.fleet.size} devices, {span}, seed {s.seed}, {pace}")
    stale = run.stale_start(s, settings)
    if stale:
        print(f"note      {stale}")
    with ProgressDisplay(s.name, 0, enabled=not args.no_progress) as display:

        async def scenario_run() -> run.RunResult:
            return await run.run_scenario(
                settings,
                s,
                root=args.root,
                id_prefix=args.id_prefix,
                labels_path=args.labels,
                on_progress=display.update,
                clear_status=args.clear_status,
                deprovision=args.deprovision,
                stop=run.stop_on_signals(),
            )

        result = asyncio.run(scenario_run())
    if args.labels is not None:
        print(f"labels    {args.labels}")
    return _report(result.summary)


def _dry_run(s: Scenario, args: argparse.Namespace, default_root: str) -> int:
    from collections import Counter

    from simulators import generator, labels, run

    start_ms = run.now_ms() if s.start == "now" else None
    plan = generator.Plan(s, root=args.root or default_root, start_ms=start_ms, id_prefix=args.id_prefix)
    if args.labels is not None:
        labels.write(args.labels, plan.labels())
    per_type = Counter(d.sensor_type for d in plan.devices)
    total = plan.expected_total()
    print(f"scenario  {s.name} (seed {s.seed}, start {plan.start_ms})")
    print(f"devices   {len(plan.devices)}: " + ", ".join(f"{t} {n}" for t, n in per_type.items()))
    print(f"messages  {total}")
    print(f"incidents {len(plan.incidents)} labels")
    print(f"digest    {generator.digest(plan.messages())}")
    if s.start == "now":
        print("note      the scenario starts 'now'; pass --start to compare digests between runs")
    return 0


def _replay(args: argparse.Namespace) -> int:
    import asyncio

    from citystream.settings import get_settings
    from simulators import replay, run
    from simulators.errors import ReplayError
    from simulators.progress import ProgressDisplay
    from simulators.publisher import Pacing
    from simulators.scenario import parse_start

    if not args.device:
        raise ReplayError("--replay needs --device ID")
    settings = get_settings()
    series = replay.read_series(args.replay)
    device = replay.replay_device(args.device, args.district, args.sensor_type, series)
    start_ms = parse_start(args.start) if args.start else None
    start_ms = start_ms if start_ms is not None else run.now_ms()
    root = args.root or settings.mqtt.topic_root
    qos = 1 if args.qos is None else args.qos
    if args.compression is not None:
        pacing = Pacing(None, args.compression)
    else:
        pacing = Pacing(100.0 if args.rate is None else args.rate)
    messages = replay.messages(
        series, device, root=root, start_ms=start_ms, metric=args.metric, scale=args.scale, qos=qos
    )
    total = len(series.times_ms)
    print(f"replay {args.replay}: {total} rows as {device.device_id} ({pacing.describe()})")
    if series.skipped:
        print(f"skipped   {len(series.skipped)} unreadable rows (first: line {series.skipped[0][0]})")
    with ProgressDisplay(device.device_id, total, enabled=not args.no_progress) as display:

        async def replay_run() -> tuple[Summary, Route]:
            return await run.publish(
                settings,
                [device],
                messages,
                mode="device",
                id_prefix="",
                root=root,
                qos=qos,
                start_ms=start_ms,
                pacing=pacing,
                total=total,
                on_progress=display.update,
                clear_status=args.clear_status,
                deprovision=args.deprovision,
                stop=run.stop_on_signals(),
            )

        summary, _ = asyncio.run(replay_run())
    return _report(summary)


def _report(summary: Summary) -> int:
    for line in summary.lines():
        print(line)
    complete = summary.sent == summary.planned or summary.stopped
    return 0 if summary.failed == 0 and complete else 1
