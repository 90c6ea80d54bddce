"""The detector contract: pure functions over immutable state values.

A detector never imports Faust. ``update(point, state) -> (decision, state)`` is all it
does; the stream job keeps the state in a Faust table (with a changelog), and the NAB
evaluation runs the very same code offline over CSV files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

from citystream.errors import CitystreamError

S = TypeVar("S")


class StateError(CitystreamError):
    """A stored detector state cannot be loaded (wrong shape or another version)."""


class Point(NamedTuple):
    """One observation of one series (a device's metric)."""

    ts_ms: int
    value: float


class Decision(NamedTuple):
    """What a detector says about one point.

    ``score`` is in [0, 1] (for NAB, the anomaly score); ``anomalous`` is the detector's own
    decision with its hysteresis applied; ``threshold`` is what the value was compared with,
    when there is such a thing; ``reason`` is a short human-readable explanation.
    """

    score: float
    anomalous: bool
    threshold: float | None = None
    reason: str = ""
    args: tuple[Any, ...] = ()
    """When given, ``reason`` is a ``%``-template of them, formatted only when it is read
    (:meth:`explain`): most decisions are never shown, and formatting is a cost per point."""

    def explain(self) -> str:
        """The reason in words."""
        return self.reason % self.args if self.args else self.reason


class Detector(Protocol[S]):
    """A named, versioned, pure detector over one series."""

    name: str
    version: str

    def initial(self) -> S:
        """The state before the first point."""
        ...

    def update(self, point: Point, state: S) -> tuple[Decision, S]:
        """Score ``point`` given ``state``; return the decision and the next state."""
        ...

    def dump(self, state: S) -> Any:
        """A JSON-able form of the state (for Faust tables)."""
        ...

    def load(self, data: Any) -> S:
        """The inverse of :meth:`dump`."""
        ...


class TimerDetector(Detector[S], Protocol[S]):
    """A detector that also fires on a timer, when no point arrives (``silent``)."""

    def check(self, now_ms: int, last_seen_ms: int | None, interval_s: float, state: S) -> tuple[Decision, S]:
        """Decide at wall-clock ``now_ms`` (given by the caller) about a device last seen then."""
        ...


class PeerDetector(Protocol[S]):
    """A detector over one device's value and a snapshot of its peers' current values."""

    name: str
    version: str

    def initial(self) -> S: ...

    def check(self, point: Point, peers: Sequence[float], state: S) -> tuple[Decision, S]:
        """Compare ``point`` with ``peers`` (the other devices, not including this one)."""
        ...

    def dump(self, state: S) -> Any: ...

    def load(self, data: Any) -> S: ...
