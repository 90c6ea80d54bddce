"""Building blocks of the dashboards' Flux queries (the schema is ``docs/contracts.md``).

Queries never name a bucket: they use the dashboard constants ``${bucket_raw}`` and
``${bucket_agg}`` (so a test can point them at its own buckets) and Grafana's Flux macros
``v.timeRangeStart``, ``v.timeRangeStop`` and ``v.windowPeriod``, which Grafana replaces
textually before the query reaches InfluxDB (:func:`dashboards.interpolate.interpolate` does
the same outside Grafana).

Multi-series results carry one string column ``series`` in their group key; the panels
display ``${__field.labels.series}``, so what an operator reads is decided here, once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from citystream.geo import DISTRICTS

PACKAGES = {
    "array": "array",
    "date": "date",
    "debug": "internal/debug",
    "join": "join",
    "schema": "influxdata/influxdb/schema",
    "strings": "strings",
}
"""Flux packages the queries use, by the name they are called with."""
IMPORT_LINE = re.compile(r'^import "[^"]+"\n', re.MULTILINE)

RAW = '"${bucket_raw}"'
AGG = '"${bucket_agg}"'
RANGE = "range(start: v.timeRangeStart, stop: v.timeRangeStop)"
LOOKBACK_RANGE = "range(start: date.sub(d: ${lookback}, from: v.timeRangeStop), stop: v.timeRangeStop)"
"""State that outlives the time picker (open alerts, device status): ``lookback`` before its end."""
WINDOW_SECONDS = "(float(v: int(v: v.windowPeriod)) / 1000000000.0)"

PM25_CATEGORIES: tuple[tuple[float, int], ...] = ((15.0, 0), (35.0, 1), (75.0, 2))
"""Korean PM2.5 categories (upper bound inclusive, level): good, moderate, bad; above: very bad."""
NO_DATA_LEVEL = -1


def program(body: str) -> str:
    """A complete Flux script: ``body`` with the imports of the packages it calls (once, on top)."""
    body = IMPORT_LINE.sub("", body).lstrip("\n")
    used = [path for name, path in PACKAGES.items() if re.search(rf"(?<![\w.]){name}\.", body)]
    head = "".join(f'import "{path}"\n' for path in used)
    return f"{head}\n{body}" if head else body


def string(value: str) -> str:
    """A Flux string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def source(bucket: str, time_range: str = RANGE) -> str:
    return f"from(bucket: {bucket})\n  |> {time_range}"


def where(*conditions: str) -> str:
    """A filter step that keeps rows matching every condition."""
    return "  |> filter(fn: (r) => " + " and ".join(conditions) + ")"


def eq(column: str, value: str) -> str:
    """``r.column == value``; ``value`` is a Flux expression (quote literals with :func:`string`)."""
    return f"r.{column} == {value}"


def var(name: str) -> str:
    """A dashboard variable inside a Flux string literal."""
    return f'"${{{name}}}"'


def latest_per(columns: Sequence[str]) -> str:
    """Steps that keep the newest row of each ``columns`` group (series merged first)."""
    cols = ", ".join(string(c) for c in columns)
    return f'  |> group(columns: [{cols}])\n  |> sort(columns: ["_time"])\n  |> last()'


def relabel(label: str, *, value: str = "float(v: r._value)") -> str:
    """A step that reduces rows to ``_time``, ``_value`` and the ``series`` label."""
    return f"  |> map(fn: (r) => ({{_time: r._time, _value: {value}, series: {label}}}))"


def as_series(label: str, *, value: str = "float(v: r._value)") -> str:
    """Steps that reduce rows to ``_time``, ``_value`` and the ``series`` label, grouped by it."""
    return relabel(label, value=value) + '\n  |> group(columns: ["series"])\n  |> sort(columns: ["_time"])'


def or_null(column: str, flux_type: str = "float") -> str:
    """``r.column`` or a typed null, so the column exists even when every row lacks it.

    Not ``""`` for a missing string: InfluxDB 2.7 misplaces the values of a string column
    built by ``if exists r.x then r.x else ""`` when the rows are sorted afterwards.
    """
    return f'if exists r.{column} then r.{column} else debug.null(type: "{flux_type}")'


def windowed(fn: str = "mean") -> str:
    return f"  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)"


def combine_by_time(fn: str = "sum") -> str:
    """Steps that combine the rows of one ``series`` label at each window time (``sum``, ``max``)."""
    return (
        '  |> group(columns: ["series", "_time"])\n'
        f"  |> {fn}()\n"
        '  |> group(columns: ["series"])\n'
        '  |> sort(columns: ["_time"])'
    )


def record(items: Iterable[tuple[str, str]]) -> str:
    """A Flux record literal from (key, Flux expression) pairs."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"


def counts_or_zero(stream: str, conditions: Mapping[str, str]) -> str:
    """One row with an int column per name: how many rows of ``stream`` meet its condition.

    ``conditions`` maps a column name to a Flux condition on ``r``. The row is there (with
    zeros) even when ``stream`` is empty, so a stat panel shows 0 rather than "No data".
    """
    zero = record((n, "0") for n in conditions)
    # int(v: bool), not "if ... then 1 else 0": InfluxDB 2.7's vectorised map returns no rows
    # for a record whose values are all constants of conditionals.
    ones = record((n, f"int(v: {cond})") for n, cond in conditions.items())
    total = record((n, f"accumulator.{n} + r.{n}") for n in conditions)
    return (
        f"rows = {stream}\n"
        "  |> group()\n"
        f"  |> map(fn: (r) => ({ones}))\n\n"
        f"union(tables: [array.from(rows: [{zero}]), rows])\n"
        "  |> group()\n"
        f"  |> reduce(identity: {zero}, fn: (r, accumulator) => ({total}))"
    )


PLACEHOLDER = '"-"'
"""Key of a placeholder row: no district, device or alert key can be ``-``."""


def never_empty(name: str, placeholder: str) -> str:
    """``name`` plus one placeholder row, so ``join`` gets a table even without data.

    InfluxDB 2.7's ``join`` package fails ("cannot join on an empty table") when a side has no
    rows; drop the placeholder after the join (its key is :data:`PLACEHOLDER`).
    """
    return f"union(tables: [{name}, array.from(rows: [{placeholder}])]) |> group()"


def district_table(language: str) -> str:
    """``array.from`` of Seoul's districts: id, display name, centroid."""
    rows = ",\n  ".join(
        record(
            (
                ("district", string(d.id)),
                ("name", string(d.name_ko if language == "ko" else d.name_en)),
                ("lat", repr(d.lat)),
                ("lon", repr(d.lon)),
            )
        )
        for d in DISTRICTS
    )
    return f"array.from(rows: [\n  {rows},\n])"


def pm25_level(value: str) -> str:
    """The Korean PM2.5 category level (0 good .. 3 very bad) of a Flux float expression."""
    expr = "3"
    for bound, level in reversed(PM25_CATEGORIES):
        expr = f"if {value} <= {bound} then {level} else {expr}"
    return expr
