"""Robust z-score: distance from the median of a sliding window, in MAD units.

``z = |x - median| / max(1.4826 * MAD, min_scale)`` over the last ``window`` points (the
current one not included; when the MAD is 0, the mean absolute deviation stands in). The
point is anomalous from ``z >= raise_at`` until ``z < clear_at``; the score is
``z / (z + raise_at)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, at_least, latch, positive, squash

MAD_TO_SIGMA = 1.4826
MEAN_AD_TO_SIGMA = 1.2533


class ZScoreState(StateStruct, frozen=True):
    window: tuple[float, ...] = ()
    active: bool = False


def median_of_sorted(values: Sequence[float]) -> float:
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])


def robust_centre(values: Sequence[float]) -> tuple[float, float]:
    """(median, robust standard deviation) of ``values`` (not empty).

    The deviation is ``1.4826 * MAD``; when more than half the values are equal the MAD is 0
    and ``1.2533 * mean absolute deviation`` stands in (the modified z-score's fallback).
    """
    ordered = sorted(values)
    med = median_of_sorted(ordered)
    # Below the median the deviations fall, above it they rise: two sorted runs, which the
    # sort merges (all of it in C).
    half = len(ordered) // 2
    deviations = sorted(chain(map(med.__sub__, reversed(ordered[:half])), map(med.__rsub__, ordered[half:])))
    mad = median_of_sorted(deviations)
    if mad > 0.0:
        return med, MAD_TO_SIGMA * mad
    return med, MEAN_AD_TO_SIGMA * math.fsum(deviations) / len(deviations)


class ZScore(StructState[ZScoreState]):
    name = "zscore"
    version = "1"
    state_type = ZScoreState

    def __init__(
        self,
        *,
        window: int = 60,
        min_points: int = 10,
        raise_at: float = 4.0,
        clear_at: float = 3.0,
        min_scale: float = 1e-6,
    ) -> None:
        self.window = at_least("window", window, 3)
        self.min_points = at_least("min_points", min_points, 3)
        self.raise_at = positive("raise_at", raise_at)
        self.clear_at = positive("clear_at", clear_at)
        self.min_scale = positive("min_scale", min_scale)
        if self.clear_at > self.raise_at:
            raise ConfigError("clear_at must not exceed raise_at")

    def initial(self) -> ZScoreState:
        return ZScoreState()

    def update(self, point: Point, state: ZScoreState) -> tuple[Decision, ZScoreState]:
        x = point.value
        if not math.isfinite(x):
            return Decision(0.0, False, None, "not a finite value"), state
        window = (*state.window, x)[-self.window :]
        if len(state.window) < self.min_points:
            return Decision(0.0, False, None, "warming up"), ZScoreState(window, False)
        med, scale = robust_centre(state.window)
        scale = max(scale, self.min_scale)
        z = abs(x - med) / scale
        active = latch(state.active, z, self.raise_at, self.clear_at)
        edge = med + math.copysign(self.raise_at * scale, x - med)
        return (
            Decision(squash(z, self.raise_at), active, edge, "z=%.2f from median %.6g", (z, med)),
            ZScoreState(window, active),
        )
