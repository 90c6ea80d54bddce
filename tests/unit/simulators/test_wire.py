"""MQTT 5 packets byte by byte (OASIS MQTT 5.0, sections 1.5 and 3)."""

from __future__ import annotations

import pytest

from simulators import wire
from simulators.errors import ProtocolError


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"),
     (2_097_151, b"\xff\xff\x7f"), (268_435_455, b"\xff\xff\xff\x7f")],
)  # fmt: skip
def test_variable_byte_integers(value: int, encoded: bytes) -> None:
    assert wire.varint(value) == encoded
    assert wire.read_varint(encoded, 0) == (value, len(encoded))
    assert wire.read_varint(encoded[:-1], 0) is None


def test_varint_limits() -> None:
    with pytest.raises(ProtocolError):
        wire.varint(268_435_456)
    with pytest.raises(ProtocolError):
        wire.read_varint(b"\xff\xff\xff\xff\x01", 0)


def test_connect_with_credentials_and_a_retained_will() -> None:
    packet = wire.connect_packet(
        "dev-1",
        username="dev-1",
        password="pw",
        keepalive_s=30,
        will=wire.Will("city/jung/noise/dev-1/status", b"offline", qos=1, retain=True),
    )
    body = (
        b"\x00\x04MQTT\x05"
        + bytes([0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02])  # user, password, will retain, QoS 1, will, clean
        + b"\x00\x1e"  # keep-alive 30 s
        + b"\x00"  # no properties
        + b"\x00\x05dev-1"
        + b"\x00"  # no will properties
        + b"\x00\x1ccity/jung/noise/dev-1/status"
        + b"\x00\x07offline"
        + b"\x00\x05dev-1"
        + b"\x00\x02pw"
    )
    assert packet == b"\x10" + wire.varint(len(body)) + body


def test_connect_without_anything_optional() -> None:
    packet = wire.connect_packet("c", username=None, password=None, keepalive_s=60, session_expiry_s=10)
    assert packet == b"\x10\x13\x00\x04MQTT\x05\x02\x00\x3c\x05\x11\x00\x00\x00\x0a\x00\x01c"


def test_publish_at_qos_0_and_1() -> None:
    topic = wire.topic_field("a/b")
    assert wire.publish_packet(topic, b"xy", 0) == b"\x30\x08\x00\x03a/b\x00xy"
    assert wire.publish_packet(topic, b"xy", 1, 0x0102) == b"\x32\x0a\x00\x03a/b\x01\x02\x00xy"
    assert wire.publish_packet(topic, b"", 1, 7, retain=True) == b"\x33\x08\x00\x03a/b\x00\x07\x00"
    big = wire.publish_packet(topic, b"p" * 20_000, 0)
    assert big[:4] == b"\x30" + wire.varint(20_006)


def test_append_publish_writes_the_same_bytes_in_place() -> None:
    out = bytearray(b"head")
    wire.append_publish(out, wire.topic_field("t/x"), b"{}", 1, 513)
    wire.append_publish(out, wire.topic_field("t/x"), b"z" * 200, 0)
    assert bytes(out) == (
        b"head"
        + wire.publish_packet(wire.topic_field("t/x"), b"{}", 1, 513)
        + wire.publish_packet(wire.topic_field("t/x"), b"z" * 200, 0)
    )


def test_connack_with_properties() -> None:
    props = bytes([wire.RECEIVE_MAXIMUM]) + b"\x03\xe8" + bytes([wire.MAXIMUM_QOS, 1])
    props += bytes([wire.REASON_STRING]) + b"\x00\x02ok" + b"\x26\x00\x01k\x00\x01v"
    ack = wire.parse_connack(b"\x00\x00" + wire.varint(len(props)) + props)
    assert (ack.reason, ack.receive_maximum, ack.maximum_qos, ack.reason_string) == (0, 1000, 1, "ok")
    refused = wire.parse_connack(b"\x00\x86\x00")
    assert refused.reason == 0x86
    assert refused.receive_maximum == 65535
    assert wire.reason_name(0x86) == "bad user name or password"
    assert wire.reason_name(0xFE) == "reason 0xfe"


def test_reader_splits_a_stream_cut_anywhere() -> None:
    stream = (
        b"\x40\x02\x00\x01"  # PUBACK 1
        + b"\x40\x03\x00\x02\x87"  # PUBACK 2, not authorized
        + b"\x40\x02\x00\x03"
        + b"\xd0\x00"  # PINGRESP
        + b"\xe0\x01\x8e"  # DISCONNECT, session taken over
    )
    for cut in range(len(stream) + 1):
        reader = wire.PacketReader()
        acks1, packets1 = reader.feed(stream[:cut])
        acks2, packets2 = reader.feed(stream[cut:])
        assert acks1 + acks2 == [1, 3]
        assert packets1 + packets2 == [(0x40, b"\x00\x02\x87"), (0xD0, b""), (0xE0, b"\x8e")]
    assert wire.parse_puback(b"\x00\x02\x87") == (2, 0x87)
    assert wire.parse_puback(b"\x00\x05") == (5, 0)
    assert wire.parse_disconnect(b"\x8e") == 0x8E


def test_reader_refuses_oversized_packets() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        wire.PacketReader(max_packet=10).feed(b"\x30\x7f")
