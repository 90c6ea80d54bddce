"""The InfluxDB sink against the real Kafka and InfluxDB: schema, dead letters, exact counts under faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from influxdb_client.client.influxdb_client import InfluxDBClient

from citystream import codec
from citystream.model import (
    Aggregate,
    Alert,
    AlertEvent,
    AlertEventKind,
    AlertState,
    DeviceStatus,
    DlqRecord,
    QualityScore,
    Reading,
    Severity,
)
from citystream.settings import Settings
from citystream.topics import (
    ALERTS_EVENTS,
    DEVICE_QUALITY,
    DEVICE_STATUS,
    SINK_DLQ,
    TELEMETRY_AGG_1M,
    TELEMETRY_RAW,
    topic_name,
)
from sinks import rollup
from sinks.influx import InfluxSink
from tests.helpers import create_buckets, read_topic, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
Check = Callable[[], Awaitable[bool]]
DISTRICTS = ("gangnam", "mapo", "jongno", "songpa", "nowon")


def sink_settings(settings: Settings, uid: str, **sink: object) -> Settings:
    """The test's settings for a sink: its own group, the operator token, a free metrics port."""
    update: dict[str, object] = {
        "influx_group": f"g{uid}-influx",
        "influx_token": settings.influx.admin_token,
        "influx_metrics_port": 0,
        "flush_interval_s": 0.2,
        **sink,
    }
    return settings.model_copy(update={"sink": settings.sink.model_copy(update=update)})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def readings(count: int, base_ms: int, devices: int = 100) -> Iterable[Reading]:
    """``count`` readings with distinct (device, time): ``devices`` devices, one per second each."""
    for i in range(count):
        d = i % devices
        k = i // devices
        district = DISTRICTS[d % len(DISTRICTS)]
        ts = base_ms + k * 1000
        yield Reading(
            device_id=f"aq-{district}-{d:03d}",
            district=district,
            sensor_type="air_quality",
            ts=ts,
            seq=k,
            values={"pm25": 10.0 + (i % 50) / 4, "pm10": 30.5},
            received_ms=ts + 15,
        )


async def produce(settings: Settings, base: str, items: Iterable[tuple[bytes, bytes]]) -> int:
    """Send (key, value) pairs fast (batched, acks=all); returns how many."""
    topic = topic_name(base, settings.kafka)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    sent = 0
    try:
        futures: list[asyncio.Future[object]] = []
        for key, value in items:
            futures.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


def reading_items(rs: Iterable[Reading]) -> Iterable[tuple[bytes, bytes]]:
    return ((r.device_id.encode(), codec.encode(r)) for r in rs)


def query(settings: Settings, flux: str) -> list[dict[str, object]]:
    i = settings.influx
    with InfluxDBClient(url=i.url, token=i.admin_token.get_secret_value(), org=i.org, timeout=60_000) as c:
        return [dict(r.values) for t in c.query_api().query(flux) for r in t.records]


def count_points(settings: Settings, bucket: str, measurement: str = "reading", field: str = "seq") -> int:
    rows = query(
        settings,
        f'from(bucket: "{bucket}") |> range(start: 0) '
        f'|> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}") '
        "|> group() |> count()",
    )
    return int(rows[0]["_value"]) if rows else 0  # type: ignore[call-overload]  # Flux value


async def acount(settings: Settings, bucket: str, measurement: str = "reading", field: str = "seq") -> int:
    return await asyncio.to_thread(count_points, settings, bucket, measurement, field)


def points_are(
    settings: Settings, bucket: str, n: int, measurement: str = "reading", field: str = "seq"
) -> Check:
    async def check() -> bool:
        return await acount(settings, bucket, measurement, field) == n

    return check


def points_reach(
    settings: Settings, bucket: str, n: int, process: subprocess.Popen[bytes] | None = None
) -> Check:
    async def check() -> bool:
        assert process is None or process.poll() is None, "the sink process died"
        return await acount(settings, bucket) >= n

    return check


def committed_is(settings: Settings, group: str, base: str, n: int) -> Check:
    async def check() -> bool:
        return await committed(settings, group, base) == n

    return check


@contextlib.asynccontextmanager
async def running(sink: InfluxSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sink.run())
    try:
        yield task
    finally:
        sink.stop()
        await asyncio.wait_for(task, 60)


async def committed(settings: Settings, group: str, base: str) -> int:
    """Sum of the group's committed offsets over the topic's partitions."""
    topic = topic_name(base, settings.kafka)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        total = 0
        for p in range(settings.kafka.partitions):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


# -- schema ----------------------------------------------------------------------------------


def _alert(uid: str, *, device: bool, state: AlertState, ts: int) -> Alert:
    subject = f"aq-mapo-{uid}" if device else "mapo/air_quality"
    return Alert(
        key=f"threshold:pm25:{subject}",
        rule="threshold",
        subject=subject,
        severity=Severity.CRITICAL,
        state=state,
        detector="threshold",
        detector_version="1",
        district="mapo",
        sensor_type="air_quality",
        metric="pm25",
        device_id=f"aq-mapo-{uid}" if device else None,
        value=88.5,
        threshold=75.0 if device else None,
        score=1.18,
        reason="pm25 above the 'very bad' limit",
        raised_ms=ts,
        updated_ms=ts,
    )


async def test_every_topic_lands_in_its_measurement(settings: Settings, uid: str) -> None:
    s = sink_settings(settings, uid)
    create_buckets(s)
    t = now_ms() - 120_000
    device = f"aq-mapo-{uid}"
    reading = Reading(
        device_id=device,
        district="mapo",
        sensor_type="air_quality",
        ts=t,
        seq=7,
        values={"pm25": 23.5, "no2": 0.031},
        received_ms=t + 42,
        skew_ms=-3,
    )
    status = DeviceStatus(device_id=device, district="mapo", sensor_type="air_quality", online=True, ts_ms=t)
    agg = Aggregate(
        district="mapo",
        sensor_type="air_quality",
        metric="pm25",
        window_start=t - t % 60_000,
        window_end=t - t % 60_000 + 60_000,
        count=12,
        mean=21.25,
        min=9.0,
        max=33.5,
        p95=31.0,
        emitted_ms=t + 61_000,
    )
    raised = AlertEvent(
        event_id=f"e1-{uid}",
        kind=AlertEventKind.RAISED,
        ts_ms=t,
        alert=_alert(uid, device=True, state=AlertState.OPEN, ts=t),
    )
    cleared = AlertEvent(
        event_id=f"e2-{uid}",
        kind=AlertEventKind.CLEARED,
        ts_ms=t + 5000,
        alert=_alert(uid, device=False, state=AlertState.CLEARED, ts=t + 5000),
    )
    quality = QualityScore(
        device_id=device,
        district="mapo",
        sensor_type="air_quality",
        window_start=t - t % 60_000,
        completeness=1.0,
        timeliness=0.9,
        plausibility=1.0,
        flatline=1.0,
        noise=0.8,
        score=0.94,
    )
    await produce(s, TELEMETRY_RAW, [(device.encode(), codec.encode(reading))])
    await produce(s, DEVICE_STATUS, [(device.encode(), codec.encode(status))])
    await produce(s, TELEMETRY_AGG_1M, [(b"mapo/air_quality/pm25", codec.encode(agg))])
    await produce(s, ALERTS_EVENTS, [(e.alert.key.encode(), codec.encode(e)) for e in (raised, cleared)])
    await produce(s, DEVICE_QUALITY, [(device.encode(), codec.encode(quality))])

    sink = InfluxSink(s)
    async with running(sink):
        raw, agg_bucket = s.influx.bucket_raw, s.influx.bucket_agg

        async def all_there() -> bool:
            counts = []
            for bucket in (raw, agg_bucket):
                rows = await asyncio.to_thread(
                    query, s, f'from(bucket: "{bucket}") |> range(start: 0) |> group() |> count()'
                )
                counts.append(int(rows[0]["_value"]) if rows else 0)  # type: ignore[call-overload]  # Flux value
            # raw: reading 5 fields + status 1; agg: agg_1m 5 + two alerts 5 + 4 + quality 6
            return counts == [6, 20]

        await wait_for(all_there, 30, "every point in InfluxDB")
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{sink.http.port}"
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
        assert 'citystream_sink_influx_latency_seconds_count{kind="reading"} 1.0' in text
        assert 'citystream_sink_influx_points_written_total{bucket="' + raw + '"} 2.0' in text

    def fields(bucket: str, measurement: str) -> dict[tuple[str, ...], dict[str, object]]:
        rows = query(
            s,
            f'from(bucket: "{bucket}") |> range(start: 0) '
            f'|> filter(fn: (r) => r._measurement == "{measurement}")',
        )
        out: dict[tuple[str, ...], dict[str, object]] = {}
        for r in rows:
            tags = tuple(
                f"{k}={v}"
                for k, v in sorted(r.items())
                if not k.startswith("_") and k not in ("result", "table")
            )
            out.setdefault(tags, {})[str(r["_field"])] = r["_value"]
            out[tags]["_time_ms"] = int(r["_time"].timestamp() * 1000)  # type: ignore[attr-defined]  # datetime
        return out

    assert fields(raw, "reading") == {
        (f"device_id={device}", "district=mapo", "sensor_type=air_quality"): {
            "pm25": 23.5,
            "no2": 0.031,
            "seq": 7,
            "bridge_latency_ms": 42,
            "skew_ms": -3,
            "_time_ms": t,
        }
    }
    assert fields(raw, "status") == {
        (f"device_id={device}", "district=mapo", "sensor_type=air_quality"): {"online": 1, "_time_ms": t}
    }
    assert fields(agg_bucket, "agg_1m") == {
        ("district=mapo", "metric=pm25", "sensor_type=air_quality"): {
            "count": 12,
            "mean": 21.25,
            "min": 9.0,
            "max": 33.5,
            "p95": 31.0,
            "_time_ms": agg.window_start,
        }
    }
    alerts = fields(agg_bucket, "alert")
    assert alerts == {
        (
            f"alert_key=threshold:pm25:{device}",
            f"device_id={device}",
            "district=mapo",
            "event=raised",
            "metric=pm25",
            "rule=threshold",
            "sensor_type=air_quality",
            "severity=critical",
            "state=open",
        ): {"value": 88.5, "threshold": 75.0, "score": 1.18, "silenced": 0, "open": 1, "_time_ms": t},
        (
            "alert_key=threshold:pm25:mapo/air_quality",
            "district=mapo",
            "event=cleared",
            "metric=pm25",
            "rule=threshold",
            "sensor_type=air_quality",
            "severity=critical",
            "state=cleared",
        ): {"value": 88.5, "score": 1.18, "silenced": 0, "open": 0, "_time_ms": t + 5000},
    }
    quality_rows = fields(agg_bucket, "quality")
    assert list(quality_rows.values()) == [
        {
            "completeness": 1.0,
            "timeliness": 0.9,
            "plausibility": 1.0,
            "flatline": 1.0,
            "noise": 0.8,
            "score": 0.94,
            "_time_ms": quality.window_start,
        }
    ]


# -- dead letters and redelivery -----------------------------------------------------------


async def test_bad_records_go_to_the_dead_letter_topic_and_good_ones_are_written(
    settings: Settings, uid: str
) -> None:
    s = sink_settings(settings, uid, batch_size=500)
    create_buckets(s)
    good = list(readings(300, now_ms() - 600_000, devices=10))
    too_old = Reading(  # beyond the bucket's 1-day retention: InfluxDB answers 422
        device_id="aq-mapo-old",
        district="mapo",
        sensor_type="air_quality",
        ts=now_ms() - 3 * 86_400_000,
        seq=1,
        values={"pm25": 1.0},
        received_ms=now_ms(),
    )
    out_of_range = Reading(  # after the year 2262 in nanoseconds: InfluxDB answers 400
        device_id="aq-mapo-far",
        district="mapo",
        sensor_type="air_quality",
        ts=99_999_999_999_999_999,
        seq=1,
        values={"pm25": 1.0},
        received_ms=now_ms(),
    )
    items = list(reading_items(good[:150]))
    items += [(b"aq-mapo-junk", b'{"device_id": "aq-mapo-junk", "ts": "soon"}')]
    items += list(reading_items([too_old, out_of_range]))
    items += list(reading_items(good[150:]))
    await produce(s, TELEMETRY_RAW, items)

    sink = InfluxSink(s)
    async with running(sink):
        await wait_for(points_are(s, s.influx.bucket_raw, 300), 30, "300 good points")
        await wait_for(
            committed_is(s, s.sink.influx_group, TELEMETRY_RAW, len(items)), 30, "offsets committed"
        )
    dead = await read_topic(s.kafka.bootstrap, topic_name(SINK_DLQ, s.kafka), expect=3, timeout_s=20)
    records = [codec.decode(r.value, DlqRecord) for r in dead if r.value is not None]
    by_payload = {r.payload: r for r in records}
    assert len(records) == 3
    assert by_payload[items[150][1]].reason == "decode_error"
    assert by_payload[codec.encode(too_old)].reason == "influx_rejected"
    assert "retention" in by_payload[codec.encode(too_old)].detail
    assert by_payload[codec.encode(out_of_range)].reason == "influx_rejected"
    assert "HTTP 400" in by_payload[codec.encode(out_of_range)].detail
    assert all(r.stage == "sink.influx" for r in records)
    assert all(r.source.startswith(topic_name(TELEMETRY_RAW, s.kafka) + "/") for r in records)
    assert await acount(s, s.influx.bucket_raw) == 300


async def test_writing_the_same_records_again_adds_no_points(settings: Settings, uid: str) -> None:
    s = sink_settings(settings, uid)
    create_buckets(s)
    await produce(s, TELEMETRY_RAW, reading_items(readings(20_000, now_ms() - 3_600_000)))
    for run in ("a", "b"):
        # A second consumer group reads and writes every record a second time.
        again = sink_settings(s, uid, influx_group=f"g{uid}-{run}")
        async with running(InfluxSink(again)):
            await wait_for(
                committed_is(again, again.sink.influx_group, TELEMETRY_RAW, 20_000),
                30,
                f"run {run} committed",
            )
    assert await acount(s, s.influx.bucket_raw) == 20_000


async def test_two_sinks_in_one_group_share_the_partitions_through_rebalances(
    settings: Settings, uid: str
) -> None:
    s = sink_settings(settings, uid, batch_size=2000, revoke_timeout_s=5.0)
    create_buckets(s)
    all_readings = list(readings(40_000, now_ms() - 3_600_000))
    first, second = InfluxSink(s), InfluxSink(s)
    first_task = asyncio.create_task(first.run())
    try:
        await produce(s, TELEMETRY_RAW, reading_items(all_readings[:20_000]))
        await wait_for(points_reach(s, s.influx.bucket_raw, 5000), 30, "the first sink writing")
        async with running(second):  # joins: both rebalance and split the six partitions
            await produce(s, TELEMETRY_RAW, reading_items(all_readings[20_000:]))
            first.stop()  # leaves: the second takes every partition over
            await asyncio.wait_for(first_task, 60)
            await wait_for(points_are(s, s.influx.bucket_raw, 40_000), 60, "every point")
            await wait_for(committed_is(s, s.sink.influx_group, TELEMETRY_RAW, 40_000), 30, "all committed")
            raw_topic = {"topic": topic_name(TELEMETRY_RAW, s.kafka)}
            for sink in (first, second):  # both did their share
                assert (
                    sink.registry.get_sample_value("citystream_sink_influx_records_total", raw_topic) or 0
                ) > 0
    finally:
        first.stop()
        await asyncio.gather(first_task, return_exceptions=True)
    assert await acount(s, s.influx.bucket_raw) == 40_000


# -- rollups ---------------------------------------------------------------------------------


async def test_rollup_task_writes_hourly_aggregates(settings: Settings, uid: str) -> None:
    s = sink_settings(settings, uid)
    create_buckets(s)
    hour = (now_ms() // 3_600_000 - 2) * 3_600_000
    aggs: list[Aggregate] = []
    for minute in range(120):  # two full hours of one series, and a few minutes of another
        start = hour + minute * 60_000
        aggs.append(
            Aggregate(
                district="mapo",
                sensor_type="noise",
                metric="laeq",
                window_start=start,
                window_end=start + 60_000,
                count=1 + minute % 5,
                mean=50.0 + minute % 7,
                min=40.0 + minute % 3,
                max=60.0 + minute % 11,
                p95=58.0 + minute % 13,
                emitted_ms=start + 61_000,
            )
        )
    aggs += [
        Aggregate(
            district="nowon",
            sensor_type="noise",
            metric="laeq",
            window_start=hour + m * 60_000,
            window_end=hour + (m + 1) * 60_000,
            count=2,
            mean=45.0,
            min=44.0,
            max=46.0,
            p95=45.5,
            emitted_ms=hour,
        )
        for m in range(3)
    ]
    await produce(
        s,
        TELEMETRY_AGG_1M,
        ((f"{a.district}/{a.sensor_type}/{a.metric}".encode(), codec.encode(a)) for a in aggs),
    )
    async with running(InfluxSink(s)):
        await wait_for(points_are(s, s.influx.bucket_agg, len(aggs), "agg_1m", "count"), 30, "agg_1m points")

    task = await asyncio.to_thread(rollup.ensure_task, s)
    try:
        assert await asyncio.to_thread(rollup.run_now, s, task) == "success"
        rows = await asyncio.to_thread(
            query,
            s,
            f'from(bucket: "{s.influx.bucket_agg}") |> range(start: 0) '
            '|> filter(fn: (r) => r._measurement == "agg_1h")',
        )
    finally:
        await asyncio.to_thread(rollup.delete_task, s)
    got: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        when = int(r["_time"].timestamp() * 1000)  # type: ignore[attr-defined]  # datetime
        got.setdefault((str(r["district"]), when), {})[str(r["_field"])] = float(r["_value"])  # type: ignore[arg-type]
    expected: dict[tuple[str, int], dict[str, float]] = {}
    for district in ("mapo", "nowon"):
        for h in (hour, hour + 3_600_000):
            part = [a for a in aggs if a.district == district and h <= a.window_start < h + 3_600_000]
            if not part:
                continue
            n = sum(a.count for a in part)
            expected[(district, h)] = {
                "count": float(n),
                "mean": sum(a.mean * a.count for a in part) / n,
                "min": min(a.min for a in part),
                "max": max(a.max for a in part),
                "p95": max(a.p95 for a in part),
            }
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert got[key] == pytest.approx(values), key


# -- exact counts under faults (acceptance) ----------------------------------------------------

N_ACCEPTANCE = 100_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sink_process(s: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CITYSTREAM_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
        "CITYSTREAM_INFLUX__BUCKET_RAW": s.influx.bucket_raw,
        "CITYSTREAM_INFLUX__BUCKET_AGG": s.influx.bucket_agg,
        "CITYSTREAM_SINK__INFLUX_GROUP": s.sink.influx_group,
        "CITYSTREAM_SINK__INFLUX_TOKEN": s.influx.admin_token.get_secret_value(),
        "CITYSTREAM_SINK__INFLUX_METRICS_PORT": str(_free_port()),
        "CITYSTREAM_SINK__BATCH_SIZE": str(s.sink.batch_size),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sinks", "influx"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def test_sink_killed_with_sigkill_mid_stream_loses_and_duplicates_nothing(
    settings: Settings, uid: str, tmp_path: Path
) -> None:
    s = sink_settings(settings, uid, batch_size=5000)
    create_buckets(s)
    produced = await produce(
        s, TELEMETRY_RAW, reading_items(readings(N_ACCEPTANCE, now_ms() - 6 * 3_600_000))
    )
    assert produced == N_ACCEPTANCE
    log = tmp_path / "sink.log"
    first = _sink_process(s, log)
    try:
        await wait_for(
            points_reach(s, s.influx.bucket_raw, N_ACCEPTANCE // 4, first), 60, "a quarter written", 0.1
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    at_kill = await acount(s, s.influx.bucket_raw)
    committed_at_kill = await committed(s, s.sink.influx_group, TELEMETRY_RAW)
    assert committed_at_kill <= at_kill < N_ACCEPTANCE, (
        "kill it mid-stream, and never commit unwritten records"
    )
    second = _sink_process(s, log)
    try:
        await wait_for(points_are(s, s.influx.bucket_raw, N_ACCEPTANCE), 120, "every point", 0.5)
        await wait_for(committed_is(s, s.sink.influx_group, TELEMETRY_RAW, N_ACCEPTANCE), 30, "all committed")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert second.returncode == 0, log.read_text()[-3000:]
    assert await acount(s, s.influx.bucket_raw) == N_ACCEPTANCE
    dead = await read_topic(s.kafka.bootstrap, topic_name(SINK_DLQ, s.kafka), timeout_s=3)
    assert dead == []


class Outage:
    """A TCP proxy in front of InfluxDB that can be cut: connections refused, open ones reset."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


async def test_influxdb_unreachable_mid_stream_pauses_with_bounded_memory_and_loses_nothing(
    settings: Settings, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same fault as the disruptive test below, cut at the network instead of stopping InfluxDB."""
    caplog.set_level(logging.INFO, logger="sinks")
    limit, batch, total = 12_000, 2000, 30_000
    s = sink_settings(settings, uid, batch_size=batch, max_buffered_points=limit, retry_max_s=1.0)
    create_buckets(s)
    host, port = s.influx.url.split("://", 1)[1].rsplit(":", 1)
    outage = Outage(host, int(port))
    await outage.open()
    through_proxy = s.model_copy(
        update={"influx": s.influx.model_copy(update={"url": f"http://127.0.0.1:{outage.port}"})}
    )
    all_readings = list(readings(total, now_ms() - 6 * 3_600_000))
    sink = InfluxSink(through_proxy)
    async with running(sink) as task:
        await produce(s, TELEMETRY_RAW, reading_items(all_readings[: total // 2]))
        await wait_for(points_reach(s, s.influx.bucket_raw, total // 4), 30, "some points written")
        await outage.cut()
        await produce(s, TELEMETRY_RAW, reading_items(all_readings[total // 2 :]))
        held: list[float] = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            held.append(gauge(sink, "buffered_points"))
            await asyncio.sleep(0.25)
        assert gauge(sink, "paused") == 1
        assert gauge(sink, "failing") == 1
        assert await acount(s, s.influx.bucket_raw) < total
        await outage.open()
        assert not task.done()
        await wait_for(points_are(s, s.influx.bucket_raw, total), 60, "every point", 0.5)
        await wait_for(committed_is(s, s.sink.influx_group, TELEMETRY_RAW, total), 30, "all committed")
        assert gauge(sink, "paused") == 0
        assert gauge(sink, "failing") == 0
    await outage.cut()
    assert max(held) <= limit + batch
    assert await acount(s, s.influx.bucket_raw) == total


def gauge(sink: InfluxSink, name: str) -> float:
    value = sink.registry.get_sample_value(f"citystream_sink_influx_{name}")
    assert value is not None
    return value


@pytest.mark.disruptive
async def test_influxdb_stopped_30s_mid_stream_loses_and_duplicates_nothing(
    settings: Settings, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stops the shared InfluxDB for 30 s: run it alone (the disruptive tests run serially)."""
    from stack.influx import InfluxService

    caplog.set_level(logging.INFO, logger="sinks")

    limit, batch = 30_000, 5000
    s = sink_settings(settings, uid, batch_size=batch, max_buffered_points=limit, retry_max_s=2.0)
    create_buckets(s)
    all_readings = list(readings(N_ACCEPTANCE, now_ms() - 6 * 3_600_000))
    half = N_ACCEPTANCE // 2
    service = InfluxService(s)
    sink = InfluxSink(s)
    async with running(sink) as task:
        await produce(s, TELEMETRY_RAW, reading_items(all_readings[:half]))
        await wait_for(points_reach(s, s.influx.bucket_raw, half // 2), 60, "some points written")
        held: list[float] = []
        states: list[tuple[float, float]] = []
        try:
            await asyncio.to_thread(service.daemon.stop)
            await produce(s, TELEMETRY_RAW, reading_items(all_readings[half:]))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                held.append(gauge(sink, "buffered_points"))
                states.append((gauge(sink, "paused"), gauge(sink, "failing")))
                await asyncio.sleep(0.5)
        finally:
            # As an operator would; `stack up` starts what is down (another session may have already).
            up = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "cli.main", "stack", "up"],
                cwd=REPO,
                capture_output=True,
                check=False,
                timeout=300,
            )
            assert up.returncode == 0, up.stderr
        # While InfluxDB was away the sink failed its writes and paused its partitions.
        assert (1.0, 1.0) in states
        assert not task.done()
        await wait_for(points_are(s, s.influx.bucket_raw, N_ACCEPTANCE), 120, "every point", 0.5)
        await wait_for(committed_is(s, s.sink.influx_group, TELEMETRY_RAW, N_ACCEPTANCE), 30, "all committed")
    # Memory stayed bounded while InfluxDB was away: at most the limit plus one fetch.
    assert max(held) <= limit + batch
    assert await acount(s, s.influx.bucket_raw) == N_ACCEPTANCE
