"""``citystream bench``: the whole pipeline measured side by side with its C and Python peers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.stages import SubParsers

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SUMMARY = REPO / "BENCHMARKS.md"


def register(sub: SubParsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark the pipeline on the local stack (W1 steady, W2 knee, W3 burst) against its peers",
        description=(
            "Runs the workloads on the real local stack with fresh topics, buckets and processes per "
            "segment: our pipeline, the C pipe 'mosquitto_sub | kcat' and a Quix Streams peer. Writes "
            "JSON, a Markdown report and PNG plots (and, for a full run, BENCHMARKS.md). The full run "
            "takes up to 20 minutes, --quick up to 5."
        ),
    )
    p.add_argument(
        "--workload", choices=("W1", "W2", "W3", "all"), default="all", help="which workload (default: all)"
    )
    p.add_argument("--quick", action="store_true", help="smaller fleet, shorter phases, one repeat")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    p.add_argument(
        "--systems", default="ours,cpipe,quix", help="comma-separated: ours, cpipe, quix (default: all three)"
    )
    tune = p.add_argument_group("overrides (for short trial runs)")
    tune.add_argument("--fleet", type=int, help="number of simulated sensors (1 Hz each)")
    tune.add_argument("--duration", type=float, metavar="S", help="W1 seconds per segment")
    tune.add_argument("--repeats", type=int, help="W1 repeats per system")
    tune.add_argument(
        "--summary",
        type=Path,
        help=f"write the summary page here (default: {SUMMARY.name} for a full run of every workload)",
    )
    tune.add_argument("--no-summary", action="store_true", help="do not write the summary page")
    tune.add_argument("--keep", action="store_true", help="keep the per-segment logs and files")
    p.add_argument(
        "--render",
        nargs="+",
        type=Path,
        metavar="RESULTS.json",
        help="run nothing: render the report (and --summary) again from saved results; several are merged",
    )
    p.set_defaults(func=_bench)
    _register_soak(sub)
    _register_chaos(sub)


def _register_soak(sub: SubParsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "soak",
        help="run the whole pipeline for a long time at 70%% of its knee: RSS, lag, error logs, loss",
        description=(
            "Runs our pipeline (bridge, stream jobs, InfluxDB sink) on the real local stack at a steady "
            "rate, by default 70%% of the W2 knee in bench/results/pipeline.json, for --minutes. Samples "
            "RSS and consumer lag every 10 s and judges RSS growth after the warm-up, bounded lag, error "
            "logs and loss. Writes soak.json, soak.md and soak.png; exits non-zero when a verdict fails."
        ),
    )
    p.add_argument("--rate", type=float, help="messages per second (default: 70%% of the pipeline's W2 knee)")
    p.add_argument("--minutes", type=float, default=30.0, help="length of the load (default: 30)")
    p.add_argument(
        "--warmup",
        type=float,
        default=8.0,
        metavar="MINUTES",
        help="left out of the RSS growth (default: 8, the time the detectors' 60-reading windows take to "
        "fill at the knee run's reporting interval)",
    )
    p.add_argument(
        "--fleet",
        type=int,
        help="simulated sensors (default: the fleet of the knee's run, at most as many as each send 60 "
        "readings, the detectors' longest window, within the warm-up)",
    )
    p.add_argument(
        "--knee-from",
        type=Path,
        default=RESULTS / "pipeline.json",
        metavar="PIPELINE.json",
        help="the benchmark results that hold the knee (default: bench/results/pipeline.json)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    p.add_argument("--keep", action="store_true", help="keep the processes' logs and files")
    p.add_argument(
        "--render",
        type=Path,
        metavar="SOAK.json",
        help="run nothing: write the report again from saved results",
    )
    p.set_defaults(func=_soak)


def _render(args: argparse.Namespace) -> int:
    import json

    from bench import report

    runs = [json.loads(path.read_text()) for path in args.render]
    data = runs[0] if len(runs) == 1 else report.merge(runs)
    paths = report.write(data, args.out)
    if args.summary is not None and not args.no_summary:
        args.summary.write_text(report.summary_page(data, args.out))
        paths.append(args.summary)
    for path in paths:
        print(f"wrote {path}")
    return 0 if report.acceptable(data) else 1


def _bench(args: argparse.Namespace) -> int:
    if args.render:
        return _render(args)
    import asyncio
    import shutil
    import tempfile

    from bench import chaos, report, workloads
    from bench.errors import BenchError
    from bench.harness import Config, Harness
    from bench.systems import SYSTEMS
    from citystream.settings import get_settings

    mode = workloads.QUICK if args.quick else workloads.FULL
    changes: dict[str, object] = {}
    if args.fleet is not None:
        changes["fleet"] = args.fleet
    if args.duration is not None:
        changes["w1_s"] = args.duration
    if args.repeats is not None:
        changes["repeats"] = args.repeats
    mode = mode._replace(**changes)  # type: ignore[arg-type]  # NamedTuple fields by name
    chosen = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SYSTEMS]
    if unknown or not chosen:
        raise BenchError(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    loads = workloads.WORKLOADS if args.workload == "all" else (args.workload,)
    workdir = Path(tempfile.mkdtemp(prefix="citystream-bench-"))
    config = Config(mode=mode, workloads=loads, systems=chosen, workdir=workdir)
    harness = Harness(get_settings(), config)
    command = "citystream bench" + (f" --workload {args.workload}" if args.workload != "all" else "")
    command += " --quick" if args.quick else ""
    chaos.stop_on_sigterm()
    data = asyncio.run(harness.run())
    data["command"] = command
    paths = report.write(data, args.out)
    summary_path = args.summary
    if summary_path is None and not args.quick and args.workload == "all" and not changes:
        summary_path = SUMMARY
    if summary_path is not None and not args.no_summary:
        summary_path.write_text(report.summary_page(data, args.out))
        paths.append(summary_path)
    for line in report.headline(data):
        print(line)
    for path in paths:
        print(f"wrote {path}")
    failed = [s for s in data["segments"] if "error" in s]
    if args.keep or failed:
        print(f"segment logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.acceptable(data) else 1


def _soak(args: argparse.Namespace) -> int:
    import asyncio
    import shlex
    import shutil
    import sys
    import tempfile

    from bench import chaos, soak, soak_report
    from bench.errors import BenchError
    from citystream.settings import get_settings

    if args.render:
        import json

        saved = json.loads(args.render.read_text())
        for path in soak_report.write(saved, args.out):
            print(f"wrote {path}")
        return 0 if saved["verdicts"].get("ok") else 1
    if args.minutes * 60 < args.warmup * 60 + 120:
        raise BenchError("--minutes must exceed --warmup by 2 minutes at least (a first and a last minute)")
    if args.rate is not None:
        if args.rate <= 0:
            raise BenchError("--rate must be positive")
        rate, fleet, source = args.rate, soak.DEFAULT_FLEET, "given with --rate"
    else:
        rate, fleet, source = soak.knee_config(args.knee_from)
    workdir = Path(tempfile.mkdtemp(prefix="citystream-soak-"))
    config = soak.SoakConfig(
        rate=rate,
        rate_source=source,
        minutes=args.minutes,
        warmup_s=args.warmup * 60,
        fleet=args.fleet or min(fleet, soak.settled_fleet(rate, args.warmup * 60)),
        workdir=workdir,
    )
    chaos.stop_on_sigterm()
    data = asyncio.run(soak.Soak(get_settings(), config).run())
    data["command"] = shlex.join(["citystream", *sys.argv[1:]])
    for line in soak_report.headline(data):
        print(line)
    for path in soak_report.write(data, args.out):
        print(f"wrote {path}")
    ok = bool(data["verdicts"].get("ok"))
    if args.keep or not ok:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def _register_chaos(sub: SubParsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chaos",
        help="kill -9 every stage and service while a seeded load streams; account for every reading",
        description=(
            "Runs the pipeline (bridge, stream jobs, InfluxDB and webhook sinks) on the local stack under "
            "a seeded load and, round after round, kills the bridge, the jobs worker, each sink, Kafka, "
            "InfluxDB and Mosquitto with SIGKILL at seeded times and starts them again. Then accounts for "
            "every (device, seq) sent (Kafka, InfluxDB), every 1-minute aggregate and every expected alert. "
            "Writes chaos.json and chaos.md; exits non-zero on any loss, duplicate or wrong result."
        ),
    )
    chaos_arguments(p)
    p.set_defaults(func=_chaos)


def chaos_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, help="rounds of kills (default 3, --quick 1; 0: an undisturbed run)")
    p.add_argument("--quick", action="store_true", help="one round, 100 devices, shorter waits")
    p.add_argument(
        "--seed", type=int, default=7, help="seed of the load, the kill times and the spikes (default 7)"
    )
    p.add_argument("--fleet", type=int, default=0, help="devices at 1 msg/s (default 300, --quick 100)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    p.add_argument(
        "--shared-subscription",
        action="store_true",
        help="run the bridge on the shared subscription (Mosquitto does not restore it after a crash)",
    )


def _chaos(args: argparse.Namespace) -> int:
    import sys

    from bench.chaos import run_chaos

    args.command = " ".join(["citystream chaos", *sys.argv[2:]])
    return run_chaos(args)
