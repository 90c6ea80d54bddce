"""The Quix Streams peer of the stream jobs' windows, for ``bench/jobs.py`` (not part of the pipeline).

Reads Readings (JSON) from a topic, splits each into one record per metric keyed by
``district/sensor_type/metric``, repartitions by that key, and computes 1-minute tumbling
windows in event time (the reading's ``ts``) with a grace period: count, mean, min, max and
p95 (linear interpolation, as the stream jobs), written to an output topic when they close.

It runs in its own virtualenv (see ``bench/ingest.py``), so it imports nothing from the project:

    ~/.cache/citystream/quix-venv/bin/python bench/quix_jobs_app.py --input T --output T2 ...
"""

from __future__ import annotations

import argparse
import math
from datetime import timedelta
from typing import Any

from quixstreams import Application


def p95(values: list[float]) -> float:
    s = sorted(values)
    h = (len(s) - 1) * 0.95
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def split(reading: dict[str, Any]) -> list[dict[str, Any]]:
    prefix = f"{reading['district']}/{reading['sensor_type']}/"
    return [{"series": prefix + metric, "value": value} for metric, value in reading["values"].items()]


def summary(window: dict[str, Any]) -> dict[str, Any]:
    values: list[float] = window["value"]
    return {
        "window_start": window["start"],
        "count": len(values),
        "mean": math.fsum(values) / len(values),
        "min": min(values),
        "max": max(values),
        "p95": p95(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--grace-ms", type=int, default=60_000)
    args = parser.parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
        commit_interval=0.5,
    )
    source = app.topic(
        args.input,
        value_deserializer="json",
        timestamp_extractor=lambda value, _headers, _ts, _type: int(value["ts"]),
    )
    output = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(split, expand=True)
    sdf = sdf.group_by(lambda r: r["series"], name="series")
    windows = sdf.tumbling_window(timedelta(minutes=1), grace_ms=args.grace_ms)
    sdf = windows.reduce(lambda acc, r: [*acc, r["value"]], lambda r: [r["value"]]).final()
    sdf = sdf.apply(lambda w: summary({"start": w["start"], "value": w["value"]}))
    sdf.to_topic(output)
    app.run()


if __name__ == "__main__":
    main()
