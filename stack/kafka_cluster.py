"""Kafka as N KRaft nodes on loopback, optionally with SASL/SCRAM, TLS and ACLs.

The default local stack (one broker, plaintext) is ``stack/kafka.py``'s ``KafkaService``.
Any other layout, ``kafka.brokers > 1`` or ``kafka.security != "plaintext"``, runs here:

- node ``i`` (from 0) has ``node.id = i + 1``, listens on the bootstrap port + ``i * port_step``
  and its controller on ``controller_port + i * port_step``; every node is broker and
  controller, ``controller.quorum.voters`` lists all of them and each node's storage is
  formatted with the same cluster id;
- replication factor and min in-sync replicas come from the settings (3 and 2 on a
  3-broker cluster) for the pipeline's topics and Kafka's internal ones;
- ``sasl_scram``: the client listener is SASL_PLAINTEXT with SCRAM, ``sasl_ssl`` adds TLS with
  the stack's CA (a PEM key store, no JKS); brokers talk to each other as the super user
  ``admin`` (SCRAM), and to the controllers as ``controller`` with SASL/PLAIN (KRaft cannot use
  SCRAM there: the credentials live in the metadata the controllers serve). The
  StandardAuthorizer denies whatever no ACL allows; ``admin`` and ``controller`` are super
  users. ``admin``'s SCRAM credential is written at format time (through a Java argument file,
  so the password never appears in a process list); the process principals' credentials and
  ACLs are set through the admin API at every ``stack up`` (``stack/kafka_admin.py``).

State: ``<state_dir>/kafka-cluster/node-<id>/`` (config, data, log, pid) and
``layout.json`` (cluster id, broker count, security mode). A different layout on the same state
directory is refused rather than mixed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import time
import uuid
from importlib import resources
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from citystream.errors import ConfigError, StackError
from citystream.kafka_client import Principal, bootstrap_servers, client_kwargs
from citystream.settings import Settings
from stack.kafka import KafkaService, ensure_topics
from stack.kafka_acls import acl_bindings
from stack.process import Daemon, port_open, run
from stack.startup import wait_exec

logger = logging.getLogger(__name__)

SASL_LISTENER = "SASL"
CONTROLLER_LISTENER = "CONTROLLER"
CONTROLLER_USER = "controller"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_UNSAFE_IN_JAAS = set('"\\;,=[] \t\n')
AUDIT_LOGGERS = """
    <Logger name="kafka.authorizer.logger" level="INFO"/>
    <Logger name="org.apache.kafka.common.network.Selector" level="INFO"/>"""
"""Secured brokers log denied operations and failed authentications (never credentials)."""


def _jaas_value(name: str, value: str) -> str:
    if not value:
        msg = f"the Kafka {name} password is not set; run 'citystream stack up'"
        raise ConfigError(msg)
    if _UNSAFE_IN_JAAS & set(value):
        msg = f"the Kafka {name} password contains characters JAAS and SCRAM syntax cannot carry"
        raise ConfigError(msg)
    return value


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


class KafkaNode:
    """One broker+controller of the cluster: its ports, directory, config and process."""

    def __init__(self, settings: Settings, index: int, cluster_dir: Path) -> None:
        k = settings.kafka
        self.settings = settings
        self.index = index
        self.node_id = index + 1
        host, _, port = k.bootstrap.split(",", 1)[0].rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port) + index * k.port_step
        self.controller_port = k.controller_port + index * k.port_step
        self.dir = cluster_dir / f"node-{self.node_id}"
        self.data_dir = self.dir / "data"
        self.config_path = self.dir / "server.properties"
        libs = settings.stack.cache_dir / "kafka" / k.version / "libs"
        java = shutil.which("java") or "java"
        self.daemon = Daemon(
            "kafka",
            [
                java,
                f"-Xmx{k.heap}",
                f"-Xms{k.heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.xml'}",
                "-cp",
                f"{libs}/*",
                "kafka.Kafka",
                str(self.config_path),
            ],
            self.dir,
            marker=str(self.config_path),
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()


class NodeDaemons:
    """The nodes' processes seen as one service (``pid`` is the first running node's)."""

    def __init__(self, nodes: list[KafkaNode]) -> None:
        self.nodes = nodes

    def pid(self) -> int | None:
        return next((p for n in self.nodes if (p := n.daemon.pid()) is not None), None)

    def pids(self) -> dict[int, int | None]:
        return {n.node_id: n.daemon.pid() for n in self.nodes}

    def running(self) -> bool:
        return all(n.daemon.running() for n in self.nodes)

    def start(self) -> bool:
        started = [n.daemon.start() for n in self.nodes]  # every node, not just the first
        return any(started)

    def stop(self, timeout_s: float = 60.0) -> bool:
        # All at once: a broker stopping last cannot finish a controlled shutdown without a quorum.
        running = [n.daemon for n in self.nodes if n.daemon.running()]
        for d in running:
            d.signal(signal.SIGTERM)
        for d in running:
            d.stop(timeout_s)
        return bool(running)


class KafkaCluster:
    """The ``kafka`` service of the stack when it is a cluster or secured."""

    name = "kafka"

    def __init__(self, settings: Settings, extra_properties: dict[str, str] | None = None) -> None:
        """``extra_properties`` go into every node's ``server.properties`` last (drills, tuning)."""
        k = settings.kafka
        if k.replication_factor > k.brokers:
            msg = f"kafka.replication_factor {k.replication_factor} > kafka.brokers {k.brokers}"
            raise ConfigError(msg)
        if k.min_insync_replicas > k.replication_factor:
            msg = "kafka.min_insync_replicas is larger than kafka.replication_factor"
            raise ConfigError(msg)
        self.settings = settings
        self.dir = settings.stack.state_dir / "kafka-cluster"
        self.tls_dir = settings.stack.state_dir / "tls"
        self.nodes = [KafkaNode(settings, i, self.dir) for i in range(k.brokers)]
        self.daemon = NodeDaemons(self.nodes)
        self.extra_properties = dict(extra_properties or {})
        self._jars = KafkaService(settings)

    # -- install (the same jars as the single node) ----------------------------------------

    def installed(self) -> bool:
        return self._jars.installed()

    def install(self) -> None:
        self._jars.install()

    def version(self) -> str:
        return self._jars.version()

    @property
    def secure(self) -> bool:
        return self.settings.kafka.security != "plaintext"

    # -- configuration -------------------------------------------------------------------

    def properties(self, node: KafkaNode) -> dict[str, str]:
        """``server.properties`` of one node."""
        k = self.settings.kafka
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        listener = SASL_LISTENER if self.secure else "PLAINTEXT"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"{listener}://{node.address},{CONTROLLER_LISTENER}://{node.host}:{node.controller_port}",
            "advertised.listeners": f"{listener}://{node.address}",
            "controller.listener.names": CONTROLLER_LISTENER,
            "inter.broker.listener.name": listener,
            "log.dirs": str(node.data_dir),
            "num.partitions": str(k.partitions),
            "default.replication.factor": str(k.replication_factor),
            "min.insync.replicas": str(k.min_insync_replicas),
            "offsets.topic.replication.factor": str(k.replication_factor),
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": str(k.replication_factor),
            "transaction.state.log.min.isr": str(k.min_insync_replicas),
            "share.coordinator.state.topic.replication.factor": str(k.replication_factor),
            "share.coordinator.state.topic.min.isr": str(k.min_insync_replicas),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false" if self.secure else "true",
            "unclean.leader.election.enable": "false",
            "log.retention.check.interval.ms": "60000",
            "log.segment.bytes": str(256 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "message.max.bytes": str(2 * 1024 * 1024),
        }
        if not self.secure:
            props["listener.security.protocol.map"] = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
            return props | self.extra_properties
        mech = k.sasl_mechanism
        admin = _jaas_value("admin", k.admin_password.get_secret_value())
        controller = _jaas_value("controller", k.controller_password.get_secret_value())
        protocol = "SASL_SSL" if k.security == "sasl_ssl" else "SASL_PLAINTEXT"
        props |= {
            "listener.security.protocol.map": (
                f"{SASL_LISTENER}:{protocol},{CONTROLLER_LISTENER}:SASL_PLAINTEXT"
            ),
            "sasl.enabled.mechanisms": mech,
            "sasl.mechanism.inter.broker.protocol": mech,
            f"listener.name.sasl.{mech.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{Principal.ADMIN.value}" password="{admin}";'
            ),
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{CONTROLLER_USER}" password="{controller}" '
                f'user_{CONTROLLER_USER}="{controller}";'
            ),
            "authorizer.class.name": AUTHORIZER,
            "super.users": f"User:{Principal.ADMIN.value};User:{CONTROLLER_USER}",
            "allow.everyone.if.no.acl.found": "false",
            "connections.max.reauth.ms": str(3600 * 1000),
        }
        if k.security == "sasl_ssl":
            props |= {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.dir / "broker.pem"),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.tls_dir / "ca.crt"),
                "ssl.client.auth": "none",
                "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
                "ssl.endpoint.identification.algorithm": "https",
            }
        return props | self.extra_properties

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if self.settings.kafka.security == "sasl_ssl":
            self._write_keystore()
        log_cfg = (resources.files("stack") / "kafka" / "log4j2.xml").read_text()
        if self.secure:
            log_cfg = log_cfg.replace("<Loggers>", "<Loggers>" + AUDIT_LOGGERS, 1)
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            body = "".join(f"{key}={value}\n" for key, value in self.properties(node).items())
            _write_private(
                node.config_path, "# Generated by citystream stack; edits are overwritten.\n" + body
            )
            (node.dir / "log4j2.xml").write_text(log_cfg)

    def _write_keystore(self) -> None:
        """The brokers' PEM key store: the server key, then its certificate and the CA's."""
        tls = self.tls_dir
        missing = [p for p in ("server.key", "server.crt", "ca.crt") if not (tls / p).is_file()]
        if missing:
            msg = f"TLS files missing in {tls}: {', '.join(missing)} (stack.tls.ensure_ca creates them)"
            raise StackError(msg)
        pem = (
            (tls / "server.key").read_text() + (tls / "server.crt").read_text() + (tls / "ca.crt").read_text()
        )
        _write_private(self.dir / "broker.pem", pem)

    # -- storage -------------------------------------------------------------------------

    def _layout(self) -> dict[str, object]:
        k = self.settings.kafka
        return {"brokers": k.brokers, "security": k.security, "mechanism": k.sasl_mechanism}

    def cluster_id(self) -> str:
        """The cluster id every node is formatted with (made once, kept in ``layout.json``)."""
        path = self.dir / "layout.json"
        if path.exists():
            saved = json.loads(path.read_text())
            layout = {key: saved.get(key) for key in self._layout()}
            if layout != self._layout():
                msg = (
                    f"{self.dir} holds a Kafka cluster formatted as {layout}, not {self._layout()}; "
                    "use another stack.state_dir or remove that directory"
                )
                raise StackError(msg)
            return str(saved["cluster_id"])
        cluster_id = "-"
        while cluster_id.startswith("-"):  # the storage tool would read it as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self._layout(), "cluster_id": cluster_id}) + "\n")
        return cluster_id

    def format(self) -> None:
        """Format each node's storage that is not formatted yet (same cluster id for all)."""
        cluster_id = self.cluster_id()
        for node in self.nodes:
            if node.formatted():
                continue
            args = [
                "-cp",
                f"{self._jars.libs_dir}/*",
                f"-Dlog4j2.configurationFile={node.dir / 'log4j2.xml'}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(node.config_path),
            ]
            if self.secure:
                k = self.settings.kafka
                password = _jaas_value("admin", k.admin_password.get_secret_value())
                args += [
                    "--add-scram",
                    f"{k.sasl_mechanism}=[name={Principal.ADMIN.value},password={password}]",
                ]
            # A Java argument file keeps the admin password out of the process list and logs.
            argfile = node.dir / "format.args"
            _write_private(argfile, "\n".join(args) + "\n")
            try:
                run(
                    [shutil.which("java") or "java", f"@{argfile}"],
                    what=f"formatting Kafka node {node.node_id}",
                )
            finally:
                argfile.unlink(missing_ok=True)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> bool:
        self.format()
        started = self.daemon.start()
        for node in self.nodes:
            wait_exec(node.daemon)
        self.wait_healthy()
        return started

    def wait_healthy(self) -> None:
        """Wait until every node runs and is registered; raise with the log of a node that died."""
        deadline = time.monotonic() + self.settings.stack.start_timeout_s
        while time.monotonic() < deadline:
            if self.healthy():
                return
            for node in self.nodes:
                if not node.daemon.running():
                    msg = f"kafka node {node.node_id} exited; last log lines:\n{node.daemon.log_tail()}"
                    raise StackError(msg)
            time.sleep(0.5)
        tails = "\n".join(f"node {n.node_id}:\n{n.daemon.log_tail(10)}" for n in self.nodes)
        msg = f"kafka cluster not ready after {self.settings.stack.start_timeout_s:.0f} s:\n{tails}"
        raise StackError(msg)

    def healthy(self) -> bool:
        if not (self.daemon.running() and all(port_open(n.host, n.port) for n in self.nodes)):
            return False
        try:
            brokers = asyncio.run(self._registered_brokers())
        except (TimeoutError, KafkaError, OSError):
            return False
        return brokers == len(self.nodes)

    async def _registered_brokers(self) -> int:
        admin = AIOKafkaAdminClient(request_timeout_ms=5000, **client_kwargs(self.settings, Principal.ADMIN))
        try:
            await asyncio.wait_for(admin.start(), 10)
            cluster = await asyncio.wait_for(admin.describe_cluster(), 10)
            return len(cluster.get("brokers") or [])
        finally:
            await admin.close()

    def port(self) -> int:
        return self.nodes[0].port

    def bootstrap(self) -> str:
        return bootstrap_servers(self.settings.kafka)

    def create_topics(self) -> list[str]:
        """Create missing topics; when secured, also set the principals' credentials and ACLs."""
        created = asyncio.run(ensure_topics(self.settings))
        if self.secure:
            from stack.kafka_admin import apply_security

            asyncio.run(apply_security(self.settings, acl_bindings(self.settings)))
        return created

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (fault injection)."""
        self.node(node_id).daemon.kill()


def kafka_service(settings: Settings) -> KafkaService | KafkaCluster:
    """The single plaintext node of the default stack, or a cluster / secured broker."""
    k = settings.kafka
    if k.brokers == 1 and k.security == "plaintext":
        return KafkaService(settings)
    return KafkaCluster(settings)
