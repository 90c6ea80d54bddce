"""Flux building blocks, Grafana-style interpolation and the panel shape checks (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from citystream.geo import DISTRICTS
from dashboards import catalogue, flux, probe
from dashboards.interpolate import go_duration, interpolate, substitute, variables_used

START = datetime(2025, 11, 25, 9, 0, tzinfo=UTC)
STOP = datetime(2025, 11, 25, 10, 0, tzinfo=UTC)


def test_district_table_has_every_district_with_its_centroid_and_name() -> None:
    en, ko = flux.district_table("en"), flux.district_table("ko")
    for d in DISTRICTS:
        assert f'district: "{d.id}", name: "{d.name_en}", lat: {d.lat!r}, lon: {d.lon!r}' in en
        assert f'name: "{d.name_ko}"' in ko
    assert en.count("district:") == 25


def test_pm25_levels_follow_the_korean_categories() -> None:
    assert flux.pm25_level("v") == (
        "if v <= 15.0 then 0 else if v <= 35.0 then 1 else if v <= 75.0 then 2 else 3"
    )


def test_string_literals_are_escaped() -> None:
    assert flux.string('a"b\\c${d}') == '"a\\"b\\\\c\\${d}"'


def test_variables_used_and_substituted_like_grafana() -> None:
    text = 'from(bucket: "${bucket_raw}") $district [[metric]] ${device:raw} '
    text += "${__field.labels.series} $__interval"
    assert variables_used(text) == {"bucket_raw", "district", "metric", "device"}
    out = substitute(text, {"bucket_raw": "b", "district": "mapo", "metric": "pm25", "device": "d1"})
    assert out == 'from(bucket: "b") mapo pm25 d1 ${__field.labels.series} $__interval'
    with pytest.raises(KeyError):
        substitute("$nowhere", {})


@pytest.mark.parametrize(
    ("seconds", "text"), [(10, "10s"), (60, "1m0s"), (90, "1m30s"), (3600, "1h0m0s"), (3725, "1h2m5s")]
)
def test_window_period_is_a_go_duration(seconds: int, text: str) -> None:
    assert go_duration(seconds) == text


def test_flux_macros_are_replaced() -> None:
    q = "range(start: v.timeRangeStart, stop: v.timeRangeStop) every: v.windowPeriod"
    assert interpolate(q, {}, start=START, stop=STOP, window_s=60) == (
        "range(start: 2025-11-25T09:00:00.000000Z, stop: 2025-11-25T10:00:00.000000Z) every: 1m0s"
    )


def test_every_dashboard_query_is_found_with_its_expected_shape() -> None:
    found = [
        q
        for file, d in catalogue.render_all("en", ("city", "city_agg")).items()
        for q in probe.panel_queries(file, d)
    ]
    kinds = {q.kind for q in found}
    assert kinds == {"timeseries", "stat", "table", "geomap", "barchart", "variable", "annotation"}
    (geomap,) = [q for q in found if q.kind == "geomap"]
    assert geomap.columns == ("lat", "lon", "category", "pm25", "name")
    unlabelled = [q.title for q in found if q.kind == "timeseries" and q.labels != ("series",)]
    assert unlabelled == ["Readings per second", "Readings per minute"]  # one series, a fixed name


# -- shapes ---------------------------------------------------------------------------------------


def _q(kind: str, columns: tuple[str, ...] = (), labels: tuple[str, ...] = ()) -> probe.PanelQuery:
    return probe.PanelQuery("x.json", "panel 1", "t", kind, "q", columns, labels)


def _row(**values: Any) -> dict[str, Any]:
    return {"result": "_result", "table": 0, **values}


def test_timeseries_shape() -> None:
    good = [[_row(_time=START, _value=1.5, series="a"), _row(_time=STOP, _value=None, series="a")]]
    assert probe.check_shape(_q("timeseries", labels=("series",)), good).ok
    no_time = [[_row(_value=1.0, series="a")]]
    assert not probe.check_shape(_q("timeseries"), no_time).ok
    mixed_label = [[_row(_time=START, _value=1.0, series="a"), _row(_time=STOP, _value=2.0, series="b")]]
    assert not probe.check_shape(_q("timeseries", labels=("series",)), mixed_label).ok
    text_values = [[_row(_time=START, _value="x")]]
    assert not probe.check_shape(_q("timeseries"), text_values).ok


def test_stat_needs_one_row_with_a_number_per_table() -> None:
    assert probe.check_shape(_q("stat"), [[_row(open=3, acknowledged=1)]]).numbers == [3.0, 1.0]
    assert not probe.check_shape(_q("stat"), [[_row(open=3), _row(open=4)]]).ok
    assert not probe.check_shape(_q("stat"), [[_row(name="x")]]).ok


def test_empty_results_are_a_problem() -> None:
    for kind in ("timeseries", "stat", "table", "geomap", "barchart", "variable", "annotation"):
        assert probe.check_shape(_q(kind), []).problems == ["no rows"]


def test_table_geomap_barchart_variable_annotation_shapes() -> None:
    assert probe.check_shape(_q("table", ("a", "b")), [[_row(a=1, b="x")]]).ok
    assert "missing columns ['b']" in probe.check_shape(_q("table", ("a", "b")), [[_row(a=1)]]).problems[0]
    cols = ("lat", "lon", "category", "pm25", "name")
    good = [[_row(lat=37.5, lon=127.0, category=1, pm25=20.0, name="Mapo-gu")]]
    assert probe.check_shape(_q("geomap", cols), good).ok
    bad = [[_row(lat=None, lon=127.0, category=1, pm25=20.0, name="Mapo-gu")]]
    assert not probe.check_shape(_q("geomap", cols), bad).ok
    assert probe.check_shape(_q("barchart", ("rule",)), [[_row(rule="zscore", raised=3)]]).ok
    assert not probe.check_shape(_q("barchart", ("rule",)), [[_row(rule="zscore")]]).ok
    assert probe.check_shape(_q("variable"), [[_row(_value="aq-1")]]).ok
    assert not probe.check_shape(_q("variable"), [[_row(_value=3)]]).ok
    assert probe.check_shape(_q("annotation"), [[_row(_time=START, text="peer raised", tags="a,b")]]).ok
    assert not probe.check_shape(_q("annotation"), [[_row(_time=START)]]).ok


def test_program_imports_each_package_it_calls_once() -> None:
    body = 'import "join"\n\nx = array.from(rows: [{a: 1}])\n'
    body += "join.left(left: x, right: x)\n  |> map(fn: (r) => ({v: r.date}))"
    script = flux.program(body)
    assert script.startswith('import "array"\nimport "join"\n\nx = array.from')
    assert script.count("import") == 2
    assert flux.program(script) == script
    assert flux.program("from(bucket: b)") == "from(bucket: b)"


def test_every_generated_query_is_a_complete_program() -> None:
    for file, dashboard in catalogue.render_all("en", ("city", "city_agg")).items():
        for q in probe.panel_queries(file, dashboard):
            assert q.query == flux.program(q.query), f"{file} {q.ref}: imports are not complete"
            assert "date.sub" not in q.query or 'import "date"' in q.query
