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

    from bench import report, workloads
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
