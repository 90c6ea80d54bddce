"""Records on the stream jobs' internal topics (encoded with the one kernel codec).

``series`` carries readings from the device partitions to the aggregation partitions, one
record per (source partition, target partition) and batch, with the source's watermark, so
the aggregation can close a window only when every source has passed it. ``signals`` carries
detector conditions to the alert lifecycle, keyed by alert key (so it is co-partitioned with
``alerts.commands``).
"""

from __future__ import annotations

import msgspec

from citystream.model import Offset


class SeriesItem(msgspec.Struct, frozen=True, array_like=True):
    """One value of one reading, bound for the window of its series."""

    series: str
    """``{district}/{sensor_type}/{metric}``"""
    device_id: str
    seq: int
    ts: int
    value: float
    offset: int
    """Offset of the reading on its telemetry.raw partition (how the windows tell replays)."""


class SeriesBatch(msgspec.Struct, frozen=True, kw_only=True):
    source: int
    """The telemetry.raw partition the items come from."""
    watermark: int
    """The highest device time seen on that partition after these items (epoch ms)."""
    items: tuple[SeriesItem, ...] = ()
    idle: bool = False
    """The source has read everything there is and got nothing new for a while: it stops
    holding windows open until it sends again."""


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """A detector's condition for one alert key at one event time."""

    key: str
    rule: str
    metric: str
    subject: str
    district: str
    sensor_type: str
    device_id: str | None
    detector: str
    detector_version: str
    ts_ms: int
    anomalous: bool
    score: float
    value: float
    threshold: float | None = None
    reason: str = ""
    offsets: tuple[Offset, ...] = ()


DEVICE_METRIC = "*"
"""The metric part of the alert key of rules about a whole device (``silent``, ``clock_skew``)."""


def series_key(district: str, sensor_type: str, metric: str) -> str:
    return f"{district}/{sensor_type}/{metric}"


def alert_key(rule: str, metric: str, subject: str) -> str:
    """``{rule}:{metric}:{subject}``; the subject is a device id or ``{district}/{sensor_type}``."""
    return f"{rule}:{metric}:{subject}"
