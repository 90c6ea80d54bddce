"""Every dashboard query on data that went through the whole pipeline.

The quick-tour scenario (three districts, 18 devices, ten minutes, construction dust in Gangnam
and a minute of malformed payloads in Mapo) is published by the simulator as fast as the broker
takes it, stamped to end now: Mosquitto -> bridge -> Kafka -> stream jobs (windows, quality,
detectors and alerts) -> InfluxDB sink (readings, device status, aggregates, alert events,
quality), while the pipeline monitor samples the bridge, the sink, the local services and the
consumer lag into ``pipeline`` points. Once all of it has landed, every panel query, query
variable and annotation of every dashboard runs with its variables set to what the scenario
produced (the district, sensor type and metric of the dust incident, and a device with an
alert it raised) and must return what its panel needs. One case per query, in one language:
both languages share their queries, and ``tests/integration/test_dashboards_queries.py`` runs
both on seeded data.

Published faster than real time, the readings' device clocks are up to ten minutes behind the
bridge's, so the ``clock_skew`` rule raises alerts too: that is what the pipeline does with
such data, and the panels show it like any other alert.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from citystream.settings import Settings
from dashboards import alerts, city, flux, probe
from dashboards.interpolate import rfc3339
from ingest.registry import DeviceRegistry
from simulators import fleet, scenario
from stack.kafka import ensure_topics
from stream_jobs.app import app_id
from stream_jobs.detectors.config import AQ_LABELS
from stream_jobs.evaluation.scenario import LabelRecord, read_labels
from tests import dashboard_queries
from tests.conftest import _delete_buckets, _delete_topics, isolated
from tests.e2e.stages import influx_sink, monitor, simulate
from tests.helpers import create_buckets
from tests.integration.ingest_support import BridgeProcess
from tests.jobs_worker import JobsWorker

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCENARIO = "quick-tour"
INCIDENT = "construction-dust"
"""The incident whose district, sensor type, metric and alerts the dashboards are looked at with."""
WINDOW_S = 60
VERY_BAD_PM25 = 75.0
"""The upper bound of the "bad" PM2.5 band (ug/m3); the dust adds 80 to the district's air."""
LANDING_TIMEOUT_S = 120.0
QUERIES = dashboard_queries.cases(dashboard_queries.all_queries(("en",)))


@dataclass(frozen=True)
class Landed:
    """The scenario's data in the test's buckets, and the dashboards' variables on it."""

    settings: Settings
    values: dict[str, str]
    incident: LabelRecord
    start: datetime
    stop: datetime


@dataclass(frozen=True)
class Expectation:
    """Something the pipeline must have written: a query (in the dashboards' syntax) and how
    many rows it must return at least."""

    what: str
    query: str
    rows: int


def _expectations(devices: int, label: LabelRecord, end: datetime) -> list[Expectation]:
    last_minute = rfc3339(end - timedelta(minutes=1))
    incident_start = rfc3339(datetime.fromtimestamp(label.start_ms / 1000, UTC))
    incident = (
        f'r.district == "{label.district}" and r.sensor_type == "{label.sensor_type}" '
        f'and r.metric == "{label.metric}"'
    )
    per_device = '|> group(columns: ["device_id"]) |> last() |> group()'
    return [
        Expectation(
            f"readings of all {devices} devices in the scenario's last minute",
            f'from(bucket: "${{bucket_raw}}") |> range(start: {last_minute}, stop: v.timeRangeStop) '
            f'|> filter(fn: (r) => r._measurement == "reading" and r._field == "seq") {per_device}',
            devices,
        ),
        Expectation(
            f"the status of all {devices} devices",
            'from(bucket: "${bucket_raw}") |> range(start: v.timeRangeStart, stop: v.timeRangeStop) '
            f'|> filter(fn: (r) => r._measurement == "status" and r._field == "online") {per_device}',
            devices,
        ),
        Expectation(
            f"quality scores of all {devices} devices",
            'from(bucket: "${bucket_agg}") |> range(start: v.timeRangeStart, stop: v.timeRangeStop) '
            f'|> filter(fn: (r) => r._measurement == "quality" and r._field == "score") {per_device}',
            devices,
        ),
        Expectation(
            f"1-minute aggregates of {label.district} {label.metric} since the {label.incident} began",
            f'from(bucket: "${{bucket_agg}}") |> range(start: {incident_start}, stop: v.timeRangeStop) '
            f'|> filter(fn: (r) => r._measurement == "agg_1m" and r._field == "mean" and {incident})',
            1,
        ),
        Expectation(
            f"an open {label.expected_rule} alert on a device of {label.district}",
            _open_device_alerts(label),
            1,
        ),
        *(
            Expectation(
                f"pipeline points: {what}",
                'from(bucket: "${bucket_agg}") |> range(start: v.timeRangeStart, stop: v.timeRangeStop) '
                f'|> filter(fn: (r) => r._measurement == "pipeline" and {predicate}) '
                f'|> group(columns: ["{by}"]) |> last() |> group()',
                rows,
            )
            for what, predicate, by, rows in (
                ("messages per second of the bridge and the sink", "r._field =~ /_per_s$/", "stage", 2),
                ("dead letters by reason", "exists r.reason and r._field =~ /_per_s$/", "reason", 1),
                ("latency of the bridge's and the sink's hops", 'r._field == "p50_ms"', "stage", 2),
                ("lag of the jobs' and the sink's consumer groups", 'r._field == "lag"', "instance", 2),
            )
        ),
    ]


def _open_device_alerts(label: LabelRecord) -> str:
    """The device ids of the open alerts of the incident's rule in its district (one row each)."""
    return (
        'from(bucket: "${bucket_agg}") |> range(start: v.timeRangeStart, stop: v.timeRangeStop) '
        '|> filter(fn: (r) => r._measurement == "alert" and r._field == "open" '
        f'and r.rule == "{label.expected_rule}" and r.district == "{label.district}" '
        f'and r.sensor_type == "{label.sensor_type}" and r.metric == "{label.metric}" '
        "and exists r.device_id) "
        '|> group(columns: ["alert_key"]) |> sort(columns: ["_time"]) |> last() '
        '|> filter(fn: (r) => r._value == 1) |> group() |> sort(columns: ["device_id"])'
    )


def _rows(s: Settings, query: str, start: datetime) -> list[dict[str, Any]]:
    """The rows of a query on the test's buckets, from ``start`` to a minute from now."""
    buckets = {"bucket_raw": s.influx.bucket_raw, "bucket_agg": s.influx.bucket_agg}
    stop = datetime.now(UTC) + timedelta(minutes=1)
    return dashboard_queries.rows(
        dashboard_queries.tables(s, query, buckets, start=start, stop=stop, window_s=WINDOW_S)
    )


class Watched(NamedTuple):
    """A pipeline process the test started: its name, its process and its log."""

    name: str
    proc: subprocess.Popen[bytes] | None
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _wait_until_landed(
    s: Settings,
    expectations: list[Expectation],
    start: datetime,
    processes: list[Watched],
    timeout_s: float,
) -> None:
    """Poll until every expectation holds; fail naming the ones that do not (and the logs)."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for p in processes:
            code = p.proc.poll() if p.proc is not None else "never started"
            assert code is None, f"{p.name} exited ({code}):\n{p.tail()}"
        for e in expectations:
            if counts.get(e.what, 0) < e.rows:
                counts[e.what] = len(_rows(s, e.query, start))
        missing = [f"{e.what}: {counts[e.what]} of {e.rows}" for e in expectations if counts[e.what] < e.rows]
        if not missing:
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in processes)
            raise AssertionError(
                f"after {timeout_s:.0f} s still missing:\n" + "\n".join(missing) + f"\n{logs}"
            )
        time.sleep(1.0)


@pytest.fixture(scope="module")
def landed(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Landed]:
    uid = uuid.uuid4().hex[:10]
    base = isolated(stack_settings, uid)
    s = base.model_copy(update={"sink": base.sink.model_copy(update={"influx_group": f"g{uid}-influx"})})
    logs = tmp_path_factory.mktemp("pipeline")
    plan = scenario.load(SCENARIO)
    prefix = f"t{uid}-"
    devices = fleet.build(plan.fleet, plan.seed, prefix)
    asyncio.run(ensure_topics(s))
    create_buckets(s)
    bridge = BridgeProcess(s, logs)
    sink, sink_port = influx_sink(s, logs)
    watcher = monitor(
        s,
        {
            "ingest": f"http://127.0.0.1:{bridge.port}/metrics",
            "sink-influx": f"http://127.0.0.1:{sink_port}/metrics",
        },
        [app_id(s), s.sink.influx_group],
        logs,
        interval_s=1.0,
    )
    # A small grace: the whole scenario arrives within seconds, so the sources hardly drift.
    jobs = JobsWorker(s, logs / "jobs.log", grace_s="60", idle_source_s="3", timer_interval_s="1")
    try:
        jobs.start()
        sink.start()
        watcher.start()
        bridge.start()
        processes = [
            Watched("bridge", bridge.proc, bridge.log),
            Watched("jobs", jobs.proc, jobs.log),
            Watched(sink.name, sink.proc, sink.log),
            Watched(watcher.name, watcher.proc, watcher.log),
        ]
        # The scenario ends at the last full minute; the panels look at it from a minute before.
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        begin = end - timedelta(seconds=plan.duration_s)
        start = begin - timedelta(minutes=1)
        # Rates (messages and dead letters per second) need a scrape before the data arrives.
        up = Expectation(
            "the monitor's first scrape of the bridge and the sink",
            'from(bucket: "${bucket_agg}") |> range(start: v.timeRangeStart, stop: v.timeRangeStop) '
            '|> filter(fn: (r) => r._measurement == "pipeline" and r._field == "up" and r._value == 1.0 '
            'and (r.instance == "ingest" or r.instance == "sink-influx")) '
            '|> group(columns: ["instance"]) |> last() |> group()',
            2,
        )
        _wait_until_landed(s, [up], start, processes, 60.0)
        labels_path = logs / "labels.jsonl"
        simulate(
            s, SCENARIO, "--start", begin.isoformat(), "--rate", "0", "--id-prefix", prefix,
            "--labels", str(labels_path),
        )  # fmt: skip
        (label,) = [lb for lb in read_labels(labels_path) if lb.incident == INCIDENT]
        expectations = _expectations(len(devices), label, end)
        _wait_until_landed(s, expectations, start, processes, LANDING_TIMEOUT_S)
        alerted = [r["device_id"] for r in _rows(s, _open_device_alerts(label), start)]
        values = dashboard_queries.variables(
            s,
            lookback="1h",
            district=label.district,
            sensor_type=label.sensor_type,
            device=alerted[0],
            metric=label.metric,
        )
        yield Landed(s, values, label, start, datetime.now(UTC) + timedelta(minutes=1))
    finally:
        watcher.stop()
        sink.stop()
        bridge.close()
        jobs.stop()
        asyncio.run(DeviceRegistry(s).remove(*(d.device_id for d in devices)))
        asyncio.run(_delete_topics(s))
        _delete_buckets(s)


@pytest.mark.parametrize("query", QUERIES)
def test_panel_query_returns_the_shape_its_panel_needs_on_pipeline_data(
    landed: Landed, query: probe.PanelQuery
) -> None:
    result = dashboard_queries.assert_fits_its_panel(
        landed.settings, query, landed.values, start=landed.start, stop=landed.stop, window_s=WINDOW_S
    )
    if query.kind == "variable":
        name = query.ref.removeprefix("variable ")
        offered = {row.get("_value") for table in result for row in table}
        assert landed.values[name] in offered, f"{query.id}: {landed.values[name]!r} not in {offered}"


def test_the_dashboards_show_the_incident(landed: Landed) -> None:
    """The map puts the dusty district in the "very bad" band and the open alerts table lists the
    alert the dust raised on the device the dashboards were looked at with."""
    s, values, incident = landed.settings, landed.values, landed.incident

    def rows(query: str) -> list[dict[str, Any]]:
        result = dashboard_queries.tables(
            s, flux.program(query), values, start=landed.start, stop=landed.stop, window_s=WINDOW_S
        )
        return dashboard_queries.rows(result)

    (district,) = [r for r in rows(city.pm25_by_district("en")) if r["district"] == incident.district]
    assert district["pm25"] > VERY_BAD_PM25
    assert district["category"] == AQ_LABELS.index("very_bad")
    keys = {r["alert_key"] for r in rows(alerts.open_alerts())}
    assert f"{incident.expected_rule}:{incident.metric}:{values['device']}" in keys
