"""One MQTT 5 client connection on asyncio, for publishing only.

``publish`` only appends a pre-encoded packet to a buffer; ``flush`` hands the buffer to the
transport in one write. QoS 1 packets stay in flight until their PUBACK; at most the broker's
Receive Maximum are in flight at once (``wait_window`` waits for room). A negative PUBACK (for
example "not authorized" from the broker's ACL) and packets in flight when the connection
drops are counted as failed, never dropped silently.

Why not paho-mqtt here: in this role (one process publishing tens of thousands of messages a
second) paho's per-message work and its network thread cap it at about 8,000 msg/s at QoS 1
on the development machine (20,000 when driven from one thread), before any generation; this
client writes pre-encoded batches and takes PUBACKs in bulk. Tests still check it against
paho (the test subscriber) and the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from simulators import wire
from simulators.errors import ConnectError, ProtocolError

logger = logging.getLogger(__name__)

QUEUED = 0
WINDOW_FULL = 1
DISCONNECTED = 2


@dataclass
class ConnectionStats:
    written: int = 0
    """PUBLISH packets handed to the connection (a QoS 0 message counts as sent here)."""
    acked: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str, count: int = 1) -> None:
        self.failed += count
        self.failures[reason] = self.failures.get(reason, 0) + count


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: MqttConnection) -> None:
        self.owner = owner
        self.reader = wire.PacketReader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.owner._transport = transport  # type: ignore[assignment]  # a TCP transport

    def data_received(self, data: bytes) -> None:
        try:
            acks, packets = self.reader.feed(data)
        except ProtocolError as exc:
            self.owner._lost(str(exc))
            return
        self.owner._received(acks, packets)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(str(exc) if exc else "connection closed")

    def pause_writing(self) -> None:
        self.owner._writable.clear()

    def resume_writing(self) -> None:
        self.owner._writable.set()


class MqttConnection:
    """A publishing client: ``await connect()``, ``publish()``/``flush()``, ``await close()``."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        username: str | None,
        password: str | None,
        keepalive_s: int = 30,
        will: wire.Will | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.username, self.password = username, password
        self.keepalive_s = keepalive_s
        self.will = will
        self.connect_timeout_s = connect_timeout_s
        self.stats = ConnectionStats()
        self.receive_maximum = 65535
        self.connected = False
        self._transport: asyncio.WriteTransport | None = None
        self._connack: asyncio.Future[wire.ConnAck] | None = None
        self._out = bytearray()
        self._unflushed_qos0 = 0
        self._inflight: set[int] = set()
        self._next_id = 0
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writable = asyncio.Event()
        self._writable.set()
        self._last_write = 0.0
        self._pinger: asyncio.Task[None] | None = None
        self.lost_reason: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and wait for CONNACK; raises :class:`ConnectError` with the broker's reason."""
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self.lost_reason = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
                transport = self._transport
                if transport is None:
                    raise ConnectError(f"{self.client_id}: connection closed while connecting")
                transport.write(
                    wire.connect_packet(
                        self.client_id,
                        username=self.username,
                        password=self.password,
                        keepalive_s=self.keepalive_s,
                        will=self.will,
                    )
                )
                ack = await self._connack
        except TimeoutError as exc:
            self._abort()
            raise ConnectError(f"{self.client_id}: no CONNACK from {self.host}:{self.port}") from exc
        except OSError as exc:
            raise ConnectError(f"{self.client_id}: cannot reach {self.host}:{self.port}: {exc}") from exc
        if ack.reason >= 0x80:
            self._abort()
            detail = f" ({ack.reason_string})" if ack.reason_string else ""
            raise ConnectError(
                f"{self.client_id}: broker refused the connection: {wire.reason_name(ack.reason)}{detail}",
                reason=ack.reason,
            )
        if ack.maximum_qos < 1:
            logger.warning("%s: the broker accepts QoS 0 only", self.client_id)
        self.receive_maximum = max(1, ack.receive_maximum)
        self.connected = True
        self._last_write = time.monotonic()
        if self._pinger is not None:
            self._pinger.cancel()  # left over from a connection that was lost
        self._pinger = asyncio.create_task(self._keepalive(), name=f"mqtt-ping-{self.client_id}")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush, wait for outstanding PUBACKs (up to ``timeout_s``), then disconnect."""
        if self.connected:
            self.flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        if self.connected and self._transport is not None:
            self._transport.write(wire.DISCONNECT_PACKET)
            self._transport.close()
        self._fail_inflight("not acknowledged before close")
        self.connected = False

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._transport = None

    # -- publishing ----------------------------------------------------------------------

    async def wait_window(self) -> None:
        """Wait until a PUBACK frees room in the in-flight window (or the connection drops)."""
        while self.connected and len(self._inflight) >= self.receive_maximum:
            self._room.clear()
            self.flush()
            await self._room.wait()

    async def idle(self) -> None:
        """Wait until no QoS 1 packet is in flight."""
        await self._idle.wait()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self.connected and not self._writable.is_set():
            await self._writable.wait()

    def publish(self, topic: bytes, payload: bytes, qos: int, *, retain: bool = False) -> int:
        """Queue one PUBLISH (``topic`` from :func:`wire.topic_field`).

        Returns :data:`QUEUED`; :data:`WINDOW_FULL` when a QoS 1 message does not fit in the
        in-flight window now (nothing is queued: ``await wait_window()`` and publish it again);
        or :data:`DISCONNECTED`, and the message is counted as failed.
        """
        if not self.connected:
            self.stats.fail(f"disconnected: {self.lost_reason or 'not connected'}")
            return DISCONNECTED
        if qos:
            if len(self._inflight) >= self.receive_maximum:
                return WINDOW_FULL
            next_id = self._next_id % 65535 + 1
            self._next_id = next_id
            self._inflight.add(next_id)
            self._idle.clear()
            wire.append_publish(self._out, topic, payload, qos, next_id, retain=retain)
        else:
            wire.append_publish(self._out, topic, payload, 0, retain=retain)
            self._unflushed_qos0 += 1
        self.stats.written += 1
        return QUEUED

    def flush(self) -> None:
        """Write what ``publish`` queued, in one transport write."""
        if not self._out:
            return
        if self.connected and self._transport is not None:
            self._transport.write(self._out)
            self._last_write = time.monotonic()
            self._unflushed_qos0 = 0
        self._out = bytearray()

    # -- protocol callbacks --------------------------------------------------------------

    def _received(self, acks: list[int], packets: list[tuple[int, bytes]]) -> None:
        inflight = self._inflight
        if acks:
            before = len(inflight)
            inflight.difference_update(acks)
            self.stats.acked += before - len(inflight)
        for first, body in packets:
            self._packet(first & 0xF0, body)
        if len(inflight) < self.receive_maximum:
            self._room.set()
        if not inflight:
            self._idle.set()

    def _packet(self, kind: int, body: bytes) -> None:
        if kind == wire.PUBACK:
            packet_id, reason = wire.parse_puback(body)
            if packet_id not in self._inflight:
                return
            self._inflight.discard(packet_id)
            if reason >= 0x80:
                self.stats.fail(wire.reason_name(reason))
                logger.debug("%s: PUBACK %d: %s", self.client_id, packet_id, wire.reason_name(reason))
            else:
                self.stats.acked += 1
        elif kind == wire.CONNACK:
            if self._connack is not None and not self._connack.done():
                try:
                    self._connack.set_result(wire.parse_connack(body))
                except ProtocolError as exc:
                    self._connack.set_exception(exc)
        elif kind == wire.DISCONNECT:
            reason = wire.parse_disconnect(body)
            self._lost(f"broker disconnected: {wire.reason_name(reason)}")
        elif kind != wire.PINGRESP:
            logger.debug("%s: ignored packet type 0x%02x", self.client_id, kind)

    def _lost(self, reason: str) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectError(f"{self.client_id}: {reason}"))
        if self.connected:
            logger.warning("%s: connection lost: %s", self.client_id, reason)
        self.lost_reason = reason
        self.connected = False
        self._fail_inflight(f"connection lost: {reason}")
        if self._transport is not None:
            self._transport.abort()
        self._transport = None
        self._writable.set()

    def _fail_inflight(self, reason: str) -> None:
        if self._inflight:
            self.stats.fail(reason, len(self._inflight))
            self._inflight.clear()
        if self._unflushed_qos0:
            self.stats.written -= self._unflushed_qos0
            self.stats.fail(reason, self._unflushed_qos0)
            self._unflushed_qos0 = 0
        self._out = bytearray()
        self._room.set()
        self._idle.set()

    async def _keepalive(self) -> None:
        """PINGREQ when nothing was written for half the keep-alive interval."""
        period = max(1.0, self.keepalive_s / 2)
        while self.connected:
            await asyncio.sleep(period)
            if self.connected and time.monotonic() - self._last_write >= period and self._transport:
                self._transport.write(wire.PINGREQ_PACKET)
                self._last_write = time.monotonic()
