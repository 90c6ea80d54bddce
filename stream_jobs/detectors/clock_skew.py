"""Clock skew: a device clock off by more than ``max_skew_ms``.

The point's value is the reading's ``skew_ms`` (device clock minus bridge clock at receive
time, as the bridge measured it), relative to the fleet's clock reference where the jobs keep
one (:func:`stream_jobs.device.fleet_skew`). Anomalous after ``min_count`` readings in a row
that are *off*, until a reading is back within ``clear_ratio * max_skew_ms`` of the device's
accepted offset (hysteresis).

A reading is off when it is more than ``max_skew_ms`` from the reference and this is not the
delay of the device's link. What the link may add is learnt per device: the device's accepted
offset (0 at first) follows a reading that moves towards the reference, or away from it by at
most ``max_step_ms`` since the previous reading (``max_step_ms`` per elapsed
``step_interval_s`` after a gap), but never beyond ``max_offset_ms``. Readings that are off do
not move it.

In real time the link adds milliseconds: a clock that starts more than ``max_skew_ms`` off,
jumps by more than ``max_step_ms`` or drifts beyond ``max_offset_ms`` is found. When a
recording is replayed much faster than real time, the bridge's clock says little about the
devices': a gateway that lags the others by a fraction of a second lags them by minutes of
device time, and that lag changes a little from reading to reading. The accepted offset follows
it, while a clock that jumps ahead or behind is still found. With ``max_step_ms = 0`` (the
default) the offset never leaves ``max_skew_ms`` and the bound is absolute.
"""

from __future__ import annotations

import math

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, at_least, fraction, positive, squash


class ClockSkewState(StateStruct, frozen=True):
    beyond: int = 0
    """Readings in a row that are off."""
    active: bool = False
    offset: float = 0.0
    """The device's accepted offset from the reference beyond ``max_skew_ms`` (ms; 0 within)."""
    last_ts: int | None = None
    """Device time of the previous reading."""


class ClockSkew(StructState[ClockSkewState]):
    name = "clock_skew"
    version = "2"
    state_type = ClockSkewState

    def __init__(
        self,
        *,
        max_skew_ms: float = 60_000.0,
        clear_ratio: float = 0.5,
        min_count: int = 2,
        max_step_ms: float = 0.0,
        step_interval_s: float = 60.0,
        max_offset_ms: float | None = None,
    ) -> None:
        self.max_skew_ms = positive("max_skew_ms", max_skew_ms)
        self.clear_ratio = fraction("clear_ratio", clear_ratio)
        self.min_count = at_least("min_count", min_count, 1)
        if max_step_ms < 0 or not math.isfinite(max_step_ms):
            raise ConfigError(f"max_step_ms must be >= 0, got {max_step_ms!r}")
        self.max_step_ms = float(max_step_ms)
        self.step_interval_ms = positive("step_interval_s", step_interval_s) * 1000.0
        offset = math.inf if max_offset_ms is None else positive("max_offset_ms", max_offset_ms)
        if offset < self.max_skew_ms:
            raise ConfigError("max_offset_ms must not be below max_skew_ms")
        self.max_offset_ms = offset

    def initial(self) -> ClockSkewState:
        return ClockSkewState()

    def _accepts(self, skew: float, state: ClockSkewState, ts: int) -> bool:
        """Whether ``skew`` is the device's link rather than its clock."""
        size = abs(skew)
        if size <= self.max_skew_ms:
            return True
        if size > self.max_offset_ms or self.max_step_ms == 0.0:
            return False
        if size <= abs(state.offset) and skew * state.offset > 0:
            return True  # back towards the reference
        gap = 0 if state.last_ts is None else max(0, ts - state.last_ts)
        allowed = self.max_step_ms * max(1.0, gap / self.step_interval_ms)
        return abs(skew - state.offset) <= allowed

    def update(self, point: Point, state: ClockSkewState) -> tuple[Decision, ClockSkewState]:
        skew = point.value
        if not math.isfinite(skew):
            return Decision(0.0, False, None, "not a finite value"), state
        accepted = self._accepts(skew, state, point.ts_ms)
        distance = 0.0 if accepted else abs(skew - state.offset)
        if state.active:
            # Off until back near the accepted offset (or the reference), with hysteresis.
            near = min(abs(skew - state.offset), abs(skew))
            active = near >= self.clear_ratio * self.max_skew_ms
            beyond = state.beyond + 1 if active else 0
        else:
            beyond = 0 if accepted else state.beyond + 1
            active = beyond >= self.min_count
        beyond_bound = skew if abs(skew) > self.max_skew_ms else 0.0
        offset = beyond_bound if accepted and not active else state.offset
        return (
            Decision(
                squash(distance, self.max_skew_ms),
                active,
                self.max_skew_ms,
                "device clock %+.1f s off (usual %+.1f s)",
                (skew / 1000.0, offset / 1000.0),
            ),
            ClockSkewState(beyond, active, offset, point.ts_ms),
        )
