"""Which detectors the jobs run, from the detector configuration and registry.

Per (sensor_type, metric): the point detectors over each device's series, the ``peer``
detector (run on closed windows against the district's other devices) and the ``threshold``
detectors, which also watch the district's series of window means. Per sensor type: the
device-level point detectors (``clock_skew``, fed the readings' ``skew_ms``) and the timer
detectors (``silent``).
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

from stream_jobs.detectors.base import Detector, PeerDetector, TimerDetector
from stream_jobs.detectors.config import DEFAULT, DetectorConfig
from stream_jobs.detectors.registry import build

PEER = "peer"
DISTRICT_RULES = ("threshold",)


def rule_of(detector: Detector[Any] | PeerDetector[Any]) -> str:
    """The alert rule a detector answers (its ``rule`` attribute, else its name)."""
    rule = getattr(detector, "rule", None)
    return rule if isinstance(rule, str) else detector.name


class Slot(NamedTuple):
    """A point detector as one device runs it: where its state is kept and the rule it answers."""

    detector: Detector[Any]
    state_key: str
    """``{metric}/{name}`` in the device's detector states."""
    rule: str


class Catalog:
    def __init__(self, config: DetectorConfig = DEFAULT) -> None:
        self.config = config
        self.point_slots = cache(self._point_slots)
        self.device_slots = cache(self._device_slots)
        self.timer_slots = cache(self._timer_slots)
        self.point = cache(self._point)
        self.peer = cache(self._peer)
        self.district = cache(self._district)
        self.device_point = cache(self._device_point)
        self.timer = cache(self._timer)

    def _point_slots(self, sensor_type: str, metric: str) -> tuple[Slot, ...]:
        return _slots(self.point(sensor_type, metric), metric)

    def _device_slots(self, sensor_type: str, metric: str) -> tuple[Slot, ...]:
        """The device-level point detectors, their states kept under ``metric`` (``*``)."""
        return _slots(self.device_point(sensor_type), metric)

    def _timer_slots(self, sensor_type: str, metric: str) -> tuple[Slot, ...]:
        """The timer detectors' point steps, their states kept under ``metric`` (``*``)."""
        return _slots(self.timer(sensor_type), metric)

    def _point(self, sensor_type: str, metric: str) -> tuple[Detector[Any], ...]:
        return tuple(
            build(s)  # type: ignore[misc]  # point detectors are the non-peer entries
            for s in self.config.for_metric(sensor_type, metric)
            if s.name != PEER
        )

    def _peer(self, sensor_type: str, metric: str) -> PeerDetector[Any] | None:
        for s in self.config.for_metric(sensor_type, metric):
            if s.name == PEER:
                detector: PeerDetector[Any] = build(s)  # type: ignore[assignment]  # a peer spec
                return detector
        return None

    def _district(self, sensor_type: str, metric: str) -> tuple[Detector[Any], ...]:
        return tuple(d for d in self._point(sensor_type, metric) if d.name in DISTRICT_RULES)

    def _device_point(self, sensor_type: str) -> tuple[Detector[Any], ...]:
        return tuple(
            build(s)  # type: ignore[misc]  # device-level detectors driven by points
            for s in self.config.for_device(sensor_type)
            if not callable(getattr(build(s), "check", None))
        )

    def _timer(self, sensor_type: str) -> tuple[TimerDetector[Any], ...]:
        return tuple(
            build(s)  # type: ignore[misc]  # the timer detectors (silent)
            for s in self.config.for_device(sensor_type)
            if callable(getattr(build(s), "check", None))
        )


def _slots(detectors: tuple[Detector[Any], ...], metric: str) -> tuple[Slot, ...]:
    return tuple(Slot(d, f"{metric}/{d.name}", rule_of(d)) for d in detectors)


def empty() -> Catalog:
    """A catalog without detectors (aggregation and quality only)."""
    return Catalog(DetectorConfig(metrics={("-", "-"): ()}, devices={"-": ()}))
