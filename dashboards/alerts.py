"""Alerts: open alerts with their age and acknowledgement, the history, the noisiest rules.

An alert's state is its newest event (``alert`` points carry ``event`` and ``state`` as tags
and ``open`` as a field), looked up over the ``lookback`` constant so an alert raised before
the time picker's range still shows while it is open.
"""

from __future__ import annotations

from dashboards import flux
from dashboards.panels import Board, barchart_panel, stat_panel, table_panel, timeseries_panel

ALERT = 'r._measurement == "alert"'
PIVOT = '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'


def _events(time_range: str) -> str:
    """Alert events as rows (fields pivoted to columns), grouped by alert key, oldest first."""
    return (
        f"{flux.source(flux.AGG, time_range)}\n"
        + flux.where(ALERT)
        + "\n"
        + PIVOT
        + "\n"
        + '  |> group(columns: ["alert_key"])\n'
        + '  |> sort(columns: ["_time"])'
    )


def open_alerts() -> str:
    """One row per open alert: when it was raised, its age and its newest state.

    The first and the newest event of each alert are put together and the first one's time
    is carried forward (``fill``), which needs no join.
    """
    return (
        f"events = {_events(flux.LOOKBACK_RANGE)}\n\n"
        "first = events\n"
        "  |> limit(n: 1)\n"
        "  |> map(fn: (r) => ({r with raised: r._time}))\n\n"
        "newest = events\n"
        "  |> tail(n: 1)\n"
        '  |> map(fn: (r) => ({r with raised: debug.null(type: "time")}))\n\n'
        "union(tables: [first, newest])\n"
        '  |> group(columns: ["alert_key"])\n'
        '  |> sort(columns: ["_time"])\n'
        '  |> fill(column: "raised", usePrevious: true)\n'
        "  |> tail(n: 1)\n"
        "  |> group()\n"
        "  |> filter(fn: (r) => r.open == 1)\n"
        "  |> map(fn: (r) => ({\n"
        "    raised: r.raised,\n"
        "    age: float(v: int(v: now()) - int(v: r.raised)) / 1000000000.0,\n"
        "    severity: r.severity,\n"
        "    rule: r.rule,\n"
        "    district: r.district,\n"
        f"    device_id: {flux.or_null('device_id', 'string')},\n"
        "    metric: r.metric,\n"
        "    state: r.state,\n"
        '    acknowledged: r.state == "acknowledged",\n'
        "    silenced: r.silenced == 1,\n"
        "    value: r.value,\n"
        f"    threshold: {flux.or_null('threshold')},\n"
        "    alert_key: r.alert_key,\n"
        "  }))\n"
        '  |> sort(columns: ["raised"])'
    )


def open_counts() -> str:
    latest = f"{_events(flux.LOOKBACK_RANGE)}\n  |> tail(n: 1)"
    return flux.counts_or_zero(
        latest,
        {
            "open": "r.open == 1",
            "acknowledged": 'r.open == 1 and r.state == "acknowledged"',
            "silenced": "r.open == 1 and r.silenced == 1",
        },
    )


def events_over_time() -> str:
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where(ALERT, 'r._field == "open"')
        + "\n"
        + '  |> group(columns: ["event"])\n'
        + '  |> sort(columns: ["_time"])\n'
        + flux.windowed("count")
        + "\n"
        + flux.as_series("r.event")
    )


def history() -> str:
    return (
        f"{flux.source(flux.AGG)}\n" + flux.where(ALERT) + "\n" + PIVOT + "\n"
        "  |> group()\n"
        "  |> map(fn: (r) => ({r with\n"
        f"    device_id: {flux.or_null('device_id', 'string')},\n"
        f"    threshold: {flux.or_null('threshold')},\n"
        "  }))\n"
        '  |> sort(columns: ["_time"], desc: true)\n'
        "  |> limit(n: 500)"
    )


def noisy_rules() -> str:
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where(ALERT, 'r._field == "open"', 'r.event == "raised"')
        + "\n"
        + '  |> group(columns: ["rule"])\n'
        + "  |> count()\n"
        + "  |> group()\n"
        + "  |> map(fn: (r) => ({rule: r.rule, raised: r._value}))\n"
        + '  |> sort(columns: ["raised"], desc: true)\n'
        + "  |> limit(n: 10)"
    )


def build(lang: str, board: Board) -> None:
    t = board.t
    board.constants()
    board.add(
        stat_panel(
            t("Open alerts", "미해결 경고"),
            open_counts(),
            names={
                "open": t("open", "미해결"),
                "acknowledged": t("acknowledged", "확인됨"),
                "silenced": t("silenced", "무음"),
            },
            colors={"open": "red", "acknowledged": "orange", "silenced": "blue"},
        ),
        8,
        6,
    )
    board.add(
        timeseries_panel(
            t("Alert events over time", "시간별 경고 이벤트"),
            events_over_time(),
            stacked=True,
        ),
        16,
        6,
    )
    board.add(
        table_panel(
            t("Open alerts", "미해결 경고 목록"),
            open_alerts(),
            {
                "raised": t("Raised", "발생"),
                "age": t("Age", "경과"),
                "severity": t("Severity", "심각도"),
                "rule": t("Rule", "규칙"),
                "district": t("District", "자치구"),
                "device_id": t("Device", "장치"),
                "metric": t("Metric", "지표"),
                "state": t("State", "상태"),
                "acknowledged": t("Acknowledged", "확인"),
                "silenced": t("Silenced", "무음"),
                "value": t("Value", "값"),
                "threshold": t("Threshold", "임계값"),
            },
            units={"raised": "dateTimeAsIso", "age": "s"},
        ),
        24,
        9,
    )
    board.add(
        table_panel(
            t("Alert history", "경고 이력"),
            history(),
            {
                "_time": t("Time", "시각"),
                "event": t("Event", "이벤트"),
                "severity": t("Severity", "심각도"),
                "rule": t("Rule", "규칙"),
                "district": t("District", "자치구"),
                "device_id": t("Device", "장치"),
                "metric": t("Metric", "지표"),
                "state": t("State", "상태"),
                "value": t("Value", "값"),
                "threshold": t("Threshold", "임계값"),
                "score": t("Score", "점수"),
            },
        ),
        16,
        10,
    )
    board.add(
        barchart_panel(t("Noisiest rules (raised)", "가장 잦은 규칙 (발생 수)"), noisy_rules(), "rule"),
        8,
        10,
    )
