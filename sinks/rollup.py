"""1-hour rollups (``agg_1h``) of the 1-minute aggregates, as an InfluxDB task.

Why a task and not the sink: the rollup of an hour needs every minute of that hour. The task
reads the ``agg_1m`` points InfluxDB already stores, so sink restarts, redelivered records and
late minutes cannot make it wrong, and the sink stays stateless with a write-only token. A
rollup inside the sink would have to keep an hour of state per series and either hold back its
Kafka commits for an hour or read InfluxDB back, which the sink's token may not do. The Flux
task engine of the local InfluxDB 2.7 build runs it (checked by
``tests/integration/test_sink_influx.py``).

The task runs every ``sink.rollup_every`` (10 minutes) over the current hour and the
``sink.rollup_lookback_h`` hours before it and overwrites their ``agg_1h`` points (same series,
same hour start): a late minute is folded in on the next run, and re-running is harmless.
``count`` is the sum of the minute counts, ``mean`` the count-weighted mean, ``min``/``max``
the extremes and ``p95`` the largest minute p95 (an upper bound of the hour's p95).

Retention: the buckets are created by the stack with ``influx.raw_retention_s`` (7 days) for
``city`` and ``influx.agg_retention_s`` (400 days) for ``city_agg``.

Installing the task needs an operator token (``citystream sink rollups``); the sink's own token
can only write.
"""

from __future__ import annotations

import logging
import time

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.domain.task import Task
from influxdb_client.domain.task_create_request import TaskCreateRequest
from influxdb_client.domain.task_update_request import TaskUpdateRequest
from influxdb_client.rest import ApiException

from citystream.errors import CitystreamError, ConfigError
from citystream.settings import Settings
from sinks.lineproto import AGG_1H, AGG_1M

logger = logging.getLogger(__name__)

FLUX = """\
import "date"

option task = {{name: "{name}", every: {every}}}

stop = date.add(d: 1h, to: date.truncate(t: now(), unit: 1h))
start = date.sub(d: {lookback}h, from: date.truncate(t: now(), unit: 1h))

from(bucket: "{bucket}")
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "{source}")
    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
    |> filter(fn: (r) => exists r.count and exists r.mean and exists r.min and exists r.max and exists r.p95)
    |> filter(fn: (r) => r.count > 0)
    |> map(fn: (r) => ({{r with wsum: r.mean * float(v: r.count)}}))
    |> window(every: 1h)
    |> reduce(
        identity: {{n: 0, count: 0, wsum: 0.0, min: 0.0, max: 0.0, p95: 0.0}},
        fn: (r, accumulator) => ({{
            n: accumulator.n + 1,
            count: accumulator.count + r.count,
            wsum: accumulator.wsum + r.wsum,
            min: if accumulator.n == 0 or r.min < accumulator.min then r.min else accumulator.min,
            max: if accumulator.n == 0 or r.max > accumulator.max then r.max else accumulator.max,
            p95: if accumulator.n == 0 or r.p95 > accumulator.p95 then r.p95 else accumulator.p95,
        }}),
    )
    |> map(fn: (r) => ({{
        _time: r._start,
        _measurement: "{target}",
        district: r.district,
        sensor_type: r.sensor_type,
        metric: r.metric,
        count: r.count,
        mean: r.wsum / float(v: r.count),
        min: r.min,
        max: r.max,
        p95: r.p95,
    }}))
    |> to(
        bucket: "{bucket}",
        tagColumns: ["district", "sensor_type", "metric"],
        fieldFn: (r) => ({{"count": r.count, "mean": r.mean, "min": r.min, "max": r.max, "p95": r.p95}}),
    )
"""


class RollupError(CitystreamError):
    """The rollup task could not be installed or did not run."""


def task_name(settings: Settings) -> str:
    return f"citystream {AGG_1H} rollup of {settings.influx.bucket_agg}"


def flux(settings: Settings) -> str:
    """The task's Flux script for the configured aggregate bucket."""
    s = settings.sink
    for text in (settings.influx.bucket_agg, s.rollup_every):
        if '"' in text or "\\" in text:
            raise ConfigError(f"unsupported character in {text!r}")
    return FLUX.format(
        name=task_name(settings),
        every=s.rollup_every,
        lookback=int(s.rollup_lookback_h),
        bucket=settings.influx.bucket_agg,
        source=AGG_1M,
        target=AGG_1H,
    )


def _client(settings: Settings, token: str | None) -> InfluxDBClient:
    i = settings.influx
    token = token or i.admin_token.get_secret_value()
    if not token:
        raise ConfigError("installing the rollup task needs the InfluxDB operator token")
    return InfluxDBClient(url=i.url, token=token, org=i.org, timeout=30_000)


def ensure_task(settings: Settings, token: str | None = None) -> Task:
    """Create the rollup task, or update its script when it changed (idempotent)."""
    script = flux(settings)
    name = task_name(settings)
    with _client(settings, token) as client:
        tasks = client.tasks_api()
        org = client.organizations_api().find_organizations(org=settings.influx.org)[0]
        existing = tasks.find_tasks(name=name)
        if existing:
            task = existing[0]
            if task.flux != script or task.status != "active":
                task = tasks.update_task_request(
                    task.id, TaskUpdateRequest(flux=script, status="active", description="agg_1h rollup")
                )
                logger.info("rollup task %s updated", task.id)
            result: Task = task
            return result
        created: Task = tasks.create_task(
            task_create_request=TaskCreateRequest(
                flux=script, org_id=org.id, status="active", description="agg_1h rollup"
            )
        )
        logger.info("rollup task %s created", created.id)
        return created


def run_now(settings: Settings, task: Task, token: str | None = None, timeout_s: float = 60.0) -> str:
    """Run the task once now and wait for it; returns the run's status (``success``)."""
    with _client(settings, token) as client:
        tasks = client.tasks_api()
        run = tasks.run_manually(task.id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                run = tasks.get_run(task.id, run.id)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                # InfluxDB finds no run while it moves from the queue to the run log.
            else:
                if run.status in ("success", "failed", "canceled"):
                    break
            time.sleep(0.2)
        if run.status != "success":
            logs = "; ".join(str(e.message) for e in tasks.get_run_logs(task.id, run.id))
            raise RollupError(f"rollup run {run.id} ended {run.status}: {logs}")
        return str(run.status)


def delete_task(settings: Settings, token: str | None = None) -> int:
    """Remove the rollup task(s) of this bucket; returns how many."""
    with _client(settings, token) as client:
        tasks = client.tasks_api()
        found = tasks.find_tasks(name=task_name(settings))
        for task in found:
            tasks.delete_task(task.id)
        return len(found)
