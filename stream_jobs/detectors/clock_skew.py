"""Clock skew: a device clock off by more than ``max_skew_ms``.

The point's value is the reading's ``skew_ms`` (device clock minus bridge clock at receive
time, as the bridge measured it). Anomalous after ``min_count`` readings in a row beyond the
bound (one late delivery is not a bad clock), until ``|skew|`` falls below
``clear_ratio * max_skew_ms``.
"""

from __future__ import annotations

import math

from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, at_least, fraction, positive, squash


class ClockSkewState(StateStruct, frozen=True):
    beyond: int = 0
    """Readings in a row beyond the bound."""
    active: bool = False


class ClockSkew(StructState[ClockSkewState]):
    name = "clock_skew"
    version = "1"
    state_type = ClockSkewState

    def __init__(
        self, *, max_skew_ms: float = 60_000.0, clear_ratio: float = 0.5, min_count: int = 2
    ) -> None:
        self.max_skew_ms = positive("max_skew_ms", max_skew_ms)
        self.clear_ratio = fraction("clear_ratio", clear_ratio)
        self.min_count = at_least("min_count", min_count, 1)

    def initial(self) -> ClockSkewState:
        return ClockSkewState()

    def update(self, point: Point, state: ClockSkewState) -> tuple[Decision, ClockSkewState]:
        skew = point.value
        if not math.isfinite(skew):
            return Decision(0.0, False, None, "not a finite value"), state
        size = abs(skew)
        beyond = state.beyond + 1 if size > self.max_skew_ms else 0
        clears = size < self.clear_ratio * self.max_skew_ms
        active = not clears if state.active else beyond >= self.min_count
        return (
            Decision(
                squash(size, self.max_skew_ms),
                active,
                self.max_skew_ms,
                "device clock %+.1f s off",
                (skew / 1000.0,),
            ),
            ClockSkewState(beyond, active),
        )
