"""Ingest throughput: the bridge, the C pipe ``mosquitto_sub | kcat`` and a Quix Streams app.

The same job for all three: take QoS 1 telemetry from a shared subscription on a persistent
MQTT 5 session and write it to a Kafka topic keyed by device (the bridge also validates every
message and acknowledges it to the broker only after Kafka acknowledged it; the other two
acknowledge on receipt). Each system is measured in two modes, one after the other, on its own
MQTT topic root, share group and Kafka topic:

- ``drain``: the messages are queued in the broker for the system's session while it is
  stopped; then it starts and the clock runs until all of them are in Kafka. This is the
  system's own capacity, with no publisher competing for the two cores.
- ``live``: the system runs; publishers (``mosquitto_pub -l``, one per device) send the
  messages as fast as the broker takes them. This is the sustained rate with the device
  side on the same machine.

The rate is the message count over the time from the first to the last record visible in
Kafka (end offsets polled every 20 ms); CPU seconds and peak RSS are read from ``/proc`` for
the system's processes. Results go to ``bench/results/ingest.json``.

    .venv/bin/python -m bench.ingest --quick

Quix Streams pins pydantic below the project's version, so its app runs in its own virtualenv
(``~/.cache/citystream/quix-venv``, created on first use with pip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
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

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from citystream.addressing import device_topic
from citystream.settings import Settings, get_settings
from citystream.topics import DEVICE_STATUS, TELEMETRY_DLQ, TELEMETRY_RAW, topic_name
from ingest.registry import DeviceRegistry, prepare_entry

RESULTS = Path(__file__).parent / "results" / "ingest.json"
REPO = Path(__file__).resolve().parents[1]
TARGET_MSG_S = 20_000.0
DEVICES = 8
POLL_S = 0.02
STALL_S = 10.0
QUIX_APP = Path(__file__).parent / "quix_ingest_app.py"


class Measurement(NamedTuple):
    messages: int
    in_kafka: int
    """Records in Kafka when the count stopped growing (the rate's numerator)."""
    in_kafka_after_stop: int
    """Records in Kafka after the system was stopped gracefully (what it had held back)."""
    seconds: float
    rate: float
    wall_s: float
    cpu_s: float
    cpu_s_per_million: float
    max_rss_mb: float


# -- processes -----------------------------------------------------------------------------


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


class Usage:
    """CPU seconds and peak RSS of process trees, sampled while they run."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.max_rss_kb = 0
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self, roots: list[int]) -> None:
        rss = 0
        for root in roots:
            for pid in _tree(root):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu[pid] = (int(fields[11]) + int(fields[12])) / self.tick
                    rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
        self.max_rss_kb = max(self.max_rss_kb, rss)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu.values())


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- the three systems -----------------------------------------------------------------------


class System:
    """One way to move ``$share/{group}/{root}/#`` into ``topic``."""

    name = ""

    def __init__(self, settings: Settings, topic: str, log: Path) -> None:
        self.settings = settings
        self.topic = topic
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_id = f"bench-{settings.mqtt.share_group}"

    @property
    def subscription(self) -> str:
        return f"$share/{self.settings.mqtt.share_group}/{self.settings.mqtt.topic_root}/#"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self) -> None:
        argv, env = self.command()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    async def wait_subscribed(self) -> None:
        await asyncio.sleep(2.0)


UNTHROTTLED = {
    "CITYSTREAM_INGEST__DEVICE_RATE_PER_S": "1000000",
    "CITYSTREAM_INGEST__DEVICE_BURST": "1000000",
}
"""The per-device rate limit stays in the bridge's hot path (its cost is measured) at a rate no
workload reaches: the workloads drive each device far beyond a real device's rate."""


class Bridge(System):
    name = "bridge"

    def __init__(self, settings: Settings, topic: str, log: Path) -> None:
        super().__init__(settings, topic, log)
        self.client_id = f"citystream-{settings.mqtt.share_group}-bench"
        self.port = 0

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        with contextlib.closing(__import__("socket").socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {
            "CITYSTREAM_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
            "CITYSTREAM_MQTT__TOPIC_ROOT": s.mqtt.topic_root,
            "CITYSTREAM_MQTT__SHARE_GROUP": s.mqtt.share_group,
            "CITYSTREAM_INGEST__INSTANCE": "bench",
            "CITYSTREAM_INGEST__METRICS_PORT": str(self.port),
            **UNTHROTTLED,
            "CITYSTREAM_LOG_LEVEL": "WARNING",
        }
        return [sys.executable, "-m", "ingest"], env

    async def wait_subscribed(self) -> None:
        import urllib.request

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await asyncio.to_thread(ready):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the bridge did not get ready; see {self.log}")


class CPipe(System):
    name = "mosquitto_sub|kcat"

    def command(self) -> tuple[list[str], dict[str, str]]:
        m = self.settings.mqtt
        sub = [
            "mosquitto_sub",
            "-h",
            m.host,
            "-p",
            str(m.port),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-c",
            "-i",
            self.client_id,
            "-x",
            str(m.session_expiry_s),
            "-u",
            m.ingest_username,
            "-P",
            m.ingest_password.get_secret_value(),
            "-t",
            self.subscription,
            "-F",
            "%t\t%p",
        ]
        kcat = [
            "kcat",
            "-P",
            "-b",
            self.settings.kafka.bootstrap,
            "-t",
            self.topic,
            "-K",
            "\t",
            "-X",
            "acks=all",
            "-X",
            "enable.idempotence=true",
            "-X",
            "linger.ms=5",
        ]
        # Line-buffered, or mosquitto_sub's stdio keeps the last few KiB until it exits.
        script = f"stdbuf -oL {_quote(sub)} | {_quote(kcat)}"
        return ["/bin/sh", "-c", script], {}

    def stop(self) -> None:
        """Stop mosquitto_sub first: kcat then reads to the end, delivers and exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in _tree(self.proc.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "mosquitto_sub":
                    os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            _stop(self.proc)


class Quix(System):
    name = "quixstreams"

    def __init__(self, settings: Settings, topic: str, log: Path, python: Path, state: Path) -> None:
        super().__init__(settings, topic, log)
        self.python = python
        self.state = state

    def command(self) -> tuple[list[str], dict[str, str]]:
        m = self.settings.mqtt
        argv = [
            str(self.python),
            str(QUIX_APP),
            "--bootstrap",
            self.settings.kafka.bootstrap,
            "--topic",
            self.topic,
            "--mqtt-host",
            m.host,
            "--mqtt-port",
            str(m.port),
            "--username",
            m.ingest_username,
            "--password",
            m.ingest_password.get_secret_value(),
            "--subscription",
            self.subscription,
            "--client-id",
            self.client_id,
            "--state-dir",
            str(self.state),
        ]
        return argv, {}

    async def wait_subscribed(self) -> None:
        await asyncio.sleep(8.0)  # the app starts its source in a subprocess


def _quote(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def quix_python(settings: Settings) -> Path | None:
    """The Quix virtualenv's interpreter, created with pip on first use; ``None`` if impossible."""
    venv = settings.stack.cache_dir / "quix-venv"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "quixstreams>=3.0", "paho-mqtt>=2.1"],
            check=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"quixstreams is not available ({exc}); skipping it", file=sys.stderr)
        return None
    return python


# -- load and measurement ----------------------------------------------------------------------


class Fleet(NamedTuple):
    devices: list[str]
    gateway: str
    password: str


async def register(settings: Settings, uid: str) -> Fleet:
    password = f"bench-{uid}"
    devices = [f"b{uid}-aq-{i:02d}" for i in range(DEVICES)]
    entries = [(prepare_entry(d, "gangnam", "air_quality", password), password) for d in devices]
    gateway = f"b{uid}-gw"
    entries.append((prepare_entry(gateway, "gangnam", "", password, gateway=True), password))
    await DeviceRegistry(settings).add_many(entries)
    return Fleet(devices, gateway, password)


def write_payloads(folder: Path, fleet: Fleet, messages: int) -> list[Path]:
    per_device = messages // len(fleet.devices)
    files = []
    now = int(time.time() * 1000)
    for device in fleet.devices:
        path = folder / f"{device}.jsonl"
        with path.open("w") as f:
            for seq in range(per_device):
                f.write(f'{{"ts": {now}, "seq": {seq}, "values": {{"pm25": 12.5, "pm10": 30.1}}}}\n')
        files.append(path)
    return files


def publish(settings: Settings, fleet: Fleet, files: list[Path]) -> list[subprocess.Popen[bytes]]:
    m = settings.mqtt
    procs = []
    for device, path in zip(fleet.devices, files, strict=True):
        topic = device_topic(m.topic_root, "gangnam", "air_quality", device, "telemetry")
        with path.open("rb") as stdin:
            procs.append(
                subprocess.Popen(
                    [
                        "mosquitto_pub",
                        "-h",
                        m.host,
                        "-p",
                        str(m.port),
                        "-V",
                        "mqttv5",
                        "-q",
                        "1",
                        "-u",
                        fleet.gateway,
                        "-P",
                        fleet.password,
                        "-t",
                        topic,
                        "-l",
                    ],
                    stdin=stdin,
                )
            )
    return procs


async def create_topics(settings: Settings, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, settings.kafka.partitions, settings.kafka.replication_factor) for n in names]
        )
    finally:
        await admin.close()


async def delete_topics(settings: Settings, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def count_until(
    settings: Settings, topic: str, expected: int, timeout_s: float, on_poll: Callable[[], None]
) -> tuple[int, float, float]:
    """Poll the topic's end offsets until ``expected`` records, or until nothing new came for
    ``STALL_S``; returns (count, first seen, last change)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        first = last = 0.0
        count = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now_count = sum((await consumer.end_offsets(tps)).values())
            now = time.monotonic()
            on_poll()
            if now_count != count:
                count, last = now_count, now
                first = first or now
            if count >= expected or (first and now - last > STALL_S):
                break
            await asyncio.sleep(POLL_S)
        return count, first, last
    finally:
        await consumer.stop()


async def end_count(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        return int(sum((await consumer.end_offsets(tps)).values()))
    finally:
        await consumer.stop()


def forget_session(settings: Settings, client_id: str) -> None:
    m = settings.mqtt
    subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            m.host,
            "-p",
            str(m.port),
            "-V",
            "mqttv5",
            "-i",
            client_id,
            "-u",
            m.ingest_username,
            "-P",
            m.ingest_password.get_secret_value(),
            "-t",
            "bench/none",
            "-x",
            "0",
            "-W",
            "1",
        ],
        capture_output=True,
        check=False,
        timeout=10,
    )


async def measure(
    system: System, settings: Settings, fleet: Fleet, *, mode: str, messages: int, folder: Path
) -> Measurement:
    files = write_payloads(folder, fleet, messages)
    messages = (messages // len(fleet.devices)) * len(fleet.devices)
    usage = Usage()
    try:
        if mode == "drain":
            system.start()  # creates the session and its subscription
            await system.wait_subscribed()
            system.stop()
            for proc in publish(settings, fleet, files):
                await asyncio.to_thread(proc.wait, 300)
            started = time.monotonic()
            system.start()
            cpu0 = 0.0
        else:
            system.start()
            await system.wait_subscribed()
            usage.sample([system.pid])
            cpu0 = usage.cpu_s
            usage.cpu.clear()
            started = time.monotonic()
            publishers = publish(settings, fleet, files)
        root = system.pid
        count, first, last = await count_until(
            settings, system.topic, messages, 300, lambda: usage.sample([root])
        )
        if mode == "live":
            for proc in publishers:
                await asyncio.to_thread(proc.wait, 300)
        usage.sample([root])
    finally:
        system.stop()
        await asyncio.to_thread(forget_session, settings, system.client_id)
    final = await end_count(settings, system.topic)
    seconds = max(last - first, 1e-6)
    cpu = max(usage.cpu_s - cpu0, 0.0) if mode == "live" else usage.cpu_s
    return Measurement(
        messages=messages,
        in_kafka=count,
        in_kafka_after_stop=final,
        seconds=round(seconds, 3),
        rate=round(count / seconds),
        wall_s=round(last - started, 3),
        cpu_s=round(cpu, 2),
        cpu_s_per_million=round(cpu / max(count, 1) * 1e6, 1),
        max_rss_mb=round(usage.max_rss_kb / 1024, 1),
    )


def make_system(
    key: str, settings: Settings, topic: str, log: Path, *, quix: Path | None, state: Path
) -> System:
    if key == "bridge":
        return Bridge(settings, topic, log)
    if key == "cpipe":
        return CPipe(settings, topic, log)
    if key == "quix" and quix is not None:
        return Quix(settings, topic, log, quix, state)
    raise ValueError(f"unknown or unavailable system {key!r}")


def isolated(settings: Settings, tag: str) -> Settings:
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"{tag}."}),
            "mqtt": settings.mqtt.model_copy(update={"topic_root": tag, "share_group": tag}),
        }
    )


async def run(messages: int, systems: list[str], modes: list[str], repeats: int) -> dict[str, Any]:
    """Every (system, mode) ``repeats`` times, round-robin so that load changes hit all alike."""
    base = get_settings()
    uid = uuid.uuid4().hex[:8]
    fleet = await register(base, uid)
    runs: dict[str, dict[str, list[Measurement]]] = {}
    skipped: dict[str, str] = {}
    quix = quix_python(base) if "quix" in systems else None
    if "quix" in systems and quix is None:
        skipped["quixstreams"] = "quixstreams could not be installed"
        systems = [s for s in systems if s != "quix"]
    try:
        with tempfile.TemporaryDirectory(prefix="citystream-bench-") as tmp:
            folder = Path(tmp)
            for repeat in range(repeats):
                for key in systems:
                    for mode in modes:
                        prefix = f"b{uid}{repeat}"
                        m, name = await run_one(
                            base,
                            fleet,
                            key=key,
                            mode=mode,
                            messages=messages,
                            folder=folder,
                            prefix=prefix,
                            quix=quix,
                        )
                        runs.setdefault(name, {}).setdefault(mode, []).append(m)
    finally:
        await DeviceRegistry(base).remove(*fleet.devices, fleet.gateway)
    results: dict[str, Any] = {name: {"skipped": why} for name, why in skipped.items()}
    for name, by_mode in runs.items():
        results[name] = {mode: summarise(ms) for mode, ms in by_mode.items()}
    return results


async def run_one(
    base: Settings,
    fleet: Fleet,
    *,
    key: str,
    mode: str,
    messages: int,
    folder: Path,
    prefix: str,
    quix: Path | None,
) -> tuple[Measurement, str]:
    tag = f"{prefix}{key[:2]}{mode[0]}"
    settings = isolated(base, tag)
    raw = topic_name(TELEMETRY_RAW, settings.kafka)
    extra = [topic_name(t, settings.kafka) for t in (TELEMETRY_DLQ, DEVICE_STATUS)]
    await create_topics(settings, [raw, *(extra if key == "bridge" else [])])
    log = folder / f"{tag}.log"
    system = make_system(key, settings, raw, log, quix=quix, state=folder / f"{tag}-state")
    print(f"{system.name} {mode}: {messages} messages ...", flush=True)
    try:
        m = await measure(system, settings, fleet, mode=mode, messages=messages, folder=folder)
    finally:
        await delete_topics(settings, f"{tag}.")
    rate = f"  {m.rate:,.0f} msg/s ({m.in_kafka}/{m.messages} in {m.seconds} s)"
    print(f"{rate}, {m.cpu_s_per_million} CPU s per million, {m.max_rss_mb} MB RSS", flush=True)
    if m.in_kafka_after_stop < m.messages:
        print(f"  LOST {m.messages - m.in_kafka_after_stop}; log tail:\n{_tail(log)}", flush=True)
    elif m.in_kafka < m.messages:
        print(f"  {m.messages - m.in_kafka} held back until the system stopped", flush=True)
    return m, system.name


def summarise(ms: list[Measurement]) -> dict[str, Any]:
    rates = sorted(m.rate for m in ms)
    cpu = sorted(m.cpu_s_per_million for m in ms)
    return {
        "best_rate": rates[-1],
        "median_rate": rates[len(rates) // 2],
        "median_cpu_s_per_million": cpu[len(cpu) // 2],
        "max_rss_mb": max(m.max_rss_mb for m in ms),
        "lost": max(m.messages - m.in_kafka_after_stop for m in ms),
        "runs": [m._asdict() for m in ms],
    }


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Bridge over peer: best rates, and CPU per message (peer over bridge: above 1 is cheaper)."""
    out: dict[str, Any] = {}
    bridge = results.get("bridge", {})
    for other in ("mosquitto_sub|kcat", "quixstreams"):
        for mode, m in results.get(other, {}).items():
            if mode in bridge and isinstance(m, dict) and m.get("best_rate"):
                out[f"rate bridge/{other} {mode}"] = round(bridge[mode]["best_rate"] / m["best_rate"], 2)
                cpu = bridge[mode]["median_cpu_s_per_million"]
                if cpu:
                    out[f"cpu {other}/bridge {mode}"] = round(m["median_cpu_s_per_million"] / cpu, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60,000 messages per run (default 200,000)")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--systems", default="bridge,cpipe,quix", help="any of bridge, cpipe, quix")
    parser.add_argument("--modes", default="drain,live")
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per system and mode (quick: 1, else 3)"
    )
    args = parser.parse_args(argv)
    messages = args.messages or (60_000 if args.quick else 200_000)
    for tool in ("mosquitto_pub", "mosquitto_sub", "kcat"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (apt-get install mosquitto-clients kcat)", file=sys.stderr)
            return 2
    load_before = os.getloadavg()
    started = time.time()
    repeats = args.repeats or (1 if args.quick else 3)
    results = asyncio.run(run(messages, args.systems.split(","), args.modes.split(","), repeats))
    bridge = results.get("bridge", {})
    report = {
        "benchmark": "ingest",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": load_before},
        "load_after": os.getloadavg(),
        "messages_per_run": messages,
        "payload": "native JSON, about 75 bytes, QoS 1, 8 devices",
        "target_msg_s": TARGET_MSG_S,
        "repeats": repeats,
        "bridge_meets_target": {mode: m["best_rate"] >= TARGET_MSG_S for mode, m in bridge.items()},
        "results": results,
        "ratios": ratios(results),
        "notes": [
            "bridge: validates, acks=all + idempotent producer, MQTT ack only after the Kafka ack",
            "mosquitto_sub|kcat: acknowledges on receipt, key = MQTT topic, no validation",
            "quixstreams: MQTTSource (paho) on a persistent session, acknowledges on receipt",
            "the machine is shared (2 cores): see the load averages",
        ],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": report["ratios"], "bridge_meets_target": report["bridge_meets_target"]}))
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
