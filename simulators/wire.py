"""MQTT 5 packets a publishing device needs: CONNECT, PUBLISH, PINGREQ, DISCONNECT out; CONNACK,
PUBACK, PINGRESP, DISCONNECT in (OASIS MQTT 5.0, sections 2 and 3).

Pure byte encoding and decoding, no I/O. The simulator writes pre-encoded PUBLISH packets in
batches straight to the socket: per message that is a few bytes of header around the payload,
which is what lets one process sustain tens of thousands of messages per second.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from simulators.errors import ProtocolError

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
"""Normal disconnection: reason code 0 and no properties may be left out (3.14.2.1)."""

# Property identifiers (2.2.2.2) used here.
SESSION_EXPIRY = 0x11
RECEIVE_MAXIMUM = 0x21
MAXIMUM_QOS = 0x24
MAXIMUM_PACKET_SIZE = 0x27
REASON_STRING = 0x1F

# Property value types by identifier, to skip or read any property a server sends.
_BYTE = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_TWO = frozenset({0x13, 0x21, 0x22, 0x23})
_FOUR = frozenset({0x02, 0x11, 0x18, 0x27})
_VARINT = frozenset({0x0B})
_STRING = frozenset({0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F})
_BINARY = frozenset({0x09, 0x16})
_PAIR = frozenset({0x26})

REASONS: dict[int, str] = {
    0x00: "success",
    0x04: "disconnect with will message",
    0x10: "no matching subscribers",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x90: "topic name invalid",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "qos not supported",
    0x9F: "connection rate exceeded",
}


def reason_name(code: int) -> str:
    return REASONS.get(code, f"reason 0x{code:02x}")


def varint(value: int) -> bytes:
    """Variable byte integer (1.5.5)."""
    if not 0 <= value <= 268_435_455:
        raise ProtocolError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """``(value, next position)``, or ``None`` when ``data`` ends inside the integer."""
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= len(data):
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ProtocolError("variable byte integer longer than 4 bytes")


def utf8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ProtocolError("string longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ProtocolError("binary data longer than 65535 bytes")
    return struct.pack("!H", len(data)) + data


class Will(NamedTuple):
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_packet(
    client_id: str,
    *,
    username: str | None,
    password: str | None,
    keepalive_s: int,
    will: Will | None = None,
    session_expiry_s: int = 0,
) -> bytes:
    """CONNECT with clean start (3.1)."""
    flags = 0x02  # clean start
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    props = b""
    if session_expiry_s:
        props = bytes([SESSION_EXPIRY]) + struct.pack("!I", session_expiry_s)
    variable = utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive_s) + varint(len(props)) + props
    payload = utf8(client_id)
    if will is not None:
        payload += b"\x00" + utf8(will.topic) + binary(will.payload)
    if username is not None:
        payload += utf8(username)
    if password is not None:
        payload += binary(password.encode())
    body = variable + payload
    return bytes([CONNECT]) + varint(len(body)) + body


def topic_field(topic: str) -> bytes:
    """A topic name as it appears in PUBLISH (length-prefixed); encode it once per device."""
    return utf8(topic)


def publish_packet(
    topic: bytes, payload: bytes, qos: int, packet_id: int = 0, *, retain: bool = False
) -> bytes:
    """PUBLISH (3.3); ``topic`` comes from :func:`topic_field`, no properties."""
    out = bytearray()
    append_publish(out, topic, payload, qos, packet_id, retain=retain)
    return bytes(out)


def append_publish(
    out: bytearray, topic: bytes, payload: bytes, qos: int, packet_id: int = 0, *, retain: bool = False
) -> None:
    """Append a PUBLISH to ``out``, the same bytes as :func:`publish_packet` without the copies."""
    remaining = len(topic) + len(payload) + (3 if qos else 1)
    out.append(PUBLISH | (qos << 1) | retain)
    if remaining < 0x80:
        out.append(remaining)
    elif remaining < 0x4000:
        out.append((remaining & 0x7F) | 0x80)
        out.append(remaining >> 7)
    else:
        out += varint(remaining)
    out += topic
    if qos:
        out.append(packet_id >> 8)
        out.append(packet_id & 0xFF)
    out.append(0)  # no properties
    out += payload


class ConnAck(NamedTuple):
    session_present: bool
    reason: int
    receive_maximum: int
    maximum_qos: int
    maximum_packet_size: int | None
    reason_string: str | None


def parse_properties(data: bytes | bytearray | memoryview) -> dict[int, object]:
    """Every property of a property block (the last value wins for repeated ones)."""
    out: dict[int, object] = {}
    pos = 0
    while pos < len(data):
        ident = data[pos]
        pos += 1
        if ident in _BYTE:
            out[ident], pos = data[pos], pos + 1
        elif ident in _TWO:
            out[ident], pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif ident in _FOUR:
            out[ident], pos = int.from_bytes(data[pos : pos + 4], "big"), pos + 4
        elif ident in _VARINT:
            parsed = read_varint(data, pos)
            if parsed is None:
                raise ProtocolError("truncated property")
            out[ident], pos = parsed
        elif ident in _STRING or ident in _BINARY:
            size = int.from_bytes(data[pos : pos + 2], "big")
            raw = bytes(data[pos + 2 : pos + 2 + size])
            out[ident] = raw.decode(errors="replace") if ident in _STRING else raw
            pos += 2 + size
        elif ident in _PAIR:
            for _ in range(2):
                size = int.from_bytes(data[pos : pos + 2], "big")
                pos += 2 + size
        else:
            raise ProtocolError(f"unknown property 0x{ident:02x}")
        if pos > len(data):
            raise ProtocolError("truncated property")
    return out


def parse_connack(body: bytes | bytearray | memoryview) -> ConnAck:
    """The variable header of a CONNACK (3.2.2)."""
    if len(body) < 2:
        raise ProtocolError("CONNACK too short")
    props: dict[int, object] = {}
    if len(body) > 2:
        parsed = read_varint(body, 2)
        if parsed is None:
            raise ProtocolError("CONNACK properties truncated")
        size, pos = parsed
        props = parse_properties(body[pos : pos + size])
    receive_maximum = props.get(RECEIVE_MAXIMUM, 65535)
    maximum_qos = props.get(MAXIMUM_QOS, 2)
    packet_size = props.get(MAXIMUM_PACKET_SIZE)
    reason_string = props.get(REASON_STRING)
    return ConnAck(
        session_present=bool(body[0] & 1),
        reason=body[1],
        receive_maximum=receive_maximum if isinstance(receive_maximum, int) else 65535,
        maximum_qos=maximum_qos if isinstance(maximum_qos, int) else 2,
        maximum_packet_size=packet_size if isinstance(packet_size, int) else None,
        reason_string=reason_string if isinstance(reason_string, str) else None,
    )


def parse_puback(body: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(packet id, reason code)`` of a PUBACK (3.4.2); a missing reason code means success."""
    if len(body) < 2:
        raise ProtocolError("PUBACK too short")
    packet_id = (body[0] << 8) | body[1]
    return packet_id, body[2] if len(body) > 2 else 0


def parse_disconnect(body: bytes | bytearray | memoryview) -> int:
    """The reason code of a server DISCONNECT (3.14.2.1)."""
    return body[0] if body else 0


class PacketReader:
    """Splits a byte stream into packets; keeps a partial tail.

    :meth:`feed` returns the packet ids of plain PUBACKs (success, no properties: the 4 bytes
    ``40 02 id id``, by far the most common packet a publisher receives) separately from the
    other packets, as ``(first byte, body)``.
    """

    def __init__(self, max_packet: int = 1 << 20) -> None:
        self._buf = bytearray()
        self.max_packet = max_packet

    def feed(self, data: bytes) -> tuple[list[int], list[tuple[int, bytes]]]:
        buf = self._buf
        buf += data
        acks: list[int] = []
        packets: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first = buf[pos]
            if first == PUBACK and buf[pos + 1] == 2:
                if end - pos < 4:
                    break
                acks.append((buf[pos + 2] << 8) | buf[pos + 3])
                pos += 4
                continue
            parsed = read_varint(buf, pos + 1)
            if parsed is None:
                break
            size, start = parsed
            if size > self.max_packet:
                raise ProtocolError(f"packet of {size} bytes exceeds {self.max_packet}")
            if end - start < size:
                break
            packets.append((first, bytes(buf[start : start + size])))
            pos = start + size
        del buf[:pos]
        return acks, packets
