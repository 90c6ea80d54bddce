"""``citystream jobs`` (the Faust worker) and ``citystream evaluate ...`` (the detectors scored offline)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.stages import SubParsers


def register(sub: SubParsers[argparse.ArgumentParser]) -> None:
    jobs = sub.add_parser(
        "jobs",
        help="run the Faust stream jobs (dedup, 1-minute windows, detectors, alerts, quality)",
        description=(
            "Runs one Faust worker of the stream jobs: telemetry.raw -> telemetry.agg.1m, alerts, "
            "alerts.events, device.quality. Start several for more throughput; stop with Ctrl-C."
        ),
    )
    jobs.set_defaults(func=_jobs)
    evaluate = sub.add_parser("evaluate", help="score the anomaly detectors offline")
    actions = evaluate.add_subparsers(dest="action", required=True)

    nab = actions.add_parser(
        "nab",
        help="run a detector over the NAB corpus and print its three profile scores",
        description=(
            "Runs the stream jobs' detector code row by row over every NAB data file (no look-ahead, "
            "one parameter set) and prints the standard, reward_low_FP_rate and reward_low_FN_rate "
            "scores from the project's own scorer."
        ),
    )
    nab.add_argument("--nab-dir", type=Path, help="the NAB folder (default: settings, else ../shared/nab)")
    nab.add_argument("--detector", default="nab", help="registry name of the detector (default: nab)")
    nab.add_argument(
        "--params", default=None, help="JSON object of parameters for the detector, e.g. '{\"window\": 120}'"
    )
    nab.add_argument(
        "--published",
        metavar="NAME",
        help="instead, score the per-row results of a published detector (numenta, windowedGaussian)",
    )
    nab.add_argument("--json", dest="json_out", type=Path, help="also write the results as JSON here")
    nab.add_argument("--per-file", action="store_true", help="also print each file's standard-profile score")
    nab.set_defaults(func=_nab)

    scenario = actions.add_parser(
        "scenario",
        help="replay recorded readings through the configured detectors and match the alarms to labels",
    )
    scenario.add_argument(
        "--readings", type=Path, required=True, help="JSON lines of readings (e.g. a telemetry.raw dump)"
    )
    scenario.add_argument("--labels", type=Path, required=True, help="the labels file of the simulator run")
    scenario.add_argument("--detectors", type=Path, help="JSON or YAML overrides of the detector table")
    scenario.add_argument(
        "--grace", type=float, default=300.0, help="seconds after a label's end a detection still counts"
    )
    scenario.add_argument(
        "--json", dest="json_out", type=Path, help="also write the alarms and results as JSON"
    )
    scenario.set_defaults(func=_scenario)


def _jobs(args: argparse.Namespace) -> int:
    from citystream.settings import get_settings
    from stream_jobs.worker import run

    settings = get_settings()
    return run(settings, args.log_level or settings.log_level)


def _nab(args: argparse.Namespace) -> int:
    from citystream.errors import ConfigError
    from stream_jobs.evaluation.corpus import Corpus, resolve_nab_dir
    from stream_jobs.evaluation.runner import evaluate, format_report, score_published

    params = None
    if args.params:
        try:
            params = json.loads(args.params)
        except ValueError as exc:
            raise ConfigError(f"--params is not JSON: {exc}") from exc
        if not isinstance(params, dict):
            raise ConfigError("--params must be a JSON object")
    if args.published:
        report = score_published(args.published, args.nab_dir)
    else:
        report = evaluate(args.detector, params, args.nab_dir)
    published = Corpus(resolve_nab_dir(args.nab_dir)).published().get(report.detector)
    print(format_report(report, published))
    if args.per_file:
        for f in report.per_file:
            print(
                f"  {f.name:<58} {f.raw:7.2f}  windows {f.detected_windows}/"
                f"{f.detected_windows + f.missed_windows}  FP {f.false_positives}"
            )
    if args.json_out:
        args.json_out.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0


def _scenario(args: argparse.Namespace) -> int:
    from stream_jobs.evaluation.scenario import (
        config_from,
        evaluate,
        format_report,
        read_labels,
        read_readings,
    )

    readings, bad = read_readings(args.readings)
    report = evaluate(readings, read_labels(args.labels), config_from(args.detectors), int(args.grace * 1000))
    print(format_report(report))
    if bad:
        print(f"{bad} lines of {args.readings} were not readings")
    if args.json_out:
        data = {
            "readings": report.readings,
            "skipped": report.skipped + bad,
            "kinds": [k._asdict() for k in report.kinds],
            "false_alarms": report.false_alarms,
            "alarms": [a._asdict() for a in report.alarms],
        }
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
    return 0
