"""The device registry: the compacted ``devices`` topic, keyed by device_id.

Every change is written to Kafka first (acks=all); then Mosquitto's password file and ACL
are regenerated from the whole registry and Mosquitto reloads them (SIGHUP), so connected
devices stay connected and a revoked device is refused at its next connect.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import secrets
import time
from collections.abc import Callable

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from citystream import codec
from citystream.addressing import is_device_id
from citystream.errors import RegistryError
from citystream.geo import is_district
from citystream.kafka_client import Principal, client_kwargs
from citystream.model import DeviceEntry, DeviceKind
from citystream.sensors import SENSOR_TYPES, is_sensor_type
from citystream.settings import Settings
from citystream.topics import DEVICES
from ingest.producer import METADATA_RETRY_S, throttle_metadata_updates
from stack.mosquitto import MosquittoService, hash_password

logger = logging.getLogger(__name__)

GATEWAY_SENSOR_TYPE = "any"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_password() -> str:
    return secrets.token_urlsafe(18)


class DeviceRegistry:
    def __init__(self, settings: Settings, *, apply_to_broker: bool = True) -> None:
        self.settings = settings
        # One registry per broker: the auth files it generates are the broker's, so the topic
        # never takes the per-test prefix (tests use unique device ids instead).
        self.topic = DEVICES
        self.apply_to_broker = apply_to_broker

    async def load(self) -> dict[str, DeviceEntry]:
        """Read the whole compacted topic; the latest record per device wins."""
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings, Principal.REGISTRY),
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                await consumer._client.force_metadata_update()  # first read after create
                partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return {}
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            entries: dict[str, DeviceEntry] = {}
            remaining = {tp for tp in tps if end[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        key = record.key.decode() if record.key else ""
                        if record.value is None:
                            entries.pop(key, None)
                        else:
                            entry = codec.decode(record.value, DeviceEntry)
                            entries[entry.device_id] = entry
                        if record.offset + 1 >= end[tp]:
                            remaining.discard(tp)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
            return entries
        finally:
            await consumer.stop()

    async def _put(self, entry: DeviceEntry) -> None:
        producer = AIOKafkaProducer(
            **client_kwargs(self.settings, Principal.REGISTRY), acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            await producer.send_and_wait(self.topic, codec.encode(entry), key=entry.device_id.encode())
        finally:
            await producer.stop()

    async def apply(self) -> int:
        """Regenerate Mosquitto's auth files from the registry and reload; return the count.

        Several processes may change the registry at once. Each reads the whole topic and
        rewrites the files, so the read and the write hold an exclusive lock on the broker's
        state folder: the applies run one after the other, each reads everything written
        before it started, and a device once in the files never drops out again because of
        an apply that read an older registry.
        """
        if not self.apply_to_broker:
            entries = await self.load()
        else:
            service = MosquittoService(self.settings)
            service.dir.mkdir(parents=True, exist_ok=True)
            with (service.dir / "registry.lock").open("a") as lock:
                await asyncio.to_thread(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
                try:
                    entries = await self.load()
                    await asyncio.to_thread(service.apply_registry, entries.values())
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        return sum(1 for e in entries.values() if not e.revoked)

    async def get(self, device_id: str) -> DeviceEntry:
        entry = (await self.load()).get(device_id)
        if entry is None:
            raise RegistryError(f"unknown device {device_id!r}")
        return entry

    async def add(
        self,
        device_id: str,
        district: str,
        sensor_type: str,
        *,
        password: str | None = None,
        gateway: bool = False,
        lat: float | None = None,
        lon: float | None = None,
        interval_s: float | None = None,
        replace: bool = False,
    ) -> tuple[DeviceEntry, str]:
        """Register a device (or a district gateway); returns the entry and its password."""
        if not is_device_id(device_id):
            raise RegistryError(f"device id {device_id!r} must match [a-z0-9][a-z0-9-]{{2,63}}")
        if device_id == self.settings.mqtt.ingest_username:
            raise RegistryError(f"{device_id!r} is reserved for the ingest service")
        if not is_district(district):
            raise RegistryError(f"unknown district {district!r} (use a romanised Seoul district)")
        if gateway:
            sensor_type = GATEWAY_SENSOR_TYPE
        elif not is_sensor_type(sensor_type):
            raise RegistryError(
                f"unknown sensor type {sensor_type!r}; known: {', '.join(sorted(SENSOR_TYPES))}"
            )
        existing = (await self.load()).get(device_id)
        if existing is not None and not existing.revoked and not replace:
            raise RegistryError(f"device {device_id!r} exists; use 'devices rotate' for a new password")
        password = password or new_password()
        ts = now_ms()
        entry = DeviceEntry(
            device_id=device_id,
            district=district,
            sensor_type=sensor_type,
            password_hash=hash_password(password),
            kind=DeviceKind.GATEWAY if gateway else DeviceKind.DEVICE,
            lat=lat,
            lon=lon,
            interval_s=interval_s,
            created_ms=existing.created_ms if existing else ts,
            updated_ms=ts,
        )
        await self._put(entry)
        await self.apply()
        logger.info("registered %s %s in %s", entry.kind, device_id, district)
        return entry, password

    async def add_many(self, entries: list[tuple[DeviceEntry, str]]) -> None:
        """Register many prepared entries with one produce batch and one reload."""
        producer = AIOKafkaProducer(
            **client_kwargs(self.settings, Principal.REGISTRY), acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            futures = [
                await producer.send(self.topic, codec.encode(e), key=e.device_id.encode()) for e, _ in entries
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        await self.apply()

    async def remove(self, *device_ids: str) -> None:
        """Delete devices from the registry (tombstones; compaction drops them)."""
        producer = AIOKafkaProducer(
            **client_kwargs(self.settings, Principal.REGISTRY), acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            for device_id in device_ids:
                await producer.send_and_wait(self.topic, None, key=device_id.encode())
        finally:
            await producer.stop()
        await self.apply()

    async def revoke(self, device_id: str) -> DeviceEntry:
        entry = await self.get(device_id)
        revoked = DeviceEntry(**{**codec.to_builtins(entry), "revoked": True, "updated_ms": now_ms()})
        await self._put(revoked)
        await self.apply()
        logger.info("revoked %s", device_id)
        return revoked

    async def rotate(self, device_id: str, password: str | None = None) -> tuple[DeviceEntry, str]:
        entry = await self.get(device_id)
        if entry.revoked:
            raise RegistryError(f"device {device_id!r} is revoked; add it again to reinstate it")
        password = password or new_password()
        rotated = msgspec.structs.replace(entry, password_hash=hash_password(password), updated_ms=now_ms())
        await self._put(rotated)
        await self.apply()
        logger.info("rotated the password of %s", device_id)
        return rotated, password


def prepare_entry(
    device_id: str,
    district: str,
    sensor_type: str,
    password: str,
    *,
    lat: float | None = None,
    lon: float | None = None,
    interval_s: float | None = None,
    gateway: bool = False,
) -> DeviceEntry:
    """A registry entry for bulk provisioning (simulated fleets)."""
    ts = now_ms()
    return DeviceEntry(
        device_id=device_id,
        district=district,
        sensor_type=GATEWAY_SENSOR_TYPE if gateway else sensor_type,
        password_hash=hash_password(password),
        kind=DeviceKind.GATEWAY if gateway else DeviceKind.DEVICE,
        lat=lat,
        lon=lon,
        interval_s=interval_s,
        created_ms=ts,
        updated_ms=ts,
    )


class RegistryFollower:
    """A live, read-only view of the registry: loads the compacted topic, then follows it.

    The bridge validates topics against it. :meth:`sync` waits until every change written
    before the call has been read: a device that can authenticate at the broker was written to
    the topic before the broker reloaded, so after a sync the bridge knows it.
    """

    def __init__(self, settings: Settings, on_change: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.topic = DEVICES
        self.entries: dict[str, DeviceEntry] = {}
        self.unreadable = 0
        self._on_change = on_change
        self._tp = TopicPartition(self.topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._position = 0
        self._progress = asyncio.Event()

    async def start(self, timeout_s: float = 30.0) -> None:
        """Connect and read the whole topic (the initial load)."""
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings, Principal.INGEST),
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=self.settings.ingest.request_timeout_ms,
            retry_backoff_ms=500,
        )
        throttle_metadata_updates(consumer._client, METADATA_RETRY_S)
        await consumer.start()
        self._consumer = consumer
        consumer.assign([self._tp])
        await consumer.seek_to_beginning(self._tp)
        end = (await consumer.end_offsets([self._tp]))[self._tp]
        while self._position < end:
            await self._poll(timeout_s)

    async def run(self) -> None:
        """Follow the topic until cancelled."""
        while True:
            await self._poll(1.0)

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RegistryError("the registry follower is not started")
        return self._consumer

    async def _poll(self, timeout_s: float) -> None:
        consumer = self._started()
        batch = await consumer.getmany(self._tp, timeout_ms=int(timeout_s * 1000), max_records=5000)
        for record in batch.get(self._tp, ()):
            key = record.key.decode(errors="replace") if record.key else ""
            if record.value is None:
                self.entries.pop(key, None)
            else:
                try:
                    entry = codec.decode(record.value, DeviceEntry)
                except (codec.DecodeError, codec.ValidationError) as exc:
                    self.unreadable += 1
                    logger.warning("unreadable registry record at offset %d: %s", record.offset, exc)
                    continue
                self.entries[entry.device_id] = entry
            if self._on_change is not None:
                self._on_change(key)
        self._position = await consumer.position(self._tp)
        self._progress.set()
        self._progress.clear()

    async def sync(self, timeout_s: float = 10.0) -> bool:
        """Wait until every registry change written before this call has been read."""
        end = (await self._started().end_offsets([self._tp]))[self._tp]
        try:
            async with asyncio.timeout(timeout_s):
                while self._position < end:
                    await self._progress.wait()
        except TimeoutError:
            logger.warning("the registry follower is behind after %.0f s", timeout_s)
            return False
        return True

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
