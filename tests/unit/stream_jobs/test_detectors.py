from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Detector, Point, StateError
from stream_jobs.detectors.clock_skew import ClockSkew
from stream_jobs.detectors.config import spec
from stream_jobs.detectors.ensemble import Ensemble
from stream_jobs.detectors.ewma import Ewma
from stream_jobs.detectors.excursion import Excursion
from stream_jobs.detectors.flatline import Flatline
from stream_jobs.detectors.peer import Peer
from stream_jobs.detectors.rate import RateOfChange
from stream_jobs.detectors.registry import point_detector
from stream_jobs.detectors.silent import Silent
from stream_jobs.detectors.threshold import Threshold
from stream_jobs.detectors.zscore import ZScore, robust_centre

MINUTE = 60_000
T0 = 1_764_000_000_000


def points(values: Sequence[float], step_ms: int = MINUTE) -> list[Point]:
    return [Point(T0 + i * step_ms, float(v)) for i, v in enumerate(values)]


def run(detector: Detector[Any], series: Sequence[Point], state: Any = None) -> tuple[list[Decision], Any]:
    state = detector.initial() if state is None else state
    out = []
    for p in series:
        d, state = detector.update(p, state)
        out.append(d)
    return out, state


def noisy(n: int, seed: int = 7, level: float = 20.0, sd: float = 2.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sd) for _ in range(n)]


def pm25() -> Threshold:
    return Threshold(
        bounds=(15, 35, 75), labels=("good", "moderate", "bad", "very_bad"), alert_level=2, hysteresis=3.0
    )


# --- every point detector: restart equivalence, JSON round trip, scores in [0, 1] ---------


def _series_with_incidents() -> list[Point]:
    values = noisy(400)
    values[150] = 90.0  # spike
    for i in range(250, 300):  # level shift
        values[i] += 25.0
    for i in range(320, 360):  # stuck
        values[i] = 21.0
    return points(values)


POINT_DETECTORS: list[Detector[Any]] = [
    pm25(),
    ZScore(),
    Ewma(),
    RateOfChange(max_per_min=10.0),
    Flatline(min_points=10, min_duration_s=600),
    ClockSkew(max_skew_ms=10.0),
    Silent(),
    Excursion(warmup=50, history=200),
    Excursion(span=8, warmup=50, history=200, statistic="spread"),
    Ensemble([Excursion(warmup=50), ZScore()], suppress_for=5),
]


@pytest.mark.parametrize("detector", POINT_DETECTORS, ids=lambda d: d.name)
def test_restart_from_a_dumped_state_gives_the_same_decisions(detector: Detector[Any]) -> None:
    series = _series_with_incidents()
    straight, _ = run(detector, series)
    first, state = run(detector, series[:200])
    stored = json.loads(json.dumps(detector.dump(state)))
    second, _ = run(detector, series[200:], detector.load(stored))
    assert first + second == straight


@pytest.mark.parametrize("detector", POINT_DETECTORS, ids=lambda d: d.name)
def test_scores_are_in_the_unit_interval_and_versions_are_set(detector: Detector[Any]) -> None:
    decisions, _ = run(detector, _series_with_incidents())
    assert all(0.0 <= d.score <= 1.0 for d in decisions)
    assert detector.version
    assert detector.load(detector.dump(detector.initial())) == detector.initial()


@pytest.mark.parametrize("detector", POINT_DETECTORS, ids=lambda d: d.name)
def test_a_corrupt_stored_state_is_a_state_error(detector: Detector[Any]) -> None:
    with pytest.raises(StateError):
        detector.load({"members": "nonsense", "window": "nonsense", "n": "x", "level": "x", "beyond": "x"})


@pytest.mark.parametrize("detector", POINT_DETECTORS, ids=lambda d: d.name)
def test_a_nan_is_not_anomalous_and_leaves_the_state_alone(detector: Detector[Any]) -> None:
    _, state = run(detector, points(noisy(120)))
    decision, after = detector.update(Point(T0 + 10**9, math.nan), state)
    assert decision.score == 0.0
    assert not decision.anomalous
    if not isinstance(detector, Silent | Ensemble):
        assert after == state


# --- threshold -----------------------------------------------------------------------------


def test_threshold_uses_the_korean_pm25_bands() -> None:
    t = pm25()
    assert [t.category(v) for v in (0, 15, 16, 35, 36, 75, 76, 300)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_threshold_raises_at_bad_and_clears_only_below_the_hysteresis() -> None:
    decisions, state = run(pm25(), points([20, 34, 36, 34, 33, 32.5, 31.9, 40]))
    assert [d.anomalous for d in decisions] == [False, False, True, True, True, True, False, True]
    assert decisions[2].threshold == 35.0
    assert "bad" in decisions[2].explain()
    assert state.level == 2


def test_threshold_score_is_one_half_at_the_alerting_edge() -> None:
    t = pm25()
    (at_edge,), _ = run(t, points([35.0]))
    (far,), _ = run(t, points([150.0]))
    (clean,), _ = run(t, points([5.0]))
    assert at_edge.score == pytest.approx(0.5)
    assert far.score > 0.95
    assert clean.score < 0.1


def test_threshold_low_limit_with_hysteresis() -> None:
    t = Threshold(low=-12.0, hysteresis=1.0)
    decisions, _ = run(t, points([-5, -12.5, -11.5, -10.9]))
    assert [d.anomalous for d in decisions] == [False, True, True, False]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bounds": (35, 15)},
        {"bounds": (15, 35), "labels": ("a", "b")},
        {"bounds": (15,), "alert_level": 2},
        {},
        {"bounds": (1,), "hysteresis": -1},
    ],
)
def test_threshold_rejects_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Threshold(**kwargs)


# --- zscore and ewma -----------------------------------------------------------------------


def test_zscore_flags_a_spike_and_clears_with_hysteresis() -> None:
    values = noisy(80)
    values[60] = 60.0
    decisions, _ = run(ZScore(window=40, raise_at=4.0, clear_at=3.0), points(values))
    flagged = [i for i, d in enumerate(decisions) if d.anomalous]
    assert flagged == [60]
    assert decisions[60].score > 0.8
    assert max(d.score for i, d in enumerate(decisions) if i != 60) < 0.5


def test_zscore_hysteresis_keeps_an_alert_between_clear_and_raise() -> None:
    z = ZScore(window=40, raise_at=4.0, clear_at=3.0)
    _, state = run(z, points(noisy(40)))
    out = []
    # 4.5 scale units: raise; 3.5: stays raised; 2.5: clears; 3.5 again: stays clear.
    for units in (4.5, 3.5, 2.5, 3.5):
        med, scale = robust_centre(state.window)
        d, state = z.update(Point(T0, med + units * scale), state)
        out.append(d.anomalous)
    assert out == [True, True, False, False]


def test_zscore_min_scale_keeps_a_constant_series_from_exploding() -> None:
    decisions, _ = run(ZScore(min_scale=1.0), points([5.0] * 30 + [5.5]))
    assert not decisions[-1].anomalous


def test_ewma_finds_a_level_shift_and_not_the_noise() -> None:
    values = noisy(300, sd=1.0)
    shifted = values[:200] + [v + 6.0 for v in values[200:]]
    decisions, _ = run(Ewma(), points(shifted))
    assert not any(d.anomalous for d in decisions[:200])
    first = next(i for i, d in enumerate(decisions) if d.anomalous)
    assert 200 <= first < 210


def test_ewma_variance_does_not_learn_the_shift_it_is_to_find() -> None:
    values = noisy(260, sd=1.0)
    shifted = values[:200] + [v + 10.0 for v in values[200:]]
    e = Ewma()
    _, before = run(e, points(shifted[:200]))
    decisions, after = run(e, points(shifted[200:210]), before)
    assert all(d.anomalous for d in decisions[2:])
    # Each shifted point (10 sd off) counts as 2 sd (``clip``): the variance grows by about 6%
    # a point instead of doubling.
    assert after.var < 2 * before.var
    unclipped = Ewma(clip=1e9)
    _, grown = run(unclipped, points(shifted[200:210]), before)
    assert grown.var > 10 * before.var


def test_threshold_on_a_moving_mean_ignores_one_reading_at_the_edge() -> None:
    t = Threshold(
        bounds=(15, 35, 75), labels=("good", "moderate", "bad", "very_bad"), alert_level=2, window=5
    )
    decisions, state = run(t, points([30.0] * 10 + [36.0] + [33.0] * 4))
    assert not any(d.anomalous for d in decisions)
    decisions, _ = run(t, points([40.0] * 3), state)
    assert [d.anomalous for d in decisions] == [False, True, True]  # means 34.4, 35.8, 37.2
    assert decisions[-1].reason % decisions[-1].args == "mean 37.2 is bad (> 35)"
    with pytest.raises(ConfigError):
        Threshold(bounds=(1.0,), window=0)


# --- rate of change ------------------------------------------------------------------------


def test_rate_of_change_per_minute_with_hysteresis_and_direction() -> None:
    r = RateOfChange(max_per_min=5.0, direction="up", clear_ratio=0.5)
    decisions, _ = run(r, points([100, 103, 110, 113, 115, 100]))
    assert [d.anomalous for d in decisions] == [False, False, True, True, False, False]
    assert decisions[2].score > 0.5


def test_rate_of_change_ignores_a_late_point() -> None:
    r = RateOfChange(max_per_min=5.0)
    _, state = run(r, points([100, 101]))
    decision, after = r.update(Point(T0, 500.0), state)
    assert after == state
    assert decision.score == 0.0


def test_rate_of_change_does_not_blow_up_close_points() -> None:
    r = RateOfChange(max_per_min=5.0, min_interval_s=30)
    decisions, _ = run(r, points([100, 102], step_ms=1000))
    assert not decisions[1].anomalous


# --- flatline ------------------------------------------------------------------------------


def test_flatline_needs_both_count_and_duration_and_clears_on_change() -> None:
    f = Flatline(min_points=5, min_duration_s=300)
    decisions, _ = run(f, points([1, 2, 7, 7, 7, 7, 7, 7, 7, 8]))
    assert [d.anomalous for d in decisions] == [False] * 7 + [True, True, False]


def test_flatline_exempt_values_never_count() -> None:
    decisions, _ = run(Flatline(min_points=3, min_duration_s=60, exempt=(0.0,)), points([0.0] * 20))
    assert not any(d.anomalous for d in decisions)


# --- silent --------------------------------------------------------------------------------


def test_silent_fires_on_the_timer_after_k_intervals_and_clears_on_data() -> None:
    s = Silent(factor=3.0)
    _, state = run(s, points([1, 2, 3]))
    last = T0 + 2 * MINUTE
    early, state = s.check(last + 170_000, None, 60.0, state)
    late, state = s.check(last + 181_000, None, 60.0, state)
    assert not early.anomalous
    assert late.anomalous
    assert late.score > 0.5
    assert state.active
    back, state = s.update(Point(last + 200_000, 4.0), state)
    assert not back.anomalous
    assert not state.active


def test_silent_uses_the_given_last_seen_time_and_knows_never_seen_devices() -> None:
    s = Silent(factor=2.0)
    decision, _ = s.check(T0 + 10 * MINUTE, T0, 60.0, s.initial())
    assert decision.anomalous
    never, _ = s.check(T0, None, 60.0, s.initial())
    assert not never.anomalous


# --- peer ----------------------------------------------------------------------------------


def test_peer_flags_a_device_far_from_its_district_and_needs_enough_peers() -> None:
    p = Peer(min_peers=3, raise_at=4.0, clear_at=3.0, min_scale=1.0, rel_scale=0.0)
    peers = [20.0, 21.0, 22.0, 20.5, 21.5]
    near, state = p.check(Point(T0, 22.0), peers, p.initial())
    far, state = p.check(Point(T0, 40.0), peers, state)
    few, _ = p.check(Point(T0, 40.0), peers[:2], p.initial())
    assert not near.anomalous
    assert far.anomalous
    assert far.score > 0.5
    assert not few.anomalous
    assert few.explain() == "only 2 peers"


def test_peer_hysteresis() -> None:
    p = Peer(min_peers=3, raise_at=4.0, clear_at=3.0, min_scale=1.0, rel_scale=0.0)
    peers = [0.0, 0.0, 0.0, 0.0]  # MAD 0: the scale is min_scale = 1
    state = p.initial()
    out = []
    for v in (4.5, 3.5, 2.5, 3.5):
        d, state = p.check(Point(T0, v), peers, state)
        out.append(d.anomalous)
    assert out == [True, True, False, False]


# --- clock skew ----------------------------------------------------------------------------


def test_clock_skew_needs_consecutive_readings_and_clears_below_half() -> None:
    c = ClockSkew(max_skew_ms=60_000, min_count=2, clear_ratio=0.5)
    skews = [1_000, 90_000, 2_000, 90_000, -95_000, 40_000, 20_000]
    decisions, _ = run(c, points(skews))
    assert [d.anomalous for d in decisions] == [False, False, False, False, True, True, False]


# --- excursion and ensemble -----------------------------------------------------------------


def test_excursion_scores_a_new_high_by_its_share_of_the_range() -> None:
    e = Excursion(history=100, blocks=4, warmup=10, at_half=0.02)
    values = [float(i % 10) for i in range(50)]  # range [0, 9]
    _, state = run(e, points(values))
    inside, _ = e.update(Point(T0, 5.0), state)
    barely, _ = e.update(Point(T0, 9.18), state)  # 2 % of the range above: at_half
    far, _ = e.update(Point(T0, 30.0), state)
    assert inside.score == 0.0
    assert barely.score == pytest.approx(0.5, abs=0.01)
    assert far.score > 0.95
    assert far.anomalous


def test_excursion_forgets_history_older_than_its_window() -> None:
    e = Excursion(history=40, blocks=4, warmup=10)
    values = [100.0] + [float(i % 5) for i in range(200)]
    _, state = run(e, points(values))
    decision, _ = e.update(Point(T0, 50.0), state)
    assert decision.anomalous  # the old 100 has left the history


def test_ensemble_takes_the_best_member_and_stays_quiet_after_a_detection() -> None:
    ens = Ensemble([Excursion(warmup=20, history=200), ZScore(window=30)], suppress_at=0.5, suppress_for=3)
    values = noisy(60)
    values[40] = values[41] = values[42] = values[43] = values[44] = 200.0
    decisions, _ = run(ens, points(values))
    assert decisions[40].anomalous
    assert [d.score for d in decisions[41:44]] == [0.0, 0.0, 0.0]
    assert decisions[41].explain().startswith("refractory")
    assert ens.version.startswith("1(excursion:1,zscore:1")


def test_the_nab_ensemble_resumes_from_a_json_state_after_many_blocks() -> None:
    nab = point_detector(spec("nab"))
    values = [v + (40.0 if 2000 <= i < 2100 else 0.0) for i, v in enumerate(noisy(3000, seed=3))]
    series = points(values)
    straight, _ = run(nab, series)
    first, state = run(nab, series[:1700])
    second, _ = run(nab, series[1700:], nab.load(json.loads(json.dumps(nab.dump(state)))))
    assert first + second == straight
    assert any(d.anomalous for d in straight[2000:2010])


def test_ensemble_load_rejects_another_shape() -> None:
    ens = Ensemble([ZScore()])
    with pytest.raises(StateError):
        ens.load({"members": [{}, {}], "quiet": 0})
