"""District: aggregates of one district and sensor type over time, its devices and their quality."""

from __future__ import annotations

from dashboards import flux, shared
from dashboards.panels import Board, prop, stat_panel, table_panel, timeseries_panel
from dashboards.shared import SCOPE

AGG_1M = 'r._measurement == "agg_1m"'
NO_DEVICE_SEEN = f"{{device_id: {flux.PLACEHOLDER}, last_seen: time(v: 0), readings: 0}}"
NO_DEVICE_SCORE = f"{{device_id: {flux.PLACEHOLDER}, _value: 0.0}}"


def aggregate(field: str, *, label: str = "r.metric") -> str:
    """One series per metric: the ``field`` of the 1-minute aggregates, per window."""
    fn = {"mean": "mean", "max": "max", "p95": "max", "min": "min", "count": "sum"}[field]
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where(AGG_1M, *SCOPE, f"r._field == {flux.string(field)}")
        + "\n"
        + flux.windowed(fn)
        + "\n"
        + flux.as_series(label)
    )


def percentiles() -> str:
    """p95 and max per metric (two series per metric)."""
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where(AGG_1M, *SCOPE, '(r._field == "p95" or r._field == "max")')
        + "\n"
        + flux.windowed("max")
        + "\n"
        + flux.as_series('r.metric + " " + r._field')
    )


def readings_per_minute() -> str:
    """Readings per minute of the district and type (the aggregates' counts of one metric each)."""
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where(AGG_1M, *SCOPE, 'r._field == "count"')
        + "\n"
        + '  |> group(columns: ["_time"])\n'
        + "  |> max()\n"
        + "  |> group()\n"
        + '  |> sort(columns: ["_time"])\n'
        + flux.windowed("sum")
        + "\n"
        + flux.as_series('"readings"', value=f"float(v: r._value) / {flux.WINDOW_SECONDS} * 60.0")
    )


def devices() -> str:
    """Devices of the district and type: last reading, readings in range, latest quality score."""
    return (
        f"seen = {flux.source(flux.RAW)}\n"
        + flux.where('r._measurement == "reading"', *SCOPE, 'r._field == "seq"')
        + "\n"
        '  |> group(columns: ["device_id"])\n'
        "  |> reduce(\n"
        "    identity: {last_seen: time(v: 0), readings: 0},\n"
        "    fn: (r, accumulator) => ({\n"
        "      last_seen: if r._time > accumulator.last_seen then r._time else accumulator.last_seen,\n"
        "      readings: accumulator.readings + 1,\n"
        "    }),\n"
        "  )\n"
        "  |> group()\n\n"
        f"quality = {flux.source(flux.AGG)}\n"
        + flux.where('r._measurement == "quality"', *SCOPE, 'r._field == "score"')
        + "\n"
        + flux.latest_per(["device_id"])
        + "\n  |> group()\n"
        '  |> keep(columns: ["device_id", "_value"])\n\n'
        "join.left(\n"
        f"  left: {flux.never_empty('seen', NO_DEVICE_SEEN)},\n"
        f"  right: {flux.never_empty('quality', NO_DEVICE_SCORE)},\n"
        "  on: (l, r) => l.device_id == r.device_id,\n"
        "  as: (l, r) => ({device_id: l.device_id, last_seen: l.last_seen, readings: l.readings, "
        "score: r._value}),\n"
        ")\n"
        f"  |> filter(fn: (r) => r.device_id != {flux.PLACEHOLDER})\n"
        '  |> sort(columns: ["device_id"])'
    )


def quality_scores() -> str:
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where('r._measurement == "quality"', *SCOPE, 'r._field == "score"')
        + "\n"
        + flux.windowed("mean")
        + "\n"
        + flux.as_series("r.device_id")
    )


def open_alerts() -> str:
    latest = (
        f"{flux.source(flux.AGG, flux.LOOKBACK_RANGE)}\n"
        + flux.where('r._measurement == "alert"', *SCOPE, 'r._field == "open"')
        + "\n"
        + flux.latest_per(["alert_key"])
    )
    return flux.counts_or_zero(
        latest,
        {"open": "r._value == 1", "acknowledged": 'r._value == 1 and r.state == "acknowledged"'},
    )


def build(lang: str, board: Board) -> None:
    t = board.t
    board.constants()
    shared.scope_variables(board)
    board.add(
        timeseries_panel(
            t("Mean per metric (1-minute aggregates)", "지표별 평균 (1분 집계)"),
            aggregate("mean"),
            interval="1m",
        ),
        12,
        9,
    )
    board.add(
        timeseries_panel(t("p95 and max per metric", "지표별 p95 및 최댓값"), percentiles(), interval="1m"),
        12,
        9,
    )
    board.add(
        timeseries_panel(
            t("Readings per minute", "분당 측정값"),
            readings_per_minute(),
            interval="1m",
            display_name=t("readings/min", "측정값/분"),
            unit="short",
        ),
        8,
        7,
    )
    board.add(
        stat_panel(
            t("Open alerts in the district", "자치구 미해결 경고"),
            open_alerts(),
            names={"open": t("open", "미해결"), "acknowledged": t("acknowledged", "확인됨")},
            steps=((None, "green"), (1.0, "orange")),
        ),
        4,
        7,
    )
    board.add(
        timeseries_panel(
            t("Quality score per device", "장치별 품질 점수"),
            quality_scores(),
            unit="percentunit",
            interval="1m",
        )
        .min(0)
        .max(1),
        12,
        7,
    )
    devices_table = table_panel(
        t("Devices and their quality", "장치 및 품질"),
        devices(),
        {
            "device_id": t("Device", "장치"),
            "last_seen": t("Last reading", "마지막 측정"),
            "readings": t("Readings", "측정 수"),
            "score": t("Quality score", "품질 점수"),
        },
        units={"last_seen": "dateTimeFromNow", "score": "percentunit"},
    )
    devices_table.override_by_name(
        "device_id",
        [
            prop(
                "links",
                [
                    {
                        "title": t("Open the device", "장치 보기"),
                        "url": f"{board.link_to(shared.DEVICE)}?var-district=${{district}}"
                        "&var-sensor_type=${sensor_type}&var-device=${__value.raw}&${__url_time_range}",
                    }
                ],
            )
        ],
    )
    board.add(devices_table, 24, 10)
