"""The city around the sensors: weather, rain and its after-effects, and the slow fluctuations
that all devices of a district share.

Everything is computed on a time grid (one point per minute) from its own random stream and
read with linear interpolation. Devices of the same district read the same district series,
which is what makes neighbours correlate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from simulators.profiles import (
    CLIMATE,
    SUNLIGHT,
    TEMPERATURE_DIURNAL,
    local_hour,
    noise,
    rng_for,
    seoul_month,
)
from simulators.scenario import WeatherSpec, seconds

RAIN_EDGE_MS = 10 * 60_000
WET_UP_S = 20 * 60.0
WET_DOWN_S = 3 * 3600.0
STREAM_TAU_S = 1.5 * 3600.0
RIVER_LAG_S = 2.5 * 3600.0
STREAM_CM_PER_MM = 2.5
RIVER_CM_PER_MM = 5.0


class Ar1:
    """A first-order autoregressive process with standard deviation ``sigma``."""

    def __init__(self, sigma: float, tau_s: float, step_s: float, rnd: Callable[[], float]) -> None:
        self.a = max(0.0, 1.0 - step_s / tau_s)
        self.b = sigma * math.sqrt(1.0 - self.a * self.a)
        self.x = sigma * noise(rnd)
        self.rnd = rnd

    def step(self) -> float:
        self.x = self.a * self.x + self.b * noise(self.rnd)
        return self.x


def _clamp(x: float, low: float, high: float) -> float:
    return low if x < low else high if x > high else x


class _CityState:
    """The city-wide processes, advanced one grid step at a time."""

    def __init__(self, seed: int, step_s: float) -> None:
        rnd = rng_for(seed, "weather").random
        self.step_s = step_s
        self.temp = Ar1(1.0, 4 * 3600, step_s, rnd)
        self.hum = Ar1(4.0, 3 * 3600, step_s, rnd)
        self.wind = Ar1(0.5, 3600, step_s, rnd)
        self.rain = Ar1(0.35, 900, step_s, rnd)
        self.pm = Ar1(0.25, 6 * 3600, step_s, rnd)
        self.wet = self.fast = self.slow = 0.0


class _DistrictState:
    def __init__(self, seed: int, district: str, step_s: float) -> None:
        rnd = rng_for(seed, "district", district).random
        self.pm = Ar1(0.12, 3600, step_s, rnd)
        self.traffic = Ar1(0.07, 1800, step_s, rnd)
        self.noise = Ar1(1.0, 1800, step_s, rnd)


class Environment:
    """City-wide weather and per-district fields from ``start_ms`` on.

    The grid is computed a day at a time as readings ask for it, always in order (so the values
    do not depend on who asks first), and days long past are dropped: a year-long run needs no
    more memory than a day-long one. Readings may ask at most :data:`KEEP_DAYS` - 1 days behind
    the latest time asked for (device intervals are at most a day).
    """

    STEP_MS = 60_000
    CHUNK = 1440
    """Grid points computed at a time (one day)."""
    KEEP_DAYS = 2

    def __init__(
        self, start_ms: int, duration_ms: int, seed: int, weather: WeatherSpec, districts: list[str]
    ) -> None:
        self.start_ms = start_ms
        self.step_ms = self.STEP_MS
        self.points = duration_ms // self.step_ms + 2
        self.climate = CLIMATE[seoul_month(start_ms) - 1]
        self.district_index = {d: i for i, d in enumerate(districts)}
        self._rain_windows = [
            (start_ms + round(seconds(r.start) * 1000), start_ms + round(seconds(r.end) * 1000), r.mm_per_h)
            for r in weather.rain
        ]
        step_s = self.step_ms / 1000
        self._city_state = _CityState(seed, step_s)
        self._district_states = [_DistrictState(seed, d, step_s) for d in districts]
        self.base = 0
        """Global grid index of the first point held."""
        self.temperature: list[float] = []
        self.humidity: list[float] = []
        self.wind: list[float] = []
        self.rain: list[float] = []
        self.wet: list[float] = []
        self.pm_city: list[float] = []
        self.stream_rise: list[float] = []
        """Rise of small streams, cm (fast response to rain)."""
        self.river_rise: list[float] = []
        """Rise of the Han, cm (slow, lagged response)."""
        self.pm: list[list[float]] = [[] for _ in districts]
        self.traffic: list[list[float]] = [[] for _ in districts]
        self.noise_db: list[list[float]] = [[] for _ in districts]
        self._extend(min(self.points, self.CHUNK))

    def position(self, t_ms: int) -> tuple[int, float]:
        """Index (into the series held now) and fraction of ``t_ms``, for :func:`lerp`."""
        x = (t_ms - self.start_ms) / self.step_ms
        k = int(x)
        if k < 0:
            k, frac = 0, 0.0
        elif k >= self.points - 1:
            k, frac = self.points - 2, 1.0
        else:
            frac = x - k
        if k + 1 >= self.base + len(self.temperature):
            self._advance(k + 1)
        i = k - self.base
        if i < 0:
            raise RuntimeError(f"environment read {-i} steps behind the window it keeps")
        return i, frac

    def _advance(self, k: int) -> None:
        """Compute whole days until grid point ``k`` is held; drop days no reading can need."""
        while self.base + len(self.temperature) <= k:
            held = self.base + len(self.temperature)
            self._extend(min(self.points - held, self.CHUNK))
        drop = len(self.temperature) - self.KEEP_DAYS * self.CHUNK
        if drop > 0:
            for series in self._all_series():
                del series[:drop]
            self.base += drop

    def _all_series(self) -> list[list[float]]:
        city = [self.temperature, self.humidity, self.wind, self.rain, self.wet, self.pm_city]
        return [*city, self.stream_rise, self.river_rise, *self.pm, *self.traffic, *self.noise_db]

    def _rain_input(self, t_ms: int) -> float:
        total = 0.0
        for a, b, mm in self._rain_windows:
            if a <= t_ms < b:
                edge = min(1.0, (t_ms - a) / RAIN_EDGE_MS, (b - t_ms) / RAIN_EDGE_MS)
                total += mm * edge
        return total

    def _extend(self, count: int) -> None:
        first = self.base + len(self.temperature)
        for k in range(first, first + count):
            self._city_point(self.start_ms + k * self.step_ms)
        wet = self.wet[-count:]
        pm_city = self.pm_city[-count:]
        for d, state in enumerate(self._district_states):
            pm, traffic, noise_db = self.pm[d], self.traffic[d], self.noise_db[d]
            for j in range(count):
                pm.append(pm_city[j] * _clamp(1.0 + state.pm.step(), 0.6, 1.6))
                traffic.append(_clamp(1.0 + state.traffic.step(), 0.75, 1.25) * (1.0 - 0.1 * wet[j]))
                noise_db.append(state.noise.step())

    def _city_point(self, t: int) -> None:
        s, c = self._city_state, self.climate
        step_s = s.step_s
        hour = local_hour(t)
        rain = self._rain_input(t)
        gust = s.rain.step()
        if rain > 0:
            rain = rain * _clamp(1.0 + gust, 0.2, 2.0)
        target = 1.0 if rain > 0.2 else 0.0
        s.wet += (target - s.wet) * min(1.0, step_s / (WET_UP_S if target > s.wet else WET_DOWN_S))
        s.fast = s.fast * (1.0 - step_s / STREAM_TAU_S) + rain * step_s / 3600.0
        s.slow += (s.fast - s.slow) * step_s / RIVER_LAG_S
        wet = s.wet
        diurnal = TEMPERATURE_DIURNAL.at(hour)
        half_range = c.diurnal_half_range * (1.0 - 0.6 * wet)
        self.temperature.append(c.temperature + half_range * diurnal + s.temp.step() - 3.0 * wet)
        humidity = c.humidity - 2.0 * half_range * diurnal + s.hum.step()
        self.humidity.append(_clamp(humidity + (97.0 - humidity) * wet, 15.0, 100.0))
        wind = c.wind * (0.75 + 0.5 * SUNLIGHT.at(hour)) + s.wind.step() + min(1.5, rain * 0.15)
        self.wind.append(max(0.0, wind))
        self.rain.append(rain)
        self.wet.append(wet)
        # Rain washes particles out; they build up again over the hours after it.
        self.pm_city.append(_clamp(1.0 + s.pm.step(), 0.4, 2.5) * (1.0 - 0.55 * wet))
        self.stream_rise.append(STREAM_CM_PER_MM * s.fast)
        self.river_rise.append(RIVER_CM_PER_MM * s.slow)


def lerp(series: list[float], k: int, frac: float) -> float:
    a = series[k]
    return a + (series[k + 1] - a) * frac
