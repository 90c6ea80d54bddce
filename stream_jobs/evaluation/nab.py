"""The NAB scorer: sweep scores, one global threshold per profile, normalisation.

It implements ``SCORING.md`` of the corpus folder step by step:

1. the first ``min(floor(0.15 n), 0.15 * 5000)`` rows of a file are never scored;
2. every other row gets a sweep score from its position relative to the labelled windows
   (a scaled sigmoid: worth ``tpWeight`` at a window's left edge, falling to 0 at its right
   edge; ``-fpWeight`` outside, softened just after a window);
3. at a threshold ``t``, each window is worth the best sweep of its detections (or
   ``-fnWeight`` if it has none), and each detection outside a window adds its sweep;
4. the corpus total is swept over every distinct anomaly score as ``t``; the best is kept;
5. ``100 * (raw - null) / (perfect - null)``.

The sweep is vectorised: the rows of the whole corpus are sorted by score once and the total
for every threshold comes from one cumulative sum, so scoring the corpus takes well under a
second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from stream_jobs.evaluation.corpus import CorpusError, Window

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROBATION_PERCENT = 0.15


class Profile(NamedTuple):
    """A cost matrix of the benchmark."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def profiles_from_config(config: dict[str, dict[str, float]]) -> tuple[Profile, ...]:
    """Profiles from ``config/profiles.json`` (as read by ``Corpus.profiles``)."""
    return tuple(
        Profile(name, m["tpWeight"], m["fpWeight"], m["fnWeight"]) for name, m in sorted(config.items())
    )


def scaled_sigmoid(position: FloatArray) -> FloatArray:
    """``2 / (1 + exp(5 p)) - 1``, and ``-1`` for ``p > 3`` (far past a window)."""
    with np.errstate(over="ignore"):
        s = 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0
    return np.where(position > 3.0, -1.0, s)


MAX_TP = float(scaled_sigmoid(np.array([-1.0]))[0])


def probation_length(n: int, percent: float = PROBATION_PERCENT) -> int:
    """How many leading rows of an ``n``-row file are never scored."""
    return math.ceil(min(math.floor(percent * n), percent * 5000))


class LabelledRows(NamedTuple):
    """Where each row of one file stands relative to its windows.

    ``window`` is the window's index in the file (``-1`` outside any window); ``position``
    is the relative position ``p`` of step 2 (``inf`` before the first window);
    ``probation`` the number of leading rows that are not scored.
    """

    name: str
    window: IntArray
    position: FloatArray
    probation: int
    n_windows: int


def label_rows(name: str, ts_ms: IntArray, windows: Sequence[Window]) -> LabelledRows:
    """Place the rows of one file relative to its labelled windows."""
    n = len(ts_ms)
    first_index: dict[int, int] = {}
    for i, t in enumerate(ts_ms.tolist()):
        first_index.setdefault(t, i)
    window = np.full(n, -1, dtype=np.int64)
    position = np.full(n, np.inf, dtype=np.float64)
    rows = np.arange(n, dtype=np.float64)
    spans: list[tuple[int, int]] = []
    for k, w in enumerate(windows):
        if w.start_ms not in first_index or w.end_ms not in first_index:
            raise CorpusError(f"{name}: window {w} does not start and end on rows of the file")
        spans.append((first_index[w.start_ms], first_index[w.end_ms]))
        left, right = spans[-1]
        if right < left or (k > 0 and left <= spans[k - 1][1]):
            raise CorpusError(f"{name}: windows are not ordered and disjoint at {w}")
    for k, (left, right) in enumerate(spans):
        width = right - left + 1
        window[left : right + 1] = k
        position[left : right + 1] = -(right - rows[left : right + 1] + 1) / width
        stop = spans[k + 1][0] if k + 1 < len(spans) else n
        position[right + 1 : stop] = (rows[right + 1 : stop] - right) / max(width - 1, 1)
    return LabelledRows(name, window, position, probation_length(n), len(spans))


def sweep_scores(rows: LabelledRows, profile: Profile) -> FloatArray:
    """The weighted sweep score of every row of one file (step 2)."""
    s = scaled_sigmoid(rows.position)
    return np.where(rows.window >= 0, s * profile.tp_weight / MAX_TP, s * profile.fp_weight)


class Result(NamedTuple):
    """The best threshold of one profile over the corpus."""

    profile: str
    score: float
    """Normalised: 0 for a detector that never detects, 100 for a perfect one."""
    raw: float
    threshold: float
    detected_windows: int
    missed_windows: int
    false_positives: int


class FileResult(NamedTuple):
    name: str
    raw: float
    detected_windows: int
    missed_windows: int
    false_positives: int


class Scorer:
    """Scores the anomaly scores of a whole corpus against its labels."""

    def __init__(self, files: Sequence[LabelledRows], total_windows: int | None = None) -> None:
        self.files = list(files)
        self.total_windows = (
            total_windows if total_windows is not None else sum(f.n_windows for f in self.files)
        )
        offsets = np.cumsum([0] + [f.n_windows for f in self.files])
        self._scored = [np.arange(len(f.window)) >= f.probation for f in self.files]
        self._window = np.concatenate(
            [
                np.where(f.window >= 0, f.window + offsets[i], -1)[m]
                for i, (f, m) in enumerate(zip(self.files, self._scored, strict=True))
            ]
        )
        self._position = np.concatenate(
            [f.position[m] for f, m in zip(self.files, self._scored, strict=True)]
        )
        # Windows with at least one scored row are the ones that can be missed.
        self.scored_windows = int(np.unique(self._window[self._window >= 0]).size)

    def _scores(self, scores: Sequence[FloatArray]) -> FloatArray:
        if len(scores) != len(self.files):
            raise ValueError(f"{len(scores)} score arrays for {len(self.files)} files")
        parts = []
        for f, m, s in zip(self.files, self._scored, scores, strict=True):
            if len(s) != len(f.window):
                raise ValueError(f"{f.name}: {len(s)} scores for {len(f.window)} rows")
            parts.append(np.asarray(s, dtype=np.float64)[m])
        return np.concatenate(parts)

    def _weighted(self, profile: Profile) -> FloatArray:
        s = scaled_sigmoid(self._position)
        return np.where(self._window >= 0, s * profile.tp_weight / MAX_TP, s * profile.fp_weight)

    def null_raw(self, profile: Profile) -> float:
        return -profile.fn_weight * self.scored_windows

    def normalise(self, raw: float, profile: Profile) -> float:
        null = self.null_raw(profile)
        perfect = profile.tp_weight * self.total_windows
        return 100.0 * (raw - null) / (perfect - null)

    def sweep(self, scores: Sequence[FloatArray], profile: Profile) -> Result:
        """Try every distinct score as the threshold; return the best (steps 3-5)."""
        s = self._scores(scores)
        w = self._weighted(profile)
        g = self._window
        order = np.argsort(-s, kind="stable")
        s_sorted, w_sorted, g_sorted = s[order], w[order], g[order]
        delta = np.where(g_sorted < 0, w_sorted, 0.0)
        # Inside a window only a new best detection changes the total: group the in-window
        # rows by window (keeping the score order), take the running maximum per group and
        # add its increments; the first detection of a window also removes its -fnWeight.
        inside = np.flatnonzero(g_sorted >= 0)
        by_window = inside[np.argsort(g_sorted[inside], kind="stable")]
        group = g_sorted[by_window]
        if by_window.size:
            lift = float(profile.tp_weight) * 2.0 + 1.0
            running = np.maximum.accumulate(w_sorted[by_window] + group * lift) - group * lift
            first = np.ones(by_window.size, dtype=bool)
            first[1:] = group[1:] != group[:-1]
            previous = np.empty_like(running)
            previous[1:] = running[:-1]
            previous[first] = -profile.fn_weight
            delta[by_window] = running - previous
        totals = self.null_raw(profile) + np.cumsum(delta)
        ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
        best_raw, best_threshold, best_count = self.null_raw(profile), math.inf, 0
        if ends.size:
            k = int(np.argmax(totals[ends]))
            if totals[ends[k]] > best_raw:
                best_raw, best_threshold, best_count = (
                    float(totals[ends[k]]),
                    float(s_sorted[ends[k]]),
                    int(ends[k]) + 1,
                )
        detected = g_sorted[:best_count]
        hit = int(np.unique(detected[detected >= 0]).size)
        return Result(
            profile=profile.name,
            score=self.normalise(best_raw, profile),
            raw=best_raw,
            threshold=best_threshold,
            detected_windows=hit,
            missed_windows=self.scored_windows - hit,
            false_positives=int(np.count_nonzero(detected < 0)),
        )

    def per_file(self, scores: Sequence[FloatArray], profile: Profile, threshold: float) -> list[FileResult]:
        """The raw score of each file at one threshold (step 3, file by file)."""
        out = []
        for f, m, s in zip(self.files, self._scored, scores, strict=True):
            w = sweep_scores(f, profile)[m]
            g = f.window[m]
            det = np.asarray(s, dtype=np.float64)[m] >= threshold
            raw = float(w[det & (g < 0)].sum())
            hit = 0
            for k in np.unique(g[g >= 0]).tolist():
                best = w[det & (g == k)]
                if best.size:
                    raw += float(best.max())
                    hit += 1
                else:
                    raw -= profile.fn_weight
            windows = int(np.unique(g[g >= 0]).size)
            out.append(FileResult(f.name, raw, hit, windows - hit, int(np.count_nonzero(det & (g < 0)))))
        return out
