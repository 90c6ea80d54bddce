"""At-least-once across a Kafka outage: stop Kafka for 30 s in the middle of a stream, lose nothing.

Disruptive: it stops the shared Kafka broker (``stack.kafka.KafkaService``) and starts it again,
so it runs in the serial phase, after every other test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from citystream.settings import Settings
from citystream.topics import TELEMETRY_RAW
from stack.kafka import KafkaService
from tests.helpers import wait_for
from tests.integration.ingest_support import (
    PRODUCED,
    BridgeProcess,
    Fleet,
    Publisher,
    payload,
    read_records,
    readings,
    register_fleet,
    remove_fleet,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.disruptive,
    # stack.process.Daemon.start lets go of the Popen of the Kafka it starts (Kafka outlives it).
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]

OUTAGE_S = 30.0


@pytest.fixture
async def fleet(settings: Settings, uid: str) -> AsyncIterator[Fleet]:
    fleet = await register_fleet(settings, uid, 5)
    yield fleet
    await remove_fleet(settings, fleet)


class Stream(threading.Thread):
    """Publishes one reading per device every ``interval_s`` until stopped; counts what it sent."""

    def __init__(self, publishers: list[Publisher], settings: Settings, interval_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.publishers = publishers
        self.settings = settings
        self.interval_s = interval_s
        self.sent = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for p in self.publishers:
                p.publish(p.device.topic(self.settings), payload(self.sent))
            self.sent += 1
            time.sleep(self.interval_s)
        for p in self.publishers:
            p.wait_published(60)


async def test_kafka_down_for_30_s_in_the_middle_of_a_stream_loses_nothing(
    settings: Settings, fleet: Fleet, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    kafka = KafkaService(settings)
    bridge = BridgeProcess(settings, tmp_path)
    publishers = [Publisher(settings, d) for d in fleet.devices]
    for p in publishers:
        assert not p.connect().is_failure
    stream = Stream(publishers, settings)
    not_ready_seen = False
    try:
        await asyncio.to_thread(bridge.start)
        stream.start()

        async def flowing() -> bool:
            return await asyncio.to_thread(bridge.metric, PRODUCED) >= 1000

        await wait_for(flowing, 60, "the stream in Kafka")
        await asyncio.to_thread(kafka.daemon.stop)
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_S:
            if (await asyncio.to_thread(bridge.get, "/readyz"))[0] == 503:
                not_ready_seen = True
            await asyncio.sleep(1.0)
        await asyncio.to_thread(kafka.start)
        await asyncio.sleep(3.0)
        stream.stopped.set()
        await asyncio.to_thread(stream.join, 120)
        sent = stream.sent
        records = await read_records(settings, TELEMETRY_RAW, expect=sent * len(publishers), timeout_s=180)
        ready_again = await asyncio.to_thread(bridge.ready)
        metrics = (await asyncio.to_thread(bridge.get, "/metrics"))[1].decode()
        assert bridge.terminate() == 0
    finally:
        stream.stopped.set()
        if not await asyncio.to_thread(kafka.healthy):
            await asyncio.to_thread(kafka.start)
        for p in publishers:
            p.close()
        bridge.close()
    keys = [(r.device_id, r.seq) for r in readings(records)]
    expected = {(d.device_id, s) for d in fleet.devices for s in range(sent)}
    missing = expected - set(keys)
    duplicates = len(keys) - len(set(keys))
    record_property("sent", len(expected))
    record_property("duplicates", duplicates)
    print(f"Kafka outage: {len(expected)} sent, {len(keys)} in Kafka, {duplicates} duplicates")
    print("\n".join(line for line in metrics.splitlines() if "kafka_" in line or "redelivered" in line))
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:5]}"
    assert not_ready_seen, "/readyz must say 503 while Kafka is away"
    assert ready_again
