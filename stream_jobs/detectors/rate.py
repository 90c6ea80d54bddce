"""Rate of change: the change per minute since the previous point beyond a bound.

``rate = (x - previous) / minutes`` where the interval is at least ``min_interval_s`` (so a
burst of points close together cannot blow noise up into a huge rate). ``direction`` is
``both``, ``up`` (a rising water level) or ``down``. Anomalous from ``|rate| >= max_per_min``
until it falls below ``clear_ratio * max_per_min``. A point not after the previous one
(a duplicate or late arrival) is ignored and leaves the state as it was.
"""

from __future__ import annotations

import math

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, fraction, latch, positive, squash


class RateState(StateStruct, frozen=True):
    last_ms: int | None = None
    last_value: float = 0.0
    active: bool = False


class RateOfChange(StructState[RateState]):
    name = "rate_of_change"
    version = "1"
    state_type = RateState

    def __init__(
        self,
        *,
        max_per_min: float,
        direction: str = "both",
        clear_ratio: float = 0.5,
        min_interval_s: float = 30.0,
    ) -> None:
        if direction not in ("both", "up", "down"):
            raise ConfigError(f"direction must be both, up or down, got {direction!r}")
        self.max_per_min = positive("max_per_min", max_per_min)
        self.direction = direction
        self.clear_ratio = fraction("clear_ratio", clear_ratio)
        self.min_interval_ms = positive("min_interval_s", min_interval_s) * 1000.0

    def initial(self) -> RateState:
        return RateState()

    def update(self, point: Point, state: RateState) -> tuple[Decision, RateState]:
        x = point.value
        if not math.isfinite(x):
            return Decision(0.0, False, None, "not a finite value"), state
        if state.last_ms is None:
            return Decision(0.0, False, None, "first point"), RateState(point.ts_ms, x, False)
        if point.ts_ms <= state.last_ms:
            return Decision(0.0, state.active, None, "not after the previous point; ignored"), state
        minutes = max(point.ts_ms - state.last_ms, self.min_interval_ms) / 60_000.0
        rate = (x - state.last_value) / minutes
        signed = rate if self.direction == "up" else -rate if self.direction == "down" else abs(rate)
        level = max(signed, 0.0)
        active = latch(state.active, level, self.max_per_min, self.clear_ratio * self.max_per_min)
        return (
            Decision(squash(level, self.max_per_min), active, self.max_per_min, "%+.6g per minute", (rate,)),
            RateState(point.ts_ms, x, active),
        )
