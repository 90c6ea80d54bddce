"""The generated dashboards are structurally sound, and the checks that say so catch real faults."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from dashboards import catalogue, check, deploy
from dashboards.panels import DATASOURCE_UID, GRID_COLUMNS, LANGUAGES

Json = dict[str, Any]
BUCKETS = ("city", "city_agg")
RENDERED: dict[str, dict[str, Json]] = {lang: catalogue.render_all(lang, BUCKETS) for lang in LANGUAGES}
CASES = [pytest.param(lang, name, id=f"{lang}:{name}") for lang in LANGUAGES for name in RENDERED[lang]]
HANGUL = re.compile("[\uac00-\ud7a3]")


def _datasources() -> dict[str, str | None]:
    data = yaml.safe_load(deploy.DATASOURCES_FILE.read_text())
    return {d["uid"]: d["type"] for d in data["datasources"]}


@pytest.mark.parametrize(("lang", "name"), CASES)
def test_generated_dashboard_passes_every_check(lang: str, name: str) -> None:
    assert check.check_dashboard(RENDERED[lang][name], _datasources()) == []


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_language_is_a_consistent_set(lang: str) -> None:
    assert check.check_set(RENDERED[lang], _datasources()) == []


@pytest.mark.parametrize(("lang", "name"), CASES)
def test_panel_ids_are_unique_and_the_grid_is_valid(lang: str, name: str) -> None:
    panels = RENDERED[lang][name]["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0
        assert g["x"] + g["w"] <= GRID_COLUMNS
        assert g["h"] > 0
        covered = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not covered & cells, f"panel {p['id']} overlaps another"
        cells |= covered


@pytest.mark.parametrize(("lang", "name"), CASES)
def test_every_query_goes_to_the_provisioned_datasource(lang: str, name: str) -> None:
    dash = RENDERED[lang][name]
    assert DATASOURCE_UID in _datasources()
    refs = [p["datasource"] for p in dash["panels"]]
    refs += [t["datasource"] for p in dash["panels"] for t in p["targets"]]
    refs += [v["datasource"] for v in dash["templating"]["list"] if v["type"] == "query"]
    refs += [a["datasource"] for a in dash["annotations"]["list"] if not a.get("builtIn")]
    assert refs
    assert all(r == {"type": "influxdb", "uid": DATASOURCE_UID} for r in refs), refs


def test_languages_differ_only_in_words() -> None:
    for name, en in RENDERED["en"].items():
        ko = RENDERED["ko"][name]
        assert HANGUL.search(ko["title"])
        assert not HANGUL.search(en["title"])
        assert ko["uid"] == en["uid"] + "-ko"
        assert [p["type"] for p in ko["panels"]] == [p["type"] for p in en["panels"]]
        assert [p["gridPos"] for p in ko["panels"]] == [p["gridPos"] for p in en["panels"]]
        for p_en, p_ko in zip(en["panels"], ko["panels"], strict=True):
            assert p_en["title"] != p_ko["title"]
            assert HANGUL.search(p_ko["title"])


def test_the_issue_s_panels_are_there() -> None:
    types = {name: [p["type"] for p in d["panels"]] for name, d in RENDERED["en"].items()}
    assert "geomap" in types["city.json"]
    variables = {name: [v["name"] for v in d["templating"]["list"]] for name, d in RENDERED["en"].items()}
    assert {"district", "sensor_type"} <= set(variables["district.json"])
    assert {"device"} <= set(variables["device.json"])
    device_annotations = RENDERED["en"]["device.json"]["annotations"]["list"]
    assert any("alert" in a.get("target", {}).get("query", "") for a in device_annotations)
    titles = " ".join(p["title"] for p in RENDERED["en"]["pipeline.json"]["panels"]).lower()
    for words in ("per second", "dead letters", "lag", "p50", "cpu", "memory"):
        assert words in titles


# -- the checks catch what they claim to --------------------------------------------------------


def _broken(change: str) -> Json:
    dash = copy.deepcopy(RENDERED["en"]["district.json"])
    panels = dash["panels"]
    if change == "duplicate id":
        panels[1]["id"] = panels[0]["id"]
    elif change == "overlap":
        panels[1]["gridPos"] = dict(panels[0]["gridPos"])
    elif change == "outside the grid":
        panels[0]["gridPos"]["x"] = GRID_COLUMNS - 1
    elif change == "unknown datasource":
        panels[0]["targets"][0]["datasource"] = {"type": "influxdb", "uid": "nope"}
    elif change == "wrong datasource type":
        panels[0]["datasource"] = {"type": "prometheus", "uid": DATASOURCE_UID}
    elif change == "undefined variable":
        panels[0]["targets"][0]["query"] += ' |> filter(fn: (r) => r.x == "${nowhere}")'
    elif change == "undefined variable in a title":
        panels[0]["title"] = "by $street"
    elif change == "empty query":
        panels[0]["targets"][0]["query"] = "  "
    elif change == "no uid":
        del dash["uid"]
    return dash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("duplicate id", "is used by"),
        ("overlap", "overlaps"),
        ("outside the grid", "outside the 24-column grid"),
        ("unknown datasource", "'nope' is not provisioned"),
        ("wrong datasource type", "has type 'prometheus'"),
        ("undefined variable", "$nowhere is used"),
        ("undefined variable in a title", "$street is used"),
        ("empty query", "without refId or query"),
        ("no uid", "no uid"),
    ],
)
def test_check_finds(change: str, message: str) -> None:
    problems = check.check_dashboard(_broken(change), _datasources())
    assert any(message in p for p in problems), problems


def test_check_set_finds_dead_links_and_duplicate_uids() -> None:
    dashboards = copy.deepcopy(RENDERED["en"])
    del dashboards["device.json"]
    problems = check.check_set(dashboards, _datasources())
    assert any("link to /d/citystream-device" in p for p in problems), problems
    dashboards["copy.json"] = dashboards["city.json"]
    assert any("uid citystream-city is also used" in p for p in check.check_set(dashboards, _datasources()))


def test_grafana_variables_and_data_links_count_as_defined() -> None:
    dash = copy.deepcopy(RENDERED["en"]["city.json"])
    dash["panels"][0]["title"] = "${__field.labels.series} in $__interval"
    assert check.check_dashboard(dash, _datasources()) == []
