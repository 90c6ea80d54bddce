"""The soak's verdicts on synthetic series: RSS growth, bounded lag, error logs, loss, the knee, the whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak
from bench import soak_verdicts as v
from bench.soak_verdicts import ExpectedLog

MIB = 2**20
WARM, END = 300.0, 1800.0


def flat(value: float, start: float = 0.0, end: float = END, step: float = 10.0) -> list[tuple[float, float]]:
    return [(start + k * step, value) for k in range(int((end - start) / step) + 1)]


def ramp(first: float, last: float, start: float = 0.0, end: float = END) -> list[tuple[float, float]]:
    n = int((end - start) / 10)
    return [(start + k * 10, first + (last - first) * k / n) for k in range(n + 1)]


# -- RSS ---------------------------------------------------------------------------------------


def test_memory_that_levels_off_after_the_warm_up_passes() -> None:
    # Grows fast during the warm-up, then stays within a few MiB.
    points = ramp(50 * MIB, 120 * MIB, 0, WARM) + [
        (t, 120 * MIB + (t % 30) * 0.1 * MIB) for t in range(310, 1801, 10)
    ]
    r = v.rss_verdict("jobs", points, WARM, END)
    assert r.ok, r.reason
    assert r.start_bytes == pytest.approx(121 * MIB, rel=0.01)
    assert r.growth is not None
    assert abs(r.growth) < 0.02
    assert r.samples == (7, 7)  # a minute of samples every 10 s, both ends included


def test_memory_that_keeps_growing_fails_with_its_growth() -> None:
    r = v.rss_verdict("jobs", ramp(100 * MIB, 130 * MIB), WARM, END)
    assert not r.ok
    assert r.growth is not None
    assert r.growth > v.RSS_GROWTH_LIMIT
    assert "grew by" in r.reason
    assert r.peak_bytes == pytest.approx(130 * MIB)


def test_growth_just_below_the_limit_passes_and_at_the_limit_fails() -> None:
    below = [(t, 100.0) for t in range(300, 361, 10)] + [(t, 109.9) for t in range(1740, 1801, 10)]
    at = [(t, 100.0) for t in range(300, 361, 10)] + [(t, 110.0) for t in range(1740, 1801, 10)]
    assert v.rss_verdict("sink", below, WARM, END).ok
    assert not v.rss_verdict("sink", at, WARM, END).ok


def test_one_spike_in_a_minute_does_not_move_the_median() -> None:
    points = flat(80 * MIB)
    points[-3] = (points[-3][0], 200 * MIB)  # one large batch in flight near the end
    r = v.rss_verdict("sink", points, WARM, END)
    assert r.ok
    assert r.growth == 0.0
    assert r.peak_bytes == 200 * MIB


def test_the_warm_up_is_left_out() -> None:
    points = [(t, 10.0 if t < WARM else 100.0) for t, _ in flat(0)]
    assert v.rss_verdict("ingest", points, WARM, END).growth == 0.0


def test_too_few_samples_is_not_a_pass() -> None:
    r = v.rss_verdict("ingest", [(0.0, 1.0), (10.0, 1.0)], WARM, END)
    assert not r.ok
    assert r.reason == "too few samples"


# -- lag ---------------------------------------------------------------------------------------


def saw(peak: float, start: float = 0.0, end: float = END) -> list[tuple[float, float]]:
    """A consumer committing every 30 s: its lag climbs to ``peak`` and drops back."""
    return [(t, peak * ((t % 30) / 20)) for t, _ in flat(0, start, end)]


def test_a_saw_tooth_lag_is_bounded() -> None:
    lag = v.lag_verdict("jobs/telemetry.raw", saw(2000), WARM, END, rate=350)
    assert lag.ok, lag.reason
    assert lag.first_max == lag.last_max == 2000
    assert lag.margin == 3500
    assert lag.bound == 21000


def test_a_lag_that_keeps_growing_fails() -> None:
    lag = v.lag_verdict("jobs/telemetry.raw", ramp(0, 15_000), WARM, END, rate=350)
    assert not lag.ok
    assert "grew" in lag.reason
    assert lag.last_max == 15_000


def test_a_lag_within_the_margin_passes() -> None:
    points = [(t, 1000.0 if t < 1300 else 1000.0 + 3500) for t, _ in flat(0)]
    assert v.lag_verdict("sink/telemetry.raw", points, WARM, END, rate=350).ok
    points = [(t, 1000.0 if t < 1300 else 1000.0 + 3501) for t, _ in flat(0)]
    assert not v.lag_verdict("sink/telemetry.raw", points, WARM, END, rate=350).ok


def test_a_high_but_flat_lag_fails_on_the_absolute_bound() -> None:
    lag = v.lag_verdict("jobs/telemetry.raw", flat(30_000), WARM, END, rate=350)
    assert not lag.ok
    assert "bound" in lag.reason
    assert "grew" not in lag.reason


def test_a_lag_high_only_during_the_warm_up_passes() -> None:
    points = [(t, 50_000.0 if t < WARM else 100.0) for t, _ in flat(0)]
    assert v.lag_verdict("jobs/telemetry.raw", points, WARM, END, rate=350).ok


def test_the_thirds_are_of_the_time_after_the_warm_up() -> None:
    # The middle third may be high (a stall recovered from); the bound still applies to it.
    points = [(t, 12_000.0 if 900 <= t < 1100 else 500.0) for t, _ in flat(0)]
    lag = v.lag_verdict("jobs/telemetry.raw", points, WARM, END, rate=350)
    assert lag.ok
    assert (lag.first_max, lag.last_max, lag.overall_max) == (500, 500, 12_000)


# -- throughput and load ---------------------------------------------------------------------


def test_rate_between_uses_the_first_and_last_sample_in_the_window() -> None:
    sent = [(t, 350.0 * t) for t, _ in flat(0)]
    assert v.rate_between(sent, WARM, END) == pytest.approx(350)
    assert v.rate_between(sent, 2000, 3000) == 0.0


def test_a_load_below_ninety_percent_of_the_rate_was_not_held() -> None:
    assert v.load_verdict(350, 330).ok
    held = v.load_verdict(350, 300)
    assert not held.ok
    assert "300 of 350" in held.reason


# -- logs ----------------------------------------------------------------------------------------


LOG = [
    "2026-11-25 21:00:00,000 INFO ingest.bridge started",
    "2026-11-25 21:00:01,000 WARNING ingest.bridge slow",
    "2026-11-25 21:00:02,000 ERROR sinks.influx write failed: timeout",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "    raise ValueError('bad')",
    "ValueError: bad",
    "2026-11-25 21:00:03,000 CRITICAL stream_jobs.app crashed",
    "an ERRORS word is not a level",
]


def test_error_critical_and_traceback_lines_are_found() -> None:
    found = v.scan_log("sink", LOG, expected=())
    assert [x.number for x in found] == [3, 4, 8]
    assert found[1].text == "Traceback (most recent call last): ... ValueError: bad"
    assert all(x.expected is None for x in found)


def test_expected_lines_carry_their_reason_and_only_for_their_process() -> None:
    expected = (ExpectedLog("sink", r"write failed: timeout", "InfluxDB may time out once under load"),)
    found = v.scan_log("sink", LOG, expected=expected)
    assert found[0].expected == "InfluxDB may time out once under load"
    assert found[1].expected is None
    assert all(x.expected is None for x in v.scan_log("jobs", LOG, expected=expected))


def test_expected_for_any_process() -> None:
    expected = (ExpectedLog("*", r"ValueError", "reason"),)
    assert [x.expected for x in v.scan_log("ingest", LOG, expected=expected)] == [None, "reason", None]


def test_a_clean_log_has_nothing() -> None:
    assert v.scan_log("ingest", LOG[:2]) == []


def test_every_expected_entry_says_why() -> None:
    for entry in v.EXPECTED_LOGS:
        assert entry.reason.strip()
        assert entry.process in ("ingest", "jobs", "sink", "loadgen", "*")


# -- loss ----------------------------------------------------------------------------------------


def test_nothing_lost_and_all_in_influx_passes_even_with_duplicates() -> None:
    loss = v.loss_verdict(sent=630_000, lost=0, duplicates=12, influx_missing=0)
    assert loss.ok


@pytest.mark.parametrize(
    ("lost", "missing", "reason"),
    [(3, 0, "3 lost before Kafka"), (0, 7, "7 not in InfluxDB"), (0, None, "InfluxDB was not counted")],
)
def test_loss_fails(lost: int, missing: int | None, reason: str) -> None:
    loss = v.loss_verdict(sent=1000, lost=lost, duplicates=0, influx_missing=missing)
    assert not loss.ok
    assert loss.reason == reason


def test_nothing_sent_fails() -> None:
    assert not v.loss_verdict(sent=0, lost=0, duplicates=0, influx_missing=0).ok


# -- the rate ------------------------------------------------------------------------------------


def test_the_rate_is_a_share_of_the_lowest_stage_knee() -> None:
    summary = {"W2": {"knee": 500.0, "knees": {"bridge": 4000.0, "jobs": 500.0, "sink": 2000.0}}}
    assert v.knee_rate(summary, 0.7) == pytest.approx(350)
    summary = {"W2": {"knee": 2000.0, "knees": {"bridge": 4000.0, "jobs": 1000.0, "sink": 2000.0}}}
    assert v.knee_rate(summary, 0.7) == pytest.approx(700)


def test_no_knee_when_a_stage_failed_its_first_step_or_there_is_no_w2() -> None:
    assert v.knee_rate({"W2": {"knee": None, "knees": {"jobs": None}}}, 0.7) is None
    assert v.knee_rate({"W2": {"knee": 500.0, "knees": {"jobs": None, "sink": 500.0}}}, 0.7) is None
    assert v.knee_rate({"W1": {}}, 0.7) is None


# -- the whole judgement -------------------------------------------------------------------------


def timeline(jobs_rss: list[tuple[float, float]], lag_peak: float) -> list[dict[str, float]]:
    rows = []
    for t, rss in jobs_rss:
        rows.append(
            {
                "t": t + 2.0,
                "sent": 350.0 * t,
                "raw": 350.0 * t,
                "rss/ingest": 50.0 * MIB,
                "rss/jobs": rss,
                "rss/sink": 80.0 * MIB,
                "lag/jobs/telemetry.raw": lag_peak * ((t % 30) / 20),
                "load1": 3.0,
            }
        )
    rows.append(rows[-1] | {"t": END + 5, "lag/jobs/telemetry.raw": 0.0, "drained": 1.0})
    return rows


LEDGER = {"expected": 630_000, "lost": 0, "duplicates": 0}
SEGMENT = {
    "load0": 2.0,
    "ledger": LEDGER,
    "influx": {"readings_written": 630_000, "missing": 0},
    "exit_codes": {"sink": 0, "jobs": 0, "ingest": 0},
}


def soak_config() -> soak.SoakConfig:
    return soak.SoakConfig(
        rate=350, rate_source="test", minutes=30, warmup_s=WARM, fleet=2000, workdir=Path("/x")
    )


def test_a_steady_soak_passes_every_check() -> None:
    got = soak.judge(soak_config(), timeline(flat(120 * MIB), 2000), SEGMENT, {})
    assert got["ok"], got["checks"]
    assert got["throughput"]["offered"] == pytest.approx(350)
    assert got["window"]["after_warmup_s"] == WARM + 2
    assert got["load_avg"] == {"min": 3.0, "median": 3.0, "max": 3.0}


def test_a_leaking_jobs_worker_fails_the_rss_check_only() -> None:
    got = soak.judge(soak_config(), timeline(ramp(100 * MIB, 150 * MIB), 2000), SEGMENT, {})
    assert not got["ok"]
    assert [k for k, ok in got["checks"].items() if not ok] == ["rss"]
    assert not got["rss"]["jobs"]["ok"]
    assert got["rss"]["sink"]["ok"]


def test_the_drained_row_is_not_part_of_the_lag_window_and_loss_and_exits_count() -> None:
    segment = SEGMENT | {"ledger": LEDGER | {"lost": 5}, "exit_codes": {"jobs": 1}}
    rows = timeline(flat(120 * MIB), 30_000)
    rows[-1]["lag/jobs/telemetry.raw"] = 99_999.0
    got = soak.judge(soak_config(), rows, segment, {})
    assert {k for k, ok in got["checks"].items() if not ok} == {"lag", "loss", "exits"}
    assert got["lag"]["jobs/telemetry.raw"]["overall_max"] == 30_000
    assert got["loss"]["reason"] == "5 lost before Kafka"


def test_no_samples_no_verdict() -> None:
    got = soak.judge(soak_config(), [], {"load0": None}, {})
    assert not got["ok"]
    assert got["window"] is None


def test_the_default_fleet_lets_every_device_fill_its_state_in_the_warm_up() -> None:
    fleet = soak.settled_fleet(350.0, 8 * 60)
    assert fleet == 2240
    seconds_to_fill = soak.STATE_READINGS * fleet / 350.0
    assert seconds_to_fill <= 0.8 * 8 * 60
    assert soak.settled_fleet(0.001, 60) == 1
