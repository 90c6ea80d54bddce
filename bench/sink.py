"""InfluxDB sink throughput (one sink process) and the line-protocol encoding cost per point.

1. Encoding: ``sinks.lineproto.line`` over pre-decoded readings (ns per point), the same with
   the JSON decode in front (what the sink does per record), and influxdb-client's
   ``Point.to_line_protocol`` for comparison.
2. Throughput: readings are loaded into a fresh ``telemetry.raw`` first; then one
   ``citystream sink influx`` process (``python -m sinks influx``) is started and its
   ``points_written`` counter is polled on /metrics. The rate is the points over the time from
   the first to the last acknowledged write; a Flux count checks that exactly every reading
   arrived. The sink's CPU time and peak RSS come from /proc.

    .venv/bin/python -m bench.sink --quick

Target: 100,000 points/s. Results go to ``bench/results/sink.json``; the machine is shared, so
the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
from influxdb_client.domain.write_precision import WritePrecision

from citystream import codec
from citystream.kafka_client import Principal, client_kwargs
from citystream.logs import configure_logging
from citystream.model import Reading
from citystream.sensors import SENSOR_TYPES
from citystream.settings import Settings, get_settings
from citystream.topics import TELEMETRY_RAW, topic_name
from sinks.lineproto import line

logger = logging.getLogger("bench.sink")

RESULTS = Path(__file__).parent / "results" / "sink.json"
REPO = Path(__file__).resolve().parents[1]
TARGET = 100_000.0
DISTRICTS = ("gangnam", "mapo", "jongno", "songpa", "nowon", "gwanak", "seocho", "jung")


def readings(n: int, devices: int = 2000) -> Iterator[Reading]:
    """A mixed fleet: every sensor type in turn, so points carry 1 to 5 metrics (2.0 on average)."""
    types = list(SENSOR_TYPES.values())
    base = time.time_ns() // 1_000_000 - 12 * 3_600_000
    for i in range(n):
        d = i % devices
        sensor = types[d % len(types)]
        district = DISTRICTS[d % len(DISTRICTS)]
        ts = base + (i // devices) * 1000
        frac = (i % 97) / 97
        yield Reading(
            device_id=f"{sensor.name[:2]}-{district}-{d:04d}",
            district=district,
            sensor_type=sensor.name,
            ts=ts,
            seq=i // devices,
            values={m.name: round(m.low + (m.high - m.low) * frac, 2) for m in sensor.metrics},
            received_ms=ts + 25,
        )


# -- 1. encoding ---------------------------------------------------------------------------------


def _best_ns(func: Callable[[], object], n: int, repeat: int = 3) -> int:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return round(best / n * 1e9)


def _with_point(items: list[Reading]) -> None:
    for r in items:
        point = Point("reading").tag("device_id", r.device_id).tag("district", r.district)
        point.tag("sensor_type", r.sensor_type)
        for k, v in r.values.items():
            point.field(k, v)
        point.field("seq", r.seq).field("bridge_latency_ms", r.received_ms - r.ts).field("skew_ms", r.skew_ms)
        point.time(r.ts, WritePrecision.MS).to_line_protocol()


def encoding(n: int) -> dict[str, float]:
    """Best of three passes, in ns per point: mixed fleet, air quality only (5 metrics), decode too."""
    items = list(readings(n))
    air = [r for r in items if r.sensor_type == "air_quality"]
    payloads = [codec.encode(r) for r in items]
    sample = items[: max(1, n // 10)]
    return {
        "points": n,
        "fields_per_point": round(sum(len(r.values) + 3 for r in items) / n, 2),
        "bytes_per_line": round(sum(len(line(r)) for r in sample) / len(sample), 1),
        "line_ns_per_point": _best_ns(lambda: [line(r) for r in items], n),
        "line_ns_per_point_air_quality": _best_ns(lambda: [line(r) for r in air], len(air)),
        "decode_and_line_ns_per_record": _best_ns(
            lambda: [line(codec.decode(p, Reading)) for p in payloads], n
        ),
        "influxdb_client_point_ns_per_point": _best_ns(lambda: _with_point(sample), len(sample), repeat=2),
    }


# -- 2. throughput -------------------------------------------------------------------------------


def _bench_settings(settings: Settings, uid: str) -> Settings:
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"bench{uid}."}),
            "influx": settings.influx.model_copy(
                update={"bucket_raw": f"bench{uid}-city", "bucket_agg": f"bench{uid}-city-agg"}
            ),
        }
    )


def _influx(settings: Settings) -> InfluxDBClient:
    i = settings.influx
    return InfluxDBClient(url=i.url, token=i.admin_token.get_secret_value(), org=i.org, timeout=120_000)


def _buckets(settings: Settings, create: bool) -> None:
    with _influx(settings) as client:
        api = client.buckets_api()
        org = client.organizations_api().find_organizations(org=settings.influx.org)[0]
        for name in (settings.influx.bucket_raw, settings.influx.bucket_agg):
            found = api.find_bucket_by_name(name)
            if create and found is None:
                rules = BucketRetentionRules(type="expire", every_seconds=86400)
                api.create_bucket(bucket_name=name, org=org.id, retention_rules=rules)
            elif not create and found is not None:
                api.delete_bucket(found)


async def _topics(settings: Settings, create: bool) -> None:
    from stack.kafka import ensure_topics

    if create:
        await ensure_topics(settings)
        return
    admin = AIOKafkaAdminClient(**client_kwargs(settings, Principal.ADMIN))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(settings.kafka.topic_prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def _load(settings: Settings, n: int) -> float:
    topic = topic_name(TELEMETRY_RAW, settings.kafka)
    producer = AIOKafkaProducer(
        **client_kwargs(settings, Principal.ADMIN), acks="all", linger_ms=50, max_batch_size=1024 * 1024
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        pending = []
        for r in readings(n):
            pending.append(await producer.send(topic, codec.encode(r), key=r.device_id.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # a local URL
        text = resp.read().decode()
    return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(name))


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return 0.0


def _count(settings: Settings) -> int:
    flux = (
        f'from(bucket: "{settings.influx.bucket_raw}") |> range(start: 0) '
        '|> filter(fn: (r) => r._measurement == "reading" and r._field == "seq") |> group() |> count()'
    )
    with _influx(settings) as client:
        rows = [r.get_value() for t in client.query_api().query(flux) for r in t.records]
    return int(rows[0]) if rows else 0


def throughput(
    settings: Settings, n: int, batch_size: int, in_flight: int, timeout_s: float
) -> dict[str, Any]:
    s = _bench_settings(settings, uuid.uuid4().hex[:8])
    asyncio.run(_topics(s, create=True))
    _buckets(s, create=True)
    try:
        load_s = asyncio.run(_load(s, n))
        logger.info("loaded %d readings into Kafka in %.1f s", n, load_s)
        port = _free_port()
        env = {
            **os.environ,
            "CITYSTREAM_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
            "CITYSTREAM_INFLUX__BUCKET_RAW": s.influx.bucket_raw,
            "CITYSTREAM_INFLUX__BUCKET_AGG": s.influx.bucket_agg,
            "CITYSTREAM_SINK__INFLUX_GROUP": f"{s.kafka.topic_prefix}sink",
            "CITYSTREAM_SINK__INFLUX_TOKEN": s.influx.admin_token.get_secret_value(),
            "CITYSTREAM_SINK__INFLUX_METRICS_PORT": str(port),
            "CITYSTREAM_SINK__BATCH_SIZE": str(batch_size),
            "CITYSTREAM_SINK__MAX_BUFFERED_POINTS": str(batch_size * (in_flight + 3)),
            "CITYSTREAM_SINK__MAX_IN_FLIGHT_WRITES": str(in_flight),
            "CITYSTREAM_LOG_LEVEL": "WARNING",
        }
        sink = subprocess.Popen(
            [sys.executable, "-m", "sinks", "influx"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        samples: list[tuple[float, float, float]] = []
        """(monotonic time, points written, sink CPU seconds)"""
        writes = (0.0, 0.0)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and sink.poll() is None:
                try:
                    written = _metric(port, "citystream_sink_influx_points_written_total")
                except OSError:
                    time.sleep(0.05)
                    continue  # still starting
                samples.append((time.monotonic(), written, _proc_cpu_s(sink.pid)))
                if written >= n:
                    writes = (
                        _metric(port, "citystream_sink_influx_write_seconds_count"),
                        _metric(port, "citystream_sink_influx_write_seconds_sum"),
                    )
                    break
                time.sleep(0.1)
            rss_mb = _proc_peak_rss_mb(sink.pid) if sink.poll() is None else 0.0
        finally:
            sink.terminate()
            _, err = sink.communicate(timeout=30)
        if sink.returncode not in (0, -15):
            logger.error("sink exited %s: %s", sink.returncode, err.decode()[-2000:])
        counted = _count(s)
        first = next((x for x in samples if x[1] > 0), None)
        last = next((x for x in samples if x[1] >= n), None)
        if first is not None and last is not None and last[0] > first[0]:
            # The rate runs from the first acknowledged batch to the last; the CPU per point
            # from the moment the sink answered /metrics (imports and start-up left out).
            span = last[0] - first[0]
            rate = (last[1] - first[1]) / span
            cpu_us = (last[2] - samples[0][2]) / n * 1e6
        else:
            span, rate, cpu_us = 0.0, 0.0, 0.0
        total_cpu = samples[-1][2] if samples else 0.0
        return {
            "readings": n,
            "batch_size": batch_size,
            "max_in_flight_writes": in_flight,
            "kafka_load_s": round(load_s, 1),
            "write_span_s": round(span, 2),
            "points_per_s": round(rate),
            "points_counted_in_influxdb": counted,
            "exact": counted == n,
            "sink_cpu_s_total": round(total_cpu, 2),
            "sink_cpu_us_per_point": round(cpu_us, 2),
            "write_requests": int(writes[0]),
            "write_request_avg_ms": round(writes[1] / writes[0] * 1000, 1) if writes[0] else None,
            "sink_peak_rss_mb": round(rss_mb, 1),
            "target": TARGET,
            "meets_target": bool(rate >= TARGET and counted == n),
        }
    finally:
        _buckets(s, create=False)
        asyncio.run(_topics(s, create=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.sink", description="InfluxDB sink throughput and line-protocol encoding cost"
    )
    parser.add_argument(
        "--quick", action="store_true", help="500,000 readings instead of 1,500,000 (under a minute)"
    )
    parser.add_argument("--batch-size", type=int, help="points per flush (default: settings)")
    parser.add_argument("--in-flight", type=int, help="batches written at once (default: settings)")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    logger.setLevel(logging.INFO)
    settings = get_settings()
    enc = encoding(50_000 if args.quick else 200_000)
    logger.info("encoding: %s", enc)
    n = 500_000 if args.quick else 1_500_000
    batch = args.batch_size or settings.sink.batch_size
    in_flight = args.in_flight or settings.sink.max_in_flight_writes
    run = throughput(settings, n, batch, in_flight, 120 if args.quick else 300)
    report: dict[str, Any] = {
        "bench": "sink",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "mode": "quick" if args.quick else "full",
        "encoding": enc,
        "throughput": run,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"line protocol: {enc['line_ns_per_point']} ns/point, {enc['fields_per_point']} fields "
        f"({enc['line_ns_per_point_air_quality']} ns for air quality, 8 fields; "
        f"{enc['decode_and_line_ns_per_record']} ns with the JSON decode; "
        f"influxdb-client Point: {enc['influxdb_client_point_ns_per_point']} ns)"
    )
    verdict = "meets" if run["meets_target"] else "BELOW"
    print(
        f"sink: {run['points_per_s']:,} points/s, {run['points_counted_in_influxdb']:,}/{run['readings']:,} "
        f"counted, {run['sink_cpu_us_per_point']} us CPU/point, peak RSS {run['sink_peak_rss_mb']} MB: "
        f"{verdict} target {TARGET:,.0f}"
    )
    print(f"load average {report['machine']['load_avg_1m']} on {report['machine']['cpus']} CPUs -> {RESULTS}")
    return 0 if run["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
