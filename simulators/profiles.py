"""Deterministic building blocks of the signals: noise, daily profiles, Seoul's climate.

Everything here uses only ``+ - * /``, ``sqrt`` and ``round`` on IEEE 754 doubles (all exactly
rounded) and ``random.Random.random`` (Mersenne Twister, the same on every platform). No
``sin``, ``exp`` or ``log`` (their last bit may differ between C libraries) and no string
hashing (randomised per process): the same seed gives the same bytes on any machine.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

SEOUL_UTC_OFFSET_MS = 9 * 3600 * 1000
"""Korea Standard Time, UTC+9 all year (no daylight saving)."""
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
KM_PER_DEG_LAT = 111.0
KM_PER_DEG_LON = 88.2
"""At Seoul's latitude (37.5 N)."""


def derive_seed(seed: int, *parts: object) -> int:
    """A 64-bit seed for one named stream (a device, the weather, an incident)."""
    text = "/".join([str(seed), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def rng_for(seed: int, *parts: object) -> random.Random:
    return random.Random(derive_seed(seed, *parts))  # noqa: S311  # simulation, not security


SQRT6 = math.sqrt(6.0)


def noise(rnd: Callable[[], float]) -> float:
    """Zero mean, unit variance, bell-shaped and bounded to +-2.45 (sum of two uniforms)."""
    return (rnd() + rnd() - 1.0) * SQRT6


class Profile:
    """A daily shape given at whole hours 0..23, linear in between and wrapping at midnight."""

    __slots__ = ("_values",)

    def __init__(self, hourly: Sequence[float]) -> None:
        if len(hourly) != 24:
            raise ValueError("a daily profile has 24 hourly values")
        self._values = (*hourly, hourly[0])

    def at(self, hour: float) -> float:
        i = int(hour)
        a = self._values[i]
        return a + (self._values[i + 1] - a) * (hour - i)


def local_hour(ts_ms: int) -> float:
    """Hour of the day in Seoul, 0 <= h < 24."""
    return ((ts_ms + SEOUL_UTC_OFFSET_MS) % DAY_MS) / HOUR_MS


def weekday(ts_ms: int) -> int:
    """Day of the week in Seoul, Monday = 0 (1970-01-01 was a Thursday)."""
    return ((ts_ms + SEOUL_UTC_OFFSET_MS) // DAY_MS + 3) % 7


def seoul_month(ts_ms: int) -> int:
    """Month (1-12) in Seoul."""
    return (datetime.fromtimestamp(ts_ms / 1000, UTC) + timedelta(hours=9)).month


def triangle(phase: float) -> float:
    """A triangle wave in [-1, 1] with period 1 (a sine stand-in without libm)."""
    x = phase % 1.0
    return 4.0 * x - 1.0 if x < 0.5 else 3.0 - 4.0 * x


# -- Seoul's climate, monthly normals (January first) ---------------------------------------


class Climate(NamedTuple):
    temperature: float
    """Mean air temperature, Cel."""
    diurnal_half_range: float
    humidity: float
    """Mean relative humidity, %."""
    wind: float
    """Mean wind speed, m/s."""
    pm25: float
    """Mean PM2.5, ug/m3."""
    o3_peak: float
    """Typical afternoon ozone peak, ppm."""
    sunrise: float
    sunset: float
    """Local hours."""


CLIMATE: tuple[Climate, ...] = (
    Climate(-2.0, 4.0, 57.0, 2.4, 30.0, 0.022, 7.75, 17.6),
    Climate(0.7, 4.5, 55.0, 2.6, 29.0, 0.028, 7.35, 18.1),
    Climate(6.1, 5.0, 56.0, 2.8, 32.0, 0.036, 6.75, 18.6),
    Climate(12.6, 5.5, 56.0, 2.8, 24.0, 0.045, 6.0, 19.1),
    Climate(18.2, 5.0, 61.0, 2.5, 20.0, 0.052, 5.4, 19.5),
    Climate(22.7, 4.0, 68.0, 2.2, 17.0, 0.055, 5.15, 19.9),
    Climate(25.3, 3.2, 78.0, 2.2, 14.0, 0.045, 5.4, 19.9),
    Climate(26.1, 3.5, 75.0, 2.1, 12.0, 0.044, 5.85, 19.4),
    Climate(21.6, 4.2, 68.0, 2.0, 12.0, 0.040, 6.25, 18.75),
    Climate(14.9, 5.0, 63.0, 2.0, 16.0, 0.030, 6.7, 18.0),
    Climate(7.5, 4.5, 61.0, 2.3, 22.0, 0.022, 7.15, 17.4),
    Climate(0.2, 4.0, 59.0, 2.4, 26.0, 0.020, 7.6, 17.25),
)


# -- Daily shapes (0 = midnight) ------------------------------------------------------------

TRAFFIC_WEEKDAY = Profile(
    (0.25, 0.15, 0.10, 0.08, 0.10, 0.25, 0.55, 0.95, 1.00, 0.80, 0.65, 0.65,
     0.70, 0.68, 0.66, 0.68, 0.75, 0.92, 1.00, 0.85, 0.65, 0.55, 0.45, 0.35)
)  # fmt: skip
"""Relative traffic volume with the morning (7-9) and evening (17-19) rush hours."""
TRAFFIC_WEEKEND = Profile(
    (0.35, 0.25, 0.15, 0.10, 0.08, 0.12, 0.20, 0.30, 0.40, 0.50, 0.62, 0.70,
     0.75, 0.78, 0.78, 0.76, 0.74, 0.72, 0.70, 0.62, 0.55, 0.50, 0.45, 0.40)
)  # fmt: skip
PM_DIURNAL = Profile(
    (1.05, 1.04, 1.03, 1.02, 1.02, 1.04, 1.08, 1.13, 1.16, 1.10, 1.00, 0.93,
     0.88, 0.85, 0.83, 0.82, 0.85, 0.90, 0.97, 1.04, 1.09, 1.11, 1.10, 1.07)
)  # fmt: skip
"""Relative particulate level: night-time inversion and morning rush high, afternoon mixing low."""
TEMPERATURE_DIURNAL = Profile(
    (-0.55, -0.68, -0.78, -0.87, -0.95, -1.00, -0.92, -0.70, -0.40, -0.05, 0.30, 0.58,
     0.80, 0.94, 1.00, 0.97, 0.86, 0.68, 0.45, 0.22, 0.05, -0.12, -0.28, -0.42)
)  # fmt: skip
"""Shape of the daily temperature cycle: minimum before sunrise, maximum mid-afternoon."""
SUNLIGHT = Profile(
    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.15, 0.30, 0.48, 0.65, 0.80,
     0.92, 1.00, 1.00, 0.92, 0.75, 0.52, 0.28, 0.10, 0.0, 0.0, 0.0, 0.0)
)  # fmt: skip
"""Photochemistry (ozone) and afternoon mixing (wind)."""
OFFICE_HOURS = Profile(
    (0.10, 0.08, 0.06, 0.05, 0.05, 0.06, 0.12, 0.35, 0.70, 0.88, 0.93, 0.95,
     0.95, 0.95, 0.93, 0.92, 0.90, 0.82, 0.62, 0.45, 0.35, 0.28, 0.20, 0.14)
)  # fmt: skip
"""Occupancy of commercial parking on a weekday."""
RESIDENTIAL = Profile(
    (0.92, 0.94, 0.95, 0.95, 0.95, 0.93, 0.88, 0.72, 0.55, 0.45, 0.42, 0.42,
     0.44, 0.44, 0.45, 0.48, 0.52, 0.58, 0.68, 0.78, 0.85, 0.88, 0.90, 0.91)
)  # fmt: skip
"""Occupancy of residential parking."""
WASTE_ACTIVITY = Profile(
    (0.15, 0.10, 0.08, 0.08, 0.10, 0.20, 0.45, 0.80, 1.00, 1.00, 0.95, 1.10,
     1.30, 1.20, 1.00, 0.95, 1.00, 1.10, 1.30, 1.35, 1.20, 0.90, 0.55, 0.30)
)  # fmt: skip
"""How fast public bins fill during the day (lunch and evening peaks)."""


class DistrictCharacter(NamedTuple):
    busyness: float
    """Traffic and noise relative to the city average."""
    commercial: float
    """0 residential .. 1 business district (parking pattern, night-time activity)."""
    pm_factor: float
    """Particulate level relative to the city average (roads, industry, topography)."""


_DEFAULT_CHARACTER = DistrictCharacter(0.9, 0.35, 1.0)
DISTRICT_CHARACTER: dict[str, DistrictCharacter] = {
    "gangnam": DistrictCharacter(1.35, 0.9, 1.05),
    "jung": DistrictCharacter(1.3, 1.0, 1.08),
    "jongno": DistrictCharacter(1.2, 0.85, 1.05),
    "seocho": DistrictCharacter(1.2, 0.75, 1.0),
    "yeongdeungpo": DistrictCharacter(1.2, 0.75, 1.12),
    "mapo": DistrictCharacter(1.1, 0.6, 1.02),
    "songpa": DistrictCharacter(1.1, 0.55, 1.0),
    "yongsan": DistrictCharacter(1.05, 0.6, 1.0),
    "guro": DistrictCharacter(1.05, 0.55, 1.12),
    "geumcheon": DistrictCharacter(1.0, 0.6, 1.15),
    "gangseo": DistrictCharacter(0.95, 0.35, 1.1),
    "seongdong": DistrictCharacter(1.0, 0.5, 1.05),
    "gwangjin": DistrictCharacter(0.95, 0.4, 1.0),
    "dongdaemun": DistrictCharacter(1.0, 0.5, 1.05),
    "dobong": DistrictCharacter(0.75, 0.15, 0.9),
    "gangbuk": DistrictCharacter(0.75, 0.15, 0.92),
    "nowon": DistrictCharacter(0.8, 0.15, 0.92),
    "eunpyeong": DistrictCharacter(0.8, 0.2, 0.92),
    "gwanak": DistrictCharacter(0.85, 0.2, 0.95),
}


def character(district: str) -> DistrictCharacter:
    return DISTRICT_CHARACTER.get(district, _DEFAULT_CHARACTER)
