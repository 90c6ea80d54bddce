"""Every dashboard query, run against the real InfluxDB on seeded data, returns what its panel needs.

The seed covers every measurement of ``docs/contracts.md``: the contract measurements are
encoded by the sinks' own line-protocol function, the ``pipeline`` points by the monitor's own
parsing of Prometheus expositions that follow its naming convention. One test case per panel,
query variable and annotation of every generated dashboard (both languages share queries up to
labels, so each language is run).
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from prometheus_client import CollectorRegistry, generate_latest

from citystream import geo
from citystream.model import (
    Aggregate,
    Alert,
    AlertEvent,
    AlertEventKind,
    AlertState,
    DeviceStatus,
    QualityScore,
    Reading,
    Severity,
)
from citystream.sensors import SENSOR_TYPES
from citystream.settings import Settings
from dashboards import alerts, city, flux, probe
from dashboards import district as district_board
from dashboards.interpolate import interpolate
from ingest.metrics import Stats, StatsCollector
from sinks import lineproto, monitor
from sinks.metrics import InfluxSinkMetrics
from tests import dashboard_queries
from tests.helpers import create_buckets

pytestmark = pytest.mark.integration

SEED = 20251125
MINUTES = 30
DISTRICTS = ("gangnam", "mapo", "jongno")
SENSOR_KINDS = (("air_quality", 2), ("noise", 1))
DEVICE = "aq-gangnam-001"
"""The device the device dashboard is looked at with (it has alerts)."""


@dataclass
class Seeded:
    raw: list[str]
    agg: list[str]
    now: datetime
    pm25: dict[str, float]
    """District -> mean PM2.5 of its newest minute."""
    scores: dict[str, float]
    """Device -> its newest quality score."""


def _device_ids() -> list[tuple[str, str, str]]:
    ids = []
    for district in DISTRICTS:
        for sensor_type, count in SENSOR_KINDS:
            prefix = "aq" if sensor_type == "air_quality" else sensor_type
            ids += [(f"{prefix}-{district}-{i:03d}", district, sensor_type) for i in range(1, count + 1)]
    return ids


def _value(rng: random.Random, metric: str, low: float, high: float, district: str) -> float:
    if metric == "pm25":
        # One district per category band, so the map shows several colours.
        centre = {"gangnam": 12.0, "mapo": 30.0, "jongno": 80.0}[district]
        return round(max(0.0, rng.gauss(centre, 3.0)), 2)
    return round(rng.uniform(low + (high - low) * 0.1, low + (high - low) * 0.3), 3)


def seed(now_ms: int, seed: int = SEED) -> Seeded:
    """Readings, status, aggregates, quality, alert events and pipeline points for 30 minutes."""
    rng = random.Random(seed)
    start = now_ms - now_ms % 60_000 - MINUTES * 60_000
    raw: list[str] = []
    agg: list[str] = []
    pm25: dict[str, float] = {}
    scores: dict[str, float] = {}
    windows: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    devices = _device_ids()
    for device_id, district, sensor_type in devices:
        metrics = SENSOR_TYPES[sensor_type].metrics
        for minute in range(MINUTES):
            ts = start + minute * 60_000 + rng.randrange(0, 59_000)
            values = {m.name: _value(rng, m.name, m.low, m.high, district) for m in metrics}
            reading = Reading(
                device_id=device_id,
                district=district,
                sensor_type=sensor_type,
                ts=ts,
                seq=minute + 1,
                values=values,
                received_ms=ts + rng.randrange(5, 80),
                skew_ms=rng.randrange(-40, 40),
            )
            raw.append(lineproto.line(reading))
            window = ts - ts % 60_000
            for metric, value in values.items():
                windows[(district, sensor_type, metric, window)].append(value)
            agg.append(
                lineproto.line(
                    QualityScore(
                        device_id=device_id,
                        district=district,
                        sensor_type=sensor_type,
                        window_start=window,
                        completeness=1.0,
                        timeliness=round(rng.uniform(0.8, 1.0), 3),
                        plausibility=1.0,
                        flatline=1.0,
                        noise=round(rng.uniform(0.7, 1.0), 3),
                        score=(score := round(rng.uniform(0.75, 0.95), 3)),
                    )
                )
            )
            scores[device_id] = score
        online = device_id != "noise-jongno-001"
        raw.append(
            lineproto.line(
                DeviceStatus(
                    device_id=device_id,
                    district=district,
                    sensor_type=sensor_type,
                    online=online,
                    ts_ms=start + 1_000,
                )
            )
        )
    for (district, sensor_type, metric, window), window_values in sorted(windows.items()):
        ordered = sorted(window_values)
        agg.append(
            lineproto.line(
                Aggregate(
                    district=district,
                    sensor_type=sensor_type,
                    metric=metric,
                    window_start=window,
                    window_end=window + 60_000,
                    count=len(window_values),
                    mean=(mean := statistics.fmean(window_values)),
                    min=ordered[0],
                    max=ordered[-1],
                    p95=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
                    emitted_ms=window + 65_000,
                )
            )
        )
        if metric == "pm25":
            pm25[district] = mean  # windows are sorted, so the newest one wins
    agg += [lineproto.line(e) for e in _alert_events(start)]
    agg += [p.to_line_protocol() for p in _pipeline_points(start, rng)]
    return Seeded(raw, agg, datetime.fromtimestamp(now_ms / 1000, UTC), pm25, scores)


def _alert(rule: str, severity: Severity, scope: str, device_id: str | None, raised_ms: int) -> Alert:
    """An open alert; ``scope`` is ``district/sensor_type/metric``."""
    district, sensor_type, metric = scope.split("/")
    subject = device_id or f"{district}/{sensor_type}"
    return Alert(
        key=f"{rule}:{metric}:{subject}",
        rule=rule,
        subject=subject,
        severity=severity,
        state=AlertState.OPEN,
        detector=rule,
        detector_version="1",
        district=district,
        sensor_type=sensor_type,
        metric=metric,
        device_id=device_id,
        value=88.0,
        threshold=75.0 if rule == "threshold" else None,
        score=4.2,
        reason=f"{rule} seeded",
        raised_ms=raised_ms,
        updated_ms=raised_ms,
    )


def _alert_events(start: int) -> list[AlertEvent]:
    """Open alerts of every severity (one acknowledged, one silenced) and one cleared alert."""
    minute = 60_000
    district_alert = _alert("threshold", Severity.CRITICAL, "jongno/air_quality/pm25", None, start)
    acked = _alert("zscore", Severity.WARNING, "mapo/air_quality/pm25", "aq-mapo-001", start)
    silenced = _alert("flatline", Severity.INFO, "jongno/noise/laeq", "noise-jongno-001", start)
    device_alert = _alert("peer", Severity.WARNING, "gangnam/air_quality/pm25", DEVICE, start)
    cleared = _alert("silent", Severity.WARNING, "gangnam/air_quality/pm25", "aq-gangnam-002", start)
    events = []
    plan: list[tuple[Alert, int, AlertEventKind, dict[str, Any]]] = [
        (district_alert, 5, AlertEventKind.RAISED, {}),
        (district_alert, 12, AlertEventKind.UPDATED, {"value": 95.0}),
        (acked, 3, AlertEventKind.RAISED, {}),
        (acked, 8, AlertEventKind.ACKNOWLEDGED, {"state": AlertState.ACKNOWLEDGED, "acknowledged_by": "op"}),
        (silenced, 10, AlertEventKind.RAISED, {"silenced": True}),
        (device_alert, 15, AlertEventKind.RAISED, {}),
        (device_alert, 18, AlertEventKind.UPDATED, {"value": 91.0}),
        (cleared, 2, AlertEventKind.RAISED, {}),
        (cleared, 20, AlertEventKind.CLEARED, {"state": AlertState.CLEARED}),
    ]
    for n, (alert, at, kind, changes) in enumerate(plan):
        ts = start + at * minute
        fields = {"updated_ms": ts, **changes}
        if kind == AlertEventKind.CLEARED:
            fields["cleared_ms"] = ts
        events.append(AlertEvent(event_id=f"e{n}", kind=kind, ts_ms=ts, alert=_replace(alert, fields)))
    return events


def _replace(alert: Alert, changes: dict[str, Any]) -> Alert:
    import msgspec

    return msgspec.structs.replace(alert, **changes)


def _pipeline_points(start: int, rng: random.Random) -> list[Any]:
    """What the monitor writes after scraping the bridge's and the InfluxDB sink's own metrics."""
    stats = Stats()
    gauges = {"in_flight": 0.0}
    ingest_registry = CollectorRegistry()
    ingest_registry.register(StatsCollector(stats, lambda: dict(gauges)))
    sink_registry = CollectorRegistry()
    sink = InfluxSinkMetrics(sink_registry)
    rates = monitor.Rates()
    points = []
    for minute in range(MINUTES):
        n = rng.randrange(200, 400)
        stats.received += n
        stats.produced[0] += n - 2
        stats.produced[1] += 2
        stats.dead_letter("malformed", "aq-mapo-001")
        stats.dead_letter("unknown_device", None)
        gauges["in_flight"] = float(rng.randrange(1, 50))
        sink.points.labels("city").inc(n - 2)
        for _ in range(20):
            stats.produce_latency.observe(rng.uniform(1, 20))
            stats.device_latency.observe(rng.uniform(5, 100))
        sink.latency.observe_many("reading", [rng.uniform(0.05, 0.5) for _ in range(20)])
        t = (start + minute * 60_000) / 1000
        fields: dict[monitor.Series, dict[str, float]] = defaultdict(dict)
        for instance, registry in (("ingest", ingest_registry), ("sink-influx", sink_registry)):
            scrape = monitor.parse(generate_latest(registry).decode(), instance)
            for series, values in rates.update(scrape, t).items():
                fields[series].update(values)
            fields[monitor.Series(monitor.stage_of(instance), instance)].update(
                up=1.0, cpu_cores=0.3, rss_bytes=90e6
            )
        fields[monitor.Series("kafka", "sink-influx")] = {"lag": float(rng.randrange(1, 500))}
        fields[monitor.Series("kafka", "localhost")] = {
            "up": 1.0,
            "cpu_cores": rng.uniform(0.05, 0.4),
            "rss_bytes": 800e6,
        }
        points += monitor.to_points(fields, int(t * 1000))
    return points


# -- the dashboards' queries -------------------------------------------------------------------


ALL_QUERIES = dashboard_queries.all_queries()
QUERIES = dashboard_queries.cases(ALL_QUERIES)


@pytest.fixture(scope="module")
def seeded(stack_settings: Settings) -> Iterator[tuple[Settings, Seeded]]:
    """Per-module buckets (seeding once for all the cases) with the seeded data."""
    import uuid

    from tests.conftest import _delete_buckets, isolated

    s = isolated(stack_settings, uuid.uuid4().hex[:10])
    create_buckets(s)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    data = seed(now_ms)
    i = s.influx
    with InfluxDBClient(url=i.url, token=i.admin_token.get_secret_value(), org=i.org) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(bucket=i.bucket_raw, record=data.raw, write_precision="ms")
        write.write(bucket=i.bucket_agg, record=data.agg, write_precision="ms")
    yield s, data
    _delete_buckets(s)


def _values(s: Settings) -> dict[str, str]:
    return dashboard_queries.variables(
        s, lookback="1d", district="gangnam", sensor_type="air_quality", device=DEVICE, metric="pm25"
    )


@pytest.mark.parametrize("query", QUERIES)
def test_panel_query_returns_the_shape_its_panel_needs(
    seeded: tuple[Settings, Seeded], query: probe.PanelQuery
) -> None:
    # The seed has data for every panel, so every panel that shows numbers shows some not zero.
    s, data = seeded
    dashboard_queries.assert_fits_its_panel(
        s,
        query,
        _values(s),
        start=data.now - timedelta(hours=1),
        stop=data.now + timedelta(minutes=1),
        window_s=60,
    )


# -- what the panels show on the seeded data -----------------------------------------------------


def _rows(seeded: tuple[Settings, Seeded], query: str, **values: str) -> list[dict[str, Any]]:
    """All rows of one query (variables substituted) as plain dicts."""
    s, data = seeded
    result = dashboard_queries.tables(
        s,
        flux.program(query),
        {**_values(s), **values},
        start=data.now - timedelta(hours=1),
        stop=data.now + timedelta(minutes=1),
        window_s=60,
    )
    return dashboard_queries.rows(result)


def test_city_map_colours_every_district_by_its_newest_pm25(seeded: tuple[Settings, Seeded]) -> None:
    _, data = seeded
    rows = {r["district"]: r for r in _rows(seeded, city.pm25_by_district("ko"))}
    assert set(rows) == set(geo.BY_ID)
    expected_level = {"gangnam": 0, "mapo": 1, "jongno": 3}  # seeded around 12, 30 and 80 ug/m3
    for district, row in rows.items():
        d = geo.BY_ID[district]
        assert (row["name"], row["lat"], row["lon"]) == (d.name_ko, d.lat, d.lon)
        if district in data.pm25:
            assert row["pm25"] == pytest.approx(data.pm25[district])
            assert row["category"] == expected_level[district]
        else:
            assert row["pm25"] is None
            assert row["category"] == -1


def test_stats_count_the_seeded_state(seeded: tuple[Settings, Seeded]) -> None:
    (severity,) = _rows(seeded, city.open_alerts_by_severity())
    assert severity == {"critical": 1, "warning": 2, "info": 1}
    (devices,) = _rows(seeded, city.devices_online())
    assert devices == {"online": 8, "reporting": 9}
    (counts,) = _rows(seeded, alerts.open_counts())
    assert counts == {"open": 4, "acknowledged": 1, "silenced": 1}
    (in_district,) = _rows(seeded, district_board.open_alerts())
    assert in_district == {"open": 1, "acknowledged": 0}


def test_open_alerts_table_keeps_each_alerts_own_values(seeded: tuple[Settings, Seeded]) -> None:
    _, data = seeded
    start = data.now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES)
    rows = _rows(seeded, alerts.open_alerts())
    assert [r["alert_key"] for r in rows] == [
        "zscore:pm25:aq-mapo-001",
        "threshold:pm25:jongno/air_quality",
        "flatline:laeq:noise-jongno-001",
        f"peer:pm25:{DEVICE}",
    ]
    for row in rows:
        rule, metric, subject = row["alert_key"].split(":")
        assert (row["rule"], row["metric"]) == (rule, metric)
        assert row["device_id"] == (None if "/" in subject else subject)
        assert row["threshold"] == (75.0 if rule == "threshold" else None)
        assert row["acknowledged"] == (rule == "zscore")
        assert row["silenced"] == (rule == "flatline")
        assert row["age"] > 0
    raised = {r["rule"]: r["raised"] for r in rows}
    assert raised == {
        "zscore": start + timedelta(minutes=3),
        "threshold": start + timedelta(minutes=5),
        "flatline": start + timedelta(minutes=10),
        "peer": start + timedelta(minutes=15),
    }


def test_devices_table_and_noisy_rules(seeded: tuple[Settings, Seeded]) -> None:
    _, data = seeded
    rows = _rows(seeded, district_board.devices())
    assert [r["device_id"] for r in rows] == ["aq-gangnam-001", "aq-gangnam-002"]
    for row in rows:
        assert row["readings"] == MINUTES
        assert row["score"] == pytest.approx(data.scores[row["device_id"]])
    noisy = {r["rule"]: r["raised"] for r in _rows(seeded, alerts.noisy_rules())}
    assert noisy == {"threshold": 1, "zscore": 1, "flatline": 1, "peer": 1, "silent": 1}


def test_dashboard_token_reads_the_real_buckets(stack_settings: Settings) -> None:
    """The provisioned datasource's token can run a dashboard query on the stack's own buckets."""
    i = stack_settings.influx
    now = datetime.now(UTC)
    values = {
        "bucket_raw": i.bucket_raw,
        "bucket_agg": i.bucket_agg,
        "lookback": "1h",
        "district": "gangnam",
        "sensor_type": "air_quality",
    }
    with InfluxDBClient(url=i.url, token=i.dashboard_token.get_secret_value(), org=i.org) as client:
        for query in (city.devices_online(), alerts.open_counts()):
            text = interpolate(
                flux.program(query), values, start=now - timedelta(hours=1), stop=now, window_s=60
            )
            (row,) = [r for t in probe.values_of(client.query_api().query(text)) for r in t]
            assert all(isinstance(v, int) for k, v in row.items() if k not in probe.CLIENT_COLUMNS)


def test_every_query_runs_without_data(stack_settings: Settings) -> None:
    """Before any data arrives, no panel shows a query error (stats show zeros, the map 25 grey dots)."""
    import uuid

    from tests.conftest import _delete_buckets, isolated

    s = isolated(stack_settings, uuid.uuid4().hex[:10])
    create_buckets(s)
    i = s.influx
    now = datetime.now(UTC)
    try:
        with InfluxDBClient(url=i.url, token=i.admin_token.get_secret_value(), org=i.org) as client:
            api = client.query_api()
            for _, q in ALL_QUERIES:
                text = interpolate(q.query, _values(s), start=now - timedelta(hours=1), stop=now, window_s=60)
                rows = [dict(r) for t in probe.values_of(api.query(text)) for r in t]
                if q.kind == "geomap":
                    assert [r["category"] for r in rows] == [-1] * 25
                elif q.kind == "stat":
                    assert len(rows) <= 1
                    assert all(v == 0 for r in rows for k, v in r.items() if k not in probe.CLIENT_COLUMNS)
    finally:
        _delete_buckets(s)
