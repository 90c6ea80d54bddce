"""The compose deployment cannot run here (no Docker engine): check it structurally."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.config import env_example

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _env_example_keys() -> set[str]:
    keys = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.removeprefix("# ")
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            keys.add(line.split("=", 1)[0])
    return keys


def test_env_example_is_current() -> None:
    assert (ROOT / ".env.example").read_text() == env_example(), (
        "regenerate with: citystream config env-example > .env.example"
    )


def test_every_compose_variable_is_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)\}", COMPOSE.read_text()))
    assert used, "compose uses no variables?"
    assert used <= _env_example_keys(), used - _env_example_keys()


def test_services_and_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "kafka", "influxdb", "init", "mosquitto", "ingest", "jobs", "sink-influx", "sink-webhook",
        "monitor", "simulator", "grafana",
    }
    assert expected <= set(services)
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{name}: image {image} is not pinned"
        if not tag.startswith("${"):
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: {image} is not an exact version"


def test_healthchecks_and_dependency_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = cond["condition"]
            assert condition in ("service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck but {name} waits on it"
    for long_running in ("kafka", "influxdb", "mosquitto", "ingest", "sink-influx", "grafana"):
        assert "healthcheck" in services[long_running]


def test_ports_bind_to_loopback(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_volumes_exist(compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).resolve().exists(), f"{name}: {source} missing"
            else:
                assert source in named, f"{name}: volume {source} not declared"
