from __future__ import annotations

import json
import random
from pathlib import Path

from citystream import codec
from citystream.model import Reading
from stream_jobs.evaluation.scenario import Alarm, LabelRecord, evaluate, match, read_labels, read_readings

T0 = 1_764_000_000_000
MINUTE = 60_000
DEVICES = [f"aq-gangnam-{i:03d}" for i in range(1, 6)]


def fleet() -> tuple[list[Reading], list[LabelRecord]]:
    """Five PM2.5 sensors in one district for six hours, with one incident each."""
    rng = random.Random(11)
    readings = []
    for d, device in enumerate(DEVICES):
        for minute in range(360):
            if d == 2 and 200 <= minute < 230:
                continue  # dropout
            value = 20.0 + rng.gauss(0.0, 2.0)
            skew = rng.randint(-500, 500)
            if d == 0 and minute == 120:
                value = 150.0  # spike
            if d == 1 and 150 <= minute < 240:
                value = 21.0  # stuck
            if d == 3 and 250 <= minute < 280:
                skew = 120_000  # clock two minutes ahead
            if d == 4 and minute >= 300:
                value += min(35.0, (minute - 300) * 1.5)  # drift away from the district
            ts = T0 + minute * MINUTE
            readings.append(
                Reading(
                    device_id=device,
                    district="gangnam",
                    sensor_type="air_quality",
                    ts=ts,
                    seq=minute,
                    values={"pm25": value},
                    received_ms=ts + 50,
                    skew_ms=skew,
                )
            )

    def label(kind: str, device: int | None, start: int, end: int, rule: str | None) -> LabelRecord:
        return LabelRecord(
            kind=kind,
            devices=[DEVICES[device]] if device is not None else [],
            district="gangnam",
            sensor_type="air_quality",
            metric="pm25",
            start_ms=T0 + start * MINUTE,
            end_ms=T0 + end * MINUTE,
            expected_rule=rule,
        )

    labels = [
        label("spike", 0, 120, 121, "zscore"),
        label("stuck_value", 1, 150, 240, "flatline"),
        label("dropout", 2, 200, 230, "silent"),
        label("clock_skew", 3, 250, 280, "clock_skew"),
        label("drift", 4, 300, 360, "peer"),
        label("duplicate_burst", 0, 330, 331, None),
    ]
    return readings, labels


def test_every_incident_is_found_by_its_rule_and_clean_data_raises_nothing() -> None:
    readings, labels = fleet()
    report = evaluate(readings, labels)
    found = {k.kind: (k.detected, k.labels) for k in report.kinds}
    assert found == {
        "spike": (1, 1),
        "stuck_value": (1, 1),
        "dropout": (1, 1),
        "clock_skew": (1, 1),
        "drift": (1, 1),
        "duplicate_burst": (0, 1),
    }
    assert report.false_alarms == {}
    latency = {k.kind: k.median_latency_s for k in report.kinds}
    assert latency["spike"] == 0.0
    assert latency["dropout"] == 120.0  # last reading a minute before the start, + 3 x 60 s
    assert latency["stuck_value"] is not None
    assert latency["stuck_value"] <= 3600.0


def test_an_alarm_outside_every_label_is_a_false_alarm() -> None:
    readings, labels = fleet()
    report = evaluate(readings, [lab for lab in labels if lab.kind != "clock_skew"])
    assert report.false_alarms == {"clock_skew": 1}


def test_files_round_trip_and_bad_lines_are_counted(tmp_path: Path) -> None:
    readings, labels = fleet()
    rpath = tmp_path / "readings.jsonl"
    lpath = tmp_path / "labels.jsonl"
    rpath.write_bytes(b"".join(codec.encode(r) + b"\n" for r in readings[:50]) + b"{not json}\n")
    lpath.write_text("".join(json.dumps(codec.decode(codec.encode(lab), dict)) + "\n" for lab in labels))
    loaded, bad = read_readings(rpath)
    assert loaded == readings[:50]
    assert bad == 1
    assert read_labels(lpath) == labels


def _district_alarm(minute: int) -> Alarm:
    return Alarm(
        rule="threshold", device_id="", district="gangnam", sensor_type="air_quality", metric="pm25",
        raised_ms=T0 + minute * MINUTE, cleared_ms=T0 + (minute + 5) * MINUTE, score=0.7, reason="mean",
    )  # fmt: skip


def test_a_district_alarm_during_a_value_incident_of_the_district_is_explained() -> None:
    _, labels = fleet()
    spike = [lab for lab in labels if lab.kind == "spike"]
    _, false_alarms = match([_district_alarm(120)], spike)
    assert false_alarms == {}


def test_a_district_alarm_during_a_delivery_incident_is_a_false_alarm() -> None:
    _, labels = fleet()
    burst = [lab for lab in labels if lab.kind == "duplicate_burst"]
    _, false_alarms = match([_district_alarm(330)], burst)
    assert false_alarms == {"threshold": 1}
