"""Which detectors run for which sensor type and metric, with which parameters.

Three kinds of entries:

- per ``(sensor_type, metric)``: detectors over one device's series (``threshold``,
  ``zscore``, ``ewma``, ``rate_of_change``, ``flatline``) and the ``peer`` detector, which
  compares a device with the other devices of its district;
- per ``sensor_type``: device-level detectors (``silent``, on a timer with the type's
  reporting interval, and ``clock_skew`` over the readings' ``skew_ms``);
- ``NAB``: the ensemble that ``citystream evaluate nab`` scores (one parameter set for the
  whole corpus).

Thresholds follow the Korean air-quality index (AirKorea CAI bands: good / moderate / bad /
very bad), the KMA heat and strong-wind advisories and plain operational limits elsewhere.
A deployment can override any entry with a JSON or YAML file (:meth:`DetectorConfig.load`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from citystream.errors import ConfigError
from citystream.sensors import SENSOR_TYPES

AQ_LABELS = ("good", "moderate", "bad", "very_bad")
"""좋음 / 보통 / 나쁨 / 매우나쁨."""


class DetectorSpec(NamedTuple):
    """A registry name and the keyword parameters of its factory."""

    name: str
    params: Mapping[str, Any] = MappingProxyType({})


def spec(name: str, **params: Any) -> DetectorSpec:
    return DetectorSpec(name, MappingProxyType(params))


def _aq(bounds: tuple[float, float, float], hysteresis: float) -> DetectorSpec:
    # The bands are defined on averaged concentrations: the mean of the last 10 points
    # (10 minutes at the usual one reading a minute).
    return spec("threshold", bounds=bounds, labels=AQ_LABELS, alert_level=2, hysteresis=hysteresis, window=10)


def _stats(min_scale: float, *, window: int = 60) -> tuple[DetectorSpec, DetectorSpec]:
    return (
        spec("zscore", window=window, min_points=10, raise_at=5.0, clear_at=3.0, min_scale=min_scale),
        spec("ewma", fast_alpha=0.3, slow_alpha=0.02, raise_at=5.0, clear_at=2.5, min_scale=min_scale),
    )


def _flat(minutes: float, tolerance: float = 0.0, exempt: Sequence[float] = ()) -> DetectorSpec:
    return spec(
        "flatline",
        min_points=max(2, int(minutes)),
        min_duration_s=minutes * 60.0,
        tolerance=tolerance,
        exempt=tuple(exempt),
    )


def _peer(min_scale: float, rel_scale: float = 0.25) -> DetectorSpec:
    # Two peers are enough: with one of them off, the median and the MAD move and the other
    # device stays below the scale; the city's districts mostly have three devices of a type.
    return spec("peer", min_peers=2, raise_at=4.0, clear_at=3.0, min_scale=min_scale, rel_scale=rel_scale)


METRIC_DEFAULTS: dict[tuple[str, str], tuple[DetectorSpec, ...]] = {
    ("air_quality", "pm25"): (
        _aq((15, 35, 75), 3.0),
        *_stats(4.0),
        spec("rate_of_change", max_per_min=30.0),
        _flat(60),
        _peer(5.0),
    ),
    ("air_quality", "pm10"): (
        _aq((30, 80, 150), 5.0),
        *_stats(10.0),
        spec("rate_of_change", max_per_min=60.0),
        _flat(60),
        _peer(8.0),
    ),
    ("air_quality", "no2"): (
        _aq((0.03, 0.06, 0.2), 0.005),
        *_stats(0.003),
        _flat(120),
        _peer(0.01),
    ),
    ("air_quality", "o3"): (
        _aq((0.03, 0.09, 0.15), 0.005),
        *_stats(0.003),
        _flat(120),
        _peer(0.01),
    ),
    ("air_quality", "co"): (
        _aq((2.0, 9.0, 15.0), 0.5),
        *_stats(0.1),
        _flat(120),
        _peer(0.3),
    ),
    ("noise", "laeq"): (
        spec(
            "threshold",
            bounds=(70.0, 80.0),
            labels=("normal", "loud", "very_loud"),
            alert_level=2,
            hysteresis=3.0,
        ),
        *_stats(1.5),
        _flat(30, tolerance=0.05),
        _peer(3.0, 0.1),
    ),
    ("weather", "temperature"): (
        spec(
            "threshold",
            bounds=(33.0, 35.0),
            labels=("normal", "heat_advisory", "heat_warning"),
            alert_level=1,
            low=-12.0,
            hysteresis=1.0,
        ),
        *_stats(0.6),
        spec("rate_of_change", max_per_min=2.0),
        _flat(30),
        _peer(1.5, 0.0),
    ),
    ("weather", "humidity"): (*_stats(4.0), _flat(180), _peer(8.0, 0.0)),
    ("weather", "wind"): (
        spec(
            "threshold",
            bounds=(14.0, 21.0),
            labels=("normal", "strong_wind_advisory", "strong_wind_warning"),
            alert_level=1,
            hysteresis=2.0,
        ),
        *_stats(0.5),
        _flat(240, exempt=(0.0,)),
    ),
    ("traffic", "vehicle_count"): (*_stats(5.0), _flat(60, exempt=(0.0,))),
    ("traffic", "avg_speed"): (*_stats(3.0), _flat(60, exempt=(0.0,))),
    ("parking", "occupied"): (*_stats(5.0), spec("rate_of_change", max_per_min=50.0)),
    ("parking", "capacity"): (spec("rate_of_change", max_per_min=1.0),),
    ("water_level", "level_cm"): (
        spec(
            "threshold",
            bounds=(250.0, 350.0, 450.0),
            labels=("normal", "attention", "watch", "warning"),
            alert_level=2,
            hysteresis=10.0,
        ),
        *_stats(2.0),
        spec("rate_of_change", max_per_min=5.0, direction="up"),
        _flat(360, tolerance=0.1),
    ),
    # A street light's power follows its schedule (off by day, a ramp at dusk and dawn): the
    # statistical detectors would take every switch-over for a shift. A lamp out among its lit
    # neighbours is the peer detector's; a meter stuck on one value the flatline's.
    ("streetlight", "power_w"): (_flat(120, tolerance=0.5, exempt=(0.0,)), _peer(20.0, 0.25)),
    ("waste_bin", "fill_pct"): (
        spec(
            "threshold",
            bounds=(80.0, 95.0),
            labels=("ok", "nearly_full", "full"),
            alert_level=2,
            hysteresis=5.0,
        ),
        spec("rate_of_change", max_per_min=10.0, direction="up", min_interval_s=300.0),
    ),
}

DEVICE_DEFAULTS: tuple[DetectorSpec, ...] = (
    spec("silent", factor=3.0),
    spec("clock_skew", max_skew_ms=60_000.0, clear_ratio=0.5, min_count=2),
)

NAB = spec(
    "ensemble",
    members=(
        {"name": "excursion", "params": {"span": 1, "history": 6000, "at_half": 0.018}},
        {"name": "excursion", "params": {"span": 12, "history": 6000, "at_half": 0.072}},
        {
            "name": "excursion",
            "params": {"span": 48, "history": 1000, "at_half": 0.18, "statistic": "spread"},
        },
    ),
    suppress_at=0.5,
    suppress_for=10,
    raise_at=0.5,
)
"""The one parameter set scored on the whole NAB corpus (see ``citystream evaluate nab``).

Three excursion channels, each over a long sliding history: the value itself (a new high or
low), its 12-point mean (a sustained shift) and its 48-point spread (a change of noise or a
flat stretch), each weighted by its ``at_half``; then 10 quiet points after a detection.
"""


class DetectorConfig:
    """The detector table: defaults, optionally overridden entry by entry."""

    def __init__(
        self,
        metrics: Mapping[tuple[str, str], Sequence[DetectorSpec]] | None = None,
        devices: Mapping[str, Sequence[DetectorSpec]] | None = None,
    ) -> None:
        self.metrics = {k: tuple(v) for k, v in (metrics or METRIC_DEFAULTS).items()}
        self.devices = {
            k: tuple(v) for k, v in (devices or dict.fromkeys(SENSOR_TYPES, DEVICE_DEFAULTS)).items()
        }

    def for_metric(self, sensor_type: str, metric: str) -> tuple[DetectorSpec, ...]:
        """The detectors of one metric of one sensor type (``peer`` included); may be empty."""
        return self.metrics.get((sensor_type, metric), ())

    def for_device(self, sensor_type: str) -> tuple[DetectorSpec, ...]:
        """Device-level detectors (``silent``, ``clock_skew``) of a sensor type."""
        return self.devices.get(sensor_type, ())

    def with_overrides(self, data: Mapping[str, Any]) -> DetectorConfig:
        """Replace entries: ``{"metrics": {"air_quality/pm25": [{"name": ..., "params": {...}}]},
        "devices": {"noise": [...]}}``; entries not named keep their defaults."""
        metrics = dict(self.metrics)
        devices = dict(self.devices)
        for key, specs in _section(data, "metrics").items():
            sensor_type, sep, metric = key.partition("/")
            if not sep or sensor_type not in SENSOR_TYPES:
                raise ConfigError(f"detector config: {key!r} is not 'sensor_type/metric'")
            metrics[(sensor_type, metric)] = _specs(key, specs)
        for key, specs in _section(data, "devices").items():
            if key not in SENSOR_TYPES:
                raise ConfigError(f"detector config: unknown sensor type {key!r}")
            devices[key] = _specs(key, specs)
        return DetectorConfig(metrics, devices)

    @classmethod
    def load(cls, path: Path) -> DetectorConfig:
        """The defaults with the overrides of a JSON or YAML file."""
        try:
            text = path.read_text()
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read detector config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"detector config {path} is not a mapping")
        return cls().with_overrides(data)


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigError(f"detector config: {name} must be a mapping")
    return section


def _specs(key: str, raw: Any) -> tuple[DetectorSpec, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"detector config: {key} must be a list of detectors")
    out = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ConfigError(f"detector config: {key}: each detector needs a name")
        params = item.get("params", {})
        if not isinstance(params, Mapping):
            raise ConfigError(f"detector config: {key}: params must be a mapping")
        out.append(DetectorSpec(item["name"], MappingProxyType(dict(params))))
    return tuple(out)


DEFAULT = DetectorConfig()
