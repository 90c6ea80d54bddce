"""Detectors by name: the one place that turns a :class:`DetectorSpec` into a detector.

The rule ids of ``docs/contracts.md`` are registry names; ``excursion`` and ``ensemble`` are
the building blocks of the NAB detector and ``nab`` is that detector as configured in
:data:`stream_jobs.detectors.config.NAB`.

Detectors here are stateless objects (all state is in the values they return), so one
instance per spec serves every device: :func:`build` caches them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, cast

from citystream.errors import ConfigError
from stream_jobs.detectors.base import Detector, PeerDetector, TimerDetector
from stream_jobs.detectors.clock_skew import ClockSkew
from stream_jobs.detectors.config import NAB, DetectorSpec
from stream_jobs.detectors.ensemble import Ensemble
from stream_jobs.detectors.ewma import Ewma
from stream_jobs.detectors.excursion import Excursion
from stream_jobs.detectors.flatline import Flatline
from stream_jobs.detectors.peer import Peer
from stream_jobs.detectors.rate import RateOfChange
from stream_jobs.detectors.silent import Silent
from stream_jobs.detectors.threshold import Threshold
from stream_jobs.detectors.zscore import ZScore

AnyDetector = Detector[Any] | TimerDetector[Any] | PeerDetector[Any]
Factory = Callable[..., AnyDetector]


def _ensemble(*, members: Sequence[Mapping[str, Any]], name: str = "ensemble", **params: Any) -> Ensemble:
    built = []
    for member in members:
        if not isinstance(member, Mapping) or "name" not in member:
            raise ConfigError(f"ensemble member {member!r} needs a name")
        built.append(point_detector(DetectorSpec(member["name"], member.get("params", {}))))
    return Ensemble(built, name=name, **params)


def _nab(**overrides: Any) -> Ensemble:
    return _ensemble(**{**NAB.params, **overrides, "name": "nab"})


FACTORIES: dict[str, Factory] = {
    "threshold": Threshold,
    "zscore": ZScore,
    "ewma": Ewma,
    "rate_of_change": RateOfChange,
    "flatline": Flatline,
    "silent": Silent,
    "peer": Peer,
    "clock_skew": ClockSkew,
    "excursion": Excursion,
    "ensemble": _ensemble,
    "nab": _nab,
}

RULES = ("threshold", "zscore", "ewma", "rate_of_change", "flatline", "silent", "peer", "clock_skew")
"""The alert rule ids (``docs/contracts.md``)."""


def names() -> tuple[str, ...]:
    return tuple(FACTORIES)


def create(name: str, params: Mapping[str, Any] | None = None) -> AnyDetector:
    """A new detector; :class:`ConfigError` for an unknown name or bad parameters."""
    factory = FACTORIES.get(name)
    if factory is None:
        raise ConfigError(f"unknown detector {name!r} (known: {', '.join(FACTORIES)})")
    try:
        return factory(**dict(params or {}))
    except TypeError as exc:
        raise ConfigError(f"detector {name}: {exc}") from exc


def point_detector(spec: DetectorSpec) -> Detector[Any]:
    """A detector driven by points alone (not ``peer``)."""
    detector = build(spec)
    if not callable(getattr(detector, "update", None)):
        raise ConfigError(f"{spec.name} is not driven by points alone")
    return cast(Detector[Any], detector)


def timer_detector(spec: DetectorSpec) -> TimerDetector[Any]:
    """A detector with points and a timer ``check`` (``silent``)."""
    detector = build(spec)
    if not callable(getattr(detector, "update", None)) or not callable(getattr(detector, "check", None)):
        raise ConfigError(f"{spec.name} has no timer check")
    return cast(TimerDetector[Any], detector)


def peer_detector(spec: DetectorSpec) -> PeerDetector[Any]:
    """A detector over a device's value and its peers' values (``peer``)."""
    detector = build(spec)
    if callable(getattr(detector, "update", None)) or not callable(getattr(detector, "check", None)):
        raise ConfigError(f"{spec.name} is not a peer detector")
    return cast(PeerDetector[Any], detector)


def is_timer(spec: DetectorSpec) -> bool:
    detector = build(spec)
    return callable(getattr(detector, "update", None)) and callable(getattr(detector, "check", None))


def is_peer(spec: DetectorSpec) -> bool:
    detector = build(spec)
    return callable(getattr(detector, "check", None)) and not callable(getattr(detector, "update", None))


def build(spec: DetectorSpec) -> AnyDetector:
    """The detector of a spec, shared by every caller with an equal spec."""
    return _build_cached(spec.name, _freeze(spec.params))


@lru_cache(maxsize=512)
def _build_cached(name: str, frozen: tuple[tuple[str, Any], ...]) -> AnyDetector:
    return create(name, {k: _thaw(v) for k, v in frozen})


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("__seq__", tuple(_freeze(v) for v in value))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        if len(value) == 2 and value[0] == "__seq__":
            return tuple(_thaw(v) for v in value[1])
        return {k: _thaw(v) for k, v in value}
    return value
