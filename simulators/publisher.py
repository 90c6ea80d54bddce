"""Send a message sequence over MQTT, paced, over a bounded set of connections.

Connections are either one per device (the device's own credentials, so the broker's ACL
applies to each) or one per district gateway. The pacing loop sends, in one batch per
connection, every message that is due, then sleeps until the next one is: due by scenario
time and the time compression, or by position and a target rate, or immediately (rate 0).
Device status is retained: ``online`` after connecting, ``offline`` at the end and as the last
will of a device connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from citystream.addressing import STATUS, device_topic
from citystream.settings import MqttSettings
from ingest.registry import GATEWAY_SENSOR_TYPE
from simulators import wire
from simulators.connection import DISCONNECTED, QUEUED, WINDOW_FULL, ConnectionStats, MqttConnection
from simulators.errors import ConnectError
from simulators.fleet import Device
from simulators.generator import Message

logger = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
CONNECT_CONCURRENCY = 32
AUTH_RETRY_S = 30.0
"""A registry change reaches the broker with a reload (the bridge reads the registry topic and
regenerates the broker's password file, which takes seconds on a busy machine); connections
refused for credentials are retried this long before the refusal is final."""
BATCH = 2000
"""Most messages queued between two yields to the event loop."""
LOOKAHEAD_S = 0.002
ABORT_STATUS_S = 5.0
"""How long a failed or cancelled run still tries to report its devices offline."""
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
PROGRESS_EVERY_S = 0.25


class Login(NamedTuple):
    client_id: str
    username: str
    password: str
    district: str


@dataclass
class Route:
    """Which connection carries which device."""

    mode: Literal["device", "gateway"]
    logins: list[Login]
    connection_of: list[int]
    """Per device number, the index of its login."""
    registered: list[str] = field(default_factory=list)
    """Registry entries made for this route (to remove them again)."""

    def gateway_status_topic(self, index: int, root: str) -> str | None:
        """A gateway's own status topic (``{root}/{district}/any/{gateway}/status``)."""
        if self.mode != "gateway":
            return None
        login = self.logins[index]
        return device_topic(root, login.district, GATEWAY_SENSOR_TYPE, login.username, STATUS)


class Pacing(NamedTuple):
    rate: float | None
    """Messages per second; 0 sends as fast as possible; ``None`` follows scenario time."""
    compression: float = 1.0
    """Scenario seconds per wall second, when pacing follows scenario time."""

    def describe(self) -> str:
        if self.rate is None:
            return f"scenario time x{self.compression:g}"
        return f"{self.rate:g} msg/s" if self.rate else "as fast as possible"


class Progress(NamedTuple):
    done: int
    total: int
    failed: int
    rate: float
    """Messages per second over the last second."""
    elapsed_s: float


@dataclass
class Summary:
    planned: int
    queued: int
    sent: int
    """QoS 0: handed to the connection; QoS 1: acknowledged by the broker."""
    failed: int
    duration_s: float
    rate: float
    """Achieved messages per second (sent / duration)."""
    qos: int
    mode: str
    connections: int
    pacing: str
    status_messages: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    stopped: bool = False
    """Stopped early on request (a signal) before every message was due."""

    def lines(self) -> list[str]:
        why = ", ".join(f"{reason}: {n}" for reason, n in self.failures.items())
        early = [f"stopped   on request after {self.queued} of {self.planned}"] if self.stopped else []
        return [
            *early,
            f"sent      {self.sent} of {self.planned} telemetry messages (QoS {self.qos})",
            f"failed    {self.failed}" + (f" ({why})" if why else ""),
            f"duration  {self.duration_s:.2f} s",
            f"rate      {self.rate:,.0f} msg/s ({self.pacing})",
            f"via       {self.connections} {self.mode} connection(s), {self.status_messages} status messages",
        ]


async def connect_retrying(conn: MqttConnection, auth_retry_s: float = AUTH_RETRY_S) -> None:
    """Connect; a refusal for credentials is retried for ``auth_retry_s`` (a fresh registry entry
    reaches the broker with its next reload)."""
    deadline = time.monotonic() + auth_retry_s
    while True:
        try:
            await conn.connect()
        except ConnectError as exc:
            if exc.reason in (0x86, 0x87) and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                continue
            raise
        return


def _total(stats: Iterable[ConnectionStats]) -> ConnectionStats:
    out = ConnectionStats()
    for s in stats:
        out.written += s.written
        out.acked += s.acked
        out.failed += s.failed
        for reason, n in s.failures.items():
            out.failures[reason] = out.failures.get(reason, 0) + n
    return out


class Publisher:
    def __init__(
        self,
        mqtt: MqttSettings,
        route: Route,
        devices: Sequence[Device],
        root: str,
        *,
        qos: int = 1,
        status: bool = True,
        clear_status: bool = False,
        auth_retry_s: float = AUTH_RETRY_S,
    ) -> None:
        self.mqtt = mqtt
        self.qos = qos
        self.auth_retry_s = auth_retry_s
        self.route = route
        self.devices = devices
        self.root = root
        self.status = status
        self.clear_status = clear_status
        self._topics = [wire.topic_field(d.topic(root)) for d in devices]
        self._members: list[list[int]] = [[] for _ in route.logins]
        for device, conn in enumerate(route.connection_of):
            self._members[conn].append(device)
        # What each connection reports status for: a gateway itself first, then its devices.
        self._status_topics: list[list[bytes]] = []
        for i, members in enumerate(self._members):
            own = route.gateway_status_topic(i, root)
            topics = [own] if own else []
            self._status_topics.append(
                [wire.topic_field(t) for t in topics + [devices[d].status_topic(root) for d in members]]
            )
        self.connections = [
            MqttConnection(
                mqtt.host,
                mqtt.port,
                login.client_id,
                username=login.username,
                password=login.password,
                keepalive_s=mqtt.keepalive_s,
                will=self._will(i) if status else None,
            )
            for i, login in enumerate(route.logins)
        ]
        self._reconnecting: dict[int, asyncio.Task[None]] = {}
        self._status_count = 0
        self._status_in_run = 0
        """Status messages sent while telemetry flows (after a reconnect); not telemetry."""

    def _will(self, index: int) -> wire.Will:
        """The last will: the status of the device or the gateway itself, ``offline``, retained."""
        topic = self.route.gateway_status_topic(index, self.root)
        if topic is None:
            topic = self.devices[self._members[index][0]].status_topic(self.root)
        return wire.Will(topic, OFFLINE, qos=1, retain=True)

    # -- the run -------------------------------------------------------------------------

    async def run(
        self,
        messages: Iterable[Message],
        *,
        start_ms: int,
        pacing: Pacing,
        total: int,
        on_progress: Callable[[Progress], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> Summary:
        """Connect, say online, send ``messages`` when due, say offline, disconnect.

        Setting ``stop`` ends the run early but in order (offline status, summary). Should the
        run fail or be cancelled instead, the devices are still reported offline if possible.
        """
        await self._connect_all()
        finished = False
        try:
            if self.status:
                await self._publish_status(ONLINE)
            before = _total(c.stats for c in self.connections)
            t0 = time.monotonic()
            queued = await self._pump(
                messages,
                start_ms=start_ms,
                pacing=pacing,
                total=total,
                on_progress=on_progress,
                stop=stop or asyncio.Event(),
            )
            await self._settle()
            duration = time.monotonic() - t0
            after = _total(c.stats for c in self.connections)
            if self.status:
                await self._publish_status(OFFLINE)
                if self.clear_status:
                    await self._publish_status(b"")
            finished = True
        finally:
            if not finished and self.status:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    async with asyncio.timeout(ABORT_STATUS_S):
                        await self._publish_status(OFFLINE)
            await self._close_all()
        qos = self.qos
        sent = (after.acked - before.acked) if qos else (after.written - before.written)
        sent -= self._status_in_run
        failures = {k: v - before.failures.get(k, 0) for k, v in after.failures.items()}
        summary = Summary(
            planned=total,
            queued=queued,
            sent=sent,
            failed=after.failed - before.failed,
            duration_s=duration,
            rate=sent / duration if duration > 0 else 0.0,
            qos=qos,
            mode=self.route.mode,
            connections=len(self.connections),
            pacing=pacing.describe(),
            status_messages=self._status_count,
            failures={k: v for k, v in failures.items() if v},
            stopped=queued < total and stop is not None and stop.is_set(),
        )
        if on_progress is not None:
            on_progress(Progress(queued, total, summary.failed, summary.rate, duration))
        return summary

    async def _connect_all(self) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(conn: MqttConnection) -> None:
            async with gate:
                await connect_retrying(conn, self.auth_retry_s)

        results = await asyncio.gather(*(one(c) for c in self.connections), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._close_all()
            if len(errors) > 1:
                logger.error("%d of %d connections failed", len(errors), len(self.connections))
            raise errors[0]
        m = self.mqtt
        logger.info("%d %s connection(s) to %s:%d", len(self.connections), self.route.mode, m.host, m.port)

    async def _publish_status(self, payload: bytes) -> None:
        for index, conn in enumerate(self.connections):
            for topic in self._status_topics[index]:
                while conn.publish(topic, payload, 1, retain=True) == WINDOW_FULL:
                    await conn.wait_window()
                self._status_count += 1
            conn.flush()
        await self._settle()

    async def _settle(self, timeout_s: float = 30.0) -> None:
        """Flush every connection and wait until nothing is in flight."""
        for conn in self.connections:
            conn.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for conn in self.connections:
                    await conn.idle()

    async def _close_all(self) -> None:
        for task in self._reconnecting.values():
            task.cancel()
        await asyncio.gather(*self._reconnecting.values(), return_exceptions=True)
        self._reconnecting.clear()
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)

    # -- pacing --------------------------------------------------------------------------

    async def _pump(
        self,
        messages: Iterable[Message],
        *,
        start_ms: int,
        pacing: Pacing,
        total: int,
        on_progress: Callable[[Progress], None] | None,
        stop: asyncio.Event,
    ) -> int:
        """Send every message when it is due, until ``stop``; returns how many were queued."""
        loop = asyncio.get_running_loop()
        conns, conn_of, topics = self.connections, self.route.connection_of, self._topics
        # A message is due at  done * per_message + (at_ms - start_ms) * per_ms  seconds after t0.
        per_message = 1.0 / pacing.rate if pacing.rate else 0.0
        per_ms = 0.001 / pacing.compression if pacing.rate is None else 0.0
        meter = _RateMeter(total, on_progress)
        done = 0
        due = 0.0
        t0 = loop.time()
        pending = iter(messages)
        msg = next(pending, None)
        while msg is not None and not stop.is_set():
            horizon = loop.time() - t0 + LOOKAHEAD_S
            touched: set[MqttConnection] = set()
            blocked: MqttConnection | None = None
            for _ in range(BATCH):
                at_ms, device, _, _, payload, qos = msg
                due = done * per_message + (at_ms - start_ms) * per_ms
                if due > horizon:
                    break
                conn = conns[conn_of[device]]
                outcome = conn.publish(topics[device], payload, qos)
                if outcome == WINDOW_FULL:
                    blocked = conn
                    break
                if outcome == DISCONNECTED:
                    self._reconnect(conn_of[device])
                touched.add(conn)
                done += 1
                msg = next(pending, None)
                if msg is None:
                    break
            for conn in touched:
                conn.flush()
            meter.tick(loop.time() - t0, done, conns)
            if blocked is not None:
                await blocked.wait_window()
                continue
            for conn in touched:
                await conn.drain()
            delay = due - (loop.time() - t0)
            await asyncio.sleep(min(delay, PROGRESS_EVERY_S) if delay > 0 else 0)
        return done

    # -- reconnecting --------------------------------------------------------------------

    def _reconnect(self, index: int) -> None:
        """Start reconnecting a lost connection (once); its messages fail until it is back."""
        if index in self._reconnecting and not self._reconnecting[index].done():
            return
        self._reconnecting[index] = asyncio.create_task(
            self._reconnect_loop(index), name=f"reconnect-{index}"
        )

    async def _reconnect_loop(self, index: int) -> None:
        conn = self.connections[index]
        delay = RECONNECT_FIRST_S
        while not conn.connected:
            await asyncio.sleep(delay)
            try:
                await conn.connect()
            except ConnectError as exc:
                if not exc.retriable:
                    logger.error("%s: giving up reconnecting: %s", conn.client_id, exc)  # noqa: TRY400
                    return
                logger.warning("%s: reconnect failed: %s", conn.client_id, exc)
                delay = min(delay * 2, RECONNECT_MAX_S)
        logger.info("%s: reconnected", conn.client_id)
        if self.status:
            # The broker may have published the last will: say online again.
            for topic in self._status_topics[index]:
                if conn.publish(topic, ONLINE, 1, retain=True) == QUEUED:
                    self._status_count += 1
                    self._status_in_run += 1
            conn.flush()


class _RateMeter:
    """Calls ``on_progress`` a few times a second with the rate over the last second."""

    def __init__(self, total: int, on_progress: Callable[[Progress], None] | None) -> None:
        self.total = total
        self.on_progress = on_progress
        self.window: collections.deque[tuple[float, int]] = collections.deque([(0.0, 0)])
        self.next_at = 0.0

    def tick(self, elapsed: float, done: int, conns: Sequence[MqttConnection]) -> None:
        if self.on_progress is None or elapsed < self.next_at:
            return
        self.next_at = elapsed + PROGRESS_EVERY_S
        window = self.window
        window.append((elapsed, done))
        while len(window) > 2 and elapsed - window[0][0] > 1.0:
            window.popleft()
        t_old, n_old = window[0]
        rate = (done - n_old) / (elapsed - t_old) if elapsed > t_old else 0.0
        failed = sum(c.stats.failed for c in conns)
        self.on_progress(Progress(done, self.total, failed, rate, elapsed))
