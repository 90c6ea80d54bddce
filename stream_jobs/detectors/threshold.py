"""Threshold: a value in an alerting category (Korean air-quality bands, flood levels, ...).

``bounds`` are the ascending upper edges of the categories: with ``bounds=(15, 35, 75)`` and
``labels=("good", "moderate", "bad", "very_bad")`` a PM2.5 of 35 is moderate and 36 is bad.
The point is anomalous from category ``alert_level`` up. Hysteresis stops flapping at an
edge: the category rises as soon as the value passes an edge but falls only once the value
is ``hysteresis`` below it. An optional ``low`` limit alerts on values below it (cleared at
``low + hysteresis``).

With ``window`` above 1 the category is that of the mean of the last ``window`` points rather
than of the latest one, the way the air-quality bands are defined on averaged concentrations:
one noisy reading that touches an edge does not put a device into the next category.

The score is 0.5 at the alerting edge and approaches 1 (or 0) as the value moves away from
it by about the edge's own magnitude.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState


class ThresholdState(StateStruct, frozen=True):
    level: int = 0
    """The current category, with hysteresis applied."""
    low: bool = False
    """Below the ``low`` limit (with hysteresis)."""
    recent: tuple[float, ...] = ()
    """The last ``window - 1`` values (for the moving mean; empty with ``window = 1``)."""


def _edge_score(distance: float, scale: float) -> float:
    """0.5 at the edge, logistic in the distance past it (in units of ``scale``)."""
    z = max(-50.0, min(50.0, 4.0 * distance / scale))
    return 1.0 / (1.0 + math.exp(-z))


class Threshold(StructState[ThresholdState]):
    name = "threshold"
    version = "2"
    state_type = ThresholdState

    def __init__(
        self,
        *,
        bounds: Sequence[float] = (),
        labels: Sequence[str] | None = None,
        alert_level: int = 1,
        low: float | None = None,
        hysteresis: float = 0.0,
        window: int = 1,
    ) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ConfigError(f"threshold bounds must be strictly ascending, got {self.bounds}")
        if not self.bounds and low is None:
            raise ConfigError("a threshold needs bounds or a low limit")
        self.labels = (
            tuple(labels) if labels is not None else tuple(f"level{i}" for i in range(len(self.bounds) + 1))
        )
        if len(self.labels) != len(self.bounds) + 1:
            raise ConfigError(f"{len(self.bounds)} bounds need {len(self.bounds) + 1} labels")
        if self.bounds and not 1 <= alert_level <= len(self.bounds):
            raise ConfigError(f"alert_level must be in 1..{len(self.bounds)}, got {alert_level}")
        if hysteresis < 0 or not math.isfinite(hysteresis):
            raise ConfigError(f"hysteresis must be >= 0, got {hysteresis}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {window!r}")
        self.window = window
        self.alert_level = alert_level
        self.low = float(low) if low is not None else None
        self.hysteresis = float(hysteresis)
        self._sticky = tuple(b - self.hysteresis for b in self.bounds)
        """The bounds less the hysteresis: a category is kept while the value is above them."""
        self._edge = self.bounds[alert_level - 1] if self.bounds else 0.0
        self._edge_scale = max(abs(self._edge), self.hysteresis, 1e-9)
        self._low_scale = max(abs(self.low), self.hysteresis, 1e-9) if self.low is not None else 1.0

    def initial(self) -> ThresholdState:
        return ThresholdState()

    def category(self, value: float, previous: int = 0) -> int:
        """The category of ``value``, staying at ``previous`` while within the hysteresis."""
        raw = bisect_left(self.bounds, value)  # the number of bounds below the value
        if raw >= previous:
            return raw
        return min(previous, bisect_left(self._sticky, value))

    def update(self, point: Point, state: ThresholdState) -> tuple[Decision, ThresholdState]:
        if not math.isfinite(point.value):
            return Decision(0.0, False, None, "not a finite value"), state
        x, recent = point.value, state.recent
        if self.window > 1:
            values = (*recent, x)[-self.window :]
            x = math.fsum(values) / len(values)
            recent = values[-(self.window - 1) :]
        shown = "mean %.6g" if self.window > 1 else "%.6g"
        level = self.category(x, state.level)
        low = False
        if self.low is not None:
            low = x < self.low + self.hysteresis if state.low else x < self.low
        # The score is the higher of the two edges' (the high edge wins a tie).
        score = -1.0
        limit: float | None = None
        reason: str = ""
        args: tuple[Any, ...] = ()
        if self.bounds:
            score = _edge_score(x - self._edge, self._edge_scale)
            limit, reason, args = self._edge, f"{shown} is %s", (x, self.labels[level])
        if self.low is not None:
            low_score = _edge_score(self.low - x, self._low_scale)
            if low_score > score:
                score, limit, reason, args = low_score, self.low, f"{shown} vs low limit %.6g", (x, self.low)
        alerting_high = bool(self.bounds) and level >= self.alert_level
        if alerting_high:
            limit = self._edge
            reason, args = f"{shown} is %s (> %.6g)", (x, self.labels[level], limit)
        elif low:
            limit = self.low
            reason, args = f"{shown} is below the low limit %.6g", (x, self.low)
        if state.level != level or state.low != low or state.recent != recent:
            state = ThresholdState(level, low, recent)
        return Decision(score, alerting_high or low, limit, reason, args), state
