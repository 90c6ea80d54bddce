"""What several dashboards share: their uids and the district / sensor type drop-downs."""

from __future__ import annotations

from citystream.geo import DISTRICTS
from citystream.sensors import SENSOR_TYPES
from dashboards import flux
from dashboards.panels import Board

CITY = "citystream-city"
DISTRICT = "citystream-district"
DEVICE = "citystream-device"
ALERTS = "citystream-alerts"
PIPELINE = "citystream-pipeline"

SCOPE = (flux.eq("district", flux.var("district")), flux.eq("sensor_type", flux.var("sensor_type")))
"""Filter conditions on the selected district and sensor type."""

SENSOR_TYPE_NAMES = {
    "air_quality": ("air quality", "대기질"),
    "noise": ("noise", "소음"),
    "weather": ("weather", "기상"),
    "traffic": ("traffic", "교통"),
    "parking": ("parking", "주차"),
    "water_level": ("water level", "수위"),
    "streetlight": ("streetlight", "가로등"),
    "waste_bin": ("waste bin", "쓰레기통"),
}


def scope_variables(board: Board) -> None:
    """The ``district`` and ``sensor_type`` drop-downs."""
    districts = [(board.t(d.name_en, d.name_ko), d.id) for d in sorted(DISTRICTS, key=lambda d: d.id)]
    types = [(board.t(*SENSOR_TYPE_NAMES.get(name, (name, name))), name) for name in SENSOR_TYPES]
    board.custom("district", board.t("District", "자치구"), districts)
    board.custom("sensor_type", board.t("Sensor type", "센서 종류"), types)
