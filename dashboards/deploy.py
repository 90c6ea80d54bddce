"""Where the dashboards go: the generated files, the provisioning files and the compose mounts.

Compose (``compose/docker-compose.yml``, service ``grafana``) mounts

- ``dashboards/provisioning`` at ``/etc/grafana/provisioning`` (the InfluxDB datasource and
  the dashboard provider), and
- ``dashboards/generated`` at ``/var/lib/grafana/dashboards`` (one folder per language).

The provisioning files read the container's environment: ``INFLUX_URL``, ``INFLUX_ORG`` and
``INFLUX_DASHBOARD_TOKEN`` (the read-only token) for the datasource, and the optional
``CITYSTREAM_LANGUAGE`` (``en`` or ``ko``) for the dashboards; without it both languages load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dashboards.panels import DATASOURCE_TYPE, DATASOURCE_UID, LANGUAGES

PACKAGE_DIR = Path(__file__).resolve().parent
PROVISIONING_DIR = PACKAGE_DIR / "provisioning"
GENERATED_DIR = PACKAGE_DIR / "generated"
DATASOURCES_FILE = PROVISIONING_DIR / "datasources" / "citystream.yaml"
PROVIDERS_FILE = PROVISIONING_DIR / "dashboards" / "citystream.yaml"
COMPOSE_FILE = PACKAGE_DIR.parent / "compose" / "docker-compose.yml"
COMPOSE_SERVICE = "grafana"

GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
GRAFANA_DASHBOARDS = "/var/lib/grafana/dashboards"
LANGUAGE_VARIABLE = "CITYSTREAM_LANGUAGE"
OPTIONAL_VARIABLES = frozenset({LANGUAGE_VARIABLE})
"""Environment variables the provisioning may go without (both languages load then)."""
FOLDER_UID = "citystream"
FOLDER_TITLE = "CityStream"

ENV_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def env_variables(text: str) -> set[str]:
    """Environment variables a provisioning file refers to (Grafana's ``$X`` / ``${X}``)."""
    return {a or b for a, b in ENV_REFERENCE.findall(text.replace("$$", ""))}


def expand(text: str, env: Mapping[str, str]) -> str:
    """``text`` with ``$X`` / ``${X}`` replaced the way Grafana does (unset -> empty)."""
    return ENV_REFERENCE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise TypeError(f"{path}: not a YAML mapping")
    return data


def datasources(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The provisioned datasources (with ``env`` substituted when given)."""
    text = DATASOURCES_FILE.read_text()
    if env is not None:
        text = expand(text, env)
    data = yaml.safe_load(text)
    found: list[dict[str, Any]] = data.get("datasources") or []
    return found


def provisioned_uids() -> dict[str, str]:
    """Provisioned datasource uid -> plugin type."""
    return {d["uid"]: d["type"] for d in datasources()}


def provisioning_problems() -> list[str]:
    """What is wrong with the provisioning files themselves."""
    problems = []
    sources = datasources()
    ours = [d for d in sources if d.get("uid") == DATASOURCE_UID]
    if len(ours) != 1:
        problems.append(f"{DATASOURCES_FILE}: expected one datasource with uid {DATASOURCE_UID}")
    else:
        ds = ours[0]
        if ds.get("type") != DATASOURCE_TYPE:
            problems.append(f"{DATASOURCES_FILE}: datasource type is {ds.get('type')}, not {DATASOURCE_TYPE}")
        if (ds.get("jsonData") or {}).get("version") != "Flux":
            problems.append(f"{DATASOURCES_FILE}: the InfluxDB datasource must use Flux")
        token = (ds.get("secureJsonData") or {}).get("token", "")
        if not env_variables(str(token)):
            problems.append(f"{DATASOURCES_FILE}: the token must come from the environment, not the file")
    providers = load_yaml(PROVIDERS_FILE).get("providers") or []
    if len(providers) != 1:
        problems.append(f"{PROVIDERS_FILE}: expected one dashboard provider")
    else:
        path = str((providers[0].get("options") or {}).get("path", ""))
        if not path.startswith(GRAFANA_DASHBOARDS):
            problems.append(f"{PROVIDERS_FILE}: provider path {path} is not under {GRAFANA_DASHBOARDS}")
        for lang in LANGUAGES:
            folder = expand(path, {LANGUAGE_VARIABLE: lang})
            relative = folder.removeprefix(GRAFANA_DASHBOARDS).strip("/")
            if not (GENERATED_DIR / relative).is_dir():
                problems.append(
                    f"{PROVIDERS_FILE}: {folder} has no generated folder {GENERATED_DIR / relative}"
                )
    return problems


def _environment(service: Mapping[str, Any]) -> set[str]:
    env = service.get("environment") or {}
    names = set(env) if isinstance(env, dict) else {str(e).split("=", 1)[0] for e in env}
    entrypoint = service.get("entrypoint") or ""
    text = " ".join(entrypoint) if isinstance(entrypoint, list) else str(entrypoint)
    return names | set(re.findall(r"export\s+(\w+)=", text))


def compose_problems(compose_file: Path = COMPOSE_FILE) -> list[str]:
    """Whether compose mounts the provisioning and the dashboards where the files expect them,
    and gives Grafana every environment variable they use."""
    data = load_yaml(compose_file)
    service = (data.get("services") or {}).get(COMPOSE_SERVICE)
    if service is None:
        return [f"{compose_file}: no {COMPOSE_SERVICE} service"]
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        target = rest.split(":", 1)[0]
        if source.startswith((".", "/")):
            mounts[target] = (compose_file.parent / source).resolve()
    problems = []
    for target, expected in ((GRAFANA_PROVISIONING, PROVISIONING_DIR), (GRAFANA_DASHBOARDS, GENERATED_DIR)):
        if mounts.get(target) != expected:
            problems.append(f"{compose_file}: {COMPOSE_SERVICE} must mount {expected} at {target}")
    needed = env_variables(DATASOURCES_FILE.read_text()) | env_variables(PROVIDERS_FILE.read_text())
    missing = sorted(needed - _environment(service) - OPTIONAL_VARIABLES)
    if missing:
        problems.append(f"{compose_file}: {COMPOSE_SERVICE} does not set {', '.join(missing)}")
    return problems
