"""The workloads (W1 steady, W2 knee, W3 burst, and the hop maximum) and their analysis.

- **W1 steady**: ``fleet`` sensors at 1 Hz each, QoS 1, for a fixed time; a few air-quality
  sensors spike for a few seconds so that alerts are raised. Run for ``ours``, the C pipe and
  the Quix Streams peer, ``repeats`` times, interleaved, so that the ratios compare runs made
  minutes apart on the same noisy machine.
- **max**: the same fleet sending a fixed number of messages as fast as the load generator
  can, through each system's MQTT to Kafka hop.
- **W2 knee**: one run stepping the rate up (the fleet reports more often at each step). A step
  passes when the lags stay flat (bridge backlog, jobs and sink consumer lag), nothing sent in
  it is lost and the load generator really offered its rate; the knee is the highest rate
  before the first failing step, for the pipeline and for each stage on its own. The run goes
  on through the steps a stage fails (the others may still hold) and stops only when the load
  generator cannot offer a step's rate.
- **W3 burst**: W1's rate, then every sensor at ``burst_factor`` times its rate for
  ``burst_s``, then W1's rate again: loss (must be zero) and the time until the per-second p99
  of device to Kafka latency is back at the steady p99.

Everything here is pure: specs in, verdicts and summaries out.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from bench.load import Phase, Spike

WORKLOADS = ("W1", "W2", "W3")
SPIKE_FACTOR = 6.0
SPIKE_S = 4.0
SPIKE_AFTER_S = 12.0
WARMUP_S = 5.0
"""Seconds at the start of a phase left out of rates and baselines."""
OFFERED_SHARE = 0.9
"""A step counts as offered when the load generator sent at least this share of its rate."""
LAG_GROWTH_SHARE = 0.1
"""A lag is flat when it grows by less than this share of the offered rate (per second): the
rates come from windows of a few commits, and short stalls of a busy machine must not count."""
LAG_GROWTH_FLOOR = 50.0


class Mode(NamedTuple):
    name: str
    fleet: int
    repeats: int
    w1_s: float
    w2_rates: tuple[int, ...]
    w2_step_s: float
    w3_before_s: float
    burst_s: float
    w3_after_s: float
    burst_factor: float
    max_messages: int
    drain_s: float
    budget_s: float
    """Wall-clock budget of the whole run; segments that would not fit are skipped."""


FULL = Mode(
    name="full",
    fleet=10_000,
    repeats=3,
    w1_s=45.0,
    w2_rates=(500, 1_000, 2_000, 4_000, 8_000, 16_000),
    w2_step_s=20.0,
    w3_before_s=20.0,
    burst_s=10.0,
    w3_after_s=20.0,
    burst_factor=5.0,
    max_messages=150_000,
    drain_s=20.0,
    budget_s=19 * 60.0,
)
QUICK = Mode(
    name="quick",
    fleet=2_000,
    repeats=1,
    w1_s=20.0,
    w2_rates=(500, 1_000, 2_000, 4_000),
    w2_step_s=10.0,
    w3_before_s=8.0,
    burst_s=10.0,
    w3_after_s=8.0,
    burst_factor=5.0,
    max_messages=40_000,
    drain_s=15.0,
    budget_s=4.75 * 60.0,
)

STARTUP_S = {"ours": 8.0, "cpipe": 8.0, "quix": 7.0}
"""Rough seconds to start, probe and stop a system, and to clean up after it (for the budget)."""
DRAIN_S = {"ours": 6.0, "cpipe": 4.0, "quix": 6.0}
"""Rough seconds a system needs after the load to drain (never more than the mode allows)."""
ACCOUNT_S_PER_MESSAGE = 12e-6
"""Rough seconds to read one message back and account for it."""
FLAT_OUT_RATE = 8_000.0
"""Rough rate of a flat-out run (for the budget)."""
MAX_SCHEDULE_RATE = 25_000.0
"""A flat-out run's device timestamps are spread as if sent at this rate, so that they stay close
to the real send times (far-ahead device clocks would raise clock-skew alerts and hide readings
from queries that end at now)."""


class SegmentSpec(NamedTuple):
    workload: str
    """``W1``, ``W2``, ``W3`` or ``max``."""
    system: str
    repeat: int
    phases: tuple[Phase, ...]
    spikes: tuple[Spike, ...] = ()
    flat_out: bool = False
    rates: tuple[float, ...] = ()
    """Offered msg/s of each phase."""

    @property
    def name(self) -> str:
        return f"{self.workload}-{self.system}" + (f"-r{self.repeat}" if self.repeat else "")

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    @property
    def messages(self) -> float:
        return sum(r * p.duration_s for r, p in zip(self.rates, self.phases, strict=True))


def spikes(fleet: int, duration_s: float, candidates: Sequence[int]) -> tuple[Spike, ...]:
    """Spikes on a few of ``candidates`` (device numbers), spread over the second half of the run.

    The detectors need some history first (the z-score wants ten points), so none starts before
    ``SPIKE_AFTER_S``.
    """
    count = max(4, fleet // 250)
    first, last = SPIKE_AFTER_S, duration_s - SPIKE_S - 2.0
    if not candidates or last < first:
        return ()
    step_t = (last - first) / max(1, count - 1)
    step_d = max(1, len(candidates) // count)
    return tuple(
        Spike(
            device=candidates[(i * step_d) % len(candidates)],
            start_s=first + i * step_t,
            end_s=first + i * step_t + SPIKE_S,
            factor=SPIKE_FACTOR,
        )
        for i in range(count)
    )


def w1(mode: Mode, system: str, repeat: int, candidates: Sequence[int]) -> SegmentSpec:
    return SegmentSpec(
        "W1",
        system,
        repeat,
        (Phase(mode.w1_s, 1.0),),
        spikes(mode.fleet, mode.w1_s, candidates),
        rates=(float(mode.fleet),),
    )


def hop_max(mode: Mode, system: str) -> SegmentSpec:
    """``max_messages`` sent flat out; device times are spread as if at ``MAX_SCHEDULE_RATE``."""
    seconds = mode.max_messages / MAX_SCHEDULE_RATE
    phase = Phase(seconds, mode.fleet / MAX_SCHEDULE_RATE)
    return SegmentSpec("max", system, 0, (phase,), flat_out=True, rates=(MAX_SCHEDULE_RATE,))


def w2(mode: Mode) -> SegmentSpec:
    phases = tuple(Phase(mode.w2_step_s, mode.fleet / rate) for rate in mode.w2_rates)
    return SegmentSpec("W2", "ours", 0, phases, rates=tuple(float(r) for r in mode.w2_rates))


def w3(mode: Mode) -> SegmentSpec:
    steady = float(mode.fleet)
    phases = (
        Phase(mode.w3_before_s, 1.0),
        Phase(mode.burst_s, 1.0 / mode.burst_factor),
        Phase(mode.w3_after_s, 1.0),
    )
    return SegmentSpec("W3", "ours", 0, phases, rates=(steady, steady * mode.burst_factor, steady))


def plan(
    mode: Mode, workloads: Iterable[str], systems: Sequence[str], candidates: Sequence[int]
) -> list[SegmentSpec]:
    """The segments of a run, in order: W1 interleaved by repeat, W2, W3, then the hop maximum.

    The hop maximum comes last: when the budget runs short, it is what gets skipped.
    """
    chosen = set(workloads)
    out: list[SegmentSpec] = []
    if "W1" in chosen:
        for r in range(1, mode.repeats + 1):
            out += [w1(mode, s, r, candidates) for s in systems]
    if "W2" in chosen and "ours" in systems:
        out.append(w2(mode))
    if "W3" in chosen and "ours" in systems:
        out.append(w3(mode))
    if "W1" in chosen:
        out += [hop_max(mode, s) for s in systems]
    return out


def estimate_s(spec: SegmentSpec, mode: Mode) -> float:
    """Rough wall seconds a segment takes, start to clean-up."""
    load = spec.messages / FLAT_OUT_RATE if spec.flat_out else spec.duration_s
    drain = min(mode.drain_s, DRAIN_S.get(spec.system, 10.0))
    return STARTUP_S.get(spec.system, 10.0) + load + drain + spec.messages * ACCOUNT_S_PER_MESSAGE


# -- analysis -----------------------------------------------------------------------------------


def rate_between(series: Sequence[tuple[float, float]], t_from: float, t_to: float) -> float:
    """Average rate of a cumulative count series between two times (interpolated ends)."""
    if t_to <= t_from or len(series) < 2:
        return 0.0
    return (_at(series, t_to) - _at(series, t_from)) / (t_to - t_from)


def _at(series: Sequence[tuple[float, float]], t: float) -> float:
    if t <= series[0][0]:
        return series[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return series[-1][1]


def per_second(series: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Rates between consecutive samples of a cumulative series (at the later sample's time)."""
    return [(t1, (v1 - v0) / (t1 - t0)) for (t0, v0), (t1, v1) in itertools.pairwise(series) if t1 > t0]


def backlog_growth(
    inflow: Sequence[tuple[float, float]], done: Sequence[tuple[float, float]], start: float, end: float
) -> float | None:
    """How fast a stage falls behind over ``[start, end]``: inflow rate minus its own rate (msg/s).

    ``inflow`` and ``done`` are cumulative counts. A consumer's count moves only when it commits
    (every few seconds), so its rate is taken between the first and the last point in the window
    at which its count changed (the last change before the window counts as the first): the
    saw tooth of commits does not read as a growing lag; a count of 0 (nothing committed yet) is
    no change. A stage that did not move at all while messages came in falls behind by the whole
    inflow. ``None`` when the window says nothing.
    """
    changes: list[tuple[float, float]] = []
    before: tuple[float, float] | None = None
    last_value: float | None = None
    for t, v in done:
        if v > 0 and (last_value is None or v != last_value):
            if t < start:
                before = (t, v)
            elif t <= end:
                changes.append((t, v))
            last_value = v
    if before is not None:
        changes.insert(0, before)
    if len(changes) < 2:
        # No rate of its own in the window: stalled if messages came in and it never moved in it.
        inflow_rate = rate_between(inflow, start, end)
        moved = any(start <= t <= end for t, _ in changes)
        return inflow_rate if inflow_rate > 0 and not moved and len(done) > 1 else None
    (ta, va), (tb, vb) = changes[0], changes[-1]
    if tb - ta < 1.0:
        return None
    return rate_between(inflow, ta, tb) - (vb - va) / (tb - ta)


def is_flat(growth: float | None, rate: float) -> bool:
    return growth is None or growth <= max(LAG_GROWTH_SHARE * rate, LAG_GROWTH_FLOOR)


class StepVerdict(NamedTuple):
    rate: float
    offered: float
    """Messages per second the load generator actually sent during the step."""
    growth: dict[str, float | None]
    """Per stage (bridge, jobs, sink): how fast its backlog grew, in messages per second."""
    sent: int
    lost: int
    ok: bool
    reason: str


def judge_step(
    rate: float, offered: float, growth: Mapping[str, float | None], sent: int, received: int
) -> StepVerdict:
    lost = max(0, sent - received)
    reasons = []
    if offered < OFFERED_SHARE * rate:
        reasons.append(f"load generator reached only {offered:,.0f} msg/s")
    rising = [name for name, g in growth.items() if not is_flat(g, rate)]
    if rising:
        reasons.append("lag growing: " + ", ".join(rising))
    if lost:
        reasons.append(f"{lost} lost")
    return StepVerdict(rate, offered, dict(growth), sent, lost, not reasons, "; ".join(reasons) or "ok")


def knee(steps: Sequence[StepVerdict]) -> float | None:
    """The highest rate before the first failing step (``None`` when the first step fails)."""
    best: float | None = None
    for step in steps:
        if not step.ok:
            break
        best = step.rate
    return best


def stage_knee(steps: Sequence[StepVerdict], stage: str) -> float | None:
    """The highest rate before the first step that ``stage`` did not keep up with.

    A step the load generator could not offer ends the search for every stage (nothing can be
    said about higher rates); lost messages count against the bridge.
    """
    best: float | None = None
    for step in steps:
        offered = step.offered >= OFFERED_SHARE * step.rate
        kept_up = is_flat(step.growth.get(stage), step.rate) and not (stage == "bridge" and step.lost)
        if not (offered and kept_up):
            break
        best = step.rate
    return best


def generator_limited(steps: Sequence[StepVerdict]) -> bool:
    """Whether the staircase ended because the load generator could not offer a step's rate."""
    return any(step.offered < OFFERED_SHARE * step.rate for step in steps)


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, min, max and n of the values that are known."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {
        "median": round(statistics.median(known), 3),
        "min": round(min(known), 3),
        "max": round(max(known), 3),
        "n": float(len(known)),
    }


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


COMPARISONS: dict[str, tuple[str, str, str]] = {
    # name: (figure of ours, figure of the peer, peer system)
    "hop_cpu_per_million_vs_cpipe": ("hop_cpu_s_per_million", "hop_cpu_s_per_million", "cpipe"),
    "hop_cpu_per_million_vs_quix": ("hop_cpu_s_per_million", "hop_cpu_s_per_million", "quix"),
    "hop_p99_ms_vs_cpipe": ("device_kafka_p99_ms", "device_kafka_p99_ms", "cpipe"),
    "hop_p99_ms_vs_quix": ("device_kafka_p99_ms", "device_kafka_p99_ms", "quix"),
    "hop_peak_rss_vs_cpipe": ("hop_peak_rss_mib", "hop_peak_rss_mib", "cpipe"),
    "hop_peak_rss_vs_quix": ("hop_peak_rss_mib", "hop_peak_rss_mib", "quix"),
    "windows_cpu_per_million_vs_quix": ("jobs_cpu_s_per_million", "windows_cpu_s_per_million", "quix"),
    "windows_peak_rss_vs_quix": ("jobs_peak_rss_mib", "windows_peak_rss_mib", "quix"),
    "total_cpu_per_million_vs_quix": ("system_cpu_s_per_million", "system_cpu_s_per_million", "quix"),
}


def w1_summary(segments: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Per system: median and range of every W1 figure; ratios ours/theirs paired by repeat."""
    by_system: dict[str, list[Mapping[str, float]]] = {}
    by_repeat: dict[int, dict[str, Mapping[str, float]]] = {}
    for seg in segments:
        if seg.get("workload") != "W1" or "figures" not in seg:
            continue
        figures: Mapping[str, float] = seg["figures"]  # type: ignore[assignment]  # built by the harness
        system = str(seg["system"])
        by_system.setdefault(system, []).append(figures)
        by_repeat.setdefault(int(seg["repeat"]), {})[system] = figures  # type: ignore[call-overload]
    systems: dict[str, dict[str, dict[str, float] | None]] = {}
    for system, runs in by_system.items():
        names = sorted({k for f in runs for k in f})
        systems[system] = {k: spread(f.get(k) for f in runs) for k in names}
    ratios: dict[str, dict[str, float] | None] = {}
    for name, (ours_key, peer_key, peer) in COMPARISONS.items():
        values = [
            ratio(pair["ours"].get(ours_key), pair[peer].get(peer_key))
            for pair in by_repeat.values()
            if "ours" in pair and peer in pair
        ]
        ratios[name] = spread(values)
    return {"systems": systems, "ratios": ratios, "repeats": len(by_repeat)}


def max_summary(segments: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """The hop maximum per system, and ours as a ratio of each peer."""
    rates: dict[str, float] = {}
    for seg in segments:
        if seg.get("workload") == "max" and "figures" in seg:
            figures: Mapping[str, float] = seg["figures"]  # type: ignore[assignment]  # built by the harness
            rates[str(seg["system"])] = figures.get("hop_rate", 0.0)
    out: dict[str, object] = {"hop_rate": rates}
    if "ours" in rates:
        out["ratios"] = {
            f"hop_max_vs_{peer}": ratio(rates["ours"], rate) for peer, rate in rates.items() if peer != "ours"
        }
    return out


def summarise(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of a run's segments: W1 medians and ratios, the hop maximum, W2, W3."""
    out: dict[str, Any] = {"W1": w1_summary(results), "max": max_summary(results)}
    for seg in results:
        if seg.get("workload") == "W2" and "steps" in seg:
            out["W2"] = seg["steps"]
        if seg.get("workload") == "W3" and "burst" in seg:
            burst = {k: v for k, v in seg["burst"].items() if k != "p99_per_s"}
            out["W3"] = burst | {"lost": seg["ledger"]["lost"], "duplicates": seg["ledger"]["duplicates"]}
    return out
