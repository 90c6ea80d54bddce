"""FastClient's buffered reads and PUBLISH fast path agree with paho's own decoding (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

from ingest.mqtt import FastClient

Received = tuple[int, int, bytes, bytes, bool]


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def publish_packet(
    topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 1, dup: bool = False, props: bytes = b""
) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    body += varint(len(props)) + props + payload
    header = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return bytes([header]) + varint(len(body)) + body


class FakeSocket:
    """Hands out the given chunks, then would block; records what is sent."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent = bytearray()

    def recv(self, bufsize: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        if len(chunk) > bufsize:
            self.chunks.insert(0, chunk[bufsize:])
            chunk = chunk[:bufsize]
        return chunk

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def feed(chunks: list[bytes]) -> tuple[FastClient, list[Received], FakeSocket]:
    received: list[Received] = []

    def handler(mid: int, qos: int, topic: bytes, payload: bytes, dup: bool) -> None:
        received.append((mid, qos, bytes(topic), bytes(payload), dup))

    client = FastClient("unit", handler)
    sock = FakeSocket(chunks)
    client._sock = sock  # type: ignore[assignment]  # the fake stands in for the socket
    for _ in range(10_000):
        rc = client.loop_read()
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        if not sock.chunks and not client.buffered():
            break
    return client, received, sock


def paho_decode(packet: bytes) -> Received:
    """What paho's own decoder makes of one packet."""
    length_end = 1
    while packet[length_end] & 0x80:
        length_end += 1
    result = _packet.decode_publish(packet[0], packet[length_end + 1 :], MQTTProtocolVersion.MQTTv5)
    return (result.mid, result.qos, result.topic, bytes(result.payload), result.dup)


MESSAGES = [
    (b"city/gangnam/air_quality/aq-1/telemetry", b'{"ts":1,"seq":1,"values":{"pm25":1}}', 1, 1, False),
    (b"city/mapo/noise/n-2/status", b"online", 0, 0, False),
    (b"city/jung/weather/w-3/telemetry", b"x" * 300, 1, 65535, True),
    (b"city/jung/weather/w-3/telemetry", b"y" * 20_000, 1, 2, False),
    (b"c/a/b/d/telemetry", b"", 1, 3, False),
]


def test_fast_path_matches_paho() -> None:
    packets = [publish_packet(t, p, qos=q, mid=m, dup=d) for t, p, q, m, d in MESSAGES]
    _, received, _ = feed([b"".join(packets)])
    assert received == [paho_decode(p) for p in packets]
    assert received == [(m if q else 0, q, t, p, d) for t, p, q, m, d in MESSAGES]


def test_packets_with_properties_take_paho_path() -> None:
    # Payload Format Indicator = 1 (UTF-8) and a user property: paho's MQTTMessage path.
    props = b"\x01\x01" + b"\x26" + b"\x00\x01k" + b"\x00\x01v"
    packets = [
        publish_packet(b"a/b/c/d/telemetry", b"one", mid=10),
        publish_packet(b"a/b/c/d/telemetry", b"two", mid=11, props=props),
        publish_packet(b"a/b/c/d/telemetry", b"three", mid=12),
    ]
    _, received, _ = feed([b"".join(packets)])
    assert [(r[0], r[3]) for r in received] == [(10, b"one"), (11, b"two"), (12, b"three")]


def test_other_packets_between_publishes() -> None:
    pingresp = b"\xd0\x00"
    packets = [
        publish_packet(b"a/b/c/d/telemetry", b"1", mid=1),
        pingresp,
        publish_packet(b"a/b/c/d/telemetry", b"2", mid=2),
    ]
    client, received, _ = feed([b"".join(packets)])
    assert [r[3] for r in received] == [b"1", b"2"]
    assert client._ping_t == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=30))
def test_any_split_of_the_stream(cuts: list[int]) -> None:
    stream = b"".join(publish_packet(t, p, qos=q, mid=m, dup=d) for t, p, q, m, d in MESSAGES)
    chunks: list[bytes] = []
    pos = 0
    for cut in cuts:
        if pos >= len(stream):
            break
        chunks.append(stream[pos : pos + cut])
        pos += cut
    chunks.append(stream[pos:])
    _, received, _ = feed([c for c in chunks if c])
    assert received == [(m if q else 0, q, t, p, d) for t, p, q, m, d in MESSAGES]


@pytest.mark.parametrize("mids", [[1], [1, 2, 300, 65535]])
def test_ack_many_writes_pubacks_back_to_back(mids: list[int]) -> None:
    client, _, sock = feed([])
    client.ack_many(mids)
    client.loop_write()
    expected = b"".join(b"\x40\x02" + m.to_bytes(2, "big") for m in mids)
    assert bytes(sock.sent) == expected
    assert [
        _packet.decode_puback(0x40, expected[i + 2 : i + 4], MQTTProtocolVersion.MQTTv5).mid
        for i in range(0, len(expected), 4)
    ] == mids


def test_no_ack_for_nothing() -> None:
    client, _, sock = feed([])
    client.ack_many([])
    client.loop_write()
    assert sock.sent == b""


def test_plain_publishes_take_the_fast_path() -> None:
    received: list[Received] = []
    client = FastClient("unit", lambda *args: received.append(args))
    stream = b"".join(publish_packet(t, p, qos=q, mid=m, dup=d) for t, p, q, m, d in MESSAGES)
    client._rbuf, client._rpos, client._rsock = stream, 0, client._sock
    assert client._read_publishes() == len(MESSAGES)
    assert client._rpos == len(stream)
    with_props = publish_packet(b"a/b/c/d/telemetry", b"x", props=b"\x01\x01")
    client._rbuf, client._rpos = with_props + stream, 0
    assert client._read_publishes() == 0  # left to paho


def test_nothing_is_handed_over_while_discarding() -> None:
    received: list[Received] = []
    client = FastClient("unit", lambda *args: received.append(args))
    client.discard = True
    packet = publish_packet(b"a/b/c/d/telemetry", b"x" * 50, mid=3)
    props = publish_packet(b"a/b/c/d/telemetry", b"y", mid=4, props=b"\x01\x01")
    sock = FakeSocket([packet[:7], packet[7:] + props, packet])  # partial, slow path, fast path
    client._sock = sock  # type: ignore[assignment]  # the fake stands in for the socket
    while sock.chunks or client.buffered():
        client.loop_read()
    assert received == []
