"""Runs a detector of the registry over the NAB corpus and scores it.

The detector is the very code the stream jobs run: one fresh state per file, one
``update`` per row in order, the score of each row taken before the next row is seen.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stream_jobs.detectors.base import Detector, Point
from stream_jobs.detectors.config import DetectorSpec
from stream_jobs.detectors.registry import point_detector
from stream_jobs.evaluation.corpus import Corpus, CorpusError, FloatArray, Series, resolve_nab_dir
from stream_jobs.evaluation.nab import PROFILES, FileResult, Result, Scorer, label_rows

logger = logging.getLogger(__name__)


class Report(NamedTuple):
    detector: str
    version: str
    results: list[Result]
    files: int
    rows: int
    detect_s: float
    score_s: float
    invalid_scores: int
    """Scores that were not a number in [0, 1] (clipped, NaN counted as 0)."""
    per_file: list[FileResult]
    """The standard profile, file by file, at its best threshold."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "version": self.version,
            "files": self.files,
            "rows": self.rows,
            "detect_s": round(self.detect_s, 3),
            "score_s": round(self.score_s, 3),
            "invalid_scores": self.invalid_scores,
            "profiles": {r.profile: r._asdict() for r in self.results},
            "per_file_standard": [f._asdict() for f in self.per_file],
        }


def run_series(detector: Detector[Any], series: Series) -> FloatArray:
    """The anomaly score of every row, in order, from a fresh state."""
    state = detector.initial()
    update = detector.update
    scores = []
    for ts, value in zip(series.ts_ms.tolist(), series.values.tolist(), strict=True):
        decision, state = update(Point(ts, value), state)
        scores.append(decision.score)
    return np.array(scores, dtype=np.float64)


def _clean(scores: FloatArray) -> tuple[FloatArray, int]:
    bad = ~np.isfinite(scores) | (scores < 0.0) | (scores > 1.0)
    count = int(np.count_nonzero(bad))
    if count:
        scores = np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0)
    return scores, count


def evaluate(
    detector: str = "nab",
    params: Mapping[str, Any] | None = None,
    nab_dir: Path | None = None,
) -> Report:
    """Run a registry detector over every labelled file and score it in every profile."""
    corpus = Corpus(resolve_nab_dir(nab_dir))
    instance = point_detector(DetectorSpec(detector, dict(params or {})))
    t0 = time.perf_counter()
    labelled, all_scores, invalid, rows = [], [], 0, 0
    for series in corpus.all_series():
        scores, bad = _clean(run_series(instance, series))
        invalid += bad
        rows += len(scores)
        all_scores.append(scores)
        labelled.append(label_rows(series.name, series.ts_ms, corpus.windows[series.name]))
    detect_s = time.perf_counter() - t0
    if invalid:
        logger.warning("detector %s gave %d scores outside [0, 1]; clipped", detector, invalid)
    t1 = time.perf_counter()
    scorer = Scorer(labelled)
    results = [scorer.sweep(all_scores, p) for p in PROFILES]
    per_file = scorer.per_file(all_scores, PROFILES[0], results[0].threshold)
    score_s = time.perf_counter() - t1
    return Report(
        detector, instance.version, results, len(labelled), rows, detect_s, score_s, invalid, per_file
    )


def score_published(name: str, nab_dir: Path | None = None) -> Report:
    """Score the per-row ``anomaly_score`` files a published detector left in ``results/``."""
    corpus = Corpus(resolve_nab_dir(nab_dir))
    t0 = time.perf_counter()
    labelled, all_scores, rows = [], [], 0
    for series in corpus.all_series():
        ts, scores = corpus.published_scores(name, series.name)
        if len(ts) != len(series.ts_ms) or not np.array_equal(ts, series.ts_ms):
            raise CorpusError(f"results/{name}: the rows of {series.name} differ from the data file")
        labelled.append(label_rows(series.name, series.ts_ms, corpus.windows[series.name]))
        all_scores.append(scores)
        rows += len(scores)
    scorer = Scorer(labelled)
    results = [scorer.sweep(all_scores, p) for p in PROFILES]
    per_file = scorer.per_file(all_scores, PROFILES[0], results[0].threshold)
    return Report(name, "published", results, len(labelled), rows, 0.0, time.perf_counter() - t0, 0, per_file)


def format_report(report: Report, published: Mapping[str, float] | None = None) -> str:
    """The three profile scores as a table (with the published figures when given)."""
    lines = [
        f"detector {report.detector} (version {report.version}): {report.files} files, "
        f"{report.rows} rows; detection {report.detect_s:.1f} s, scoring {report.score_s:.2f} s",
        f"{'profile':<20} {'score':>7} {'published':>9} {'threshold':>10} "
        f"{'windows':>8} {'missed':>6} {'FP':>5}",
    ]
    for r in report.results:
        pub = published.get(r.profile) if published else None
        pub_text = f"{pub:9.2f}" if pub is not None and math.isfinite(pub) else f"{'-':>9}"
        lines.append(
            f"{r.profile:<20} {r.score:7.2f} {pub_text} {r.threshold:10.4f} "
            f"{r.detected_windows:>8} {r.missed_windows:>6} {r.false_positives:>5}"
        )
    return "\n".join(lines)
