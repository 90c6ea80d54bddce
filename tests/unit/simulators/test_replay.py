"""Replaying a timestamp,value CSV (a NAB file) as one device."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from simulators import replay
from simulators.errors import ReplayError

CSV = """timestamp,value
2014-07-01 00:00:00,10844
2014-07-01 00:30:00,8127
not a time,5
2014-07-01 01:00:00,nan
2014-07-01 01:00:00,6210
2014-07-01 00:45:00,1
2014-07-01 01:30:00
2014-07-01 01:30:00,4656.5
"""


def test_rows_are_read_and_bad_ones_counted_by_line(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    path.write_text(CSV)
    series = replay.read_series(path)
    assert series.values == [10844.0, 8127.0, 6210.0, 4656.5]
    assert [t - series.times_ms[0] for t in series.times_ms] == [0, 1_800_000, 3_600_000, 5_400_000]
    assert [line for line, _ in series.skipped] == [4, 5, 7, 8]
    assert "bad timestamp" in series.skipped[0][1]
    assert "not finite" in series.skipped[1][1]
    assert "not after" in series.skipped[2][1]
    assert "columns" in series.skipped[3][1]


def test_messages_keep_the_spacing_and_start_at_the_run(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    path.write_text(CSV)
    series = replay.read_series(path)
    device = replay.replay_device("nyc-taxi-01", "jung", "traffic", series)
    assert device.interval_ms == 1_800_000
    out = list(
        replay.messages(
            series, device, root="r", start_ms=1_000_000, metric="vehicle_count", scale=0.5, qos=1
        )
    )
    assert [m.at_ms for m in out] == [1_000_000, 2_800_000, 4_600_000, 6_400_000]
    assert {m.topic for m in out} == {"r/jung/traffic/nyc-taxi-01/telemetry"}
    bodies = [msgspec.json.decode(m.payload) for m in out]
    assert [b["seq"] for b in bodies] == [1, 2, 3, 4]
    assert [b["values"]["vehicle_count"] for b in bodies] == [5422.0, 4063.5, 3105.0, 2328.25]
    assert [b["ts"] for b in bodies] == [m.at_ms for m in out]


def test_bad_replays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("timestamp,value\n2014-07-01 00:00:00,1\n")
    with pytest.raises(ReplayError, match="fewer than 2"):
        replay.read_series(path)
    with pytest.raises(ReplayError, match="cannot read"):
        replay.read_series(tmp_path / "missing.csv")
    path.write_text("2014-07-01 00:00:00,1\n2014-07-01 00:01:00,2\n")
    series = replay.read_series(path)
    with pytest.raises(ReplayError, match="device id"):
        replay.replay_device("X", "jung", "traffic", series)
    with pytest.raises(ReplayError, match="district"):
        replay.replay_device("taxi-1", "atlantis", "traffic", series)
    with pytest.raises(ReplayError, match="sensor type"):
        replay.replay_device("taxi-1", "jung", "taxis", series)
    device = replay.replay_device("taxi-1", "jung", "traffic", series)
    with pytest.raises(ReplayError, match="not a metric"):
        list(replay.messages(series, device, root="r", start_ms=0, metric="pm25", scale=1, qos=1))


def test_the_nab_taxi_file_reads_whole() -> None:
    path = Path("/work/shared/nab/data/realKnownCause/nyc_taxi.csv")
    if not path.is_file():
        pytest.skip("NAB corpus not present")
    series = replay.read_series(path)
    assert len(series.values) == 10320
    assert series.skipped == []
