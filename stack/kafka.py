"""Apache Kafka 4.x in KRaft combined mode, run from Maven Central jars."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import uuid
from importlib import resources
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from citystream.errors import StackError
from citystream.kafka_client import Principal, client_kwargs
from citystream.settings import Settings
from citystream.topics import topic_specs
from stack.process import Daemon, port_open, run, wait_until
from stack.startup import wait_exec

logger = logging.getLogger(__name__)


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",", maxsplit=1)[0].rpartition(":")
    return host or "127.0.0.1", int(port)


class KafkaService:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        k = settings.kafka
        self.dir = settings.stack.state_dir / "kafka"
        self.data_dir = self.dir / "data"
        self.libs_dir = settings.stack.cache_dir / "kafka" / k.version / "libs"
        self.host, self.port_ = _host_port(k.bootstrap)
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
                f"{self.libs_dir}/*",
                "kafka.Kafka",
                str(self.dir / "server.properties"),
            ],
            self.dir,
            marker="kafka.Kafka",
        )

    # -- install -------------------------------------------------------------------------

    def installed(self) -> bool:
        return (self.libs_dir / ".complete").exists()

    def install(self) -> None:
        if self.installed():
            return
        if shutil.which("mvn") is None:
            msg = "Maven (mvn) is needed to fetch the Kafka jars from Maven Central"
            raise StackError(msg)
        pom = resources.files("stack") / "kafka" / "pom.xml"
        with resources.as_file(pom) as pom_path:
            tmp = self.libs_dir.with_name("libs.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            run(
                [
                    "mvn",
                    "-q",
                    "-B",
                    "-f",
                    str(pom_path),
                    "dependency:copy-dependencies",
                    f"-Dkafka.version={self.settings.kafka.version}",
                    f"-DoutputDirectory={tmp}",
                ],
                what=f"resolving Kafka {self.settings.kafka.version} jars with Maven",
            )
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        tmp.rename(self.libs_dir)
        (self.libs_dir / ".complete").write_text("ok\n")

    def version(self) -> str:
        jars = sorted(self.libs_dir.glob("kafka_2.13-*.jar"))
        return jars[0].stem.removeprefix("kafka_2.13-") if jars else "not installed"

    # -- configuration -------------------------------------------------------------------

    def write_config(self) -> None:
        k = self.settings.kafka
        self.dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{k.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port_},CONTROLLER://{self.host}:{k.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port_}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
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
            "auto.create.topics.enable": "true",
            "log.retention.check.interval.ms": "60000",
            "log.segment.bytes": str(256 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "message.max.bytes": str(2 * 1024 * 1024),
        }
        (self.dir / "server.properties").write_text(
            "# Generated by citystream stack; edits are overwritten.\n"
            + "".join(f"{key}={value}\n" for key, value in props.items())
        )
        log_cfg = resources.files("stack") / "kafka" / "log4j2.xml"
        (self.dir / "log4j2.xml").write_text(log_cfg.read_text())

    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def format(self) -> None:
        if self.formatted():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):  # the storage tool would read it as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        run(
            [
                shutil.which("java") or "java",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.xml'}",
                "-cp",
                f"{self.libs_dir}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.dir / "server.properties"),
            ],
            what="formatting Kafka storage",
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> bool:
        self.format()
        started = self.daemon.start()
        wait_exec(self.daemon)
        wait_until(self.healthy, self.settings.stack.start_timeout_s, "kafka", self.daemon)
        return started

    def wait_healthy(self) -> None:
        wait_until(self.healthy, self.settings.stack.start_timeout_s, "kafka", self.daemon)

    def healthy(self) -> bool:
        if not (self.daemon.running() and port_open(self.host, self.port_)):
            return False
        try:
            return asyncio.run(_cluster_ready(self.settings.kafka.bootstrap))
        except (TimeoutError, KafkaError, OSError):
            return False

    def port(self) -> int:
        return self.port_

    def create_topics(self) -> list[str]:
        """Create the pipeline's topics that do not exist yet; return the names created."""
        return asyncio.run(ensure_topics(self.settings))


async def _cluster_ready(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 10)
        return bool(cluster.get("brokers"))
    finally:
        await admin.close()


async def ensure_topics(settings: Settings) -> list[str]:
    k = settings.kafka
    admin = AIOKafkaAdminClient(request_timeout_ms=30000, **client_kwargs(settings, Principal.ADMIN))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=s.name,
                num_partitions=s.partitions,
                replication_factor=k.replication_factor,
                topic_configs=s.config,
            )
            for s in topic_specs(k)
            if s.name not in existing
        ]
        created: list[str] = []
        for topic in wanted:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


def libs_present(path: Path) -> bool:
    return any(path.glob("kafka_2.13-*.jar"))
