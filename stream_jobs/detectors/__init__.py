"""Pure anomaly detectors: ``update(point, state) -> (decision, state)`` over immutable state.

Use :func:`stream_jobs.detectors.registry.build` with a spec from
:mod:`stream_jobs.detectors.config` to get one; see :mod:`stream_jobs.detectors.base` for
the contract.
"""

from stream_jobs.detectors.base import Decision, Detector, PeerDetector, Point, StateError, TimerDetector

__all__ = ["Decision", "Detector", "PeerDetector", "Point", "StateError", "TimerDetector"]
