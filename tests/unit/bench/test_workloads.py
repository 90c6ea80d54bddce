"""Workload plans, flat-lag and knee finding on synthetic data, medians and ratios."""

from __future__ import annotations

import pytest

from bench import workloads
from bench.workloads import FULL, QUICK, backlog_growth, judge_step, knee, rate_between, spread, w1_summary

Series = list[tuple[float, float]]


def flows(rate: float, consumed: float, seconds: int, commit_every: int = 3) -> tuple[Series, Series]:
    """Inflow at ``rate`` and a consumer doing ``consumed`` msg/s that commits every few seconds."""
    inflow = [(float(t), rate * t) for t in range(seconds + 1)]
    done = [(float(t), consumed * (t - t % commit_every)) for t in range(seconds + 1)]
    return inflow, done


def test_a_consumer_that_keeps_up_does_not_fall_behind_despite_its_saw_tooth() -> None:
    inflow, done = flows(2000, 2000, 20)
    g = backlog_growth(inflow, done, 2, 19)
    assert g == pytest.approx(0, abs=1)
    assert workloads.is_flat(g, 2000)


def test_a_consumer_falling_behind() -> None:
    inflow, done = flows(2000, 1500, 20)
    g = backlog_growth(inflow, done, 2, 19)
    assert g == pytest.approx(500, rel=0.01)
    assert not workloads.is_flat(g, 2000)


def test_a_consumer_catching_up_is_flat() -> None:
    inflow, done = flows(1000, 1600, 20)
    assert workloads.is_flat(backlog_growth(inflow, done, 2, 19), 1000)


def test_a_stalled_consumer_falls_behind_by_the_whole_inflow() -> None:
    inflow = [(float(t), 1000.0 * t) for t in range(11)]
    done = [(float(t), 0.0) for t in range(11)]
    assert backlog_growth(inflow, done, 2, 10) == pytest.approx(1000)


def test_growth_needs_a_window() -> None:
    assert backlog_growth([(0.0, 0.0)], [(0.0, 0.0)], 0, 10) is None
    assert backlog_growth([(0.0, 0.0), (1.0, 0.0)], [(0.0, 0.0), (1.0, 0.0)], 0, 1) is None
    assert workloads.is_flat(None, 1000)


def test_judge_step_reasons() -> None:
    ok = judge_step(1000, 990, {"bridge": 0.0, "jobs": 10.0}, sent=10_000, received=10_000)
    assert ok.ok
    assert ok.reason == "ok"
    slow = judge_step(10_000, 6_000, {"bridge": 0.0}, sent=60_000, received=60_000)
    assert not slow.ok
    assert "load generator" in slow.reason
    behind = judge_step(1000, 1000, {"jobs": 400.0, "sink": 0.0}, sent=10_000, received=9_990)
    assert not behind.ok
    assert "jobs" in behind.reason
    assert "10 lost" in behind.reason
    assert behind.lost == 10


def test_knee_is_the_last_passing_step_before_the_first_failure() -> None:
    def step(rate: float, ok: bool) -> workloads.StepVerdict:
        return workloads.StepVerdict(rate, rate, {}, 0, 0, ok, "ok" if ok else "no")

    assert knee([step(1000, True), step(2500, True), step(5000, False), step(10000, True)]) == 2500
    assert knee([step(1000, False)]) is None
    assert knee([step(1000, True), step(2000, True)]) == 2000
    assert knee([]) is None


def test_rate_between_interpolates() -> None:
    series = [(0.0, 0.0), (1.0, 100.0), (2.0, 300.0), (3.0, 600.0)]
    assert rate_between(series, 1.0, 3.0) == 250.0
    assert rate_between(series, 0.5, 2.5) == pytest.approx((450 - 50) / 2)
    assert rate_between(series, 2.0, 2.0) == 0.0


def test_spread_and_ratio() -> None:
    assert spread([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3.0}
    assert spread([None]) is None
    assert workloads.ratio(2.0, 4.0) == 0.5
    assert workloads.ratio(2.0, 0.0) is None
    assert workloads.ratio(None, 1.0) is None


def test_plan_interleaves_w1_repeats_then_w2_w3_max() -> None:
    plan = workloads.plan(FULL, ("W1", "W2", "W3"), ("ours", "cpipe", "quix"), list(range(100)))
    names = [s.name for s in plan]
    assert names[:6] == ["W1-ours-r1", "W1-cpipe-r1", "W1-quix-r1", "W1-ours-r2", "W1-cpipe-r2", "W1-quix-r2"]
    assert names[9:] == ["W2-ours", "W3-ours", "max-ours", "max-cpipe", "max-quix"]
    w2 = plan[9]
    assert w2.rates == tuple(float(r) for r in FULL.w2_rates)
    assert w2.phases[0].interval_s == FULL.fleet / FULL.w2_rates[0]
    w3 = plan[10]
    assert w3.rates == (10_000.0, 50_000.0, 10_000.0)
    assert workloads.plan(QUICK, ("W2",), ("cpipe",), []) == []


def test_the_budget_estimates_fit_the_modes() -> None:
    """The planned segments of each mode fit its budget (each estimate is rough, their sum is not)."""
    for mode in (FULL, QUICK):
        segments = workloads.plan(mode, workloads.WORKLOADS, ("ours", "cpipe", "quix"), list(range(100)))
        total = sum(workloads.estimate_s(s, mode) for s in segments)
        assert total < mode.budget_s, (mode.name, total)


def test_w1_spikes_fall_inside_the_run_on_candidates() -> None:
    spec = workloads.w1(QUICK, "ours", 1, [5, 7, 9, 11])
    assert spec.spikes
    for s in spec.spikes:
        assert s.device in (5, 7, 9, 11)
        assert 0 < s.start_s < s.end_s <= QUICK.w1_s
    assert workloads.w1(QUICK, "ours", 1, []).spikes == ()


def test_hop_max_sends_the_configured_messages() -> None:
    spec = workloads.hop_max(QUICK, "cpipe")
    assert spec.flat_out
    phase = spec.phases[0]
    assert QUICK.fleet * phase.duration_s / phase.interval_s == pytest.approx(QUICK.max_messages)


def test_w1_summary_medians_and_paired_ratios() -> None:
    def seg(system: str, repeat: int, **figures: float) -> dict[str, object]:
        return {"workload": "W1", "system": system, "repeat": repeat, "figures": figures}

    segments = [
        seg("ours", 1, hop_cpu_s_per_million=100.0, device_kafka_p99_ms=10.0),
        seg("cpipe", 1, hop_cpu_s_per_million=50.0, device_kafka_p99_ms=20.0),
        seg("ours", 2, hop_cpu_s_per_million=120.0, device_kafka_p99_ms=12.0),
        seg("cpipe", 2, hop_cpu_s_per_million=40.0, device_kafka_p99_ms=24.0),
        seg("ours", 3, hop_cpu_s_per_million=90.0),
        {"workload": "W1", "system": "cpipe", "repeat": 3, "error": "failed"},
    ]
    summary = w1_summary(segments)
    systems = summary["systems"]
    assert isinstance(systems, dict)
    assert systems["ours"]["hop_cpu_s_per_million"] == {"median": 100.0, "min": 90.0, "max": 120.0, "n": 3.0}
    ratios = summary["ratios"]
    assert isinstance(ratios, dict)
    assert ratios["hop_cpu_per_million_vs_cpipe"] == {"median": 2.5, "min": 2.0, "max": 3.0, "n": 2.0}
    assert ratios["hop_p99_ms_vs_cpipe"]["median"] == 0.5
    assert ratios["hop_cpu_per_million_vs_quix"] is None


def test_a_consumer_that_starts_late_is_judged_from_its_first_commit() -> None:
    inflow = [(float(t), 1000.0 * t) for t in range(21)]
    commits = range(4, 21, 3)  # the first commit comes 4 s in, then every 3 s

    def committed(t: int) -> float:
        last = max((c for c in commits if c <= t), default=None)
        return 0.0 if last is None else 1000.0 * (last - 1)  # one second behind the inflow

    done = [(float(t), committed(t)) for t in range(21)]
    g = backlog_growth(inflow, done, 2, 19)
    assert g == pytest.approx(0, abs=1)


def test_stage_knees_keep_going_past_another_stage_failing() -> None:
    def step(rate: float, offered: float, lost: int = 0, **growth: float) -> workloads.StepVerdict:
        return judge_step(rate, offered, growth, sent=1000, received=1000 - lost)

    steps = [
        step(1000, 1000, bridge=0.0, jobs=10.0, sink=0.0),
        step(2000, 2000, bridge=0.0, jobs=900.0, sink=0.0),
        step(4000, 4000, lost=5, bridge=0.0, jobs=2500.0, sink=0.0),
        step(8000, 5000, bridge=0.0, jobs=4000.0, sink=0.0),
    ]
    assert knee(steps) == 1000
    assert workloads.stage_knee(steps, "jobs") == 1000
    assert workloads.stage_knee(steps, "bridge") == 2000  # lost messages at 4,000
    assert workloads.stage_knee(steps, "sink") == 4000  # the generator could not offer 8,000
    assert workloads.generator_limited(steps)
    assert not workloads.generator_limited(steps[:3])
