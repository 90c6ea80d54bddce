"""The ``alerts`` and ``commands`` agents: the alert lifecycle and the operators' commands.

``commands`` reads ``alerts.commands`` and forwards each command into ``{app}-signals``: an
acknowledgement or a silence of one alert key to that key's partition, a silence by rule,
district or device to every partition. ``alerts`` applies signals and commands in order with
:mod:`stream_jobs.alerts` and sends each event to ``alerts.events`` and the alert's current
state to the compacted ``alerts`` topic (both keyed by alert key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import msgspec
from aiokafka.partitioner import murmur2

from citystream import codec
from citystream.model import AlertCommand, AlertCommandKind, AlertEvent
from citystream.settings import Settings
from stream_jobs import alerts, input_order
from stream_jobs.agents.dedup import PARTITION_KEY, Envelope
from stream_jobs.app import Jobs
from stream_jobs.runtime import guarded, persist, reject, send_all, stored

logger = logging.getLogger(__name__)


class AlertPartition(msgspec.Struct, kw_only=True):
    silences: tuple[alerts.Silence, ...] = ()
    last_offset: int = -1


def key_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as the Java client)."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def policies_of(settings: Settings) -> alerts.Policies:
    j = settings.jobs
    return alerts.policies(j.min_duration_s, j.clear_hold_s, j.flap_window_s, j.flap_max_raises)


class AlertJob:
    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.policies = policies_of(jobs.settings)
        self.tracks: dict[str, tuple[int, alerts.Track]] = {}
        self.parts: dict[int, AlertPartition] = {}
        self.partitions = jobs.settings.kafka.partitions
        self.lock = asyncio.Lock()

    def part(self, partition: int) -> AlertPartition:
        part = self.parts.get(partition)
        if part is None:
            raw = stored(self.jobs.tables.alerts.data.get(f"{PARTITION_KEY}{partition}"))
            part = AlertPartition() if raw is None else msgspec.convert(raw, AlertPartition, strict=False)
            self.parts[partition] = part
        return part

    def track(self, key: str, partition: int) -> alerts.Track:
        cached = self.tracks.get(key)
        if cached is not None:
            return cached[1]
        raw = stored(self.jobs.tables.alerts.data.get(key))
        if raw is None:
            return alerts.Track()
        track = raw if isinstance(raw, alerts.Track) else msgspec.convert(raw, alerts.Track, strict=False)
        self.tracks[key] = (partition, track)
        return track

    def open_keys(self, partition: int) -> list[str]:
        """The keys of open alerts whose signals arrive on ``partition``."""
        return [
            key
            for key in list(self.jobs.tables.alerts.data.keys())
            if not key.startswith(PARTITION_KEY)
            and key_partition(key, self.partitions) == partition
            and self.track(key, partition).open
        ]

    def forget(self) -> None:
        self.tracks.clear()
        self.parts.clear()

    async def process(self, events: list[Any]) -> None:
        stats = self.jobs.stats
        out: list[AlertEvent] = []
        sends: list[Awaitable[Any]] = []
        changed: dict[str, int] = {}
        partitions: set[int] = set()
        for event in events:
            message = event.message
            p = message.partition
            part = self.part(p)
            if message.offset <= part.last_offset:
                stats.add("alerts_replayed")
                continue
            part.last_offset = message.offset
            partitions.add(p)
            try:
                envelope = codec.decode(message.value, Envelope)
                if envelope.signal is not None:
                    signal = envelope.signal
                    track, emitted = alerts.on_signal(
                        self.track(signal.key, p), signal, self.policies, part.silences
                    )
                    self.tracks[signal.key] = (p, track)
                    changed[signal.key] = p
                    out.extend(emitted)
                    part.silences = alerts.expire(part.silences, signal.ts_ms)
                elif envelope.command is not None:
                    command = msgspec.convert(envelope.command, AlertCommand, strict=False)
                    out.extend(self._command(command, p, part, changed))
            except (codec.DecodeError, codec.ValidationError, TypeError) as exc:
                sends.append(reject(stats, self.jobs.topics, message, "invalid_signal", exc))
            except Exception as exc:  # one bad record must not stop the job
                logger.exception(
                    "alert step failed topic=%s partition=%s offset=%s", message.topic, p, message.offset
                )
                sends.append(reject(stats, self.jobs.topics, message, "processing_error", exc))
        topics = self.jobs.topics
        for ev in out:
            raw_key = ev.alert.key.encode()
            sends.append(topics.events.send(key=raw_key, value=codec.encode(ev)))
            sends.append(topics.alerts.send(key=raw_key, value=codec.encode(ev.alert)))
            stats.add(f"alert_{ev.kind.value}")
        await send_all(sends)
        table = self.jobs.tables.alerts
        written = [persist(table, p, key, self.tracks[key][1]) for key, p in changed.items()]
        written += [persist(table, p, f"{PARTITION_KEY}{p}", self.parts[p]) for p in sorted(partitions)]
        # The batch is acknowledged when this returns: its state must be in Kafka first.
        await asyncio.gather(*written)

    def _command(
        self, command: AlertCommand, p: int, part: AlertPartition, changed: dict[str, int]
    ) -> list[AlertEvent]:
        if command.kind is AlertCommandKind.ACKNOWLEDGE:
            if command.alert_key is None:
                return []
            track, emitted = alerts.on_command(self.track(command.alert_key, p), command)
            self.tracks[command.alert_key] = (p, track)
            changed[command.alert_key] = p
            return emitted
        part.silences = alerts.apply_silence_command(part.silences, command)
        out: list[AlertEvent] = []
        for key in self.open_keys(p):
            track, emitted = alerts.on_silences_changed(self.track(key, p), part.silences, command.issued_ms)
            if emitted:
                self.tracks[key] = (p, track)
                changed[key] = p
                out.extend(emitted)
        return out


class CommandJob:
    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs

    async def process(self, events: list[Any]) -> None:
        sends: list[Awaitable[Any]] = []
        signals = self.jobs.topics.signals
        for event in events:
            message = event.message
            try:
                command = codec.decode(message.value, AlertCommand)
            except (codec.DecodeError, TypeError) as exc:
                sends.append(reject(self.jobs.stats, self.jobs.topics, message, "invalid_command", exc))
                continue
            value = codec.encode(Envelope(command=command))
            one_key = command.alert_key is not None and (
                command.kind is AlertCommandKind.ACKNOWLEDGE
                or (command.rule is None and command.district is None and command.device_id is None)
            )
            if one_key:
                assert command.alert_key is not None  # noqa: S101  # checked just above
                sends.append(signals.send(key=command.alert_key.encode(), value=value))
            elif command.kind is AlertCommandKind.ACKNOWLEDGE:
                sends.append(
                    reject(self.jobs.stats, self.jobs.topics, message, "invalid_command", "ack without key")
                )
            else:
                for p in range(self.jobs.settings.kafka.partitions):
                    sends.append(signals.send(key=command.command_id.encode(), value=value, partition=p))
            self.jobs.stats.add("commands")
        await send_all(sends)


def install(jobs: Jobs) -> AlertJob:
    job = AlertJob(jobs)
    commands = CommandJob(jobs)
    s = jobs.settings.jobs

    alerts_order, commands_order = input_order.for_jobs(jobs), input_order.for_jobs(jobs)

    async def alerts_agent(stream: Any) -> None:
        async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
            async with job.lock:
                admitted = await alerts_order.admit(list(events))
                await guarded("alerts", job.process(admitted.events))
                release(admitted.adopted)

    async def commands_agent(stream: Any) -> None:
        async for events in stream.take_events(100, within=0.1):
            admitted = await commands_order.admit(list(events))
            await guarded("commands", commands.process(admitted.events))
            release(admitted.adopted)

    def release(adopted: list[Any]) -> None:
        """The copies set aside are acknowledged once those read again are processed (these
        agents write their state within ``process``)."""
        for event in adopted:
            event.message.ack(jobs.app.consumer)

    jobs.app.agent(jobs.topics.signals, name="alerts")(alerts_agent)
    jobs.app.agent(jobs.topics.commands, name="commands")(commands_agent)

    async def forget(*_: Any, **__: Any) -> None:
        async with job.lock:
            job.forget()
            alerts_order.reset()
            commands_order.reset()

    jobs.app.on_partitions_revoked.connect(forget)
    return job
