"""Flatline: a stuck value, the same reading (within ``tolerance``) for too long.

Stuck means at least ``min_points`` readings and ``min_duration_s`` seconds at one value; the
first different reading clears it. Values in ``exempt`` may legitimately stay constant (a
street light that is off draws 0 W) and never count as stuck.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, at_least, positive, squash


class FlatlineState(StateStruct, frozen=True):
    value: float = 0.0
    since_ms: int = 0
    count: int = 0


class Flatline(StructState[FlatlineState]):
    name = "flatline"
    version = "1"
    state_type = FlatlineState

    def __init__(
        self,
        *,
        min_points: int = 10,
        min_duration_s: float = 600.0,
        tolerance: float = 0.0,
        exempt: Sequence[float] = (),
    ) -> None:
        self.min_points = at_least("min_points", min_points, 2)
        self.min_duration_ms = positive("min_duration_s", min_duration_s) * 1000.0
        if tolerance < 0 or not math.isfinite(tolerance):
            raise ConfigError(f"tolerance must be >= 0, got {tolerance}")
        self.tolerance = float(tolerance)
        self.exempt = tuple(float(v) for v in exempt)

    def initial(self) -> FlatlineState:
        return FlatlineState()

    def update(self, point: Point, state: FlatlineState) -> tuple[Decision, FlatlineState]:
        x = point.value
        if not math.isfinite(x):
            return Decision(0.0, False, None, "not a finite value"), state
        if state.count and abs(x - state.value) <= self.tolerance:
            new = FlatlineState(state.value, min(state.since_ms, point.ts_ms), state.count + 1)
        else:
            new = FlatlineState(x, point.ts_ms, 1)
        if self.exempt and any(abs(new.value - v) <= self.tolerance for v in self.exempt):
            return Decision(0.0, False, None, "%.6g may stay constant", (new.value,)), new
        seconds = max(0, point.ts_ms - new.since_ms) / 1000.0
        progress = min(new.count / self.min_points, seconds * 1000.0 / self.min_duration_ms)
        score = squash(progress, 1.0)
        reason = "%.6g for %d readings over %.0f s"
        args = (new.value, new.count, seconds)
        return Decision(score, progress >= 1.0, self.min_duration_ms / 1000.0, reason, args), new
