"""Device: one device's raw readings against its district's aggregate, its quality and alerts."""

from __future__ import annotations

from dashboards import flux, shared
from dashboards.panels import Board, stat_panel, table_panel, timeseries_panel

DEVICE = flux.eq("device_id", flux.var("device"))
READING_OWN_FIELDS = ("seq", "bridge_latency_ms", "skew_ms")
"""Fields every reading has besides its metrics (``docs/contracts.md``)."""
QUALITY_PARTS = ("completeness", "timeliness", "plausibility", "flatline", "noise", "score")
ALERT_COLUMNS = ("event", "severity", "rule", "metric", "state", "value", "threshold", "score")


def device_values() -> str:
    """The ``device`` drop-down: devices with readings in the district and type."""
    return (
        "schema.tagValues(\n"
        f"  bucket: {flux.RAW},\n"
        '  tag: "device_id",\n'
        f'  predicate: (r) => r._measurement == "reading" and {" and ".join(shared.SCOPE)},\n'
        "  start: -${lookback},\n"
        ")"
    )


def metric_values() -> str:
    """The ``metric`` drop-down: the device's metric fields."""
    own = " and ".join(f"r._value != {flux.string(f)}" for f in READING_OWN_FIELDS)
    return (
        "schema.fieldKeys(\n"
        f"  bucket: {flux.RAW},\n"
        f'  predicate: (r) => r._measurement == "reading" and {DEVICE},\n'
        "  start: -${lookback},\n"
        ")\n"
        f"  |> filter(fn: (r) => {own})"
    )


def readings_vs_district(district_label: str) -> str:
    metric = flux.var("metric")
    return (
        f"device = {flux.source(flux.RAW)}\n"
        + flux.where('r._measurement == "reading"', DEVICE, f"r._field == {metric}")
        + "\n"
        + flux.windowed("mean")
        + "\n"
        + flux.relabel(flux.var("device"))
        + "\n\n"
        + f"district = {flux.source(flux.AGG)}\n"
        + flux.where(
            'r._measurement == "agg_1m"', *shared.SCOPE, f"r.metric == {metric}", 'r._field == "mean"'
        )
        + "\n"
        + flux.windowed("mean")
        + "\n"
        + flux.relabel(flux.string(district_label))
        + "\n\n"
        "union(tables: [device, district])\n"
        '  |> group(columns: ["series"])\n'
        '  |> sort(columns: ["_time"])'
    )


def quality_parts() -> str:
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where('r._measurement == "quality"', DEVICE)
        + "\n"
        + flux.windowed("mean")
        + "\n"
        + flux.as_series("r._field")
    )


def latest_quality() -> str:
    return (
        f"{flux.source(flux.AGG, flux.LOOKBACK_RANGE)}\n"
        + flux.where('r._measurement == "quality"', DEVICE, 'r._field == "score"')
        + "\n"
        + flux.latest_per(["device_id"])
        + "\n  |> group()\n"
        "  |> map(fn: (r) => ({score: r._value}))"
    )


def last_reading_age() -> str:
    return (
        f"{flux.source(flux.RAW, flux.LOOKBACK_RANGE)}\n"
        + flux.where('r._measurement == "reading"', DEVICE, 'r._field == "seq"')
        + "\n"
        + flux.latest_per(["device_id"])
        + "\n  |> group()\n"
        "  |> map(fn: (r) => ({age: float(v: int(v: now()) - int(v: r._time)) / 1000000000.0}))"
    )


def latency_and_skew() -> str:
    return (
        f"{flux.source(flux.RAW)}\n"
        + flux.where(
            'r._measurement == "reading"',
            DEVICE,
            '(r._field == "bridge_latency_ms" or r._field == "skew_ms")',
        )
        + "\n"
        + flux.windowed("mean")
        + "\n"
        + flux.as_series("r._field")
    )


def alert_events() -> str:
    keep = ", ".join(flux.string(c) for c in ("_time", *ALERT_COLUMNS))
    return (
        f"{flux.source(flux.AGG)}\n" + flux.where('r._measurement == "alert"', DEVICE) + "\n"
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        "  |> group()\n"
        f"  |> map(fn: (r) => ({{r with threshold: {flux.or_null('threshold')}}}))\n"
        f"  |> keep(columns: [{keep}])\n"
        '  |> sort(columns: ["_time"], desc: true)\n'
        "  |> limit(n: 200)"
    )


def alert_annotations() -> str:
    """Alert events of the device as annotations (``_time``, ``text``, ``tags``)."""
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where('r._measurement == "alert"', DEVICE, 'r._field == "value"')
        + "\n"
        "  |> map(fn: (r) => ({\n"
        "    _time: r._time,\n"
        '    text: r.rule + " " + r.event + ": " + r.metric + " = " + string(v: r._value),\n'
        '    tags: r.severity + "," + r.rule + "," + r.event,\n'
        "  }))\n"
        "  |> group()\n"
        '  |> sort(columns: ["_time"])'
    )


def build(lang: str, board: Board) -> None:
    t = board.t
    board.constants()
    shared.scope_variables(board)
    board.query_variable("device", t("Device", "장치"), device_values())
    board.query_variable("metric", t("Metric", "지표"), metric_values())
    board.annotation(t("Alerts of the device", "장치 경고"), alert_annotations())
    board.add(
        timeseries_panel(
            t("${metric}: ${device} against the district mean", "${metric}: ${device} 대 자치구 평균"),
            readings_vs_district(t("district mean", "자치구 평균")),
        ),
        18,
        10,
    )
    board.add(
        stat_panel(
            t("Quality score (latest)", "품질 점수 (최근)"),
            latest_quality(),
            unit="percentunit",
            steps=((None, "red"), (0.6, "orange"), (0.8, "green")),
        ),
        6,
        5,
    )
    board.add(
        stat_panel(
            t("Last reading", "마지막 측정"),
            last_reading_age(),
            unit="s",
            decimals=0,
            steps=((None, "green"), (300.0, "orange"), (900.0, "red")),
        ),
        6,
        5,
    )
    board.add(
        timeseries_panel(
            t("Quality parts", "품질 구성 요소"), quality_parts(), unit="percentunit", interval="1m"
        )
        .min(0)
        .max(1),
        12,
        8,
    )
    board.add(
        timeseries_panel(
            t("Bridge latency and clock skew", "브리지 지연 및 시계 오차"), latency_and_skew(), unit="ms"
        ),
        12,
        8,
    )
    board.add(
        table_panel(
            t("Alert events of the device", "장치 경고 이벤트"),
            alert_events(),
            {
                "_time": t("Time", "시각"),
                "event": t("Event", "이벤트"),
                "severity": t("Severity", "심각도"),
                "rule": t("Rule", "규칙"),
                "metric": t("Metric", "지표"),
                "state": t("State", "상태"),
                "value": t("Value", "값"),
                "threshold": t("Threshold", "임계값"),
                "score": t("Score", "점수"),
            },
        ),
        24,
        8,
    )
