from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from citystream.errors import ConfigError, StackError
from citystream.settings import KafkaSettings, Settings, StackSettings
from stack import tls
from stack.kafka import KafkaService
from stack.kafka_cluster import KafkaCluster, kafka_service


def _settings(tmp_path: Path, **kafka: object) -> Settings:
    passwords = {
        f"{name}_password": SecretStr(f"{name}-secret-0123456789")
        for name in (
            "admin",
            "controller",
            "ingest",
            "registry",
            "jobs",
            "sink_influx",
            "sink_webhook",
            "monitor",
        )
    }
    return Settings(
        stack=StackSettings(state_dir=tmp_path, cache_dir=tmp_path / "cache"),
        kafka=KafkaSettings(
            **{"bootstrap": "127.0.0.1:19092", "controller_port": 19093, **passwords, **kafka}
        ),
    )


def test_three_nodes_get_their_own_ids_ports_and_directories(tmp_path: Path) -> None:
    s = _settings(tmp_path, brokers=3, replication_factor=3, min_insync_replicas=2, port_step=100)
    cluster = KafkaCluster(s)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster.nodes] == [
        (1, 19092, 19093),
        (2, 19192, 19193),
        (3, 19292, 19293),
    ]
    assert len({n.dir for n in cluster.nodes}) == 3
    props = cluster.properties(cluster.nodes[1])
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19192,CONTROLLER://127.0.0.1:19193"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19192"
    assert props["log.dirs"] == str(cluster.nodes[1].data_dir)
    for key in ("default.replication.factor", "offsets.topic.replication.factor"):
        assert props[key] == "3"
    for key in ("min.insync.replicas", "transaction.state.log.min.isr"):
        assert props[key] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert cluster.bootstrap() == "127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292"


def test_replication_cannot_exceed_the_brokers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        KafkaCluster(_settings(tmp_path, brokers=2, replication_factor=3))
    with pytest.raises(ConfigError):
        KafkaCluster(_settings(tmp_path, brokers=3, replication_factor=2, min_insync_replicas=3))


def test_sasl_ssl_node_authenticates_everyone_and_authorizes_by_acl(tmp_path: Path) -> None:
    cluster = KafkaCluster(_settings(tmp_path, security="sasl_ssl"))
    props = cluster.properties(cluster.nodes[0])
    assert props["listeners"] == "SASL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "SASL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT"
    # No listener without authentication.
    assert "PLAINTEXT://" not in props["listeners"]
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert (
        'username="admin" password="admin-secret-0123456789"'
        in (props["listener.name.sasl.scram-sha-512.sasl.jaas.config"])
    )
    controller_jaas = props["listener.name.controller.plain.sasl.jaas.config"]
    assert 'user_controller="controller-secret-0123456789"' in controller_jaas
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == "User:admin;User:controller"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["auto.create.topics.enable"] == "false"
    assert props["ssl.keystore.type"] == "PEM"
    assert props["ssl.endpoint.identification.algorithm"] == "https"


def test_sasl_scram_has_no_tls_settings(tmp_path: Path) -> None:
    cluster = KafkaCluster(_settings(tmp_path, security="sasl_scram", sasl_mechanism="SCRAM-SHA-256"))
    props = cluster.properties(cluster.nodes[0])
    assert props["listener.security.protocol.map"] == "SASL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert "listener.name.sasl.scram-sha-256.sasl.jaas.config" in props
    assert not any(key.startswith("ssl.") for key in props)


@pytest.mark.parametrize("password", ["", 'with"quote', "semi;colon", "a,b"])
def test_passwords_that_jaas_cannot_carry_are_refused(tmp_path: Path, password: str) -> None:
    cluster = KafkaCluster(_settings(tmp_path, security="sasl_scram", admin_password=SecretStr(password)))
    with pytest.raises(ConfigError) as err:
        cluster.properties(cluster.nodes[0])
    if password:
        assert password not in str(err.value)


def test_config_files_are_private_and_the_keystore_holds_key_and_chain(tmp_path: Path) -> None:
    tls.ensure_ca(tmp_path / "tls")
    cluster = KafkaCluster(_settings(tmp_path, security="sasl_ssl"))
    cluster.write_config()
    config = cluster.nodes[0].config_path
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "admin-secret-0123456789" in config.read_text()
    pem = (cluster.dir / "broker.pem").read_text()
    assert stat.S_IMODE((cluster.dir / "broker.pem").stat().st_mode) == 0o600
    assert pem.count("BEGIN PRIVATE KEY") == 1
    assert pem.count("BEGIN CERTIFICATE") == 2
    log_cfg = (cluster.nodes[0].dir / "log4j2.xml").read_text()
    assert "kafka.authorizer.logger" in log_cfg


def test_keystore_needs_the_stack_ca(tmp_path: Path) -> None:
    cluster = KafkaCluster(_settings(tmp_path, security="sasl_ssl"))
    with pytest.raises(StackError):
        cluster.write_config()


def test_a_state_dir_formatted_for_another_layout_is_refused(tmp_path: Path) -> None:
    first = KafkaCluster(_settings(tmp_path, security="sasl_scram"))
    cluster_id = first.cluster_id()
    assert not cluster_id.startswith("-")
    assert KafkaCluster(_settings(tmp_path, security="sasl_scram")).cluster_id() == cluster_id
    layout = json.loads((first.dir / "layout.json").read_text())
    assert layout == {
        "brokers": 1,
        "security": "sasl_scram",
        "mechanism": "SCRAM-SHA-512",
        "cluster_id": cluster_id,
    }
    with pytest.raises(StackError):
        KafkaCluster(_settings(tmp_path, security="sasl_ssl")).cluster_id()


def test_the_default_stack_keeps_its_single_plaintext_node(tmp_path: Path) -> None:
    assert isinstance(kafka_service(_settings(tmp_path)), KafkaService)
    assert isinstance(kafka_service(_settings(tmp_path, brokers=3, replication_factor=3)), KafkaCluster)
    assert isinstance(kafka_service(_settings(tmp_path, security="sasl_scram")), KafkaCluster)


def test_extra_properties_come_last(tmp_path: Path) -> None:
    cluster = KafkaCluster(_settings(tmp_path), {"broker.session.timeout.ms": "3000", "num.io.threads": "2"})
    props = cluster.properties(cluster.nodes[0])
    assert props["broker.session.timeout.ms"] == "3000"
    assert props["num.io.threads"] == "2"
