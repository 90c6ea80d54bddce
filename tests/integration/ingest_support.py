"""Helpers for the ingest integration tests: a registered fleet, fast publishers, the bridge as
a subprocess, and reading what reached Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from aiokafka.structs import ConsumerRecord
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from citystream import codec
from citystream.addressing import device_topic
from citystream.model import DeviceStatus, DlqRecord, Reading
from citystream.settings import Settings
from citystream.topics import topic_name
from ingest.bridge import Bridge
from ingest.registry import DeviceRegistry, prepare_entry
from tests.helpers import read_topic

REPO = Path(__file__).resolve().parents[2]
PRODUCED = re.compile(rb'citystream_ingest_produced_total\{output="raw"\} ([0-9.e+]+)')
REDELIVERED = re.compile(rb"citystream_ingest_redelivered_total ([0-9.e+]+)")


class Device(NamedTuple):
    device_id: str
    district: str
    sensor_type: str
    password: str

    def topic(self, settings: Settings, kind: str = "telemetry") -> str:
        return device_topic(settings.mqtt.topic_root, self.district, self.sensor_type, self.device_id, kind)


class Fleet(NamedTuple):
    devices: list[Device]
    gateway: Device
    """A gateway of the first device's district."""


async def register_fleet(
    settings: Settings, uid: str, count: int, *, district: str = "gangnam", extra: Iterable[Device] = ()
) -> Fleet:
    """``count`` air-quality devices (and a gateway) with one registry write and one broker reload."""
    devices = [Device(f"t{uid}-d{i:03d}", district, "air_quality", f"pw-{uid}-{i}") for i in range(count)]
    devices += list(extra)
    gateway = Device(f"t{uid}-gw", district, "any", f"pw-{uid}-gw")
    entries = [
        (prepare_entry(d.device_id, d.district, d.sensor_type, d.password), d.password) for d in devices
    ]
    entries.append(
        (prepare_entry(gateway.device_id, district, "", gateway.password, gateway=True), gateway.password)
    )
    await DeviceRegistry(settings).add_many(entries)
    return Fleet(devices, gateway)


async def remove_fleet(settings: Settings, fleet: Fleet) -> None:
    await DeviceRegistry(settings).remove(*(d.device_id for d in fleet.devices), fleet.gateway.device_id)


def payload(seq: int, ts: int | None = None, pm25: float = 12.5) -> bytes:
    ts = int(time.time() * 1000) if ts is None else ts
    return json.dumps({"ts": ts, "seq": seq, "values": {"pm25": pm25, "pm10": 30.0}}).encode()


class Publisher:
    """One MQTT 5 client with a device's credentials, publishing without waiting per message."""

    def __init__(self, settings: Settings, device: Device, *, will: bool = False) -> None:
        m = settings.mqtt
        self.device = device
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"pub-{device.device_id}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(device.device_id, device.password)
        self.client.max_inflight_messages_set(500)
        self.client.max_queued_messages_set(0)
        if will:
            self.client.will_set(device.topic(settings, "status"), b"offline", qos=1, retain=True)
        self.connect_rc: ReasonCode | None = None
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.host, self.port = m.host, m.port
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any = None) -> None:
        self.connect_rc = rc
        self._connected.set()

    def _on_disconnect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, props: Any = None) -> None:
        self.disconnected.set()

    def connect(self, timeout_s: float = 10.0) -> ReasonCode:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout_s):
            raise AssertionError(f"no CONNACK for {self.device.device_id}")
        assert self.connect_rc is not None
        return self.connect_rc

    def publish(self, topic: str, data: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, data, qos=1, retain=retain)
        self.infos.append(info)
        return info

    def wait_published(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for info in self.infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise AssertionError(f"{self.device.device_id}: a publish was not acknowledged in time")
        self.infos.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drop_connection(self) -> None:
        """Close the socket without DISCONNECT, so the broker sends the last will."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()


@contextlib.asynccontextmanager
async def running_bridge(settings: Settings, *, client_id: str | None = None) -> AsyncIterator[Bridge]:
    """A bridge in this process; its MQTT session is removed from the broker afterwards."""
    bridge = Bridge(settings, client_id=client_id)
    await bridge.start(metrics_port=0)
    try:
        yield bridge
    finally:
        await bridge.stop()
        await asyncio.to_thread(forget_session, settings, bridge.mqtt.client_id)


def forget_session(settings: Settings, client_id: str) -> None:
    """End a persistent session (clean start, expiry 0) so the broker frees its queue."""
    m = settings.mqtt
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(m.ingest_username, m.ingest_password.get_secret_value())
    done = threading.Event()
    client.on_connect = lambda *_: done.set()
    try:
        client.connect(m.host, m.port, 30, clean_start=True)
    except OSError:
        return
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class BridgeProcess:
    """``python -m ingest`` with the test's settings, for kill -9 and SIGTERM."""

    def __init__(self, settings: Settings, log_dir: Path, *, instance: str = "1") -> None:
        self.settings = settings
        self.port = free_port()
        self.client_id = f"citystream-{settings.mqtt.share_group}-{instance}"
        self.env = {
            **os.environ,
            "CITYSTREAM_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
            "CITYSTREAM_MQTT__TOPIC_ROOT": settings.mqtt.topic_root,
            "CITYSTREAM_MQTT__SHARE_GROUP": settings.mqtt.share_group,
            "CITYSTREAM_INGEST__INSTANCE": instance,
            "CITYSTREAM_INGEST__METRICS_PORT": str(self.port),
            "CITYSTREAM_INGEST__DEVICE_RATE_PER_S": str(settings.ingest.device_rate_per_s),
            "CITYSTREAM_INGEST__DEVICE_BURST": str(settings.ingest.device_burst),
            "CITYSTREAM_LOG_LEVEL": "INFO",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = log_dir / f"ingest-{instance}.log"

    def start(self, timeout_s: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingest"], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the bridge exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"the bridge was not ready in {timeout_s:.0f} s:\n{self.log_tail()}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        forget_session(self.settings, self.client_id)

    def metric(self, pattern: re.Pattern[bytes]) -> float:
        match = pattern.search(self.get("/metrics")[1])
        return float(match.group(1)) if match else 0.0

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


async def read_records(
    settings: Settings, base: str, *, expect: int | None = None, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    return await read_topic(
        settings.kafka.bootstrap, topic_name(base, settings.kafka), expect=expect, timeout_s=timeout_s
    )


def readings(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[Reading]:
    return [codec.decode(r.value, Reading) for r in records if r.value is not None]


def dead_letters(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[DlqRecord]:
    return [codec.decode(r.value, DlqRecord) for r in records if r.value is not None]


def statuses(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[DeviceStatus]:
    return [codec.decode(r.value, DeviceStatus) for r in records if r.value is not None]
