from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from citystream.errors import ConfigError
from stream_jobs.evaluation.corpus import Corpus, CorpusError, Window, resolve_nab_dir
from stream_jobs.evaluation.nab import (
    MAX_TP,
    PROFILES,
    Profile,
    Scorer,
    label_rows,
    probation_length,
    profiles_from_config,
)
from stream_jobs.evaluation.runner import score_published

STANDARD, LOW_FP, LOW_FN = PROFILES
MINUTE = 60_000


def s_of(p: float) -> float:
    """The scaled sigmoid of SCORING.md, written out by hand."""
    return -1.0 if p > 3 else 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


def tiny(
    scores: dict[int, float], n: int = 100, window: tuple[int, int] = (60, 63)
) -> tuple[Scorer, list[np.ndarray]]:
    """One file of ``n`` rows, one minute apart, with one window over rows ``window``.

    Rows 0-14 are the probation; detecting every row would cost far more than the window is
    worth, so the threshold "everything" never wins by accident.
    """
    ts = np.arange(n, dtype=np.int64) * MINUTE
    rows = label_rows("tiny.csv", ts, [Window(window[0] * MINUTE, window[1] * MINUTE)])
    a = np.zeros(n)
    for i, v in scores.items():
        a[i] = v
    return Scorer([rows]), [a]


def test_probation_is_fifteen_percent_capped_at_750_rows() -> None:
    assert probation_length(20) == 3
    assert probation_length(1127) == 169
    assert probation_length(4032) == 604
    assert probation_length(22695) == 750


def test_relative_positions_follow_the_scoring_rules() -> None:
    ts = np.arange(20, dtype=np.int64) * MINUTE
    rows = label_rows("f", ts, [Window(10 * MINUTE, 13 * MINUTE)])
    assert rows.probation == 3
    assert list(rows.window[9:15]) == [-1, 0, 0, 0, 0, -1]
    assert rows.position[10] == pytest.approx(-1.0)
    assert rows.position[13] == pytest.approx(-0.25)
    assert rows.position[14] == pytest.approx(1 / 3)
    assert math.isinf(rows.position[5])


def test_an_early_detection_in_the_window_is_perfect() -> None:
    scorer, scores = tiny({60: 1.0})
    r = scorer.sweep(scores, STANDARD)
    assert r.raw == pytest.approx(1.0)
    assert r.score == pytest.approx(100.0)
    assert (r.detected_windows, r.missed_windows, r.false_positives) == (1, 0, 0)
    assert r.threshold == 1.0


def test_the_best_threshold_trades_a_false_positive_for_a_later_hit() -> None:
    scorer, scores = tiny({20: 0.9, 62: 0.8})
    r = scorer.sweep(scores, STANDARD)
    # t = 0.9: the FP alone (-0.11) and the window missed (-1); t = 0.8: the FP and a hit at p = -0.5.
    expected = -0.11 + s_of(-0.5) / s_of(-1.0)
    assert r.threshold == 0.8
    assert r.raw == pytest.approx(expected)
    assert r.score == pytest.approx(100.0 * (expected + 1.0) / 2.0)
    assert r.false_positives == 1


def test_only_the_best_detection_of_a_window_counts() -> None:
    scorer, scores = tiny({61: 0.7, 62: 0.7, 63: 0.7})
    r = scorer.sweep(scores, STANDARD)
    assert r.raw == pytest.approx(s_of(-0.75) / s_of(-1.0))


def test_a_detection_just_after_a_window_costs_less_than_one_far_away() -> None:
    near, near_scores = tiny({60: 1.0, 64: 1.0})
    far, far_scores = tiny({60: 1.0, 69: 1.0})
    assert near.sweep(near_scores, STANDARD).raw == pytest.approx(1.0 + 0.11 * s_of(1 / 3))
    assert far.sweep(far_scores, STANDARD).raw == pytest.approx(1.0 + 0.11 * s_of(6 / 3))


def test_detections_in_probation_are_not_scored() -> None:
    scorer, scores = tiny({1: 1.0})
    r = scorer.sweep(scores, STANDARD)
    assert r.raw == pytest.approx(-1.0)
    assert r.score == pytest.approx(0.0)
    assert math.isinf(r.threshold)


def test_profiles_weigh_misses_and_false_positives() -> None:
    scorer, scores = tiny({20: 1.0})  # a lone FP: never worth taking, the null score wins
    for profile in PROFILES:
        assert scorer.sweep(scores, profile).raw == pytest.approx(-profile.fn_weight)
    both, both_scores = tiny({20: 1.0, 62: 1.0})
    assert both.sweep(both_scores, LOW_FP).raw == pytest.approx(-0.22 + s_of(-0.5) / MAX_TP)
    assert both.sweep(both_scores, LOW_FN).score == pytest.approx(
        100.0 * (-0.11 + s_of(-0.5) / MAX_TP + 2.0) / 3.0
    )


def test_equal_scores_are_one_threshold() -> None:
    scorer, scores = tiny({20: 0.5, 61: 0.5})
    r = scorer.sweep(scores, STANDARD)
    assert r.raw == pytest.approx(-0.11 + s_of(-0.75) / MAX_TP)
    assert (r.detected_windows, r.false_positives) == (1, 1)


def test_per_file_scores_add_up_to_the_sweep() -> None:
    scorer, scores = tiny({20: 0.9, 62: 0.8, 66: 0.85})
    r = scorer.sweep(scores, STANDARD)
    (f,) = scorer.per_file(scores, STANDARD, r.threshold)
    assert f.raw == pytest.approx(r.raw)


def test_a_window_that_is_not_on_the_rows_is_a_corpus_error() -> None:
    ts = np.arange(10, dtype=np.int64) * MINUTE
    with pytest.raises(CorpusError):
        label_rows("f", ts, [Window(3 * MINUTE + 1, 5 * MINUTE)])


def test_a_folder_without_the_corpus_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Corpus(tmp_path)


# --- against the published results of the corpus -------------------------------------------


@pytest.fixture(scope="module")
def nab_dir() -> Path:
    path = resolve_nab_dir()
    if not (path / "labels" / "combined_windows.json").is_file():
        pytest.fail(f"the NAB corpus is not at {path} (set CITYSTREAM_EVALUATION__NAB_DIR)")
    return path


def test_the_corpus_profiles_are_the_ones_scored(nab_dir: Path) -> None:
    assert profiles_from_config(Corpus(nab_dir).profiles()) == tuple(sorted(PROFILES, key=lambda p: p.name))
    assert all(isinstance(p, Profile) for p in PROFILES)


@pytest.mark.parametrize(("detector", "standard"), [("windowedGaussian", 39.65), ("numenta", 70.10)])
def test_the_scorer_reproduces_the_published_standard_scores(
    nab_dir: Path, detector: str, standard: float
) -> None:
    published = Corpus(nab_dir).published()[detector]
    assert published["standard"] == pytest.approx(standard, abs=0.005)
    report = score_published(detector, nab_dir)
    scores = {r.profile: r.score for r in report.results}
    assert scores["standard"] == pytest.approx(published["standard"], abs=0.1)
    assert scores["reward_low_FN_rate"] == pytest.approx(published["reward_low_FN_rate"], abs=0.1)
    # NAB's own optimiser searched thresholds locally; the exhaustive sweep can only do as well or better.
    assert scores["reward_low_FP_rate"] >= published["reward_low_FP_rate"] - 0.1
    assert report.files == 58
    assert sum(r.detected_windows + r.missed_windows for r in report.results[:1]) == 116
