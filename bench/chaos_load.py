"""The chaos run's load: a seeded fleet publishing at QoS 1 like a real device would.

The messages come from the load generator's :class:`bench.load.Generator` (the simulator's
fleet, signal models and payloads; every device numbers its messages ``1, 2, 3, ...``), paced on
the wall clock. They go out over one paho-mqtt client per district gateway, because paho keeps
every QoS 1 message until its PUBACK, queues what is published while the broker is away and
sends all of it again (DUP) after it reconnected: the device side of at-least-once. (The
simulator's own fast publisher counts a message in flight when the connection drops as failed
and moves on, which is right for a benchmark but would make every broker restart look like
loss.)

While it publishes, the load also works out what the pipeline must produce from exactly the
payloads it sent: the 1-minute aggregates (count, mean, min, max, p95 per district, sensor type,
metric and window, with the stream jobs' own window and percentile functions) and the range of
the spiked metric inside and outside the spikes, which tells which alerts are expected.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.load import Generator, LoadSpec
from citystream.model import Aggregate
from citystream.settings import MqttSettings
from simulators.fleet import Device
from stream_jobs.windows import summarize_values, window_start

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 2
MAX_INFLIGHT = 200

SeriesKey = tuple[str, str, str, int]
"""(district, sensor_type, metric, window start ms)."""


class _Values(msgspec.Struct):
    ts: int
    seq: int
    values: dict[str, float]


_decode = msgspec.json.Decoder(_Values).decode


@dataclass
class SpikeCheck:
    """The spiked metric's values: lowest inside a spike, highest outside any."""

    metric: str
    low_inside: dict[str, float] = field(default_factory=dict)
    high_outside: dict[str, float] = field(default_factory=dict)


class _Gateway:
    """One paho client (a district gateway login) and its acknowledgement count."""

    def __init__(self, mqtt: MqttSettings, login: tuple[str, str, str, str]) -> None:
        client_id, username, password, _ = login
        self.client_id = client_id
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.acked = 0
        """PUBACKs received (written by the client's network thread only)."""
        self.connects = 0
        self.disconnects = 0
        self.host, self.port, self.keepalive = mqtt.host, mqtt.port, mqtt.keepalive_s

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self.connects += 1
            self.connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnects += 1
        self.connected.clear()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.acked += 1


class ChaosLoad:
    """Publishes a :class:`LoadSpec`'s messages on schedule in a thread until :meth:`stop`."""

    def __init__(
        self, mqtt: MqttSettings, spec: LoadSpec, devices: Sequence[Device], spike_metric: str
    ) -> None:
        self.spec = spec
        self.devices = list(devices)
        by_district = {login[3]: i for i, login in enumerate(spec.logins)}
        self.gateways = [_Gateway(mqtt, login) for login in spec.logins]
        self.route = [by_district[d.district] for d in self.devices]
        self.start_ms = 0
        self.generator: Generator | None = None
        self.published = 0
        self.refused = 0
        """publish() calls paho refused outright (queue full): counted, never expected."""
        self.series: dict[SeriesKey, list[float]] = {}
        self.spikes = SpikeCheck(spike_metric)
        self.spike_windows: dict[str, list[tuple[int, int]]] = {}
        self.max_ts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self) -> None:
        for gw in self.gateways:
            gw.start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        for gw in self.gateways:
            if not gw.connected.wait(max(0.1, deadline - time.monotonic())):
                raise TimeoutError(f"gateway {gw.client_id} did not connect in {CONNECT_TIMEOUT_S:.0f} s")

    def start(self) -> int:
        """Start the schedule now; returns its time zero (epoch ms)."""
        self.start_ms = time.time_ns() // 1_000_000
        self.generator = Generator(self.spec, self.devices, self.start_ms)
        for s in self.spec.spikes:
            device = self.devices[s.device]
            self.spike_windows.setdefault(device.device_id, []).append(
                (self.start_ms + round(s.start_s * 1000), self.start_ms + round(s.end_s * 1000))
            )
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)
        self._thread.start()
        return self.start_ms

    def stop(self) -> None:
        """Stop handing out new messages (what was published is still delivered)."""
        self._stop.set()
        if self.generator is not None:
            self.generator.stopped = True
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        for gw in self.gateways:
            gw.stop()

    # -- progress --------------------------------------------------------------------------

    @property
    def acked(self) -> int:
        return sum(gw.acked for gw in self.gateways)

    def unacked(self) -> int:
        """Messages published and not (yet) acknowledged by the broker."""
        return self.published - self.acked

    def wait_acked(self, timeout_s: float) -> int:
        """Wait until the broker acknowledged every message; returns how many are still not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.acked >= self.published:
                break
            time.sleep(0.2)
        return self.unacked()

    def per_device(self) -> dict[str, int]:
        counts = self.generator.counts if self.generator is not None else []
        return {d.device_id: n for d, n in zip(self.devices, counts, strict=False) if n}

    def reconnects(self) -> dict[str, int]:
        return {
            "connects": sum(g.connects for g in self.gateways),
            "disconnects": sum(g.disconnects for g in self.gateways),
        }

    # -- the schedule ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._publish_all()
        except BaseException as exc:  # reported by the run, never lost in a thread
            logger.exception("the chaos load failed")
            self.error = exc

    def _publish_all(self) -> None:
        gen = self.generator
        if gen is None:
            raise RuntimeError("start() first")
        t0_ms = self.start_ms
        clients = [gw.client for gw in self.gateways]
        route = self.route
        devices = self.devices
        for message in gen.messages():
            wait_s = (message.at_ms - time.time() * 1000) / 1000
            if wait_s > 0 and self._stop.wait(wait_s):
                gen.stopped = True
            info = clients[route[message.device]].publish(message.topic, message.payload, qos=1)
            if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
                self.refused += 1
            self.published += 1
            self._expect(devices[message.device], message.payload)
        logger.info("chaos load: %d messages from t0 %d", self.published, t0_ms)

    def _expect(self, device: Device, payload: bytes) -> None:
        body = _decode(payload)
        self.max_ts = max(self.max_ts, body.ts)
        start = window_start(body.ts)
        series = self.series
        for metric, value in body.values.items():
            key = (device.district, device.sensor_type, metric, start)
            bucket = series.get(key)
            if bucket is None:
                series[key] = [value]
            else:
                bucket.append(value)
        spiked = self.spikes.metric
        if spiked in body.values:
            value = body.values[spiked]
            windows = self.spike_windows.get(device.device_id, ())
            if any(a <= body.ts < b for a, b in windows):
                low = self.spikes.low_inside
                low[device.device_id] = min(low.get(device.device_id, math.inf), value)
            else:
                high = self.spikes.high_outside
                high[device.device_id] = max(high.get(device.device_id, -math.inf), value)

    # -- what the pipeline must produce ------------------------------------------------------

    def expected_aggregates(
        self, extra: dict[SeriesKey, list[float]], closed_until: int
    ) -> dict[SeriesKey, Aggregate]:
        """Aggregates of every window ending at or before ``closed_until`` (with ``extra``
        readings that are not part of the load, such as readiness probes)."""
        out: dict[SeriesKey, Aggregate] = {}
        keys = set(self.series) | set(extra)
        for key in keys:
            district, sensor_type, metric, start = key
            if start + 60_000 > closed_until:
                continue
            values = sorted(self.series.get(key, []) + extra.get(key, []))
            out[key] = summarize_values(district, sensor_type, metric, start, values, emitted_ms=0)
        return out
