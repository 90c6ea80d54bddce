"""Structural checks of generated dashboards (what Grafana would otherwise show as broken panels).

- JSON sanity: a uid, a title, a schema version, panels and templating lists, every target
  with a ``refId`` and a non-empty query;
- unique panel ids; a valid grid: every panel inside the 24 columns, no two panels overlapping;
- every datasource reference resolves to a provisioned datasource (uid and type);
- every ``$variable`` used in a query, title, description or link is defined by the dashboard
  (Grafana's own ``$__...`` variables excepted);
- links between dashboards point at dashboards of the same set;
- the files on disk are what the code generates now (otherwise: ``citystream dashboards build``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dashboards.interpolate import variables_used
from dashboards.panels import GRAFANA_DATASOURCE, GRID_COLUMNS

Json = dict[str, Any]
BUILT_IN_DATASOURCES = {GRAFANA_DATASOURCE.uid: GRAFANA_DATASOURCE.type_val}
TEXT_KEYS = frozenset({"query", "title", "description", "url", "displayName", "text", "label"})


def _panels(dashboard: Json) -> Iterator[Json]:
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, text) of every string under ``node`` whose key is one Grafana interpolates."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, key)
    elif isinstance(node, str) and key in TEXT_KEYS:
        yield key, node


def check_dashboard(dashboard: Json, datasources: Mapping[str, str | None]) -> list[str]:
    """Problems of one dashboard; ``datasources`` maps provisioned uids to their types."""
    problems = []
    for key in ("uid", "title"):
        if not isinstance(dashboard.get(key), str) or not dashboard[key]:
            problems.append(f"no {key}")
    if not isinstance(dashboard.get("schemaVersion"), int):
        problems.append("no integer schemaVersion")
    if not isinstance(dashboard.get("panels"), list) or not dashboard["panels"]:
        problems.append("no panels")
        return problems
    templating = (dashboard.get("templating") or {}).get("list")
    if not isinstance(templating, list):
        problems.append("templating.list is not a list")
        templating = []
    return (
        problems
        + _ids_and_grid(dashboard)
        + _datasource_problems(dashboard, datasources)
        + _target_problems(dashboard)
        + _variable_problems(dashboard, templating)
    )


def _datasource_problems(dashboard: Json, datasources: Mapping[str, str | None]) -> list[str]:
    problems = []
    known: dict[str | None, str | None] = {**BUILT_IN_DATASOURCES}
    known.update(datasources)
    for where, ref in _datasource_refs(dashboard):
        uid, kind = ref.get("uid"), ref.get("type")
        if uid not in known:
            problems.append(f"{where}: datasource {uid!r} is not provisioned")
        elif kind != known[uid]:
            problems.append(f"{where}: datasource {uid} has type {kind!r}, provisioned as {known[uid]!r}")
    return problems


def _target_problems(dashboard: Json) -> list[str]:
    problems = []
    for panel in _panels(dashboard):
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"panel {panel.get('id')} ({panel.get('title')}): no query")
        for target in targets:
            if not target.get("refId") or not str(target.get("query", "")).strip():
                problems.append(f"panel {panel.get('id')}: a target without refId or query")
    return problems


def _variable_problems(dashboard: Json, templating: list[Json]) -> list[str]:
    problems = []
    defined = {v.get("name") for v in templating}
    if len(defined) != len(templating):
        problems.append("two variables share a name")
    nodes = {
        "panels": dashboard["panels"],
        "templating": templating,
        "annotations": (dashboard.get("annotations") or {}).get("list") or [],
        "dashboard": {"title": dashboard.get("title"), "links": dashboard.get("links") or []},
    }
    used: dict[str, set[str]] = {}
    for node_name, node in nodes.items():
        for key, text in _strings(node):
            for name in variables_used(text):
                used.setdefault(name, set()).add(f"{node_name}.{key}")
    for name in sorted(set(used) - defined):
        problems.append(f"variable ${name} is used ({', '.join(sorted(used[name]))}) but not defined")
    return problems


def _ids_and_grid(dashboard: Json) -> list[str]:
    problems = []
    seen: dict[int, str] = {}
    boxes: list[tuple[int, int, int, int, int]] = []
    for panel in _panels(dashboard):
        pid, title = panel.get("id"), panel.get("title", "")
        if not isinstance(pid, int):
            problems.append(f"panel {title!r} has no integer id")
        elif pid in seen:
            problems.append(f"panel id {pid} is used by {seen[pid]!r} and {title!r}")
        else:
            seen[pid] = title
        grid = panel.get("gridPos") or {}
        try:
            x, y, w, h = (int(grid[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            problems.append(f"panel {pid} ({title}): no complete gridPos")
            continue
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            problems.append(
                f"panel {pid} ({title}): gridPos {grid} is outside the {GRID_COLUMNS}-column grid"
            )
        for other, ox, oy, ow, oh in boxes:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                problems.append(f"panel {pid} ({title}) overlaps panel {other}")
        boxes.append((pid if isinstance(pid, int) else -1, x, y, w, h))
    return problems


def _datasource_refs(dashboard: Json) -> Iterator[tuple[str, Json]]:
    def ref(where: str, value: Any) -> Iterator[tuple[str, Json]]:
        if isinstance(value, dict):
            yield where, value
        elif value is not None:
            yield where, {"uid": value, "type": None}

    for panel in _panels(dashboard):
        yield from ref(f"panel {panel.get('id')}", panel.get("datasource"))
        for target in panel.get("targets") or []:
            yield from ref(f"panel {panel.get('id')} target {target.get('refId')}", target.get("datasource"))
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") == "query":
            yield from ref(f"variable {variable.get('name')}", variable.get("datasource"))
    for annotation in (dashboard.get("annotations") or {}).get("list") or []:
        yield from ref(f"annotation {annotation.get('name')}", annotation.get("datasource"))


def check_set(dashboards: Mapping[str, Json], datasources: Mapping[str, str | None]) -> list[str]:
    """Problems of a set of dashboards (one language): each one's, duplicate uids, dead links."""
    problems = []
    uids: dict[str, str] = {}
    for name, dash in dashboards.items():
        problems += [f"{name}: {p}" for p in check_dashboard(dash, datasources)]
        uid = dash.get("uid", "")
        if uid in uids:
            problems.append(f"{name}: uid {uid} is also used by {uids[uid]}")
        uids[uid] = name
    for name, dash in dashboards.items():
        for _, text in _strings(dash.get("panels") or []):
            for target in _dashboard_links(text):
                if target not in uids:
                    problems.append(f"{name}: link to /d/{target}, which is not in the set")
    return problems


def _dashboard_links(text: str) -> Iterator[str]:
    start = 0
    while (i := text.find("/d/", start)) >= 0:
        end = i + 3
        while end < len(text) and (text[end].isalnum() or text[end] in "-_"):
            end += 1
        yield text[i + 3 : end]
        start = end


def load_dir(directory: Path) -> dict[str, Json]:
    """The ``*.json`` dashboards of a folder (file name -> JSON)."""
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
