"""What each sensor type measures, as a function of time, place and weather.

A model is built per device (its own calibration, placement and random stream) and asked for
its readings in time order. Shapes come from :mod:`simulators.profiles` (rush hours, the daily
temperature cycle, office hours), the shared fields from :mod:`simulators.environment` (rain,
wash-out, district fluctuations), and each reading adds the sensor's own noise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from citystream.geo import BY_ID
from citystream.sensors import SENSOR_TYPES
from simulators.environment import Environment, lerp
from simulators.fleet import Device
from simulators.profiles import (
    DAY_MS,
    HOUR_MS,
    OFFICE_HOURS,
    PM_DIURNAL,
    RESIDENTIAL,
    SEOUL_UTC_OFFSET_MS,
    SUNLIGHT,
    TRAFFIC_WEEKDAY,
    TRAFFIC_WEEKEND,
    WASTE_ACTIVITY,
    character,
    local_hour,
    noise,
    triangle,
    weekday,
)

DIGITS: dict[str, int] = {
    "pm10": 1,
    "pm25": 1,
    "no2": 3,
    "o3": 3,
    "co": 2,
    "laeq": 1,
    "temperature": 1,
    "humidity": 1,
    "wind": 1,
    "vehicle_count": 0,
    "avg_speed": 1,
    "occupied": 0,
    "capacity": 0,
    "level_cm": 1,
    "power_w": 1,
    "fill_pct": 1,
}
"""Resolution each metric is reported with."""

SCALE: dict[str, float] = {
    "pm10": 25.0,
    "pm25": 12.0,
    "no2": 0.01,
    "o3": 0.01,
    "co": 0.1,
    "laeq": 4.0,
    "temperature": 2.0,
    "humidity": 8.0,
    "wind": 1.0,
    "vehicle_count": 15.0,
    "avg_speed": 8.0,
    "occupied": 20.0,
    "capacity": 20.0,
    "level_cm": 15.0,
    "power_w": 20.0,
    "fill_pct": 10.0,
}
"""Typical variability of each metric: the unit of the default incident magnitudes."""

TIDE_PERIOD_MS = 12.42 * HOUR_MS
"""The semi-diurnal tide reaches the lower Han (below the Singok weir)."""


def _clamp(x: float, low: float, high: float) -> float:
    return low if x < low else high if x > high else x


def traffic_shape(t_ms: int, hour: float) -> float:
    return (TRAFFIC_WEEKEND if weekday(t_ms) >= 5 else TRAFFIC_WEEKDAY).at(hour)


class Model:
    """Base of the per-device signal models."""

    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        self.device = device
        self.env = env
        self.rnd: Callable[[], float] = rng.random
        self.d = env.district_index[device.district]
        self.character = character(device.district)

    def sample(self, t_ms: int) -> dict[str, float]:
        raise NotImplementedError

    def _between(self, low: float, high: float) -> float:
        return low + (high - low) * self.rnd()

    def traffic_level(self, t_ms: int, hour: float, k: int, frac: float) -> float:
        """Relative traffic in the district now (1 = a weekday rush hour in an average district)."""
        return traffic_shape(t_ms, hour) * self.character.busyness * lerp(self.env.traffic[self.d], k, frac)


class AirQuality(Model):
    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        super().__init__(device, env, rng)
        self.bias = 1.0 + 0.06 * noise(self.rnd)
        self.roadside = self._between(0.6, 1.4)
        self.coarse = self._between(1.55, 1.95)

    def sample(self, t_ms: int) -> dict[str, float]:
        env, rnd = self.env, self.rnd
        k, frac = env.position(t_ms)
        hour = local_hour(t_ms)
        traffic = self.traffic_level(t_ms, hour, k, frac)
        pm_field = lerp(env.pm[self.d], k, frac)
        wet = lerp(env.wet, k, frac)
        base = env.climate.pm25 * self.character.pm_factor * PM_DIURNAL.at(hour) * pm_field
        pm25 = (base + 5.0 * traffic * self.roadside * pm_field) * self.bias + 1.2 * noise(rnd)
        pm10 = pm25 * self.coarse * (1.0 - 0.15 * wet) + 3.0 * noise(rnd)
        no2 = (0.010 + 0.026 * traffic * self.roadside) * (0.6 + 0.4 * pm_field) + 0.0015 * noise(rnd)
        o3 = env.climate.o3_peak * (0.25 + 0.75 * SUNLIGHT.at(hour)) * (1.2 - 0.35 * traffic) * (
            1.0 - 0.4 * wet
        ) + 0.002 * noise(rnd)
        co = 0.28 + 0.3 * traffic * self.roadside + 0.03 * noise(rnd)
        return {
            "pm10": max(pm10, pm25),
            "pm25": pm25,
            "no2": no2,
            "o3": o3,
            "co": co,
        }


class Noise(Model):
    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        super().__init__(device, env, rng)
        self.offset = self._between(-2.0, 5.0)
        """Distance to the road."""

    def sample(self, t_ms: int) -> dict[str, float]:
        env = self.env
        k, frac = env.position(t_ms)
        hour = local_hour(t_ms)
        traffic = min(self.traffic_level(t_ms, hour, k, frac), 1.6)
        laeq = (
            44.0
            + 19.0 * traffic
            + self.offset
            + lerp(env.noise_db[self.d], k, frac)
            + 2.0 * lerp(env.wet, k, frac)
            + 1.2 * noise(self.rnd)
        )
        return {"laeq": laeq}


class Weather(Model):
    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        super().__init__(device, env, rng)
        self.heat_island = 0.4 + 0.8 * self.character.commercial + 0.3 * noise(self.rnd)
        self.humidity_bias = 2.0 * noise(self.rnd)
        self.exposure = self._between(0.6, 1.3)

    def sample(self, t_ms: int) -> dict[str, float]:
        env, rnd = self.env, self.rnd
        k, frac = env.position(t_ms)
        temperature = lerp(env.temperature, k, frac) + self.heat_island + 0.15 * noise(rnd)
        humidity = (
            lerp(env.humidity, k, frac) + self.humidity_bias - 1.5 * self.heat_island + 0.8 * noise(rnd)
        )
        wind = lerp(env.wind, k, frac) * self.exposure + 0.4 * noise(rnd)
        return {
            "temperature": temperature,
            "humidity": _clamp(humidity, 5.0, 100.0),
            "wind": max(0.0, wind),
        }


class Traffic(Model):
    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        super().__init__(device, env, rng)
        self.capacity = self._between(40.0, 140.0)
        """Vehicles per minute at a rush hour."""
        self.free_flow = self._between(45.0, 80.0)
        self.load = self._between(0.7, 1.1)

    def sample(self, t_ms: int) -> dict[str, float]:
        env, rnd = self.env, self.rnd
        k, frac = env.position(t_ms)
        hour = local_hour(t_ms)
        level = self.traffic_level(t_ms, hour, k, frac)
        per_minute = self.capacity * level * self.device.interval_ms / 60_000
        count = per_minute + math.sqrt(per_minute) * noise(rnd)
        congestion = min(level * self.load, 1.2)
        wet = lerp(env.wet, k, frac)
        speed = self.free_flow * (1.0 - 0.55 * congestion * congestion) * (1.0 - 0.15 * wet)
        return {"vehicle_count": max(0.0, count), "avg_speed": max(3.0, speed + 2.0 * noise(rnd))}


class Parking(Model):
    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        super().__init__(device, env, rng)
        self.capacity = float(int(self._between(40.0, 600.0)))
        self.popularity = self._between(0.75, 1.05)

    def sample(self, t_ms: int) -> dict[str, float]:
        hour = local_hour(t_ms)
        commercial = self.character.commercial
        office = OFFICE_HOURS.at(hour) * (0.45 if weekday(t_ms) >= 5 else 1.0)
        share = commercial * office + (1.0 - commercial) * RESIDENTIAL.at(hour)
        occupied = self.capacity * share * self.popularity + 0.02 * self.capacity * noise(self.rnd)
        return {"occupied": _clamp(occupied, 0.0, self.capacity), "capacity": self.capacity}


class WaterLevel(Model):
    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        super().__init__(device, env, rng)
        district = BY_ID[device.district]
        self.river = district.han_river
        if self.river:
            self.base = self._between(180.0, 320.0)
            # Tidal influence fades upstream (the river flows west).
            self.tide = 18.0 if district.lon < 126.95 else 6.0 if district.lon < 127.03 else 2.0
        else:
            self.base = self._between(15.0, 50.0)
            self.tide = 0.0
        self.response = self._between(0.8, 1.4)
        self.tide_phase = self.rnd()

    def sample(self, t_ms: int) -> dict[str, float]:
        env = self.env
        k, frac = env.position(t_ms)
        if self.river:
            rise = lerp(env.river_rise, k, frac)
            tide = self.tide * triangle(t_ms / TIDE_PERIOD_MS + self.tide_phase)
        else:
            rise, tide = lerp(env.stream_rise, k, frac), 0.0
        return {"level_cm": self.base + tide + self.response * rise + 0.6 * noise(self.rnd)}


class Streetlight(Model):
    TRANSITION_H = 0.33

    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        super().__init__(device, env, rng)
        self.rated = float(int(self._between(80.0, 250.0)))
        self.sensor_offset_h = 0.1 * noise(self.rnd)
        """Photocell tolerance: lamps switch a few minutes apart."""

    def sample(self, t_ms: int) -> dict[str, float]:
        hour = local_hour(t_ms)
        c = self.env.climate
        width = self.TRANSITION_H
        dusk = _clamp((hour - (c.sunset + self.sensor_offset_h)) / width, 0.0, 1.0)
        dawn = _clamp(((c.sunrise + self.sensor_offset_h) - hour) / width, 0.0, 1.0)
        on = max(dusk, dawn)
        dim = 0.6 if 1.0 <= hour < 5.0 else 1.0
        power = 0.8 + self.rated * on * dim
        if on > 0:
            power += 1.5 * noise(self.rnd)
        return {"power_w": max(0.0, power)}


class WasteBin(Model):
    def __init__(self, device: Device, env: Environment, rng: random.Random) -> None:
        super().__init__(device, env, rng)
        self.rate = self._between(1.5, 4.5) * self.character.busyness
        """Percent per hour at average activity."""
        self.collection_ms = int(self._between(4.0, 6.5) * HOUR_MS)
        """Local time of day of the daily collection round."""
        self.fill = self._between(5.0, 60.0)
        self.last_ms: int | None = None

    def _collections(self, t_ms: int) -> int:
        """Collection rounds since the epoch up to ``t_ms``."""
        return (t_ms + SEOUL_UTC_OFFSET_MS - self.collection_ms) // DAY_MS

    def sample(self, t_ms: int) -> dict[str, float]:
        if self.last_ms is not None:
            if self._collections(t_ms) > self._collections(self.last_ms):
                self.fill = self._between(1.0, 4.0)
            else:
                elapsed_h = (t_ms - self.last_ms) / HOUR_MS
                activity = WASTE_ACTIVITY.at(local_hour(t_ms))
                self.fill += self.rate * activity * elapsed_h * self._between(0.5, 1.5)
        self.last_ms = t_ms
        return {"fill_pct": min(100.0, self.fill)}


MODELS: dict[str, type[Model]] = {
    "air_quality": AirQuality,
    "noise": Noise,
    "weather": Weather,
    "traffic": Traffic,
    "parking": Parking,
    "water_level": WaterLevel,
    "streetlight": Streetlight,
    "waste_bin": WasteBin,
}
if set(MODELS) != set(SENSOR_TYPES):
    raise RuntimeError("every sensor type needs a signal model")


def model_for(device: Device, env: Environment) -> Model:
    return MODELS[device.sensor_type](device, env, random.Random(device.seed))  # noqa: S311  # simulation


_FINISH: dict[str, tuple[tuple[str, float, float, int], ...]] = {
    t.name: tuple((m.name, m.low, m.high, DIGITS[m.name]) for m in t.metrics) for t in SENSOR_TYPES.values()
}


def finish(sensor_type: str, values: dict[str, float]) -> dict[str, float]:
    """Clamp to the sensor's physical range and round to its resolution (in place)."""
    for name, low, high, digits in _FINISH[sensor_type]:
        v = values[name]
        values[name] = round(low if v < low else high if v > high else v, digits)
    return values
