"""Provisioning files, compose mounts, the generated files on disk and the CLI around them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from citystream.settings import InfluxSettings
from cli.main import main
from dashboards import catalogue, deploy
from dashboards.panels import DATASOURCE_UID, LANGUAGES
from dashboards.push import datasource_payload


def test_provisioning_files_are_consistent() -> None:
    assert deploy.provisioning_problems() == []
    (ds,) = deploy.datasources()
    assert ds["uid"] == DATASOURCE_UID
    assert ds["secureJsonData"]["token"] == "${INFLUX_DASHBOARD_TOKEN}"
    assert deploy.env_variables(deploy.DATASOURCES_FILE.read_text()) == {
        "INFLUX_URL",
        "INFLUX_ORG",
        "INFLUX_DASHBOARD_TOKEN",
    }


def test_provisioning_matches_the_compose_mounts() -> None:
    assert deploy.COMPOSE_FILE.is_file()
    assert deploy.compose_problems() == []


def _compose_with(tmp_path: Path, edit: str) -> Path:
    data = yaml.safe_load(deploy.COMPOSE_FILE.read_text())
    grafana = data["services"]["grafana"]
    if edit == "mount":
        grafana["volumes"] = [
            v.replace(":/etc/grafana/provisioning", ":/etc/grafana/other") for v in grafana["volumes"]
        ]
    elif edit == "env":
        grafana["environment"].pop("INFLUX_ORG")
    folder = tmp_path / "compose"
    folder.mkdir()
    path = folder / "docker-compose.yml"
    # Relative mounts resolve from the compose folder: keep them pointing at this repository.
    text = yaml.safe_dump(data).replace("../dashboards/", f"{deploy.PACKAGE_DIR}/")
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("edit", "message"), [("mount", "at /etc/grafana/provisioning"), ("env", "does not set INFLUX_ORG")]
)
def test_compose_check_finds_a_wrong_mount_or_a_missing_variable(
    tmp_path: Path, edit: str, message: str
) -> None:
    problems = deploy.compose_problems(_compose_with(tmp_path, edit))
    assert any(message in p for p in problems), problems


def test_generated_files_are_current() -> None:
    i = InfluxSettings()
    for lang in LANGUAGES:
        for name, dashboard in catalogue.render_all(lang, (i.bucket_raw, i.bucket_agg)).items():
            on_disk = json.loads((deploy.GENERATED_DIR / lang / name).read_text())
            assert on_disk == dashboard, f"{lang}/{name} is stale: run citystream dashboards build"


def test_provider_path_selects_a_language_folder() -> None:
    (provider,) = deploy.load_yaml(deploy.PROVIDERS_FILE)["providers"]
    path = provider["options"]["path"]
    for lang in LANGUAGES:
        folder = deploy.expand(path, {"CITYSTREAM_LANGUAGE": lang})
        assert folder == f"{deploy.GRAFANA_DASHBOARDS}/{lang}"
        assert (deploy.GENERATED_DIR / lang / "city.json").is_file()
    # Without the variable Grafana reads the whole folder: both languages, whose uids differ.
    assert deploy.expand(path, {}) == f"{deploy.GRAFANA_DASHBOARDS}/"


def test_datasource_payload_is_the_provisioned_one_filled_in() -> None:
    payload = datasource_payload("http://influxdb:8086", "citystream", "tok")
    assert payload["uid"] == DATASOURCE_UID
    assert payload["url"] == "http://influxdb:8086"
    assert payload["jsonData"]["organization"] == "citystream"
    assert payload["jsonData"]["version"] == "Flux"
    assert payload["secureJsonData"] == {"token": "tok"}


def test_build_then_check_and_check_finds_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "en").iterdir()) == sorted(s.file for s in catalogue.DASHBOARDS)
    assert main(["dashboards", "check", "--dir", str(tmp_path)]) == 0
    assert "ok: 10 dashboards" in capsys.readouterr().out
    city = tmp_path / "ko" / "city.json"
    data = json.loads(city.read_text())
    data["panels"][1]["gridPos"] = data["panels"][0]["gridPos"]
    city.write_text(json.dumps(data))
    assert main(["dashboards", "check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ko/city.json: panel 2 (구별 PM2.5) overlaps panel 1" in out
    assert "ko/city.json: out of date" in out
