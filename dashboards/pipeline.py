"""Pipeline health, from the ``pipeline`` points the monitor writes (fields: ``sinks/monitor.py``).

Rates of several instances of one stage are added up; latencies of several instances are
combined with ``max`` (a sum of percentiles means nothing).
"""

from __future__ import annotations

from dashboards import flux
from dashboards.panels import Board, stat_panel, timeseries_panel

PIPELINE = 'r._measurement == "pipeline"'
NOT_GAUGES = ("up", "lag", "cpu_cores", "rss_bytes", "p50_ms", "p99_ms")


def _series(conditions: tuple[str, ...], label: str, combine: str = "sum") -> str:
    """One series per ``label``: per-instance window means, combined across instances."""
    return (
        f"{flux.source(flux.AGG)}\n"
        + flux.where(PIPELINE, *conditions)
        + "\n"
        + flux.windowed("mean")
        + "\n"
        + f"  |> map(fn: (r) => ({{_time: r._time, _value: float(v: r._value), series: {label}}}))\n"
        + flux.combine_by_time(combine)
    )


def messages_per_second() -> str:
    return _series(
        ("r._field =~ /_per_s$/", 'r._field != "count_per_s"', "not exists r.reason"),
        'r.stage + " " + strings.trimSuffix(v: r._field, suffix: "_per_s")',
    )


def dead_letters_per_second() -> str:
    return _series(
        ("exists r.reason", "r._field =~ /_per_s$/"),
        'r.stage + " " + r.reason',
    )


def consumer_lag() -> str:
    return _series(('r._field == "lag"',), "r.instance", combine="max")


def latency() -> str:
    return _series(
        ("exists r.hop", '(r._field == "p50_ms" or r._field == "p99_ms")'),
        'r.hop + " " + strings.trimSuffix(v: r._field, suffix: "_ms")',
        combine="max",
    )


def process(field: str) -> str:
    return _series((f"r._field == {flux.string(field)}",), 'r.stage + " (" + r.instance + ")"', combine="max")


def gauges() -> str:
    not_gauge = " and ".join(f"r._field != {flux.string(f)}" for f in NOT_GAUGES)
    return _series(
        ("not exists r.hop", "r._field !~ /_per_s$/", not_gauge),
        'r.stage + " " + r._field',
    )


def targets_up() -> str:
    latest = (
        f"{flux.source(flux.AGG)}\n"
        + flux.where(PIPELINE, 'r._field == "up"')
        + "\n"
        + flux.latest_per(["stage", "instance"])
    )
    return flux.counts_or_zero(latest, {"up": "r._value == 1", "down": "r._value == 0"})


def build(lang: str, board: Board) -> None:
    t = board.t
    board.constants()
    board.add(
        timeseries_panel(
            t("Messages per second per stage", "단계별 초당 메시지"),
            messages_per_second(),
            unit="cps",
            description=t(
                "Rates of the stages' counters citystream_<stage>_<what>_total, added up over instances.",
                "각 단계 카운터(citystream_<stage>_<what>_total)의 초당 변화율, 인스턴스 합계.",
            ),
        ),
        16,
        8,
    )
    board.add(
        stat_panel(
            t("Processes and services", "프로세스 및 서비스"),
            targets_up(),
            names={"up": t("up", "정상"), "down": t("down", "중단")},
            colors={"up": "green", "down": "red"},
        ),
        8,
        8,
    )
    board.add(
        timeseries_panel(
            t("Dead letters per second by reason", "사유별 초당 데드레터"),
            dead_letters_per_second(),
            unit="cps",
        ),
        12,
        8,
    )
    board.add(
        timeseries_panel(
            t("Kafka consumer lag", "Kafka 컨슈머 지연"),
            consumer_lag(),
            unit="short",
            description=t(
                "Messages behind the end of the log, per consumer group.",
                "컨슈머 그룹별로 로그 끝에서 뒤처진 메시지 수.",
            ),
        ),
        12,
        8,
    )
    board.add(
        timeseries_panel(
            t("Latency per hop (p50, p99)", "구간별 지연 (p50, p99)"),
            latency(),
            unit="ms",
            description=t(
                "Percentiles of the histograms citystream_<hop>_latency_seconds over each sampling interval.",
                "각 샘플링 구간에서 citystream_<hop>_latency_seconds 히스토그램의 백분위수.",
            ),
        ),
        12,
        8,
    )
    board.add(
        timeseries_panel(t("In flight and other gauges", "처리 중 및 기타 게이지"), gauges()),
        12,
        8,
    )
    board.add(
        timeseries_panel(t("CPU (cores busy)", "CPU (사용 코어)"), process("cpu_cores"), unit="none"),
        12,
        8,
    )
    board.add(
        timeseries_panel(t("Memory (resident)", "메모리 (상주)"), process("rss_bytes"), unit="bytes"),
        12,
        8,
    )
