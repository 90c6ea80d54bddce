"""Sensor types, their metrics, units and physical ranges (the schema ingest validates).

Thresholds for alerts are configuration of the stream jobs; the ranges here only say what
a working sensor can physically report.
"""

from __future__ import annotations

from typing import NamedTuple


class Metric(NamedTuple):
    name: str
    unit: str
    low: float
    high: float


class SensorType(NamedTuple):
    name: str
    metrics: tuple[Metric, ...]
    interval_s: float
    """Nominal reporting interval of a device of this type."""

    def metric(self, name: str) -> Metric | None:
        for m in self.metrics:
            if m.name == name:
                return m
        return None


SENSOR_TYPES: dict[str, SensorType] = {
    t.name: t
    for t in (
        SensorType(
            "air_quality",
            (
                Metric("pm10", "ug/m3", 0.0, 2000.0),
                Metric("pm25", "ug/m3", 0.0, 1000.0),
                Metric("no2", "ppm", 0.0, 2.0),
                Metric("o3", "ppm", 0.0, 1.0),
                Metric("co", "ppm", 0.0, 100.0),
            ),
            60.0,
        ),
        SensorType("noise", (Metric("laeq", "dB", 0.0, 140.0),), 60.0),
        SensorType(
            "weather",
            (
                Metric("temperature", "Cel", -40.0, 50.0),
                Metric("humidity", "%RH", 0.0, 100.0),
                Metric("wind", "m/s", 0.0, 75.0),
            ),
            60.0,
        ),
        SensorType(
            "traffic",
            (Metric("vehicle_count", "count", 0.0, 20000.0), Metric("avg_speed", "km/h", 0.0, 250.0)),
            60.0,
        ),
        SensorType(
            "parking",
            (Metric("occupied", "count", 0.0, 10000.0), Metric("capacity", "count", 0.0, 10000.0)),
            60.0,
        ),
        SensorType("water_level", (Metric("level_cm", "cm", -200.0, 3000.0),), 60.0),
        SensorType("streetlight", (Metric("power_w", "W", 0.0, 5000.0),), 60.0),
        SensorType("waste_bin", (Metric("fill_pct", "%", 0.0, 100.0),), 300.0),
    )
}


def is_sensor_type(name: str) -> bool:
    return name in SENSOR_TYPES
