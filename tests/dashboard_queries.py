"""Every query of the generated dashboards, run on the real InfluxDB and checked against its panel.

Shared by the dashboard query tests: the enumeration of panel queries, query variables and
annotations (one pytest case each), the values the dashboards' variables take, and running a
query the way Grafana sends it (variables and time macros substituted) with the operator token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest
from _pytest.mark import ParameterSet
from influxdb_client.client.influxdb_client import InfluxDBClient

from citystream.settings import Settings
from dashboards import catalogue, probe
from dashboards.interpolate import interpolate
from dashboards.panels import LANGUAGES, Lang

NUMERIC_KINDS = frozenset({"stat", "timeseries", "geomap", "barchart"})
"""Panels that show numbers: on data, a query that silently matches nothing shows zeros."""


def all_queries(languages: Iterable[Lang] = LANGUAGES) -> list[tuple[Lang, probe.PanelQuery]]:
    """Every panel query, query variable and annotation of every dashboard, per language."""
    return [
        (lang, q)
        for lang in languages
        for file, dashboard in catalogue.render_all(lang, ("city", "city_agg")).items()
        for q in probe.panel_queries(file, dashboard)
    ]


def cases(queries: Iterable[tuple[Lang, probe.PanelQuery]]) -> list[ParameterSet]:
    """One pytest parameter per query, named ``lang:dashboard:ref``."""
    return [pytest.param(q, id=f"{lang}:{q.file.removesuffix('.json')}:{q.ref}") for lang, q in queries]


def variables(
    s: Settings, *, lookback: str, district: str, sensor_type: str, device: str, metric: str
) -> dict[str, str]:
    """Values for every dashboard variable, on the buckets of ``s``."""
    return {
        "bucket_raw": s.influx.bucket_raw,
        "bucket_agg": s.influx.bucket_agg,
        "lookback": lookback,
        "district": district,
        "sensor_type": sensor_type,
        "device": device,
        "metric": metric,
    }


def tables(
    s: Settings, query: str, values: Mapping[str, str], *, start: datetime, stop: datetime, window_s: int
) -> list[list[probe.Row]]:
    """The result of a dashboard query (variables substituted), as rows per table."""
    flux = interpolate(query, values, start=start, stop=stop, window_s=window_s)
    i = s.influx
    with InfluxDBClient(
        url=i.url, token=i.admin_token.get_secret_value(), org=i.org, timeout=30_000
    ) as client:
        return probe.values_of(client.query_api().query(flux))


def rows(result: Sequence[Sequence[probe.Row]]) -> list[dict[str, Any]]:
    """All rows of all tables as plain dicts, without the columns the client adds."""
    return [
        {k: v for k, v in row.items() if k not in probe.CLIENT_COLUMNS} for table in result for row in table
    ]


def assert_fits_its_panel(
    s: Settings,
    query: probe.PanelQuery,
    values: Mapping[str, str],
    *,
    start: datetime,
    stop: datetime,
    window_s: int,
) -> list[list[probe.Row]]:
    """Run ``query`` and assert its result has the shape its panel needs, with numbers that are
    not all zero where the panel shows numbers. Returns the result."""
    result = tables(s, query.query, values, start=start, stop=stop, window_s=window_s)
    outcome = probe.check_shape(query, result)
    assert outcome.ok, f"{query.id}: {outcome.problems}\n{query.query}"
    if query.kind in NUMERIC_KINDS:
        assert any(n != 0 for n in outcome.numbers), f"{query.id}: only zeros {outcome.numbers[:10]}"
    return result
