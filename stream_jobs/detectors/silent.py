"""Silent device: no data for ``factor`` times the device's reporting interval.

Silence is found by a timer, not by a point: the caller runs :meth:`Silent.check` with the
current time (the detector reads no clock). :meth:`Silent.update` records each point's
time, which also ends a silence.
"""

from __future__ import annotations

from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, positive, squash


class SilentState(StateStruct, frozen=True):
    last_seen_ms: int | None = None
    active: bool = False


class Silent(StructState[SilentState]):
    name = "silent"
    version = "1"
    state_type = SilentState

    def __init__(self, *, factor: float = 3.0) -> None:
        self.factor = positive("factor", factor)

    def initial(self) -> SilentState:
        return SilentState()

    def update(self, point: Point, state: SilentState) -> tuple[Decision, SilentState]:
        last = point.ts_ms if state.last_seen_ms is None else max(state.last_seen_ms, point.ts_ms)
        return Decision(0.0, False, None, "data arrived"), SilentState(last, False)

    def check(
        self, now_ms: int, last_seen_ms: int | None, interval_s: float, state: SilentState
    ) -> tuple[Decision, SilentState]:
        """Is the device silent at ``now_ms``? ``last_seen_ms`` overrides the recorded time."""
        last = last_seen_ms if last_seen_ms is not None else state.last_seen_ms
        if last is None:
            return Decision(0.0, False, None, "never seen"), state
        limit_ms = self.factor * positive("interval_s", interval_s) * 1000.0
        gap_ms = max(0, now_ms - last)
        silent = gap_ms > limit_ms
        reason = "no data for %.0f s (limit %.0f s)"
        args = (gap_ms / 1000.0, limit_ms / 1000.0)
        return (
            Decision(squash(gap_ms, limit_ms), silent, limit_ms / 1000.0, reason, args),
            SilentState(last, silent),
        )
