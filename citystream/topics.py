"""Kafka topic names and their specifications (partitions, retention, compaction)."""

from __future__ import annotations

from typing import NamedTuple

from citystream.settings import KafkaSettings

TELEMETRY_RAW = "telemetry.raw"
TELEMETRY_DLQ = "telemetry.dlq"
TELEMETRY_AGG_1M = "telemetry.agg.1m"
ALERTS = "alerts"
ALERTS_EVENTS = "alerts.events"
ALERTS_COMMANDS = "alerts.commands"
DEVICE_QUALITY = "device.quality"
DEVICES = "devices"
DEVICE_STATUS = "devices.status"
SINK_DLQ = "sinks.dlq"


class TopicSpec(NamedTuple):
    name: str
    partitions: int
    config: dict[str, str]


def topic_name(base: str, settings: KafkaSettings) -> str:
    """The real topic name for ``base`` (tests set a unique ``topic_prefix``)."""
    return f"{settings.topic_prefix}{base}"


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic the pipeline uses, as the stack creates them."""
    p = settings.partitions
    common = {"min.insync.replicas": str(settings.min_insync_replicas)}

    def delete(retention_ms: int, **extra: str) -> dict[str, str]:
        return {**common, "cleanup.policy": "delete", "retention.ms": str(retention_ms), **extra}

    compacted = {**common, "cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
    specs = [
        TopicSpec(TELEMETRY_RAW, p, delete(settings.raw_retention_ms)),
        TopicSpec(TELEMETRY_DLQ, p, delete(settings.dlq_retention_ms)),
        TopicSpec(TELEMETRY_AGG_1M, p, delete(settings.agg_retention_ms)),
        TopicSpec(ALERTS, p, compacted),
        TopicSpec(ALERTS_EVENTS, p, delete(settings.alerts_retention_ms)),
        TopicSpec(ALERTS_COMMANDS, p, delete(settings.alerts_retention_ms)),
        TopicSpec(DEVICE_QUALITY, p, delete(settings.agg_retention_ms)),
        TopicSpec(DEVICES, 1, compacted),
        TopicSpec(DEVICE_STATUS, p, compacted),
        TopicSpec(SINK_DLQ, p, delete(settings.dlq_retention_ms)),
    ]
    return [TopicSpec(topic_name(s.name, settings), s.partitions, s.config) for s in specs]
