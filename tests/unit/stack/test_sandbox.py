from __future__ import annotations

import socket
from pathlib import Path

from citystream.kafka_client import Principal, principal_password
from citystream.settings import Settings
from stack.sandbox import free_ports, sandbox_settings


def test_sandbox_has_its_own_state_ports_and_passwords(tmp_path: Path) -> None:
    base = Settings()
    s = sandbox_settings(base, tmp_path, brokers=3, security="sasl_ssl", mqtt_tls=True)
    k, m = s.kafka, s.mqtt
    assert s.stack.state_dir == tmp_path
    assert s.stack.cache_dir == base.stack.cache_dir  # the jars are shared, not downloaded again
    assert (k.brokers, k.replication_factor, k.min_insync_replicas, k.security) == (3, 3, 2, "sasl_ssl")
    base_port = int(k.bootstrap.rsplit(":", 1)[1])
    ports = [base_port + i * k.port_step for i in range(3)]
    ports += [k.controller_port + i * k.port_step for i in range(3)]
    ports += [m.port, m.tls_port]
    assert len(set(ports)) == len(ports)
    assert base.kafka.bootstrap.rsplit(":", 1)[1] not in {str(p) for p in ports}
    passwords = {principal_password(k, p) for p in Principal} | {m.ingest_password.get_secret_value()}
    assert len(passwords) == len(Principal) + 1
    assert all(len(p) >= 24 for p in passwords)


def test_free_ports_are_free() -> None:
    base = free_ports([0, 1, 10])
    for offset in (0, 1, 10):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", base + offset))
