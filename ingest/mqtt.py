"""The bridge's MQTT side: paho-mqtt 2.x driven by the asyncio loop, with manual acknowledgement.

The client runs on the bridge's event loop (paho's external-loop API: the socket is registered
with the loop, paho reads and writes when it is ready), so the Kafka delivery callbacks can
acknowledge a message directly, without a thread hand-off.

Session: MQTT 5, clean start off and a session expiry, so the broker keeps queueing QoS 1
messages for the bridge while it is away; a shared subscription ``$share/{group}/{root}/#`` so
several bridges split the load, or, with an empty share group, the plain ``{root}/#`` for a
single bridge (Mosquitto 2.0 does not persist shared subscriptions: after a broker crash and
restart, what devices publish before the bridge has subscribed again matches no subscriber and
is dropped, while a plain subscription of the persistent session is restored from the broker's
database and queues it); Receive Maximum set to the in-flight window, so the broker never
has more than that many unacknowledged messages out to this bridge (the backpressure).

Speed: :class:`FastClient` overrides two internals of paho's ``Client`` (checked against
paho's own decoder by the unit tests): socket reads are buffered (paho reads each packet with
three ``recv`` calls), and a PUBLISH without properties, the usual case, is handed over as
plain bytes without building paho's ``Properties`` and ``MQTTMessage`` objects. Anything
else takes paho's normal path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from citystream.errors import ConfigError, ServiceUnavailableError
from citystream.settings import Settings

logger = logging.getLogger(__name__)

Handler = Callable[[int, int, bytes, bytes, bool], None]
"""``handler(mid, qos, topic, payload, dup)``, called on the loop for every PUBLISH."""

PUBLISH = 0x30
PUBACK = 0x40
PUBACK_PREFIX = bytes([PUBACK, 2])
"""PUBACK with remaining length 2: packet id only, which means success (MQTT 5, 3.4.2.1)."""
RECV_BYTES = 256 * 1024
MAX_PACKETS_PER_READ = 2000
"""Packets handled per readiness callback before yielding to the loop."""
RECEIVE_MAXIMUM_LIMIT = 65_535
_FATAL_CONNACK = {"Bad user name or password", "Not authorized", "Client identifier not valid", "Banned"}


class FastClient(mqtt.Client):
    """paho's client with buffered reads and a fast path for PUBLISH packets."""

    def __init__(self, client_id: str, handler: Handler) -> None:
        super().__init__(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        self._handler = handler
        self._rbuf = b""
        self._rpos = 0
        self._rsock: Any = None
        self.discard = False
        """Drop incoming PUBLISH packets unhandled (while closing; the broker sends them again)."""
        self.on_message = self._on_slow_message

    def _sock_recv(self, bufsize: int) -> bytes:
        pos = self._rpos
        buf = self._rbuf
        if pos >= len(buf) or self._rsock is not self._sock:
            buf = super()._sock_recv(RECV_BYTES)  # raises BlockingIOError when there is nothing
            self._rsock = self._sock
            self._rbuf = buf
            self._rpos = pos = 0
            if not buf:
                return buf
            self._last_bytes_received = time.monotonic()
        chunk = buf[pos : pos + bufsize]
        self._rpos = pos + len(chunk)
        return chunk

    def _packet_read(self) -> MQTTErrorCode:
        if self._in_packet["command"] == 0 and self._rsock is self._sock and self._read_publishes():
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _read_publishes(self) -> int:
        """Hand over the complete QoS 0/1 PUBLISH packets without properties at the head of the
        buffer; stop at anything else (paho's own path handles it)."""
        buf = self._rbuf
        pos = self._rpos
        end = len(buf)
        handler = self._handler
        count = 0
        while pos < end:
            header = buf[pos]
            if (header & 0xF0) != PUBLISH or (header & 0x06) == 0x04:
                break
            length = 0
            shift = 0
            i = pos + 1
            while i < end and shift <= 21:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break  # incomplete or malformed length
            stop = i + length
            if stop > end or length < 3:
                break
            topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
            p = topic_end
            mid = 0
            if header & 0x06:
                if p + 2 > stop:
                    break
                mid = (buf[p] << 8) | buf[p + 1]
                p += 2
            if p >= stop or buf[p] != 0 or topic_end == i + 2:
                break  # properties, an empty topic or a malformed packet
            self._rpos = pos = stop
            count += 1
            if self.discard:
                continue
            handler(mid, (header & 0x06) >> 1, buf[i + 2 : topic_end], buf[p + 1 : stop], bool(header & 0x08))
        return count

    def ack_many(self, mids: list[int]) -> None:
        """Acknowledge QoS 1 messages with one write (the PUBACKs back to back)."""
        if mids:
            packet = b"".join([PUBACK_PREFIX + mid.to_bytes(2, "big") for mid in mids])
            self._packet_queue(PUBACK, packet, 0, 0)

    def buffered(self) -> bool:
        """Whether bytes are waiting that the socket's readiness would not announce."""
        if self._rpos < len(self._rbuf) and self._rsock is self._sock:
            return True
        sock = self._sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def _handle_publish(self) -> MQTTErrorCode:
        header: int = self._in_packet["command"]
        packet: bytearray = self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        try:
            topic_end = 2 + ((packet[0] << 8) | packet[1])
            pos = topic_end
            mid = 0
            if qos:
                mid = (packet[pos] << 8) | packet[pos + 1]
                pos += 2
            fast = qos < 2 and topic_end > 2 and packet[pos] == 0 and len(packet) > pos
        except IndexError:
            fast = False
        if not fast:
            return super()._handle_publish()
        if not self.discard:
            self._handler(mid, qos, bytes(packet[2:topic_end]), bytes(packet[pos + 1 :]), bool(header & 0x08))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _on_slow_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.discard:
            return
        self._handler(message.mid, message.qos, message._topic, bytes(message.payload), message.dup)


class MqttSource:
    """One persistent MQTT 5 session on a shared subscription, reconnecting with backoff."""

    def __init__(self, settings: Settings, handler: Handler, *, client_id: str | None = None) -> None:
        m = settings.mqtt
        self.settings = settings
        self.client_id = client_id or f"citystream-{m.share_group}-{settings.ingest.instance}"
        root = f"{m.topic_root}/#"
        self.subscription = f"$share/{m.share_group}/{root}" if m.share_group else root
        self.client = FastClient(self.client_id, handler)
        self.client.username_pw_set(m.ingest_username, m.ingest_password.get_secret_value())
        self.client.connect_timeout = 5.0
        if m.plain_enabled:
            self.port = m.port
        else:
            self.port = m.tls_port
            self.client.tls_set(ca_certs=str(settings.stack.state_dir / "tls" / "ca.crt"))
        self.generation = 0
        """Bumped at every disconnect: acknowledgements of an older connection are not sent."""
        self.connects = 0
        self.acked = 0
        self.not_acked = 0
        """Deliveries whose connection had closed: the broker sends those messages again."""
        self.connected = False
        self.subscribed = False
        self.last_error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[None] | None = None
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._paused = False
        self._misc: asyncio.Task[None] | None = None
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write

    # -- the connection ------------------------------------------------------------------

    def _properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
        props.SessionExpiryInterval = self.settings.mqtt.session_expiry_s
        props.ReceiveMaximum = max(1, min(self.settings.ingest.max_in_flight, RECEIVE_MAXIMUM_LIMIT))
        return props

    async def connect(self) -> None:
        """Connect once and wait for the CONNACK and the SUBACK; raises on failure."""
        loop = self._loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self._lost.clear()
        m = self.settings.mqtt
        try:
            await asyncio.to_thread(
                self.client.connect,
                m.host,
                self.port,
                m.keepalive_s,
                clean_start=False,
                properties=self._properties(),
            )
        except (OSError, ssl.SSLError) as exc:
            self.last_error = f"cannot reach {m.host}:{self.port}: {exc}"
            raise ServiceUnavailableError(self.last_error) from exc
        try:
            async with asyncio.timeout(m.keepalive_s):
                await self._connack
        except TimeoutError:
            self.client._sock_close()  # give up on a half-open connection
            raise ServiceUnavailableError(f"no CONNACK/SUBACK from {m.host}:{self.port}") from None
        if self._misc is None or self._misc.done():
            self._misc = loop.create_task(self._misc_loop(), name="mqtt-misc")

    async def run(self, first_connected: asyncio.Future[None] | None = None) -> None:
        """Keep the session connected until :meth:`close`; reconnect with exponential backoff.

        ``first_connected`` gets the outcome of the first attempt: credentials the broker
        refuses are a configuration error and end the run.
        """
        backoff = 0.25
        max_backoff = self.settings.ingest.reconnect_max_s
        while not self._stopping.is_set():
            try:
                await self.connect()
            except ConfigError as exc:
                if first_connected is not None and not first_connected.done():
                    first_connected.set_exception(exc)
                    return
                logger.error("MQTT connect refused: %s; retrying in %.1f s", exc, backoff)  # noqa: TRY400
            except ServiceUnavailableError as exc:
                logger.warning("MQTT connect failed: %s; retrying in %.1f s", exc, backoff)
            else:
                backoff = 0.25
                if first_connected is not None and not first_connected.done():
                    first_connected.set_result(None)
                await self._lost.wait()
                if self._stopping.is_set():
                    return
                logger.warning("MQTT connection lost (%s); reconnecting", self.last_error or "no reason")
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any = None
    ) -> None:
        if rc.is_failure:
            self.last_error = f"CONNACK: {rc.getName()}"
            error: Exception = (
                ConfigError(f"the broker refused the ingest user: {rc.getName()}")
                if rc.getName() in _FATAL_CONNACK
                else ServiceUnavailableError(self.last_error)
            )
            self._fail_connack(error, disconnect=False)  # paho closes the socket itself
            return
        self.connected = True
        self.connects += 1
        logger.info(
            "MQTT connected as %s (session present: %s), subscribing to %s",
            self.client_id,
            flags.session_present,
            self.subscription,
        )
        client.subscribe(self.subscription, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        failed = [c for c in codes if c.is_failure]
        if failed:
            self.last_error = f"SUBACK: {failed[0].getName()}"
            error = ConfigError(f"cannot subscribe to {self.subscription}: {failed[0].getName()}")
            self._fail_connack(error, disconnect=True)
            return
        self.subscribed = True
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(None)

    def _fail_connack(self, error: Exception, *, disconnect: bool) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()  # retrieved here; the awaiting side re-raises it
        if disconnect:
            self.client.disconnect()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any = None
    ) -> None:
        self.generation += 1
        was_connected = self.connected
        self.connected = False
        self.subscribed = False
        if rc.is_failure:
            self.last_error = rc.getName()
        if was_connected:
            self._lost.set()
        elif self._connack is not None and not self._connack.done():
            self._connack.set_exception(ServiceUnavailableError(f"disconnected: {rc.getName()}"))
            self._connack.exception()

    async def _misc_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(1.0)
            if self.connected:
                self.client.loop_misc()

    # -- socket callbacks (paho's external-loop API) ---------------------------------------

    def _call(self, func: Callable[[], None]) -> None:
        loop = self._loop_or_fail()
        if _in_loop_thread(loop):
            func()
        else:
            loop.call_soon_threadsafe(func)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd: int = sock.fileno()

        def add() -> None:
            if self.client.socket() is sock and not self._paused:
                self._loop_or_fail().add_reader(fd, self._on_readable)

        self._call(add)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        loop = self._loop_or_fail()
        fd = sock.fileno()
        if fd >= 0:
            self._call(lambda: _remove_fd(loop, fd))

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd: int = sock.fileno()

        def add() -> None:
            if self.client.socket() is sock:
                self._loop_or_fail().add_writer(fd, self._on_writable)

        self._call(add)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        def remove() -> None:
            with contextlib.suppress(ValueError, OSError):
                self._loop_or_fail().remove_writer(sock)

        self._call(remove)

    def _loop_or_fail(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ServiceUnavailableError("the MQTT source is not connected")
        return self._loop

    def _on_readable(self) -> None:
        client = self.client
        for _ in range(MAX_PACKETS_PER_READ):
            if self._paused:
                return
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or not client.buffered():
                return
        self._loop_or_fail().call_soon(self._on_readable)

    def _on_writable(self) -> None:
        self.client.loop_write()

    # -- acknowledgement, pause, close -----------------------------------------------------

    def ack_many(self, generation: int, mids: list[int]) -> None:
        """Acknowledge QoS 1 messages of connection ``generation`` (older ones come again)."""
        if generation == self.generation and self.connected:
            self.client.ack_many(mids)
            self.acked += len(mids)
        else:
            self.not_acked += len(mids)

    async def _barrier(self, timeout_s: float) -> None:
        loop = self._loop_or_fail()
        done: asyncio.Future[None] = loop.create_future()
        client = self.client
        client.discard = True
        result, barrier_mid = client.unsubscribe(f"citystream/barrier/{self.client_id}")

        def on_unsubscribe(c: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
            if mid == barrier_mid and not done.done():
                done.set_result(None)

        client.on_unsubscribe = on_unsubscribe
        sock = client.socket()
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is None:
            return
        self._paused = False
        loop.add_reader(sock.fileno(), self._on_readable)
        try:
            async with asyncio.timeout(timeout_s):
                await done
        except TimeoutError:
            logger.warning("no UNSUBACK from the broker in %.0f s; disconnecting anyway", timeout_s)
        finally:
            self.pause()

    def pause(self) -> None:
        """Stop reading: the broker keeps what is not read for the session."""
        self._paused = True
        sock = self.client.socket()
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Send the pending acknowledgements and disconnect; the session stays on the broker.

        Closing a socket with unread data makes TCP reset the connection, and the broker may
        then lose acknowledgements it has not read yet. So the bridge sends an UNSUBSCRIBE for
        a filter it never subscribed to and reads (discarding PUBLISH packets, which the broker
        sends again next session) until the UNSUBACK: the broker answers in order, so by then
        it has processed every acknowledgement.
        """
        self._stopping.set()
        self.pause()
        if self.connected:
            await self._barrier(timeout_s)
            self.client.disconnect()
            self.client.loop_write()
        self._lost.set()
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
        self.client._sock_close()  # the external loop owns the socket


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _remove_fd(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        loop.remove_reader(fd)
    with contextlib.suppress(ValueError, OSError):
        loop.remove_writer(fd)
