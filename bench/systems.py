"""The systems under test, each started fresh for one segment of a run and stopped after it.

- ``ours``: ``python -m ingest``, ``python -m stream_jobs`` and ``python -m sinks influx`` on
  the segment's own topic prefix, MQTT root, share group and InfluxDB buckets.
- ``cpipe``: ``stdbuf -oL mosquitto_sub -q 1 -v | kcat -P -K ' '``, the C baseline of the MQTT
  to Kafka hop (its records are the raw payloads, keyed by MQTT topic).
- ``quix``: the Quix Streams peer (``bench/quix_app.py``): its MQTT source into Kafka, and the
  1-minute windows over that topic.

A system is ready when a probe reading published over MQTT (as a registered probe device)
has reached its Kafka topic and its consumer groups are stable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench import procstats, promtext
from bench.errors import BenchError
from bench.kafka_io import Kafka, Record
from citystream.settings import Settings
from citystream.topics import ALERTS_EVENTS, TELEMETRY_RAW, topic_name

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
QUIX_APP = Path(__file__).with_name("quix_app.py")
QUIX_REQUIREMENTS = ("quixstreams>=3.20", "paho-mqtt>=2.1")
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
SYSTEMS = ("ours", "cpipe", "quix")
LABELS = {
    "ours": "citystream (bridge + Faust jobs + InfluxDB sink)",
    "cpipe": "stdbuf -oL mosquitto_sub | kcat",
    "quix": "Quix Streams (MQTTSource + 1-minute windows)",
}


class ProbeDevice(NamedTuple):
    device_id: str
    password: str
    district: str
    sensor_type: str


@dataclass(frozen=True)
class Context:
    """What one segment's system needs: settings, its unique id and MQTT root, a work folder."""

    settings: Settings
    uid: str
    """Unique per segment: the topic prefix, group names and buckets are built from it."""
    root: str
    workdir: Path
    probe: ProbeDevice

    @property
    def prefix(self) -> str:
        return f"{self.uid}."


# -- tools ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_cpipe_tools() -> tuple[str, str]:
    """``mosquitto_sub`` and ``kcat``, installed with apt-get when missing."""
    from citystream.errors import StackError
    from stack.process import run

    sub, kcat = shutil.which("mosquitto_sub"), shutil.which("kcat")
    if sub and kcat:
        return sub, kcat
    if shutil.which("apt-get") is None:
        raise BenchError("mosquitto_sub and kcat are needed (Debian packages mosquitto-clients, kcat)")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    packages = ["mosquitto-clients", "kcat"]
    try:
        run(["apt-get", "install", "-y", "-q", *packages], env=env, what="apt-get install")
    except StackError:  # a stale package index: refresh it once and retry
        run(["apt-get", "update", "-q"], env=env, what="apt-get update")
        run(["apt-get", "install", "-y", "-q", *packages], env=env, what="apt-get install")
    sub, kcat = shutil.which("mosquitto_sub"), shutil.which("kcat")
    if not (sub and kcat):
        raise BenchError("apt-get did not provide mosquitto_sub and kcat")
    return sub, kcat


def quix_python(settings: Settings) -> Path:
    """The interpreter of the Quix Streams virtualenv, created on first use.

    Quix Streams pins pydantic and pydantic-settings below the versions the project uses, so it
    lives in its own virtualenv under the cache directory (the per-stage benchmarks use the same
    one) instead of the project's.
    """
    from stack.process import run

    venv = settings.stack.cache_dir / "quix-venv"
    python = venv / "bin" / "python"
    if python.exists() and quix_version(python) != "unknown":
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        run([base, "-m", "venv", str(venv)], what="creating the Quix Streams virtualenv")
    run(
        [str(python), "-m", "pip", "install", "-q", *QUIX_REQUIREMENTS],
        what="installing Quix Streams into its virtualenv",
    )
    return python


def quix_version(python: Path) -> str:
    try:
        out = subprocess.run(
            [str(python), "-c", "import quixstreams; print(quixstreams.__version__)"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


# -- child processes -----------------------------------------------------------------------


class Child:
    """A process of the system under test, with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path,
        log: Path,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=stdin,
            stdout=self._log if stdout is None else stdout,
            stderr=self._log,
        )
        self.pid = self.proc.pid
        self.returncode: int | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; also ends descendants left behind."""
        table = procstats.snapshot()
        family = [p for p in procstats.descendants(self.pid, table) if p != self.pid]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it", self.name, timeout_s)
                self.proc.kill()
                self.proc.wait()
        for pid in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._log.close()
        self.returncode = self.proc.returncode
        return self.proc.returncode


# -- the probe ------------------------------------------------------------------------------


class Probe:
    """Publishes probe readings as the registered probe device (QoS 1)."""

    def __init__(self, settings: Settings, root: str, device: ProbeDevice) -> None:
        self.device = device
        self.topic = f"{root}/{device.district}/{device.sensor_type}/{device.device_id}/telemetry"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{device.device_id}-{root}"[:64],
            protocol=paho.MQTTv5,
        )
        self.client.username_pw_set(device.device_id, device.password)
        self.client.connect(settings.mqtt.host, settings.mqtt.port, keepalive=30)
        self.client.loop_start()
        self.seq = 0

    def publish(self) -> None:
        self.seq += 1
        ts = time.time_ns() // 1_000_000
        payload = b'{"ts":%d,"seq":%d,"values":{"laeq":55.0}}' % (ts, self.seq)
        self.client.publish(self.topic, payload, qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- what the topics hold -------------------------------------------------------------------


class _Reading(msgspec.Struct):
    device_id: str
    seq: int
    ts: int
    received_ms: int


class _Payload(msgspec.Struct):
    ts: int
    seq: int


_reading = msgspec.json.Decoder(_Reading)
_payload = msgspec.json.Decoder(_Payload)


class Decoded(NamedTuple):
    device: str
    seq: int
    ts: int
    received_ms: int
    """When our bridge received it (-1 when the record does not say)."""


def decode_reading(record: Record) -> Decoded | None:
    try:
        r = _reading.decode(record.value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return Decoded(r.device_id, r.seq, r.ts, r.received_ms)


def decode_mqtt_record(record: Record) -> Decoded | None:
    """A record keyed by MQTT topic whose value is the device's JSON payload."""
    parts = (record.key or b"").split(b"/")
    if len(parts) != 5:
        return None
    try:
        p = _payload.decode(record.value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return Decoded(parts[3].decode(errors="replace"), p.seq, p.ts, -1)


# -- systems ---------------------------------------------------------------------------------


class System:
    """Base: children, readiness by probe, consumer groups on the raw topic, teardown."""

    name = ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.children: list[Child] = []
        self.raw_topic = ""
        self.groups: dict[str, str] = {}
        """Stage -> consumer group that reads the raw topic."""

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def decode(self, record: Record) -> Decoded | None:
        return decode_mqtt_record(record)

    def roles(self) -> dict[str, list[int]]:
        return {c.name: [c.pid] for c in self.children}

    def counters(self) -> dict[str, float]:
        """Counters the system's own processes publish (sampled once a second)."""
        return {}

    async def create_topics(self, kafka: Kafka) -> None:
        raise NotImplementedError

    def spawn(self) -> None:
        raise NotImplementedError

    async def start(self, kafka: Kafka) -> None:
        await self.create_topics(kafka)
        self.spawn()
        try:
            await self.wait_ready(kafka)
        except BaseException:
            self.stop()
            raise

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise BenchError(
                    f"{self.name}: {child.name} exited with {child.proc.returncode}:\n{child.tail()}"
                )

    async def wait_ready(self, kafka: Kafka) -> None:
        probe = Probe(self.ctx.settings, self.ctx.root, self.ctx.probe)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            tps = await kafka.partitions(self.raw_topic)
            while await kafka.total_end(tps) == 0:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name}: no probe reading reached {self.raw_topic}")
                probe.publish()
                await asyncio.sleep(0.5)
        finally:
            probe.close()
        for stage, group in self.groups.items():
            while (await kafka.group_state(group))[0] != "Stable":
                self.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name}: consumer group of {stage} did not become stable")
                await asyncio.sleep(0.3)

    def stop(self) -> dict[str, int]:
        return {c.name: c.stop() for c in reversed(self.children)}

    def logs(self) -> dict[str, str]:
        return {c.name: c.tail(800) for c in self.children if c.returncode not in (0, -15, None)}


class Ours(System):
    """The bridge, the stream jobs and the InfluxDB sink, on the segment's own names."""

    name = "ours"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        s = ctx.settings
        self.kafka = s.kafka.model_copy(update={"topic_prefix": ctx.prefix})
        self.raw_topic = topic_name(TELEMETRY_RAW, self.kafka)
        self.events_topic = topic_name(ALERTS_EVENTS, self.kafka)
        self.buckets = (f"{ctx.uid}-city", f"{ctx.uid}-city-agg")
        self.ingest_port = free_port()
        self.sink_port = free_port()
        self.groups = {
            "jobs": f"{ctx.prefix}{s.jobs.app_id}",
            "sink": f"{ctx.prefix}{s.sink.influx_group}",
        }

    def env(self) -> dict[str, str]:
        s = self.ctx.settings
        return {
            **os.environ,
            "CITYSTREAM_KAFKA__TOPIC_PREFIX": self.ctx.prefix,
            "CITYSTREAM_MQTT__TOPIC_ROOT": self.ctx.root,
            "CITYSTREAM_MQTT__SHARE_GROUP": self.ctx.uid,
            "CITYSTREAM_MQTT__SESSION_EXPIRY_S": "300",
            "CITYSTREAM_INGEST__METRICS_PORT": str(self.ingest_port),
            # the per-device rate limit stays in the hot path at a rate no workload reaches
            "CITYSTREAM_INGEST__DEVICE_RATE_PER_S": "1000000",
            "CITYSTREAM_INGEST__DEVICE_BURST": "1000000",
            "CITYSTREAM_SINK__INFLUX_METRICS_PORT": str(self.sink_port),
            "CITYSTREAM_SINK__INFLUX_GROUP": self.groups["sink"],
            "CITYSTREAM_SINK__INFLUX_TOKEN": s.influx.admin_token.get_secret_value(),
            "CITYSTREAM_INFLUX__BUCKET_RAW": self.buckets[0],
            "CITYSTREAM_INFLUX__BUCKET_AGG": self.buckets[1],
            "CITYSTREAM_LOG_LEVEL": "WARNING",
        }

    def decode(self, record: Record) -> Decoded | None:
        return decode_reading(record)

    async def create_topics(self, kafka: Kafka) -> None:
        from bench import influx_io

        await kafka.create_pipeline_topics(self.kafka)
        await asyncio.to_thread(influx_io.create_buckets, self.ctx.settings.influx, list(self.buckets))

    def spawn(self) -> None:
        env, cwd, py = self.env(), self.ctx.workdir, sys.executable
        for name, argv in (
            ("ingest", [py, "-m", "ingest"]),
            ("jobs", [py, "-m", "stream_jobs"]),
            ("sink", [py, "-m", "sinks", "influx"]),
        ):
            self.children.append(Child(name, argv, env=env, cwd=cwd, log=cwd / f"{name}.log"))

    def counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with contextlib.suppress(OSError):
            samples = promtext.scrape(self.ingest_port)
            out["ingest_received"] = promtext.total(samples, "citystream_ingest_received_total")
            out["ingest_produced"] = promtext.total(samples, "citystream_ingest_produced_total", output="raw")
            out["ingest_dlq"] = promtext.total(samples, "citystream_ingest_produced_total", output="dlq")
        with contextlib.suppress(OSError):
            samples = promtext.scrape(self.sink_port)
            out["sink_points"] = promtext.total(samples, "citystream_sink_influx_points_written_total")
        return out

    def sink_latency(self) -> dict[float, float]:
        """Cumulative buckets (seconds) of the sink's device-to-write latency of readings."""
        try:
            samples = promtext.scrape(self.sink_port)
        except OSError:
            return {}
        return promtext.buckets(samples, "citystream_sink_influx_latency_seconds", kind="reading")

    async def cleanup(self) -> None:
        from bench import influx_io

        await asyncio.to_thread(influx_io.delete_buckets, self.ctx.settings.influx, list(self.buckets))


class CPipe(System):
    """``mosquitto_sub | kcat``: the C baseline of the MQTT to Kafka hop."""

    name = "cpipe"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.raw_topic = f"{ctx.prefix}cpipe.{TELEMETRY_RAW}"

    async def create_topics(self, kafka: Kafka) -> None:
        await kafka.create_topic(self.raw_topic, self.ctx.settings.kafka.partitions)

    def spawn(self) -> None:
        sub_bin, kcat_bin = ensure_cpipe_tools()
        s, cwd = self.ctx.settings, self.ctx.workdir
        m = s.mqtt
        # Into a pipe, stdio buffers whole blocks: messages would wait for the next 4 KiB and the
        # last ones would die with the process. Line buffering is how the pipe has to be run.
        stdbuf = shutil.which("stdbuf")
        line_buffered = [stdbuf, "-oL"] if stdbuf else []
        password = m.ingest_password.get_secret_value()
        argv = [*line_buffered, sub_bin, "-h", m.host, "-p", str(m.port), "-i", f"{self.ctx.uid}-cpipe"]
        argv += ["-u", m.ingest_username, "-P", password, "-q", "1", "-t", f"{self.ctx.root}/#", "-v"]
        sub = Child("mosquitto_sub", argv, cwd=cwd, log=cwd / "mosquitto_sub.log", stdout=subprocess.PIPE)
        kcat = Child(
            "kcat",
            [kcat_bin, "-P", "-b", s.kafka.bootstrap, "-t", self.raw_topic, "-K", " "],
            cwd=cwd,
            log=cwd / "kcat.log",
            stdin=sub.proc.stdout,
        )
        if sub.proc.stdout is not None:
            sub.proc.stdout.close()  # kcat holds the read end now
        self.children += [kcat, sub]  # stopped in reverse: the subscriber first, then kcat drains

    def roles(self) -> dict[str, list[int]]:
        return {"cpipe": [c.pid for c in self.children]}

    def stop(self) -> dict[str, int]:
        """The subscriber first; kcat then sees the end of its input, delivers what it holds, exits."""
        kcat, sub = self.children
        codes = {sub.name: sub.stop()}
        with contextlib.suppress(subprocess.TimeoutExpired):
            kcat.proc.wait(STOP_TIMEOUT_S)
        codes[kcat.name] = kcat.stop()
        return codes


class Quix(System):
    """The Quix Streams peer: MQTT source app and windows app."""

    name = "quix"

    def __init__(self, ctx: Context, python: Path) -> None:
        super().__init__(ctx)
        self.python = python
        self.raw_topic = f"{ctx.prefix}quix.{TELEMETRY_RAW}"
        self.agg_topic = f"{ctx.prefix}quix.telemetry.agg.1m"
        self.groups = {"quix-windows": f"{ctx.uid}-quix-windows"}

    async def create_topics(self, kafka: Kafka) -> None:
        partitions = self.ctx.settings.kafka.partitions
        await kafka.create_topic(self.raw_topic, partitions)
        await kafka.create_topic(self.agg_topic, partitions)

    def spawn(self) -> None:
        s, cwd = self.ctx.settings, self.ctx.workdir
        m = s.mqtt
        common = [str(self.python), "-P", str(QUIX_APP)]
        source = Child(
            "quix-source",
            [
                *common,
                "source",
                "--bootstrap",
                s.kafka.bootstrap,
                "--group",
                f"{self.ctx.uid}-quix-source",
                "--state-dir",
                str(cwd / "quix-source"),
                "--output",
                self.raw_topic,
                "--root",
                self.ctx.root,
                "--client-id",
                f"{self.ctx.uid}-quix",
                "--host",
                m.host,
                "--port",
                str(m.port),
                "--user",
                m.ingest_username,
            ],
            cwd=cwd,
            log=cwd / "quix-source.log",
            stdin=subprocess.PIPE,
        )
        if source.proc.stdin is not None:
            source.proc.stdin.write(m.ingest_password.get_secret_value().encode() + b"\n")
            source.proc.stdin.close()
        windows = Child(
            "quix-windows",
            [
                *common,
                "windows",
                "--bootstrap",
                s.kafka.bootstrap,
                "--group",
                self.groups["quix-windows"],
                "--state-dir",
                str(cwd / "quix-windows"),
                "--input",
                self.raw_topic,
                "--output",
                self.agg_topic,
                "--grace-ms",
                str(int(s.jobs.grace_s * 1000)),
            ],
            cwd=cwd,
            log=cwd / "quix-windows.log",
        )
        self.children += [windows, source]


def make(name: str, ctx: Context, quix: Path | None) -> System:
    if name == "ours":
        return Ours(ctx)
    if name == "cpipe":
        return CPipe(ctx)
    if name == "quix":
        if quix is None:
            raise BenchError("the Quix Streams peer needs its virtualenv")
        return Quix(ctx, quix)
    raise BenchError(f"unknown system {name!r} (known: {', '.join(SYSTEMS)})")


def describe(settings: Settings) -> dict[str, Any]:
    """Versions of the tools, for the report."""
    out: dict[str, Any] = {}
    for tool, argv in (("mosquitto_sub", ["mosquitto_sub", "--help"]), ("kcat", ["kcat", "-V"])):
        path = shutil.which(argv[0])
        if path is None:
            out[tool] = "not installed"
            continue
        try:
            res = subprocess.run([path, *argv[1:]], capture_output=True, text=True, check=False, timeout=10)
        except OSError:
            out[tool] = "unknown"
            continue
        text = (res.stdout + res.stderr).strip().splitlines()
        line = next((x.strip() for x in text if "version" in x.lower()), text[0] if text else "")
        match = re.search(r"Version (\S+).*librdkafka (\S+)", line)
        out[tool] = f"{match.group(1)} (librdkafka {match.group(2)})" if match else line.rstrip(".")
    return out
