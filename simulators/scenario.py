"""Scenarios: YAML files that fix a fleet, a time span, the pacing and the injected incidents.

Times inside a scenario are scenario seconds from its start, written as numbers or as
durations such as ``90``, ``"45s"``, ``"10m"``, ``"1h30m"``, ``"2d"``. See
``simulators/scenarios/*.yaml`` for examples; :func:`load` finds a built-in scenario by name or
reads a file by path.

The built-in scenarios start at fixed instants, so that a seed always gives the same bytes.
Device timestamps are scenario time: to feed the live pipeline start ``now`` (ingest refuses
readings more than a week old), and keep in mind that with a time compression above 1 the
device clocks run ahead of the real one (ingest flags the skew, and refuses readings more than
a day ahead).
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from citystream.geo import BY_ID, DISTRICTS
from citystream.sensors import SENSOR_TYPES
from simulators.errors import ScenarioError

SCENARIO_DIR = Path(__file__).parent / "scenarios"

Duration = float | str
_DURATION_RE = re.compile(r"(-)?((?:\d+(?:\.\d+)?[dhms])+)")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def seconds(value: Duration) -> float:
    """Scenario seconds of a number or a duration string (``"1h30m"``, ``"-15m"``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ScenarioError(f"{value!r} is not a duration (use seconds or e.g. '90s', '10m', '1h30m')")
    total = sum(float(n) * _UNIT_S[u] for n, u in _PART_RE.findall(match.group(2)))
    return -total if match.group(1) else total


def format_duration(value: Duration) -> str:
    """``"1h30m"`` for 5400 seconds (whole seconds; as given when it is already text)."""
    if isinstance(value, str):
        return value
    rest = round(value)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


class Kind(enum.StrEnum):
    SPIKE = "spike"
    LEVEL_SHIFT = "level_shift"
    DRIFT = "drift"
    STUCK_VALUE = "stuck_value"
    DROPOUT = "dropout"
    DUPLICATE_BURST = "duplicate_burst"
    OUT_OF_ORDER = "out_of_order"
    MALFORMED = "malformed"
    CLOCK_SKEW = "clock_skew"
    DISTRICT_EVENT = "district_event"


EXPECTED_RULE: dict[Kind, str | None] = {
    Kind.SPIKE: "zscore",
    Kind.LEVEL_SHIFT: "ewma",
    Kind.DRIFT: "peer",
    Kind.STUCK_VALUE: "flatline",
    Kind.DROPOUT: "silent",
    Kind.DUPLICATE_BURST: None,
    Kind.OUT_OF_ORDER: None,
    Kind.MALFORMED: None,
    Kind.CLOCK_SKEW: "clock_skew",
    Kind.DISTRICT_EVENT: "threshold",
}
"""The alert rule (docs/contracts.md) that should answer each incident kind by default."""

RULES = frozenset(
    {"threshold", "zscore", "ewma", "rate_of_change", "flatline", "silent", "peer", "clock_skew"}
)
VALUE_KINDS = frozenset({Kind.SPIKE, Kind.LEVEL_SHIFT, Kind.DRIFT, Kind.STUCK_VALUE})
DEFAULT_MIX = {
    "air_quality": 3.0,
    "noise": 2.0,
    "weather": 1.0,
    "traffic": 2.0,
    "parking": 1.0,
    "water_level": 1.0,
    "streetlight": 1.0,
    "waste_bin": 1.0,
}


class _Spec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class FleetSpec(_Spec):
    size: int = 100
    districts: str | list[str] = "all"
    """``all``, ``han_river`` (the districts on the Han) or a list of district ids."""
    mix: dict[str, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_MIX))
    """Relative share of each sensor type."""
    interval_s: dict[str, float] = msgspec.field(default_factory=dict)
    """Reporting interval per sensor type (default: the type's nominal interval)."""


class RainSpec(_Spec):
    start: Duration
    end: Duration
    mm_per_h: float = 5.0


class WeatherSpec(_Spec):
    rain: list[RainSpec] = msgspec.field(default_factory=list)


class TargetSpec(_Spec):
    sensor_type: str | None = None
    district: str | None = None
    count: int = 1
    devices: list[str] = msgspec.field(default_factory=list)
    """Explicit device ids, without the run's id prefix (``aq-gangnam-001``)."""


class SweepSpec(_Spec):
    origin: Literal["west", "east", "north", "south"]
    """Where the event enters the city; it reaches each district later by distance / speed."""
    speed_kmh: float


class IncidentSpec(_Spec):
    kind: Kind
    start: Duration
    end: Duration
    name: str = ""
    target: TargetSpec | None = None
    """Devices hit by a device incident (every kind but ``district_event``)."""
    metric: str | None = None
    """The metric the incident is about (default: the sensor type's first metric)."""
    factor: float | None = None
    """spike, level_shift, drift: multiply the value (drift reaches it at the end)."""
    delta: float | None = None
    """spike, level_shift, drift: add to the value (drift reaches it at the end)."""
    copies: int = 4
    """duplicate_burst: how many times each message is published."""
    depth: int = 4
    """out_of_order: messages per group delivered in reverse order."""
    skew: Duration = "15m"
    """clock_skew: device clock minus true time."""
    districts: str | list[str] | None = None
    """district_event: ``all``, ``han_river`` or a list."""
    sensor_type: str | None = None
    """district_event: the sensor type it affects."""
    add: dict[str, float] = msgspec.field(default_factory=dict)
    """district_event: amount added to each metric at full strength."""
    ramp: Duration = 0.0
    """district_event: time to build up (and to fade out)."""
    sweep: SweepSpec | None = None
    expected_rule: str | msgspec.UnsetType | None = msgspec.UNSET
    """Override the default rule of the kind (``null`` when no alert is expected)."""


class Scenario(_Spec):
    name: str
    description: str = ""
    seed: int = 1
    start: str = "now"
    """ISO 8601 instant with an offset (``2025-06-02T00:00:00+09:00``) or ``now``."""
    duration: Duration = "1h"
    time_compression: float = 60.0
    """Scenario seconds per wall-clock second (when ``rate`` is not set)."""
    rate: float | None = None
    """Messages per second; when set, pacing follows it instead of the compression (0: no pacing)."""
    qos: int = 1
    connection: Literal["auto", "device", "gateway"] = "auto"
    """One MQTT client per device, one per district gateway, or by fleet size."""
    id_prefix: str = ""
    fleet: FleetSpec = msgspec.field(default_factory=FleetSpec)
    weather: WeatherSpec = msgspec.field(default_factory=WeatherSpec)
    incidents: list[IncidentSpec] = msgspec.field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return seconds(self.duration)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name, or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(builtin_names())
            raise ScenarioError(f"no scenario {str(name_or_path)!r}; built-in: {known}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from exc
    return parse(text, source=str(path))


def parse(text: str, *, source: str = "<scenario>") -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from exc
    return from_dict(data, source=source)


def from_dict(data: Any, *, source: str = "<scenario>") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping")
    try:
        scenario = msgspec.convert(data, Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{source}: {exc}") from exc
    problems = validate(scenario)
    if problems:
        raise ScenarioError(f"{source}: " + "; ".join(problems))
    return scenario


def parse_start(start: str) -> int | None:
    """Epoch ms of an ISO 8601 instant; ``None`` for ``now``."""
    if start == "now":
        return None
    try:
        instant = datetime.fromisoformat(start)
    except ValueError as exc:
        raise ScenarioError(f"start {start!r} is neither 'now' nor an ISO 8601 instant") from exc
    if instant.tzinfo is None:
        raise ScenarioError(f"start {start!r} needs a UTC offset (Seoul is +09:00)")
    return int(instant.timestamp() * 1000)


def district_ids(selection: str | list[str]) -> list[str]:
    """District ids of ``all``, ``han_river`` or a list (unknown ids raise)."""
    if selection == "all":
        return [d.id for d in DISTRICTS]
    if selection == "han_river":
        return [d.id for d in DISTRICTS if d.han_river]
    if isinstance(selection, str):
        selection = [selection]
    unknown = [d for d in selection if d not in BY_ID]
    if unknown:
        raise ScenarioError(f"unknown districts {unknown} (use romanised Seoul districts)")
    return list(dict.fromkeys(selection))


def validate(s: Scenario) -> list[str]:
    """Every problem of a scenario, as readable sentences (empty when it is valid)."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    def secs(value: Duration, what: str) -> float | None:
        try:
            return seconds(value)
        except ScenarioError as exc:
            problems.append(f"{what}: {exc}")
            return None

    duration = secs(s.duration, "duration")
    check(duration is None or duration > 0, "duration must be positive")
    check(s.time_compression > 0, "time_compression must be positive")
    check(s.rate is None or s.rate >= 0, "rate must be >= 0")
    check(s.qos in (0, 1), "qos must be 0 or 1")
    try:
        parse_start(s.start)
    except ScenarioError as exc:
        problems.append(str(exc))
    check(re.fullmatch(r"[a-z0-9-]{0,20}", s.id_prefix) is not None, "id_prefix: up to 20 of [a-z0-9-]")
    f = s.fleet
    check(f.size > 0, "fleet.size must be positive")
    try:
        district_ids(f.districts)
    except ScenarioError as exc:
        problems.append(f"fleet.districts: {exc}")
    for name, weight in f.mix.items():
        check(name in SENSOR_TYPES, f"fleet.mix: unknown sensor type {name!r}")
        check(weight >= 0, f"fleet.mix.{name} must be >= 0")
    check(sum(f.mix.values()) > 0, "fleet.mix needs a positive share")
    for name, interval in f.interval_s.items():
        check(name in SENSOR_TYPES, f"fleet.interval_s: unknown sensor type {name!r}")
        check(0.1 <= interval <= 86400, f"fleet.interval_s.{name} must be between 0.1 and 86400")
    for i, rain in enumerate(s.weather.rain):
        a, b = secs(rain.start, f"weather.rain[{i}].start"), secs(rain.end, f"weather.rain[{i}].end")
        check(a is None or b is None or a < b, f"weather.rain[{i}]: start must be before end")
        check(rain.mm_per_h >= 0, f"weather.rain[{i}].mm_per_h must be >= 0")
    for i, inc in enumerate(s.incidents):
        problems += [f"incidents[{i}] ({inc.kind}): {p}" for p in _incident_problems(inc, f)]
    return problems


def _incident_problems(inc: IncidentSpec, fleet: FleetSpec) -> list[str]:
    problems: list[str] = []
    try:
        start, end = seconds(inc.start), seconds(inc.end)
        if not 0 <= start < end:
            problems.append("needs 0 <= start < end")
        seconds(inc.skew)
        if seconds(inc.ramp) < 0:
            problems.append("ramp must be >= 0")
    except ScenarioError as exc:
        problems.append(str(exc))
    if isinstance(inc.expected_rule, str) and inc.expected_rule not in RULES:
        problems.append(f"expected_rule {inc.expected_rule!r} is not a rule ({', '.join(sorted(RULES))})")
    if inc.kind is Kind.DISTRICT_EVENT:
        return problems + _district_event_problems(inc)
    return problems + _device_incident_problems(inc, fleet)


def _district_event_problems(inc: IncidentSpec) -> list[str]:
    if inc.sensor_type not in SENSOR_TYPES:
        return [f"sensor_type {inc.sensor_type!r} is not a sensor type"]
    problems = []
    try:
        district_ids(inc.districts or "all")
    except ScenarioError as exc:
        problems.append(str(exc))
    if not inc.add:
        problems.append("add: say how much to add to which metric")
    sensor = SENSOR_TYPES[inc.sensor_type]
    problems += [f"{m!r} is not a metric of {sensor.name}" for m in inc.add if sensor.metric(m) is None]
    if inc.metric is not None and sensor.metric(inc.metric) is None:
        problems.append(f"{inc.metric!r} is not a metric of {sensor.name}")
    if inc.sweep is not None and inc.sweep.speed_kmh <= 0:
        problems.append("sweep.speed_kmh must be positive")
    return problems


def _device_incident_problems(inc: IncidentSpec, fleet: FleetSpec) -> list[str]:
    t = inc.target
    if t is None:
        return ["target: which devices (sensor_type, district, count or devices)"]
    problems = []
    if t.sensor_type is not None and t.sensor_type not in SENSOR_TYPES:
        problems.append(f"target.sensor_type {t.sensor_type!r} is not a sensor type")
    elif t.sensor_type is not None and fleet.mix.get(t.sensor_type, 0) <= 0:
        problems.append(f"the fleet has no {t.sensor_type} devices")
    if t.district is not None and t.district not in BY_ID:
        problems.append(f"target.district {t.district!r} is not a Seoul district")
    if t.count < 1:
        problems.append("target.count must be >= 1")
    if inc.metric is not None:
        sensor = SENSOR_TYPES.get(t.sensor_type or "")
        if sensor is not None and sensor.metric(inc.metric) is None:
            problems.append(f"{inc.metric!r} is not a metric of {sensor.name}")
        elif not any(st.metric(inc.metric) for st in SENSOR_TYPES.values()):
            problems.append(f"metric {inc.metric!r} is unknown")
    magnitude = inc.kind in (Kind.SPIKE, Kind.LEVEL_SHIFT, Kind.DRIFT)
    if magnitude and inc.factor is not None and inc.delta is not None:
        problems.append("give factor or delta, not both")
    if inc.kind is Kind.DUPLICATE_BURST and inc.copies < 2:
        problems.append("copies must be >= 2")
    if inc.kind is Kind.OUT_OF_ORDER and inc.depth < 2:
        problems.append("depth must be >= 2")
    return problems
