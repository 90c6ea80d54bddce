"""EWMA level shift: a fast moving average that leaves the band of a slow one.

The slow EWMA (``slow_alpha``) tracks the level and the variance of single points; the fast
EWMA (``fast_alpha``) follows changes within a few points. The statistic is the distance of
the fast from the slow average in units of the fast average's own standard deviation
(``sd * sqrt(fast_alpha / (2 - fast_alpha))``): anomalous from ``raise_at`` until below
``clear_at``. The slow average and variance are updated after the comparison.

The variance must not learn the shift it is there to find: a point's deviation counts at most
``clip`` standard deviations. The slow average keeps following, so a lasting new level is
accepted after a while (about ``1 / slow_alpha`` points) and the anomaly clears. A slow trend
still widens the variance (its points sit off the lagging average, each within the clip), which
keeps trends from looking like shifts.
"""

from __future__ import annotations

import math

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, at_least, latch, positive, squash


class EwmaState(StateStruct, frozen=True):
    n: int = 0
    fast: float = 0.0
    slow: float = 0.0
    var: float = 0.0
    active: bool = False


class Ewma(StructState[EwmaState]):
    name = "ewma"
    version = "2"
    state_type = EwmaState

    def __init__(
        self,
        *,
        fast_alpha: float = 0.3,
        slow_alpha: float = 0.02,
        raise_at: float = 4.0,
        clear_at: float = 2.0,
        min_points: int = 30,
        min_scale: float = 1e-6,
        clip: float = 2.0,
    ) -> None:
        self.fast_alpha = positive("fast_alpha", fast_alpha)
        self.slow_alpha = positive("slow_alpha", slow_alpha)
        if not self.slow_alpha < self.fast_alpha <= 1.0:
            raise ConfigError("need 0 < slow_alpha < fast_alpha <= 1")
        self.raise_at = positive("raise_at", raise_at)
        self.clear_at = positive("clear_at", clear_at)
        if self.clear_at > self.raise_at:
            raise ConfigError("clear_at must not exceed raise_at")
        self.min_points = at_least("min_points", min_points, 2)
        self.min_scale = positive("min_scale", min_scale)
        self.clip = positive("clip", clip)
        self._fast_sd = math.sqrt(self.fast_alpha / (2.0 - self.fast_alpha))

    def initial(self) -> EwmaState:
        return EwmaState()

    def update(self, point: Point, state: EwmaState) -> tuple[Decision, EwmaState]:
        x = point.value
        if not math.isfinite(x):
            return Decision(0.0, False, None, "not a finite value"), state
        if state.n == 0:
            return Decision(0.0, False, None, "warming up"), EwmaState(1, x, x, 0.0, False)
        fast = state.fast + self.fast_alpha * (x - state.fast)
        diff = x - state.slow
        slow = state.slow + self.slow_alpha * diff
        if state.n < self.min_points:
            var = (1.0 - self.slow_alpha) * (state.var + self.slow_alpha * diff * diff)
            return Decision(0.0, False, None, "warming up"), EwmaState(state.n + 1, fast, slow, var, False)
        # The variance starts at 0: undo that bias (it weighs only the points seen so far).
        sd = max(math.sqrt(state.var / (1.0 - (1.0 - self.slow_alpha) ** (state.n - 1))), self.min_scale)
        scale = sd * self._fast_sd
        stat = abs(fast - state.slow) / scale
        active = latch(state.active, stat, self.raise_at, self.clear_at)
        step = min(abs(diff), self.clip * sd)
        var = (1.0 - self.slow_alpha) * (state.var + self.slow_alpha * step * step)
        edge = state.slow + math.copysign(self.raise_at * scale, fast - state.slow)
        return (
            Decision(
                squash(stat, self.raise_at),
                active,
                edge,
                "fast mean %.6g vs level %.6g (%.2f sd)",
                (fast, state.slow, stat),
            ),
            EwmaState(state.n + 1, fast, slow, var, active),
        )
