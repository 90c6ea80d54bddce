"""Excursion: a value (or its short moving mean) beyond the range of its recent history.

The history is the last ``history`` points, kept as the minimum and maximum of ``blocks``
blocks of ``history / blocks`` points each, so the state stays a few dozen numbers whatever
the history length. The statistic is how far beyond that range the current value lies, as a
fraction of the range: a new high by 2 % of the range scores ``e = 0.02``. The score is
``e / (e + at_half)``.

With ``span > 1`` the channel is the mean of the last ``span`` points (the current one
included), which finds sustained shifts that single points do not show.
"""

from __future__ import annotations

import math

import msgspec

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, at_least, positive, squash


class ExcursionState(StateStruct, frozen=True):
    n: int = 0
    """Points seen (the channel value existed for ``n - span + 1`` of them)."""
    recent: tuple[float, ...] = ()
    """The last ``span - 1`` values, for the moving mean."""
    blocks_hi: tuple[float, ...] = ()
    blocks_lo: tuple[float, ...] = ()
    block_hi: float = 0.0
    block_lo: float = 0.0
    block_n: int = 0
    """Points in the current block; its ``block_hi``/``block_lo`` mean nothing while 0."""


class Excursion(StructState[ExcursionState]):
    name = "excursion"
    version = "1"
    state_type = ExcursionState

    def __init__(
        self,
        *,
        span: int = 1,
        history: int = 4000,
        blocks: int = 16,
        warmup: int = 100,
        at_half: float = 0.018,
        statistic: str = "mean",
    ) -> None:
        if statistic not in ("mean", "spread"):
            raise ConfigError(f"statistic must be 'mean' or 'spread', got {statistic!r}")
        self.statistic = statistic
        self.span = at_least("span", span, 1)
        self.blocks = at_least("blocks", blocks, 1)
        self.block_size = max(1, at_least("history", history, 1) // self.blocks)
        self.warmup = at_least("warmup", warmup, 1)
        self.at_half = positive("at_half", at_half)
        if self.warmup < 2:
            raise ConfigError("warmup must be >= 2: a range needs two points")

    def _channel(self, recent: tuple[float, ...]) -> float:
        if self.span == 1:
            return recent[0]
        mean = math.fsum(recent) / self.span
        if self.statistic == "mean":
            return mean
        return math.sqrt(math.fsum((v - mean) ** 2 for v in recent) / self.span)

    def initial(self) -> ExcursionState:
        return ExcursionState()

    def update(self, point: Point, state: ExcursionState) -> tuple[Decision, ExcursionState]:
        x = point.value
        if not math.isfinite(x):
            return Decision(0.0, False, None, "not a finite value"), state
        recent = (*state.recent, x)
        if len(recent) < self.span:
            return Decision(0.0, False, None, "warming up"), msgspec.structs.replace(
                state, n=state.n + 1, recent=recent
            )
        value = self._channel(recent)
        hi = max(state.blocks_hi, default=-math.inf)
        lo = min(state.blocks_lo, default=math.inf)
        if state.block_n:
            hi, lo = max(hi, state.block_hi), min(lo, state.block_lo)
        decision = Decision(0.0, False, None, "warming up")
        seen = state.n - self.span + 1
        if seen >= self.warmup:
            width = hi - lo
            beyond = max(0.0, value - hi, lo - value)
            # A constant history makes any departure from it infinitely surprising.
            excess = beyond / width if width > 0.0 else (math.inf if beyond > 0.0 else 0.0)
            score = squash(excess, self.at_half)
            limit = hi if value > hi else lo
            what = "above" if value > hi else "below" if value < lo else "within"
            decision = Decision(
                score, score >= 0.5, limit, f"{value:.6g} {what} the range [{lo:.6g}, {hi:.6g}]"
            )
        block_hi = max(state.block_hi, value) if state.block_n else value
        block_lo = min(state.block_lo, value) if state.block_n else value
        blocks_hi, blocks_lo, block_n = state.blocks_hi, state.blocks_lo, state.block_n + 1
        if block_n >= self.block_size:
            blocks_hi = (*blocks_hi, block_hi)[-self.blocks :]
            blocks_lo = (*blocks_lo, block_lo)[-self.blocks :]
            block_hi, block_lo, block_n = 0.0, 0.0, 0
        return decision, ExcursionState(
            state.n + 1, recent[1:], blocks_hi, blocks_lo, block_hi, block_lo, block_n
        )
