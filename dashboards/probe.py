"""Run the dashboards' queries against InfluxDB and check the data has the shape each panel needs.

What a panel needs is read from its JSON, so the check follows the dashboards:

- ``timeseries``: every table has ``_time`` and numeric ``_value`` rows, and the label its
  display name uses (``${__field.labels.series}``);
- ``stat``: every table has exactly one row with at least one number;
- ``table``: rows with every column the ``organize`` transformation shows;
- ``geomap``: rows with numeric latitude and longitude and the colour, size and text fields;
- ``barchart``: rows with the x field and a number;
- query variables: rows with a string ``_value``; annotations: rows with ``_time`` and ``text``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dashboards.interpolate import interpolate

Json = dict[str, Any]
Row = Mapping[str, Any]
Table = Sequence[Row]

LABEL = re.compile(r"\$\{__field\.labels\.(\w+)\}")
CLIENT_COLUMNS = frozenset({"result", "table"})
"""Columns influxdb-client adds to every record."""


@dataclass(frozen=True)
class PanelQuery:
    """One query of a dashboard and what its panel needs from the result."""

    file: str
    ref: str
    """``panel 3``, ``variable device`` or ``annotation <name>``."""
    title: str
    kind: str
    query: str
    columns: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.file.removesuffix('.json')}: {self.ref} ({self.title})"


@dataclass
class Outcome:
    tables: int = 0
    rows: int = 0
    numbers: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def panel_queries(file: str, dashboard: Json) -> list[PanelQuery]:
    """Every query of a dashboard: panel targets, query variables and annotations."""
    found: list[PanelQuery] = []
    for panel in dashboard.get("panels", []):
        kind = panel.get("type", "")
        columns: tuple[str, ...] = ()
        if kind == "table":
            for t in panel.get("transformations", []):
                if t.get("id") == "organize":
                    columns = tuple(t["options"]["indexByName"])
        elif kind == "geomap":
            cols: list[str] = []
            for layer in panel["options"]["layers"]:
                loc = layer.get("location", {})
                cols += [loc.get("latitude", ""), loc.get("longitude", "")]
                style = layer.get("config", {}).get("style", {})
                cols += [style.get(k, {}).get("field", "") for k in ("color", "size", "text")]
            columns = tuple(c for c in cols if c)
        elif kind == "barchart":
            columns = (panel["options"]["xField"],)
        display = panel.get("fieldConfig", {}).get("defaults", {}).get("displayName", "")
        labels = tuple(LABEL.findall(display))
        for target in panel.get("targets", []):
            found.append(
                PanelQuery(
                    file,
                    f"panel {panel['id']}",
                    panel.get("title", ""),
                    kind,
                    target["query"],
                    columns,
                    labels,
                )
            )
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            found.append(
                PanelQuery(
                    file,
                    f"variable {variable['name']}",
                    variable.get("label", ""),
                    "variable",
                    variable["query"],
                )
            )
    for annotation in dashboard.get("annotations", {}).get("list", []):
        target = annotation.get("target") or {}
        if "query" in target:
            found.append(
                PanelQuery(
                    file,
                    f"annotation {annotation['name']}",
                    annotation["name"],
                    "annotation",
                    target["query"],
                )
            )
    return found


def check_shape(q: PanelQuery, tables: Sequence[Table]) -> Outcome:
    """Whether query results ``tables`` (rows of column -> value) fit the panel ``q``."""
    out = Outcome(tables=len(tables), rows=sum(len(t) for t in tables))
    problems = out.problems
    if out.rows == 0:
        problems.append("no rows")
        return out
    present = {c for t in tables for row in t for c in row} - CLIENT_COLUMNS
    missing = [c for c in q.columns if c not in present]
    if missing:
        problems.append(f"missing columns {missing} (has {sorted(present)})")
    checker = _CHECKERS.get(q.kind)
    if checker is None:
        problems.append(f"no shape check for {q.kind!r}")
    else:
        checker(q, tables, out)
    return out


def _timeseries(q: PanelQuery, tables: Sequence[Table], out: Outcome) -> None:
    for i, t in enumerate(tables):
        if not t:
            out.problems.append(f"table {i} is empty")
            continue
        if not all(isinstance(r.get("_time"), datetime) for r in t):
            out.problems.append(f"table {i}: rows without a _time")
        values = [r.get("_value") for r in t]
        if not all(v is None or _is_number(v) for v in values):
            out.problems.append(f"table {i}: non-numeric _value {values[:3]}")
        out.numbers += [float(v) for v in values if isinstance(v, int | float)]
        for label in q.labels:
            seen = {r.get(label) for r in t}
            if len(seen) != 1 or not isinstance(next(iter(seen)), str):
                out.problems.append(f"table {i}: label {label!r} is not one string per series: {seen}")
    if not out.numbers:
        out.problems.append("no numeric _value")


def _stat(q: PanelQuery, tables: Sequence[Table], out: Outcome) -> None:
    for i, t in enumerate(tables):
        if len(t) != 1:
            out.problems.append(f"table {i} has {len(t)} rows, a stat needs one value per table")
            continue
        numbers = [float(v) for k, v in t[0].items() if k not in CLIENT_COLUMNS and _is_number(v)]
        if not numbers:
            out.problems.append(f"table {i} has no number: {dict(t[0])}")
        out.numbers += numbers


def _rows(q: PanelQuery, tables: Sequence[Table], out: Outcome) -> None:
    for t in tables:
        for row in t:
            out.numbers += [float(v) for k, v in row.items() if k not in CLIENT_COLUMNS and _is_number(v)]


def _geomap(q: PanelQuery, tables: Sequence[Table], out: Outcome) -> None:
    lat, lon = q.columns[0], q.columns[1]
    rows = [r for t in tables for r in t]
    if not all(_is_number(r.get(lat)) and _is_number(r.get(lon)) for r in rows):
        out.problems.append(f"rows without numeric {lat}/{lon}")
    color = q.columns[2] if len(q.columns) > 2 else None
    if color and not any(_is_number(r.get(color)) for r in rows):
        out.problems.append(f"no row has a numeric {color}")
    _rows(q, tables, out)


def _barchart(q: PanelQuery, tables: Sequence[Table], out: Outcome) -> None:
    x = q.columns[0]
    for row in (r for t in tables for r in t):
        if not any(_is_number(v) for k, v in row.items() if k not in CLIENT_COLUMNS and k != x):
            out.problems.append(f"row without a number: {dict(row)}")
            break
    _rows(q, tables, out)


def _variable(q: PanelQuery, tables: Sequence[Table], out: Outcome) -> None:
    values = [r.get("_value") for t in tables for r in t]
    if not all(isinstance(v, str) and v for v in values):
        out.problems.append(f"variable values are not strings: {values[:5]}")


def _annotation(q: PanelQuery, tables: Sequence[Table], out: Outcome) -> None:
    for row in (r for t in tables for r in t):
        if not isinstance(row.get("_time"), datetime) or not isinstance(row.get("text"), str):
            out.problems.append(f"annotation row without _time and text: {dict(row)}")
            break


_CHECKERS = {
    "timeseries": _timeseries,
    "stat": _stat,
    "table": _rows,
    "geomap": _geomap,
    "barchart": _barchart,
    "variable": _variable,
    "annotation": _annotation,
}


def values_of(tables: Iterable[Any]) -> list[list[Row]]:
    """influxdb-client ``FluxTable`` objects as plain rows."""
    return [[record.values for record in table.records] for table in tables]


def run(
    query_api: Any,
    q: PanelQuery,
    values: Mapping[str, str],
    *,
    start: datetime,
    stop: datetime,
    window_s: int,
) -> Outcome:
    """Run ``q`` (variables substituted) with an influxdb-client ``QueryApi`` and check it."""
    flux = interpolate(q.query, values, start=start, stop=stop, window_s=window_s)
    return check_shape(q, values_of(query_api.query(flux)))


def resolve_values(
    query_api: Any,
    dashboard: Json,
    given: Mapping[str, str],
    *,
    start: datetime,
    stop: datetime,
    window_s: int,
) -> dict[str, str]:
    """Values for every variable of a dashboard, in order: ``given``, else the constant or the
    selected option, else the first value the variable's own query returns."""
    values: dict[str, str] = {}
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        name = variable["name"]
        if name in given:
            values[name] = given[name]
        elif variable.get("type") == "constant":
            values[name] = str(variable.get("query", ""))
        elif variable.get("type") == "query":
            flux = interpolate(variable["query"], values, start=start, stop=stop, window_s=window_s)
            found = [r.get("_value") for t in values_of(query_api.query(flux)) for r in t]
            values[name] = str(found[0]) if found else ""
        else:
            current = (variable.get("current") or {}).get("value")
            values[name] = str(current or "")
    return values
