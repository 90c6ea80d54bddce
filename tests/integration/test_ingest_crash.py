"""At-least-once across a bridge crash: kill -9 in the middle of a stream, start again, lose nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from citystream.settings import Settings
from citystream.topics import TELEMETRY_RAW
from tests.helpers import wait_for
from tests.integration.ingest_support import (
    PRODUCED,
    REDELIVERED,
    BridgeProcess,
    Fleet,
    Publisher,
    payload,
    read_records,
    readings,
    register_fleet,
    remove_fleet,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def fleet(settings: Settings, uid: str) -> AsyncIterator[Fleet]:
    fleet = await register_fleet(settings, uid, 5)
    yield fleet
    await remove_fleet(settings, fleet)


def stream(publishers: list[Publisher], settings: Settings, per_device: int, pause_every: int = 100) -> None:
    """Publish ``per_device`` readings per device, spread over a few seconds."""
    for seq in range(per_device):
        for p in publishers:
            p.publish(p.device.topic(settings), payload(seq))
        if seq % pause_every == 0:
            time.sleep(0.05)
    for p in publishers:
        p.wait_published(60)


async def run_stream_with(
    bridge: BridgeProcess, fleet: Fleet, per_device: int, interrupt: Callable[[BridgeProcess], None]
) -> tuple[list[tuple[str, int]], float]:
    settings = bridge.settings
    publishers = [Publisher(settings, d) for d in fleet.devices]
    for p in publishers:
        assert not p.connect().is_failure
    try:
        await asyncio.to_thread(bridge.start)
        sender = threading.Thread(target=stream, args=(publishers, settings, per_device), daemon=True)
        sender.start()

        async def some_produced() -> bool:
            return await asyncio.to_thread(bridge.metric, PRODUCED) >= len(publishers) * per_device / 4

        await wait_for(some_produced, 60, "a quarter of the stream in Kafka")
        await asyncio.to_thread(interrupt, bridge)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(bridge.start)
        await asyncio.to_thread(sender.join, 120)
        assert not sender.is_alive()
        expected = len(publishers) * per_device
        records = await read_records(settings, TELEMETRY_RAW, expect=expected, timeout_s=90)
        # Anything still arriving (redeliveries) is counted too.
        records = await read_records(settings, TELEMETRY_RAW, expect=len(records) + 1, timeout_s=2)
        redelivered = await asyncio.to_thread(bridge.metric, REDELIVERED)
        assert bridge.terminate() == 0
    finally:
        for p in publishers:
            p.close()
        bridge.close()
    return [(r.device_id, r.seq) for r in readings(records)], redelivered


async def test_kill_9_in_the_middle_of_a_stream_loses_nothing(
    settings: Settings, fleet: Fleet, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    per_device = 2000
    bridge = BridgeProcess(settings, tmp_path)
    keys, redelivered = await run_stream_with(bridge, fleet, per_device, BridgeProcess.kill)
    expected = {(d.device_id, s) for d in fleet.devices for s in range(per_device)}
    missing = expected - set(keys)
    duplicates = len(keys) - len(set(keys))
    record_property("duplicates", duplicates)
    record_property("redelivered_by_broker", redelivered)
    print(f"kill -9: {len(expected)} sent, {len(keys)} in Kafka, {duplicates} duplicates, ", end="")
    print(f"{redelivered:.0f} redelivered by the broker")
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:5]}"
    assert set(keys) == expected
