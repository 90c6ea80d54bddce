"""``citystream stack up | down | status``: the local services as native processes."""

from __future__ import annotations

import logging
import time
from typing import NamedTuple, Protocol

from citystream.settings import Settings, reload_settings
from stack import secrets, tls
from stack.influx import InfluxService
from stack.influx_tokens import ensure_process_tokens
from stack.kafka import KafkaService
from stack.kafka_cluster import KafkaCluster, kafka_service
from stack.mosquitto import MosquittoService

logger = logging.getLogger(__name__)


class Service(Protocol):
    name: str

    def installed(self) -> bool: ...
    def install(self) -> None: ...
    def version(self) -> str: ...
    def healthy(self) -> bool: ...
    def port(self) -> int: ...


class ServiceStatus(NamedTuple):
    name: str
    version: str
    port: int
    pid: int | None
    healthy: bool


class Stack:
    """The three services, built from one settings object."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mosquitto = MosquittoService(settings)
        self.kafka = kafka_service(settings)
        self.influx = InfluxService(settings)

    @property
    def services(self) -> tuple[MosquittoService, KafkaService | KafkaCluster, InfluxService]:
        return (self.mosquitto, self.kafka, self.influx)

    def status(self) -> list[ServiceStatus]:
        return [
            ServiceStatus(s.name, s.version(), s.port(), s.daemon.pid(), s.healthy()) for s in self.services
        ]


def up(settings: Settings) -> tuple[Settings, list[str]]:
    """Install what is missing, start what is stopped, set up what is new.

    Idempotent: with everything running it only checks health and topics. Returns the
    (possibly reloaded) settings and a list of the changes it made.
    """
    changes: list[str] = []
    state = settings.stack.state_dir
    settings = _ensure_secrets(settings, changes)
    tls.ensure_ca(state / "tls")
    stack = Stack(settings)
    for service in stack.services:
        if not service.installed():
            t0 = time.monotonic()
            logger.info("installing %s ...", service.name)
            service.install()
            changes.append(f"installed {service.name} ({time.monotonic() - t0:.0f} s)")

    m = stack.mosquitto
    if not m.daemon.running():
        m.write_config()
        m.start()
        changes.append("started mosquitto")
    k = stack.kafka
    if not k.daemon.running():
        k.write_config()
        k.start()
        changes.append("started kafka")
    elif not k.healthy():
        k.wait_healthy()
    i = stack.influx
    if not i.daemon.running():
        i.start()
        changes.append("started influxdb")
    return _set_up_data(stack, settings, changes), changes


def _ensure_secrets(settings: Settings, changes: list[str]) -> Settings:
    """Generate the missing secrets; return the settings that include them."""
    state = settings.stack.state_dir
    if secrets.ensure_secrets(state):
        changes.append("generated secrets")
        settings = reload_settings()
    if settings.kafka.security != "plaintext" and secrets.ensure_secrets(state, secrets.KAFKA_GENERATED):
        changes.append("generated kafka passwords")
        settings = reload_settings()
    return settings


def _set_up_data(stack: Stack, settings: Settings, changes: list[str]) -> Settings:
    """Create the missing topics, buckets and tokens (running services); return the settings
    that include any new token."""
    state = settings.stack.state_dir
    created = stack.kafka.create_topics()
    if created:
        changes.append(f"created topics {', '.join(created)}")
    new_tokens = stack.influx.setup()
    if new_tokens:
        secrets.update_secrets(state, new_tokens)
        settings = reload_settings()
        changes.append("created influxdb tokens")
    process_tokens = ensure_process_tokens(settings)
    if process_tokens:
        secrets.update_secrets(state, process_tokens)
        settings = reload_settings()
        changes.append("created influxdb process tokens")
    return settings


def init_external(settings: Settings) -> tuple[Settings, list[str]]:
    """Set up services that run elsewhere (the compose deployment): secrets, Mosquitto's
    auth files, Kafka topics and InfluxDB buckets and tokens; starts nothing."""
    changes: list[str] = []
    settings = _ensure_secrets(settings, changes)
    stack = Stack(settings)
    if not stack.mosquitto.passwd_path.exists():
        stack.mosquitto.apply_registry(stack.mosquitto.load_devices(), reload=False)
        changes.append("wrote mosquitto auth files")
    return _set_up_data(stack, settings, changes), changes


def down(settings: Settings) -> list[str]:
    """Stop every service (data stays under the state directory)."""
    stopped = []
    stack = Stack(settings)
    # Producers and consumers first would be nicer; the services have no order dependency
    # for stopping, but Kafka takes longest, so stop it while the others wind down.
    for service in (stack.influx, stack.kafka, stack.mosquitto):
        if service.daemon.stop(timeout_s=60 if service.name == "kafka" else 20):
            stopped.append(service.name)
    return stopped
