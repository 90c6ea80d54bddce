"""Small pieces every detector uses: score shaping, hysteresis, state encoding."""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

import msgspec

from citystream.errors import ConfigError
from stream_jobs.detectors.base import StateError


class StateStruct(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the detectors' state values: immutable, strict when loaded back."""


St = TypeVar("St", bound=StateStruct)


def squash(x: float, at_half: float) -> float:
    """Map ``x >= 0`` into [0, 1): 0 at 0, 0.5 at ``at_half``, towards 1 as ``x`` grows.

    Every detector scales its statistic this way, so a score of 0.5 means "exactly at the
    configured limit" whatever the detector.
    """
    if not x > 0.0:  # also catches NaN
        return 0.0
    if math.isinf(x):
        return 1.0
    return x / (x + at_half)


def latch(active: bool, level: float, raise_at: float, clear_at: float) -> bool:
    """Hysteresis: become active at ``level >= raise_at``, stay active until ``level < clear_at``."""
    if active:
        return level >= clear_at
    return level >= raise_at


def positive(name: str, value: float) -> float:
    if not value > 0.0 or math.isinf(value):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def at_least(name: str, value: int, low: int) -> int:
    if int(value) != value or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def fraction(name: str, value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


class StructState(Generic[St]):
    """``dump``/``load`` for detectors whose state is a frozen msgspec Struct."""

    state_type: type[St]

    def dump(self, state: St) -> Any:
        return msgspec.to_builtins(state)

    def load(self, data: Any) -> St:
        try:
            return msgspec.convert(data, self.state_type)
        except msgspec.ValidationError as exc:
            raise StateError(f"{type(self).__name__}: bad stored state: {exc}") from exc
