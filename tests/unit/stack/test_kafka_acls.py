from __future__ import annotations

from collections import defaultdict

from citystream.kafka_client import Principal
from citystream.settings import JobsSettings, KafkaSettings, Settings, SinkSettings
from stack.kafka_acls import AclBinding, Operation, PatternType, ResourceType, acl_bindings, describe

Grants = dict[str, set[tuple[str, str, str]]]


def _grants(settings: Settings) -> Grants:
    """principal -> {(resource, pattern:name, operation)}."""
    out: Grants = defaultdict(set)
    for b in acl_bindings(settings):
        resource = f"{b.pattern_type.name}:{b.resource_name}"
        out[b.principal].add((b.resource_type.name, resource, b.operation.name))
    return out


def _topics(grants: Grants, principal: str, op: str) -> set[str]:
    return {name.split(":", 1)[1] for kind, name, o in grants[principal] if kind == "TOPIC" and o == op}


def test_each_process_writes_only_what_it_owns() -> None:
    g = _grants(Settings())
    assert _topics(g, "User:ingest", "WRITE") == {"telemetry.raw", "telemetry.dlq", "devices.status"}
    assert _topics(g, "User:registry", "WRITE") == {"devices"}
    assert _topics(g, "User:jobs", "WRITE") == {
        "telemetry.agg.1m",
        "alerts",
        "alerts.events",
        "device.quality",
        "telemetry.dlq",
        "citystream-jobs-",
    }
    assert _topics(g, "User:sink-influx", "WRITE") == {"sinks.dlq"}
    assert _topics(g, "User:sink-webhook", "WRITE") == {"sinks.dlq", "alerts.commands"}
    assert _topics(g, "User:monitor", "WRITE") == set()


def test_each_process_reads_only_what_it_consumes() -> None:
    g = _grants(Settings())
    assert _topics(g, "User:ingest", "READ") == {"devices"}
    assert _topics(g, "User:jobs", "READ") == {"telemetry.raw", "alerts.commands", "citystream-jobs-"}
    assert _topics(g, "User:sink-influx", "READ") == {
        "telemetry.raw",
        "devices.status",
        "telemetry.agg.1m",
        "alerts.events",
        "device.quality",
    }
    assert _topics(g, "User:sink-webhook", "READ") == {"alerts.events"}
    assert _topics(g, "User:monitor", "READ") == set()
    assert _topics(g, "User:monitor", "DESCRIBE") == {"*"}


def test_only_the_jobs_create_topics_and_only_their_own() -> None:
    creates = [b for b in acl_bindings(Settings()) if b.operation is Operation.CREATE]
    assert [(b.principal, b.resource_name, b.pattern_type) for b in creates] == [
        ("User:jobs", "citystream-jobs-", PatternType.PREFIXED)
    ]


def test_consumer_groups_are_per_process() -> None:
    s = Settings(sink=SinkSettings(influx_group="g-influx", webhook_group="g-webhook"))
    groups = {
        (b.principal, b.resource_name, b.pattern_type)
        for b in acl_bindings(s)
        if b.resource_type is ResourceType.GROUP and b.operation is Operation.READ
    }
    assert groups == {
        ("User:jobs", "citystream-jobs", PatternType.PREFIXED),
        ("User:sink-influx", "g-influx", PatternType.LITERAL),
        ("User:sink-webhook", "g-webhook", PatternType.LITERAL),
    }


def test_no_cluster_rights_and_no_deny_rules_needed() -> None:
    bindings = acl_bindings(Settings())
    assert all(b.resource_type is not ResourceType.CLUSTER for b in bindings)
    assert all(b.operation is not Operation.ALL for b in bindings)
    processes = {f"User:{p.value}" for p in Principal if p is not Principal.ADMIN}
    assert {b.principal for b in bindings} == processes
    assert len(set(bindings)) == len(bindings)


def test_topic_prefix_and_app_id_are_applied() -> None:
    s = Settings(kafka=KafkaSettings(topic_prefix="t42."), jobs=JobsSettings(app_id="jobs-x"))
    names = {b.resource_name for b in acl_bindings(s) if b.resource_type is ResourceType.TOPIC}
    assert "t42.telemetry.raw" in names
    assert "t42.jobs-x-" in names
    assert "telemetry.raw" not in names


def test_describe_names_every_part() -> None:
    b = AclBinding("User:ingest", ResourceType.TOPIC, "telemetry.raw", PatternType.LITERAL, Operation.WRITE)
    assert describe([b]) == ["User:ingest ALLOW WRITE TOPIC:LITERAL:telemetry.raw"]
