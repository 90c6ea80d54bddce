"""Stream jobs throughput: one Faust worker (dedup, windows, every detector, alerts, quality)
against a Quix Streams app that computes the same 1-minute windows, in one run.

The readings (the W1 city fleet, or an air-quality fleet of five metrics per reading, with
every detector of the default configuration on each) are written to a fresh telemetry.raw
first; then each system starts on its own consumer group and the clock runs from its first
committed offset until it has committed them all (offsets polled every 0.25 s, commits every
0.5 s). The systems run one after the other so they do not share the two cores: the worker with
every detector, the worker without detectors, Faust alone (``bench/faust_floor_app.py``: the
same batches decoded and nothing else, the floor under the worker's cost per reading) and the
Quix Streams windows. CPU seconds come from ``/proc``. Results go to
``bench/results/jobs.json``.

    .venv/bin/python -m bench.jobs --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.ingest import quix_python
from citystream import codec
from citystream.geo import DISTRICTS
from citystream.model import Reading
from citystream.sensors import SENSOR_TYPES
from citystream.settings import Settings, get_settings
from citystream.topics import TELEMETRY_AGG_1M, TELEMETRY_RAW, topic_name

RESULTS = Path(__file__).parent / "results"
"""``jobs.json`` (the city fleet) and ``jobs-air_quality.json``."""
QUIX_APP = Path(__file__).parent / "quix_jobs_app.py"
FLOOR_APP = Path(__file__).parent / "faust_floor_app.py"
FLOOR_SYSTEM = "faust alone: consume + decode, no work"
TARGET_READINGS_S = 20_000.0
DEVICES_PER_DISTRICT = 8
STEP_MS = 10_000
GRACE_S = 60


class Result(NamedTuple):
    system: str
    readings: int
    seconds: float
    readings_per_s: float
    cpu_s: float
    outputs: int


def fleet_readings(n: int, seed: int = 7) -> list[bytes]:
    """``n`` readings of a plausible air-quality fleet, in time order, encoded."""
    rng = random.Random(seed)
    devices = [(f"bench-aq-{d.id}-{i:02d}", d.id) for d in DISTRICTS for i in range(DEVICES_PER_DISTRICT)]
    level = {dev: [rng.uniform(10, 30), rng.uniform(20, 50), 0.02, 0.03, 0.4] for dev, _ in devices}

    def values(device_id: str) -> dict[str, float]:
        lv = level[device_id]
        lv[0] = max(1.0, lv[0] + rng.gauss(0, 0.3))
        lv[1] = max(2.0, lv[1] + rng.gauss(0, 0.5))
        return {
            "pm25": round(lv[0], 2),
            "pm10": round(lv[1], 2),
            "no2": round(lv[2] + rng.gauss(0, 0.001), 4),
            "o3": round(lv[3] + rng.gauss(0, 0.001), 4),
            "co": round(lv[4] + rng.gauss(0, 0.01), 3),
        }

    members = [(device_id, district, "air_quality") for device_id, district in devices]
    return _stream(n, rng, members, STEP_MS, values)


CITY_DEVICES = 10_000
"""The W1 fleet: the city's sensor mix, every device reporting once a second."""


def city_readings(n: int, seed: int = 7, devices: int = CITY_DEVICES) -> list[bytes]:
    """``n`` readings of the W1 fleet (the scenario's sensor mix, ``devices`` devices at 1 Hz, about
    2.4 metrics per reading), in time order, encoded. Values wander inside each metric's range."""
    from bench.load import build_fleet

    rng = random.Random(seed)
    fleet = build_fleet(devices, seed, "bench-")
    ranges = {d.device_id: SENSOR_TYPES[d.sensor_type].metrics for d in fleet}
    level = {
        d.device_id: [
            rng.uniform(m.low + 0.2 * (m.high - m.low), m.low + 0.4 * (m.high - m.low))
            for m in ranges[d.device_id]
        ]
        for d in fleet
    }

    def values(device_id: str) -> dict[str, float]:
        lv = level[device_id]
        out = {}
        for i, m in enumerate(ranges[device_id]):
            lv[i] = min(m.high, max(m.low, lv[i] + rng.gauss(0, 0.002 * (m.high - m.low))))
            out[m.name] = round(lv[i], 3)
        return out

    return _stream(n, rng, [(d.device_id, d.district, d.sensor_type) for d in fleet], 1000, values)


def _stream(
    n: int,
    rng: random.Random,
    members: list[tuple[str, str, str]],
    step_ms: int,
    values: Callable[[str], dict[str, float]],
) -> list[bytes]:
    """``n`` encoded readings: every member (device, district, sensor type) once per ``step_ms``,
    ending about ten steps before now, in time order."""
    start = int(time.time() * 1000) // 60_000 * 60_000 - (n // len(members) + 10) * step_ms
    out: list[bytes] = []
    k = 0
    while len(out) < n:
        ts = start + k * step_ms
        for device_id, district, sensor_type in members:
            reading = Reading(
                device_id=device_id,
                district=district,
                sensor_type=sensor_type,
                values=values(device_id),
                ts=ts + rng.randrange(0, 1000),
                seq=k,
                received_ms=ts + 1200,
            )
            out.append(codec.encode(reading))
            if len(out) == n:
                break
        k += 1
    return out


FLEETS = {"city": city_readings, "air_quality": fleet_readings}


async def produce(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    try:
        topic = topic_name(TELEMETRY_RAW, settings.kafka)
        pending = []
        for value in values:
            key = value[value.index(b'"device_id":"') + 13 :].split(b'"', 1)[0]
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(group), timeout=10)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


class Ends:
    """End offsets of topics, from one consumer that belongs to no group."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> Ends:
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.consumer.stop()

    async def total(self, topic: str) -> int:
        partitions: set[int] = set()
        for _ in range(50):
            partitions = self.consumer.partitions_for_topic(topic) or set()
            if partitions:
                break
            await self.consumer._client.force_metadata_update()  # no public call for a metadata refresh
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await asyncio.wait_for(self.consumer.end_offsets(tps), timeout=10)
        return sum(ends.values())


async def end_offsets(settings: Settings, topic: str) -> int:
    async with Ends(settings) as ends:
        return await ends.total(topic)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that it waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:15]) / ticks


async def measure(
    name: str,
    proc: subprocess.Popen[bytes],
    *,
    settings: Settings,
    group: str,
    total: int,
    timeout_s: float,
    internal: str | None = None,
) -> tuple[float, float]:
    """(seconds from the first to the last commit, CPU seconds) for ``group`` to commit ``total``
    readings, and then everything of its ``internal`` topic (the windows' input)."""
    topic = topic_name(TELEMETRY_RAW, settings.kafka)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    ends = Ends(settings)
    await ends.__aenter__()
    first: tuple[float, int] | None = None
    cpu = 0.0
    try:
        deadline = time.monotonic() + timeout_s
        done = 0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
            with contextlib.suppress(Exception):
                done = await committed(admin, group, topic)
            now = time.monotonic()
            cpu = cpu_seconds(proc.pid)
            if done and first is None:
                first = (now, done)
            if done >= total:
                if internal is None:
                    break
                try:
                    topics = await asyncio.wait_for(admin.list_topics(), 10)
                    names = [t for t in topics if t.startswith(internal) and not t.endswith("-changelog")]
                    behind = [n for n in names if await committed(admin, group, n) < await ends.total(n)]
                except TimeoutError:
                    continue
                if names and not behind:
                    break
            await asyncio.sleep(0.25)
        else:
            raise RuntimeError(f"{name} committed {done} of {total} in {timeout_s:.0f} s")
    finally:
        await admin.close()
        await ends.__aexit__()
    if first is None:
        raise RuntimeError(f"{name} committed nothing")
    seconds = max(time.monotonic() - first[0], 1e-3)
    return seconds * total / max(total - first[1], 1), cpu


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_child(
    name: str,
    argv: list[str],
    log: Path,
    *,
    settings: Settings,
    group: str,
    total: int,
    env: dict[str, str] | None = None,
    internal: str | None = None,
) -> tuple[float, float]:
    """Start one system as a child process, :func:`measure` it, and stop it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220  # a long-running child, started once
            argv, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        return await measure(
            name, proc, settings=settings, group=group, total=total, timeout_s=600, internal=internal
        )
    finally:
        stop(proc)


async def run_faust(settings: Settings, total: int, log: Path, detectors: bool) -> Result:
    app_id = "bench-jobs" if detectors else "bench-jobs-agg"
    env = {
        **os.environ,
        "CITYSTREAM_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CITYSTREAM_JOBS__COMMIT_INTERVAL_S": "0.5",
        "CITYSTREAM_JOBS__GRACE_S": str(GRACE_S),
        "CITYSTREAM_LOG_LEVEL": "WARNING",
        "CITYSTREAM_JOBS__APP_ID": app_id,
        "CITYSTREAM_JOBS__DETECTORS_ENABLED": str(detectors).lower(),
    }
    agg = topic_name(TELEMETRY_AGG_1M, settings.kafka)
    before = await end_offsets(settings, agg)
    group = f"{settings.kafka.topic_prefix}{app_id}"
    seconds, cpu = await run_child(
        "faust", [sys.executable, "-m", "stream_jobs"], log,
        settings=settings, group=group, total=total, env=env, internal=f"{group}-series",
    )  # fmt: skip
    outputs = await end_offsets(settings, agg) - before
    name = "faust: windows + all detectors" if detectors else "faust: windows, no detectors"
    return Result(name, total, seconds, total / seconds, cpu, outputs)


async def run_faust_floor(settings: Settings, total: int, log: Path) -> Result:
    """Faust alone (``bench/faust_floor_app.py``): consume and decode, no work."""
    group = f"{settings.kafka.topic_prefix}bench-faust-floor"
    raw = topic_name(TELEMETRY_RAW, settings.kafka)
    with tempfile.TemporaryDirectory() as datadir:
        argv = [
            sys.executable, str(FLOOR_APP), "--bootstrap", settings.kafka.bootstrap, "--topic", raw,
            "--group", group, "--datadir", datadir,
        ]  # fmt: skip
        seconds, cpu = await run_child("faust-floor", argv, log, settings=settings, group=group, total=total)
    return Result(FLOOR_SYSTEM, total, seconds, total / seconds, cpu, 0)


async def run_quix(settings: Settings, total: int, log: Path) -> Result | None:
    python = quix_python(settings)
    if python is None:
        return None
    out_topic = f"{settings.kafka.topic_prefix}quix-agg-1m"
    group = f"{settings.kafka.topic_prefix}quix-jobs"
    raw = topic_name(TELEMETRY_RAW, settings.kafka)
    with tempfile.TemporaryDirectory() as state:
        argv = [
            str(python), str(QUIX_APP), "--bootstrap", settings.kafka.bootstrap, "--input", raw,
            "--output", out_topic, "--group", group, "--state-dir", state,
            "--grace-ms", str(GRACE_S * 1000),
        ]  # fmt: skip
        seconds, cpu = await run_child(
            "quix", argv, log, settings=settings, group=group, total=total, internal=f"repartition__{group}"
        )
    outputs = 0
    with contextlib.suppress(Exception):
        outputs = await end_offsets(settings, out_topic)
    return Result("quix streams (windows only)", total, seconds, total / seconds, cpu, outputs)


async def delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(settings.kafka.topic_prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def run(total: int, systems: list[str], fleet: str = "city") -> dict[str, Any]:
    from stack.kafka import ensure_topics

    base = get_settings()
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"topic_prefix": f"bj{tag}."})})
    await ensure_topics(settings)
    logs = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    results: list[Result] = []
    try:
        t0 = time.monotonic()
        values = FLEETS[fleet](total)
        sample = values[:20_000]
        metrics = sum(len(codec.decode(v, Reading).values) for v in sample) / len(sample)
        await produce(settings, values)
        print(f"produced {total} readings in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        if "faust" in systems:
            results.append(await run_faust(settings, total, logs / "faust.log", detectors=True))
        if "faust-agg" in systems:
            results.append(await run_faust(settings, total, logs / "faust-agg.log", detectors=False))
        if "faust-floor" in systems:
            results.append(await run_faust_floor(settings, total, logs / "faust-floor.log"))
        if "quix" in systems:
            quix = await run_quix(settings, total, logs / "quix.log")
            if quix is not None:
                results.append(quix)
    finally:
        await delete_topics(settings)
        for app_id in ("bench-jobs", "bench-jobs-agg"):
            shutil.rmtree(settings.stack.state_dir / "jobs" / f"{settings.kafka.topic_prefix}{app_id}", True)
    rows = [r._asdict() for r in results]
    report: dict[str, Any] = {
        "readings": total,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fleet": fleet,
        "devices": CITY_DEVICES if fleet == "city" else len(DISTRICTS) * DEVICES_PER_DISTRICT,
        "metrics_per_reading": round(metrics, 2),
        "target_readings_per_s": TARGET_READINGS_S,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": rows,
        "logs": str(logs),
    }
    peers = [r for r in results if r.system.startswith("quix")]
    for r in results:
        if peers and r is not peers[0]:
            report.setdefault("ratio_to_quix", {})[r.system] = round(
                r.readings_per_s / peers[0].readings_per_s, 3
            )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 readings instead of 400,000")
    parser.add_argument("--readings", type=int, default=None)
    parser.add_argument(
        "--systems",
        default="faust,faust-agg,faust-floor,quix",
        help="comma-separated: faust, faust-agg, faust-floor (Faust alone, no work), quix",
    )
    parser.add_argument(
        "--fleet",
        choices=sorted(FLEETS),
        default="city",
        help="city: the W1 fleet (10,000 devices of the city's sensor mix at 1 Hz); "
        "air_quality: 200 air-quality devices, five metrics per reading",
    )
    args = parser.parse_args(argv)
    total = args.readings or (100_000 if args.quick else 400_000)
    report = asyncio.run(run(total, args.systems.split(","), args.fleet))
    for r in report["results"]:
        print(
            f"{r['system']:<32} {r['readings_per_s']:>10,.0f} readings/s  "
            f"({r['readings']} in {r['seconds']:.1f} s, CPU {r['cpu_s']:.1f} s, {r['outputs']} outputs)"
        )
    for name, ratio in report.get("ratio_to_quix", {}).items():
        print(f"{name} / quix: {ratio:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "jobs.json" if args.fleet == "city" else f"jobs-{args.fleet}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
