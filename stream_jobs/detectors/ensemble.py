"""Ensemble: the highest score of several detectors, with a refractory period.

After a score of at least ``suppress_at`` the ensemble reports 0 for the next
``suppress_for`` points: one event gives one detection, not a burst of them (an alert is
already open; NAB counts only the first detection in a window and charges for the others).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Detector, Point, StateError
from stream_jobs.detectors.common import at_least, positive


class EnsembleState(NamedTuple):
    members: tuple[Any, ...]
    quiet: int = 0
    """Points left in the refractory period."""


class Ensemble:
    name = "ensemble"

    def __init__(
        self,
        members: Sequence[Detector[Any]],
        *,
        suppress_at: float = 0.4,
        suppress_for: int = 10,
        raise_at: float = 0.5,
        name: str = "ensemble",
    ) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        self.members = tuple(members)
        self.suppress_at = positive("suppress_at", suppress_at)
        self.suppress_for = at_least("suppress_for", suppress_for, 0)
        self.raise_at = positive("raise_at", raise_at)
        self.name = name
        self.version = "1(" + ",".join(f"{m.name}:{m.version}" for m in self.members) + ")"

    def initial(self) -> EnsembleState:
        return EnsembleState(tuple(m.initial() for m in self.members))

    def update(self, point: Point, state: EnsembleState) -> tuple[Decision, EnsembleState]:
        decisions = []
        states = []
        for member, member_state in zip(self.members, state.members, strict=True):
            decision, new_state = member.update(point, member_state)
            decisions.append(decision)
            states.append(new_state)
        best = max(decisions, key=lambda d: d.score)
        quiet = state.quiet
        if quiet > 0:
            decision = Decision(0.0, False, best.threshold, f"refractory ({best.explain()})")
            quiet -= 1
        else:
            decision = best._replace(anomalous=best.score >= self.raise_at)
            if best.score >= self.suppress_at:
                quiet = self.suppress_for
        return decision, EnsembleState(tuple(states), quiet)

    def dump(self, state: EnsembleState) -> Any:
        return {
            "members": [m.dump(s) for m, s in zip(self.members, state.members, strict=True)],
            "quiet": state.quiet,
        }

    def load(self, data: Any) -> EnsembleState:
        try:
            members = data["members"]
            quiet = int(data["quiet"])
        except (TypeError, KeyError, ValueError) as exc:
            raise StateError(f"ensemble: bad stored state: {exc!r}") from exc
        if not isinstance(members, list) or len(members) != len(self.members):
            raise StateError("ensemble: stored state has another number of members")
        return EnsembleState(tuple(m.load(d) for m, d in zip(self.members, members, strict=True)), quiet)
