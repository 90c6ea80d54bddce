"""Which Kafka principal may do what: the ACLs of each process, least privilege.

Each process authenticates as its own principal (``citystream.kafka_client.Principal``). The
stack's ``admin`` is a super user and has no ACLs; every other principal gets exactly the
topics and consumer groups below, with the test prefix (``kafka.topic_prefix``) applied.
Anything not listed is denied by the broker's StandardAuthorizer.

principal      reads                                   writes                          groups
ingest         devices                                 telemetry.raw, telemetry.dlq,   (none)
                                                       devices.status
registry       devices                                 devices                         (none)
jobs           telemetry.raw, alerts.commands,         telemetry.agg.1m, alerts,       {app}*
               {app}-*                                 alerts.events, device.quality,
                                                       telemetry.dlq, {app}-*
sink-influx    telemetry.raw, devices.status,          sinks.dlq                       sink.influx_group
               telemetry.agg.1m, alerts.events,
               device.quality
sink-webhook   alerts.events                           sinks.dlq, alerts.commands      sink.webhook_group
monitor        describe every topic and group (lag)    (none)                          (describe only)

The jobs may create their own internal topics (``{app}-*``: changelogs, repartitions).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

from citystream.kafka_client import Principal
from citystream.settings import Settings
from citystream.topics import (
    ALERTS,
    ALERTS_COMMANDS,
    ALERTS_EVENTS,
    DEVICE_QUALITY,
    DEVICE_STATUS,
    DEVICES,
    SINK_DLQ,
    TELEMETRY_AGG_1M,
    TELEMETRY_DLQ,
    TELEMETRY_RAW,
    topic_name,
)


class ResourceType(IntEnum):
    """Kafka's ``ResourceType`` codes (the wire values)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Operation(IntEnum):
    """Kafka's ``AclOperation`` codes."""

    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class PatternType(IntEnum):
    """Kafka's ``PatternType`` codes: a literal name (``*`` = every name) or a prefix."""

    LITERAL = 3
    PREFIXED = 4


ALLOW = 3
"""``AclPermissionType.ALLOW``; the authorizer denies whatever no ACL allows."""


class AclBinding(NamedTuple):
    principal: str
    """``User:<name>``."""
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation
    host: str = "*"
    permission: int = ALLOW


def user(principal: Principal) -> str:
    return f"User:{principal.value}"


def _topics(
    who: Principal, names: Iterable[str], ops: Iterable[Operation], pattern: PatternType = PatternType.LITERAL
) -> list[AclBinding]:
    ops = tuple(ops)
    return [AclBinding(user(who), ResourceType.TOPIC, name, pattern, op) for name in names for op in ops]


def _group(who: Principal, name: str, pattern: PatternType = PatternType.LITERAL) -> list[AclBinding]:
    return [
        AclBinding(user(who), ResourceType.GROUP, name, pattern, op)
        for op in (Operation.READ, Operation.DESCRIBE)
    ]


READS = (Operation.READ, Operation.DESCRIBE)
WRITES = (Operation.WRITE, Operation.DESCRIBE)


def acl_bindings(settings: Settings) -> list[AclBinding]:
    """Every ACL the stack creates, for every principal but the super user."""
    k = settings.kafka

    def t(*bases: str) -> list[str]:
        return [topic_name(base, k) for base in bases]

    app = f"{k.topic_prefix}{settings.jobs.app_id}"
    s = settings.sink
    return [
        # ingest: the bridge produces readings, dead letters and device status; it follows
        # the registry by assigning the devices topic's partition (no consumer group).
        *_topics(Principal.INGEST, t(TELEMETRY_RAW, TELEMETRY_DLQ, DEVICE_STATUS), WRITES),
        *_topics(Principal.INGEST, t(DEVICES), READS),
        # registry: the device registry's own compacted topic.
        *_topics(Principal.REGISTRY, t(DEVICES), (Operation.READ, Operation.WRITE, Operation.DESCRIBE)),
        # jobs: Faust reads raw readings and operator commands, writes results, and owns the
        # topics and consumer group named after its app id.
        *_topics(Principal.JOBS, t(TELEMETRY_RAW, ALERTS_COMMANDS), READS),
        *_topics(
            Principal.JOBS, t(TELEMETRY_AGG_1M, ALERTS, ALERTS_EVENTS, DEVICE_QUALITY, TELEMETRY_DLQ), WRITES
        ),
        *_topics(
            Principal.JOBS,
            [f"{app}-"],
            (
                Operation.READ,
                Operation.WRITE,
                Operation.CREATE,
                Operation.DESCRIBE,
                Operation.DESCRIBE_CONFIGS,
            ),
            PatternType.PREFIXED,
        ),
        *_group(Principal.JOBS, app, PatternType.PREFIXED),
        # sink-influx: everything that goes to InfluxDB; rejects go to the sink DLQ.
        *_topics(
            Principal.SINK_INFLUX,
            t(TELEMETRY_RAW, DEVICE_STATUS, TELEMETRY_AGG_1M, ALERTS_EVENTS, DEVICE_QUALITY),
            READS,
        ),
        *_topics(Principal.SINK_INFLUX, t(SINK_DLQ), WRITES),
        *_group(Principal.SINK_INFLUX, s.influx_group),
        # sink-webhook: alert events out, acknowledgements from the alert API in.
        *_topics(Principal.SINK_WEBHOOK, t(ALERTS_EVENTS), READS),
        *_topics(Principal.SINK_WEBHOOK, t(SINK_DLQ, ALERTS_COMMANDS), WRITES),
        *_group(Principal.SINK_WEBHOOK, s.webhook_group),
        # monitor: offsets and lag of every group, no record access.
        AclBinding(user(Principal.MONITOR), ResourceType.TOPIC, "*", PatternType.LITERAL, Operation.DESCRIBE),
        AclBinding(user(Principal.MONITOR), ResourceType.GROUP, "*", PatternType.LITERAL, Operation.DESCRIBE),
    ]


def describe(bindings: Iterable[AclBinding]) -> list[str]:
    """One line per binding, ``User:x ALLOW READ TOPIC:LITERAL:name`` (for logs and docs)."""
    return [
        f"{b.principal} ALLOW {b.operation.name} "
        f"{b.resource_type.name}:{b.pattern_type.name}:{b.resource_name}"
        for b in bindings
    ]
