"""The pipeline monitor against real endpoints: a /metrics server, the stack's processes, Kafka
offsets and InfluxDB; then the pipeline dashboard's queries on what it wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from influxdb_client.client.influxdb_client import InfluxDBClient
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from citystream.settings import Settings
from citystream.topics import TELEMETRY_RAW, topic_name
from dashboards import catalogue, probe
from sinks.monitor import Monitor
from tests.helpers import create_buckets

pytestmark = pytest.mark.integration


class Exporter:
    """A process exposing metrics by the monitor's naming convention."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter("citystream_ingest_received", "", registry=self.registry)
        self.dead = Counter("citystream_ingest_dead_lettered", "", ["reason"], registry=self.registry)
        self.in_flight = Gauge("citystream_ingest_in_flight", "", registry=self.registry)
        self.latency = Histogram(
            "citystream_ingest_produce_latency_seconds",
            "",
            buckets=(0.005, 0.01, 0.02, 0.05),
            registry=self.registry,
        )
        self.url = ""

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")


@pytest.fixture
async def exporter() -> AsyncIterator[Exporter]:
    exp = Exporter()
    app = web.Application()
    app.router.add_get("/metrics", exp.metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
    exp.url = f"http://127.0.0.1:{port}/metrics"
    yield exp
    await runner.cleanup()


async def _consumer_group_with_lag(s: Settings, group: str, produced: int, committed: int) -> None:
    topic = topic_name(TELEMETRY_RAW, s.kafka)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap)
    await producer.start()
    try:
        for _ in range(produced):
            await producer.send_and_wait(topic, b"x", key=b"dev-1", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: committed})
    finally:
        await consumer.stop()


def _monitor_settings(s: Settings, **changes: Any) -> Settings:
    monitor = s.monitor.model_copy(update={"write_token": s.influx.admin_token, **changes})
    return s.model_copy(update={"monitor": monitor})


def _pipeline_rows(s: Settings) -> list[dict[str, Any]]:
    i = s.influx
    flux = (
        f'from(bucket: "{i.bucket_agg}") |> range(start: -10m) '
        '|> filter(fn: (r) => r._measurement == "pipeline")'
    )
    with InfluxDBClient(url=i.url, token=i.admin_token.get_secret_value(), org=i.org) as client:
        return [dict(row) for t in probe.values_of(client.query_api().query(flux)) for row in t]


def _latest(rows: list[dict[str, Any]], field: str, **tags: str) -> Any:
    matching = [r for r in rows if r["_field"] == field and all(r.get(k) == v for k, v in tags.items())]
    assert matching, f"no {field} {tags}"
    return max(matching, key=lambda r: r["_time"])["_value"]


async def test_monitor_samples_targets_services_and_lag(
    settings: Settings, uid: str, exporter: Exporter
) -> None:
    create_buckets(settings)
    group = f"g{uid}"
    await _consumer_group_with_lag(settings, group, produced=10, committed=4)
    s = _monitor_settings(
        settings,
        targets={"ingest": exporter.url, "sink-influx": "http://127.0.0.1:9/metrics"},
        consumer_groups=(group,),
    )
    async with Monitor(s) as monitor:
        exporter.received.inc(100)
        await monitor.cycle()
        exporter.received.inc(50)
        exporter.dead.labels("malformed").inc(5)
        exporter.in_flight.set(7)
        for _ in range(10):
            exporter.latency.observe(0.015)
        await monitor.cycle()
        assert monitor.write_errors == 0
    rows = _pipeline_rows(s)
    assert _latest(rows, "up", stage="ingest", instance="ingest") == 1.0
    assert _latest(rows, "up", stage="sink_influx", instance="sink-influx") == 0.0
    assert _latest(rows, "received_per_s", stage="ingest") > 0
    assert _latest(rows, "dead_lettered_per_s", stage="ingest", reason="malformed") > 0
    assert _latest(rows, "in_flight", stage="ingest") == 7.0
    assert 10.0 <= _latest(rows, "p50_ms", hop="ingest.produce") <= 20.0
    assert _latest(rows, "lag", stage="kafka", instance=group) == 6.0
    for service in ("mosquitto", "kafka", "influxdb"):
        assert _latest(rows, "up", stage=service) == 1.0
        assert _latest(rows, "rss_bytes", stage=service) > 1e6
        assert _latest(rows, "cpu_cores", stage=service) >= 0.0
    assert _latest(rows, "scrape_errors", stage="monitor") >= 2.0


async def test_pipeline_dashboard_reads_what_the_monitor_wrote(
    settings: Settings, uid: str, exporter: Exporter
) -> None:
    create_buckets(settings)
    group = f"g{uid}"
    await _consumer_group_with_lag(settings, group, produced=3, committed=1)
    s = _monitor_settings(settings, targets={"ingest": exporter.url}, consumer_groups=(group,))
    start = datetime.now(UTC) - timedelta(minutes=1)
    async with Monitor(s) as monitor:
        for n in range(3):
            exporter.received.inc(10 + n)
            exporter.dead.labels("unknown_device").inc(1)
            exporter.in_flight.set(3)
            exporter.latency.observe(0.007)
            await monitor.cycle()
    dashboard = catalogue.render_all("en", ("city", "city_agg"))["pipeline.json"]
    values = {"bucket_raw": s.influx.bucket_raw, "bucket_agg": s.influx.bucket_agg, "lookback": "1h"}
    i = s.influx
    with InfluxDBClient(url=i.url, token=i.admin_token.get_secret_value(), org=i.org) as client:
        for q in probe.panel_queries("pipeline.json", dashboard):
            outcome = probe.run(
                client.query_api(),
                q,
                values,
                start=start,
                stop=datetime.now(UTC) + timedelta(seconds=5),
                window_s=10,
            )
            assert outcome.ok, f"{q.id}: {outcome.problems}"


async def test_a_refused_write_is_kept_then_dropped_and_counted(
    settings: Settings, exporter: Exporter
) -> None:
    create_buckets(settings)
    s = _monitor_settings(settings, targets={"ingest": exporter.url}, max_buffered_points=3)
    s = s.model_copy(
        update={
            "monitor": s.monitor.model_copy(update={"write_token": s.influx.admin_token.__class__("bad")})
        }
    )
    async with Monitor(s) as monitor:
        points = await monitor.cycle()
        assert len(points) > 3
        assert monitor.write_errors == 1
        assert monitor.dropped_points == len(points) - 3
    assert _pipeline_rows(s) == []
