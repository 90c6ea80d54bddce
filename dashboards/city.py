"""City overview: Seoul's districts by air quality, open alerts, throughput, devices online."""

from __future__ import annotations

from citystream.model import Severity
from dashboards import flux
from dashboards.panels import (
    Board,
    Markers,
    geomap_panel,
    prop,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    value_text,
)

CATEGORY_COLORS = {-1: "#8e8e8e", 0: "#32a1ff", 1: "#00c73c", 2: "#fda60e", 3: "#ff5959"}
"""AirKorea's colours: no data, good (blue), moderate (green), bad (orange), very bad (red)."""
SEVERITY_COLORS = {Severity.CRITICAL: "red", Severity.WARNING: "orange", Severity.INFO: "blue"}


def pm25_by_district(lang: str) -> str:
    """Every district with its centroid and latest 1-minute mean PM2.5 (null without data)."""
    level = flux.pm25_level("r._value")
    return (
        f"districts = {flux.district_table(lang)}\n\n"
        f"latest = {flux.source(flux.AGG)}\n"
        + flux.where(
            'r._measurement == "agg_1m"',
            'r.sensor_type == "air_quality"',
            'r.metric == "pm25"',
            'r._field == "mean"',
        )
        + "\n"
        + flux.latest_per(["district"])
        + "\n  |> group()\n"
        '  |> keep(columns: ["district", "_value"])\n\n'
        "join.left(\n"
        "  left: districts,\n"
        f"  right: {flux.never_empty('latest', f'{{district: {flux.PLACEHOLDER}, _value: 0.0}}')},\n"
        "  on: (l, r) => l.district == r.district,\n"
        "  as: (l, r) => ({district: l.district, name: l.name, lat: l.lat, lon: l.lon, pm25: r._value,\n"
        f"    category: if exists r._value then {level} else {flux.NO_DATA_LEVEL}}}),\n"
        ")\n"
        '  |> sort(columns: ["district"])'
    )


def open_alerts_by_severity() -> str:
    latest = (
        f"{flux.source(flux.AGG, flux.LOOKBACK_RANGE)}\n"
        + flux.where('r._measurement == "alert"', 'r._field == "open"')
        + "\n"
        + flux.latest_per(["alert_key"])
        + "\n  |> filter(fn: (r) => r._value == 1)"
    )
    return flux.counts_or_zero(latest, {str(s): f"r.severity == {flux.string(s)}" for s in SEVERITY_COLORS})


def readings_per_second() -> str:
    return (
        f"{flux.source(flux.RAW)}\n"
        + flux.where('r._measurement == "reading"', 'r._field == "seq"')
        + "\n  |> group()\n"
        + flux.windowed("count")
        + "\n"
        + flux.as_series('"readings"', value=f"float(v: r._value) / {flux.WINDOW_SECONDS}")
    )


def devices_online() -> str:
    status = (
        f"{flux.source(flux.RAW, flux.LOOKBACK_RANGE)}\n"
        + flux.where('r._measurement == "status"', 'r._field == "online"')
        + "\n"
        + flux.latest_per(["device_id"])
    )
    reporting = (
        f"{flux.source(flux.RAW, 'range(start: -5m, stop: v.timeRangeStop)')}\n"
        + flux.where('r._measurement == "reading"', 'r._field == "seq"')
        + "\n"
        + flux.latest_per(["device_id"])
        + '\n  |> set(key: "_field", value: "reporting")'
    )
    stream = f"union(tables: [{_indent(status)},\n  {_indent(reporting)}])"
    return flux.counts_or_zero(
        stream,
        {"online": 'r._field == "online" and r._value == 1', "reporting": 'r._field == "reporting"'},
    )


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")


def build(lang: str, board: Board) -> None:
    t = board.t
    board.constants()
    map_query = pm25_by_district(lang)
    category_names = {
        "-1": (t("no data", "자료 없음"), CATEGORY_COLORS[-1]),
        "0": (t("good", "좋음"), CATEGORY_COLORS[0]),
        "1": (t("moderate", "보통"), CATEGORY_COLORS[1]),
        "2": (t("bad", "나쁨"), CATEGORY_COLORS[2]),
        "3": (t("very bad", "매우나쁨"), CATEGORY_COLORS[3]),
    }
    category_props = [
        prop("mappings", [value_text(category_names)]),
        prop("color", {"mode": "thresholds"}),
        prop(
            "thresholds",
            thresholds(
                *((None if lvl == -1 else float(lvl), c) for lvl, c in CATEGORY_COLORS.items())
            ).build(),
        ),
    ]
    geomap = geomap_panel(
        t("Air quality by district (PM2.5, latest 1-minute mean)", "구별 대기질 (PM2.5, 최근 1분 평균)"),
        map_query,
        Markers(latitude="lat", longitude="lon", color="category", size="pm25", text="name"),
        description=t(
            "Korean PM2.5 categories: good <= 15, moderate <= 35, bad <= 75, very bad above (ug/m3).",
            "PM2.5 등급: 좋음 15 이하, 보통 35 이하, 나쁨 75 이하, 매우나쁨 그 이상 (ug/m3).",
        ),
    )
    geomap.override_by_name("category", category_props)
    geomap.override_by_name("pm25", [prop("unit", "conμgm3"), prop("decimals", 1)])
    board.add(geomap, 14, 16)

    districts = table_panel(
        t("Districts by PM2.5", "구별 PM2.5"),
        map_query,
        {"name": t("District", "자치구"), "pm25": "PM2.5", "category": t("Category", "등급")},
        sort_by="pm25",
        units={"pm25": "conμgm3"},
    )
    districts.override_by_name(
        "category", [*category_props, prop("custom.cellOptions", {"type": "color-background"})]
    )
    board.add(districts, 10, 16)

    board.add(
        stat_panel(
            t("Open alerts by severity", "심각도별 미해결 경고"),
            open_alerts_by_severity(),
            names={
                "critical": t("critical", "심각"),
                "warning": t("warning", "주의"),
                "info": t("info", "정보"),
            },
            colors={str(k): v for k, v in SEVERITY_COLORS.items()},
        ),
        8,
        6,
    )
    board.add(
        stat_panel(
            t("Devices", "장치"),
            devices_online(),
            names={"online": t("online", "온라인"), "reporting": t("reporting (5 min)", "보고 중 (5분)")},
            description=t(
                "Online: the device's last status message said online. Reporting: sent a reading in "
                "the last 5 minutes.",
                "온라인: 마지막 상태 메시지가 온라인. 보고 중: 최근 5분 안에 측정값을 보냄.",
            ),
        ),
        6,
        6,
    )
    board.add(
        timeseries_panel(
            t("Readings per second", "초당 측정값"),
            readings_per_second(),
            unit="cps",
            display_name=t("readings/s", "측정값/초"),
        ),
        10,
        6,
    )
