"""Peer: a device far from the robust centre of its district's devices of the same type.

:meth:`Peer.check` gets the device's value and the current values of its peers (the other
devices of the same district and sensor type, a small snapshot the caller keeps). With at
least ``min_peers`` of them, ``z = |x - median| / scale`` where the scale is the peers'
``1.4826 * MAD``, but at least ``min_scale`` and ``rel_scale * |median|`` (a handful of
agreeing peers must not make every small difference an anomaly). Anomalous from
``raise_at`` until below ``clear_at``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Decision, Point
from stream_jobs.detectors.common import StateStruct, StructState, at_least, latch, positive, squash
from stream_jobs.detectors.zscore import robust_centre


class PeerState(StateStruct, frozen=True):
    active: bool = False


class Peer(StructState[PeerState]):
    name = "peer"
    version = "1"
    state_type = PeerState

    def __init__(
        self,
        *,
        min_peers: int = 3,
        raise_at: float = 4.0,
        clear_at: float = 3.0,
        min_scale: float = 1e-6,
        rel_scale: float = 0.1,
    ) -> None:
        self.min_peers = at_least("min_peers", min_peers, 2)
        self.raise_at = positive("raise_at", raise_at)
        self.clear_at = positive("clear_at", clear_at)
        if self.clear_at > self.raise_at:
            raise ConfigError("clear_at must not exceed raise_at")
        self.min_scale = positive("min_scale", min_scale)
        if rel_scale < 0 or not math.isfinite(rel_scale):
            raise ConfigError(f"rel_scale must be >= 0, got {rel_scale}")
        self.rel_scale = float(rel_scale)

    def initial(self) -> PeerState:
        return PeerState()

    def check(self, point: Point, peers: Sequence[float], state: PeerState) -> tuple[Decision, PeerState]:
        x = point.value
        values = [v for v in peers if math.isfinite(v)]
        if not math.isfinite(x):
            return Decision(0.0, False, None, "not a finite value"), state
        if len(values) < self.min_peers:
            return Decision(0.0, state.active, None, f"only {len(values)} peers"), state
        med, spread = robust_centre(values)
        scale = max(spread, self.min_scale, self.rel_scale * abs(med))
        z = abs(x - med) / scale
        active = latch(state.active, z, self.raise_at, self.clear_at)
        edge = med + math.copysign(self.raise_at * scale, x - med)
        reason = f"{x:.6g} vs peer median {med:.6g} of {len(values)} ({z:.2f} scale units)"
        return Decision(squash(z, self.raise_at), active, edge, reason), PeerState(active)
