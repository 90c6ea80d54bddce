"""The signals look like a city: daily and weekly cycles, rush hours, weather coupling,
correlated neighbours, and deterministic maths."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from typing import Any

import pytest

from citystream import codec
from simulators import profiles
from simulators.generator import Plan
from simulators.scenario import from_dict

MONDAY = "2025-06-02T00:00:00+09:00"
SATURDAY = "2025-06-07T00:00:00+09:00"


def day(
    start: str, mix: dict[str, float], size: int = 50, districts: str | list[str] = "all", **extra: Any
) -> Plan:
    return Plan(
        from_dict({"name": "day", "seed": 5, "start": start, "duration": "24h",
                   "fleet": {"size": size, "mix": mix, "districts": districts}, **extra}),
        root="city",
    )  # fmt: skip


def hourly(plan: Plan, metric: str, district: str | None = None) -> dict[int, float]:
    """Mean of ``metric`` per local hour over the fleet (or one district)."""
    by_hour: dict[int, list[float]] = defaultdict(list)
    for m in plan.messages():
        if district is not None and plan.devices[m.device].district != district:
            continue
        body = codec.decode(m.payload, dict[str, Any])
        if metric in body["values"]:
            by_hour[int(profiles.local_hour(body["ts"]))].append(body["values"][metric])
    return {h: statistics.fmean(v) for h, v in sorted(by_hour.items())}


def test_traffic_has_two_rush_hours_on_weekdays_and_none_at_the_weekend() -> None:
    weekday = hourly(day(MONDAY, {"traffic": 1}), "vehicle_count")
    assert weekday[8] > 2.5 * weekday[3]
    assert weekday[18] > 2.5 * weekday[3]
    assert weekday[8] > weekday[12] < weekday[18]
    saturday = hourly(day(SATURDAY, {"traffic": 1}), "vehicle_count")
    assert saturday[8] < 0.7 * weekday[8]
    speed = hourly(day(MONDAY, {"traffic": 1}), "avg_speed")
    assert speed[8] < 0.8 * speed[3], "congestion slows traffic at rush hour"


def test_noise_follows_traffic() -> None:
    laeq = hourly(day(MONDAY, {"noise": 1}), "laeq")
    assert laeq[8] - laeq[3] > 8.0
    assert 40 < laeq[3] < 55
    assert 55 < laeq[8] < 75


def test_temperature_and_humidity_cycle_against_each_other() -> None:
    plan = day(MONDAY, {"weather": 1})
    temperature, humidity = hourly(plan, "temperature"), hourly(plan, "humidity")
    assert temperature[14] - temperature[5] > 4.0
    assert humidity[5] - humidity[14] > 8.0
    assert 15 < temperature[5] < 30, "June in Seoul"


def test_rain_wets_the_air_washes_out_particles_and_swells_streams() -> None:
    rain = {"rain": [{"start": "12h", "end": "14h", "mm_per_h": 10}]}
    mix = {"air_quality": 1.0, "weather": 1.0, "water_level": 1.0}
    districts = ["gangnam", "mapo", "jung", "nowon", "guro"]
    wet = day(MONDAY, mix, size=15, weather=rain, districts=districts)
    dry = day(MONDAY, mix, size=15, districts=districts)
    assert hourly(wet, "humidity")[13] > hourly(dry, "humidity")[13] + 15
    assert hourly(wet, "temperature")[13] < hourly(dry, "temperature")[13] - 1.5
    pm_wet, pm_dry = hourly(wet, "pm25"), hourly(dry, "pm25")
    assert pm_wet[15] < 0.75 * pm_dry[15], "particles stay low after the rain"
    assert pm_wet[11] == pytest.approx(pm_dry[11], rel=0.05), "same day before the rain"
    level_wet, level_dry = hourly(wet, "level_cm"), hourly(dry, "level_cm")
    assert level_wet[14] > level_dry[14] + 5


def test_streetlights_burn_at_night_and_dim_after_one() -> None:
    power = hourly(day(MONDAY, {"streetlight": 1}), "power_w")
    assert power[12] < 2.0
    assert power[22] > 80.0
    assert power[3] < 0.8 * power[22]


def test_waste_bins_fill_up_and_are_emptied_in_the_early_morning() -> None:
    fill = hourly(day(MONDAY, {"waste_bin": 1}), "fill_pct")
    assert fill[7] < fill[12] < fill[20]
    assert fill[7] < 15


def test_business_district_parking_fills_by_day() -> None:
    plan = day(MONDAY, {"parking": 1}, size=100)
    gangnam = hourly(plan, "occupied", "gangnam")
    dobong = hourly(plan, "occupied", "dobong")
    assert gangnam[11] > 1.5 * gangnam[3]
    assert dobong[3] > dobong[11]


def _correlation(a: list[float], b: list[float]) -> float:
    return statistics.correlation(a, b)


def test_neighbours_in_a_district_correlate_more_than_strangers() -> None:
    plan = day(MONDAY, {"air_quality": 1}, size=75)
    series: dict[str, list[float]] = defaultdict(list)
    for m in plan.messages():
        series[plan.devices[m.device].device_id].append(
            codec.decode(m.payload, dict[str, Any])["values"]["pm25"]
        )
    same = _correlation(series["aq-mapo-001"], series["aq-mapo-002"])
    other = _correlation(series["aq-mapo-001"], series["aq-nowon-001"])
    assert same > 0.9
    assert same > other


def test_noise_is_bounded_with_unit_variance() -> None:
    rnd = random.Random(1).random
    samples = [profiles.noise(rnd) for _ in range(20_000)]
    assert abs(statistics.fmean(samples)) < 0.03
    assert statistics.pstdev(samples) == pytest.approx(1.0, abs=0.03)
    assert max(abs(s) for s in samples) <= 6**0.5


def test_profiles_and_time_helpers() -> None:
    p = profiles.Profile([float(h) for h in range(24)])
    assert p.at(3.5) == 3.5
    assert p.at(23.5) == pytest.approx(11.5), "wraps to midnight"
    monday_9am = 1748822400000  # 2025-06-02T09:00+09:00
    assert profiles.local_hour(monday_9am) == 9.0
    assert profiles.weekday(monday_9am) == 0
    assert profiles.seoul_month(monday_9am) == 6
    assert [profiles.triangle(x) for x in (0.0, 0.25, 0.5, 0.75, -0.25)] == [-1.0, 0.0, 1.0, 0.0, 0.0]
    assert profiles.derive_seed(1, "a") == profiles.derive_seed(1, "a") != profiles.derive_seed(1, "b")


def test_the_environment_keeps_a_bounded_window_and_reads_alike_in_any_order() -> None:
    from simulators.environment import Environment, lerp
    from simulators.scenario import WeatherSpec

    def env() -> Environment:
        return Environment(1748790000000, 30 * 86_400_000, 5, WeatherSpec(), ["jung", "mapo"])

    times = [1748790000000 + h * 3_600_000 + 17_000 for h in range(0, 30 * 24, 7)]
    forward = env()
    values = []
    for t in times:
        k, frac = forward.position(t)
        values.append(lerp(forward.temperature, k, frac))
        assert len(forward.temperature) <= 3 * Environment.CHUNK
    assert forward.base > 0, "past days were dropped"
    jumpy = env()
    for i in range(0, len(times) - 1, 2):  # ask for the later time first
        later, earlier = jumpy.position(times[i + 1]), jumpy.position(times[i])
        assert lerp(jumpy.temperature, *earlier) == values[i]
        assert lerp(jumpy.temperature, *later) == values[i + 1]
