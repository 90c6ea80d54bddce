"""KafkaWriter: partitioning, batching, and resending after a failed batch without losing order.

The producer is a stand-in with the aiokafka calls the writer uses; the real one is exercised by
the integration tests.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from citystream.settings import Settings
from ingest.producer import KafkaWriter, Outgoing, throttle_metadata_updates

PARTITIONS = 6


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes, int]] = []
        self.closed = False

    def append(self, *, timestamp: int, key: bytes, value: bytes) -> object | None:
        if self.closed or len(self.records) >= 50:
            return None
        self.records.append((key, value, timestamp))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Acknowledges batches on the next loop turn; fails the batches it is told to."""

    instances: ClassVar[list[FakeProducer]] = []

    def __init__(self, fail_batches: int = 0) -> None:
        self.fail_batches = fail_batches
        self.written: list[tuple[str, int, bytes]] = []
        self.started = self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fail = self.fail_batches > 0
        self.fail_batches -= int(fail)

        def resolve() -> None:
            if fail:
                future.set_exception(KafkaTimeoutError())
            else:
                self.written += [(topic, partition, value) for _, value, _ in batch.records]
                future.set_result(None)

        asyncio.get_running_loop().call_later(0.001, resolve)
        return future


def record(key: bytes, n: int, output: int = 0) -> Outgoing:
    return Outgoing(key, f"{key.decode()}:{n}".encode(), 1000 + n, n + 1, 0, -1, output)


async def run_writer(fail_batches: int, records: list[Outgoing]) -> tuple[KafkaWriter, list[Outgoing]]:
    FakeProducer.instances.clear()
    delivered: list[Outgoing] = []
    failing = [fail_batches]

    def factory() -> Any:
        producer = FakeProducer(failing[0])
        failing[0] = 0
        return producer

    writer = KafkaWriter(Settings(), ["raw", "dlq"], delivered.extend, producer_factory=factory)
    await writer.start()
    for r in records:
        writer.put(r)
    assert await writer.flush(10)
    await writer.close()
    return writer, delivered


async def test_records_are_partitioned_like_kafkas_default_partitioner() -> None:
    keys = [f"dev-{i}".encode() for i in range(40)]
    writer, delivered = await run_writer(0, [record(k, 0) for k in keys])
    written = {value.split(b":")[0]: partition for _, partition, value in FakeProducer.instances[0].written}
    expected = DefaultPartitioner()
    for key in keys:
        assert written[key] == expected(key, list(range(PARTITIONS)), None)
    assert len(delivered) == len(keys)
    assert writer.in_flight == 0


async def test_a_failed_batch_is_resent_in_order_by_a_new_producer() -> None:
    records = [record(f"dev-{i % 3}".encode(), i, output=i % 2) for i in range(600)]
    writer, delivered = await run_writer(2, records)
    assert writer.failures == 2
    assert writer.restarts == 1
    first, second = FakeProducer.instances
    assert first.stopped
    assert second.started
    # Every record reached Kafka at least once and was delivered (acknowledged) exactly once.
    assert sorted(delivered) == sorted(records)
    written = first.written + second.written
    assert {v for _, _, v in written} == {r.value for r in records}
    # Per key and topic, the last write of each record keeps the original order.
    for topic in ("raw", "dlq"):
        for key in (b"dev-0", b"dev-1", b"dev-2"):
            values = [v for t, _, v in written if t == topic and v.startswith(key + b":")]
            last_seen = list(dict.fromkeys(reversed(values)))[::-1]
            sent = [r.value for r in records if r.key == key and ["raw", "dlq"][r.output] == topic]
            assert last_seen == sent


async def test_flush_times_out_while_nothing_is_delivered() -> None:
    FakeProducer.instances.clear()
    writer = KafkaWriter(Settings(), ["raw"], lambda _: None, producer_factory=lambda: FakeProducer(10**9))
    await writer.start()
    writer.put(record(b"dev-1", 1))
    assert not await writer.flush(0.3)
    assert writer.in_flight == 1
    await writer.close()


class FakeClient:
    def __init__(self, outcome: bool) -> None:
        self.outcome = outcome
        self.calls = 0

    def force_metadata_update(self) -> asyncio.Future[bool]:
        self.calls += 1
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.set_result(self.outcome)
        return future


async def test_failed_metadata_refreshes_are_spaced_out() -> None:
    client = FakeClient(outcome=False)
    throttle_metadata_updates(client, 0.2)
    answer = client.force_metadata_update()
    for _ in range(5):
        await asyncio.sleep(0)  # the refresh has failed; the answer waits for the interval
    assert not answer.done()
    assert await answer is False
    assert client.calls == 1


async def test_a_successful_refresh_answers_at_once() -> None:
    client = FakeClient(outcome=True)
    throttle_metadata_updates(client, 60.0)
    assert await asyncio.wait_for(client.force_metadata_update(), 1.0) is True
