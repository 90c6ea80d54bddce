"""What the jobs do with a closed 1-minute window of one series: pure steps.

A closed window gives the :class:`~citystream.model.Aggregate` of the series, the ``peer``
decision of every device in it (the device's mean in the window against the means of the
district's other devices of the same type), and the decisions of the district-wide detectors,
which watch the series of window means (subject ``{district}/{sensor_type}``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from citystream.model import Aggregate
from stream_jobs.catalog import PEER, Catalog, rule_of
from stream_jobs.detectors.base import Point
from stream_jobs.device import Mark, throttle
from stream_jobs.messages import Signal, alert_key
from stream_jobs.windows import Window, summarize


class SeriesRecord(msgspec.Struct, kw_only=True):
    """The persisted state of one series (a table value); its open windows' values are in
    chunks of their own (:class:`stream_jobs.windows.Chunk`)."""

    closed_until: int = 0
    """Every window ending at or before this has closed."""
    sources: dict[int, int] = {}
    """Source partition -> highest offset applied (chunks may record more)."""
    detectors: dict[str, Any] = {}
    """District detector states, by detector name, in their ``dump`` form."""
    marks: dict[str, Mark] = {}


class Context(NamedTuple):
    catalog: Catalog
    heartbeat_ms: int
    tail_ms: int


def load(record: SeriesRecord, series: str, catalog: Catalog) -> dict[str, Any]:
    """Live detector states of a series record (keys: detector name, or ``peer/{device}``)."""
    _, sensor_type, metric = series.split("/", 2)
    live: dict[str, Any] = {}
    peer = catalog.peer(sensor_type, metric)
    by_name = {d.name: d for d in catalog.district(sensor_type, metric)}
    for key, data in record.detectors.items():
        if key.startswith("peer/"):
            if peer is not None:
                live[key] = peer.load(data)
        elif key in by_name:
            live[key] = by_name[key].load(data)
    return live


def dump(record: SeriesRecord, live: dict[str, Any], series: str, catalog: Catalog) -> SeriesRecord:
    _, sensor_type, metric = series.split("/", 2)
    peer = catalog.peer(sensor_type, metric)
    by_name = {d.name: d for d in catalog.district(sensor_type, metric)}
    dumped: dict[str, Any] = {}
    for key, state in live.items():
        if key.startswith("peer/"):
            if peer is not None:
                dumped[key] = peer.dump(state)
        elif key in by_name:
            dumped[key] = by_name[key].dump(state)
    record.detectors = dumped
    return record


def on_closed(
    record: SeriesRecord,
    live: dict[str, Any],
    series: str,
    window: Window,
    *,
    ctx: Context,
    emitted_ms: int,
) -> tuple[Aggregate, list[Signal]]:
    """The aggregate of a closed window and the signals it gives; updates ``record`` and ``live``."""
    aggregate = summarize(series, window, emitted_ms)
    district, sensor_type, metric = aggregate.district, aggregate.sensor_type, aggregate.metric
    signals: list[Signal] = []
    ts = window.end
    peer = ctx.catalog.peer(sensor_type, metric)
    means = window.device_means()
    if peer is not None and len(means) > 1:
        for device in sorted(means):
            state_key = f"peer/{device}"
            state = live.get(state_key)
            if state is None:
                state = peer.initial()
            peers = [v for d, v in means.items() if d != device]
            decision, live[state_key] = peer.check(Point(ts, means[device]), peers, state)
            key = alert_key(PEER, metric, device)
            send, _ = throttle(
                record.marks,
                key,
                decision.anomalous,
                ts,
                None,
                heartbeat_ms=ctx.heartbeat_ms,
                tail_ms=ctx.tail_ms,
            )
            if send:
                signals.append(
                    Signal(
                        key=key,
                        rule=PEER,
                        metric=metric,
                        subject=device,
                        district=district,
                        sensor_type=sensor_type,
                        device_id=device,
                        detector=peer.name,
                        detector_version=peer.version,
                        ts_ms=ts,
                        anomalous=decision.anomalous,
                        score=decision.score,
                        value=means[device],
                        threshold=decision.threshold,
                        reason=decision.explain(),
                    )
                )
    subject = f"{district}/{sensor_type}"
    point = Point(window.start, aggregate.mean)
    for detector in ctx.catalog.district(sensor_type, metric):
        state = live.get(detector.name)
        if state is None:
            state = detector.initial()
        decision, live[detector.name] = detector.update(point, state)
        rule = rule_of(detector)
        key = alert_key(rule, metric, subject)
        send, _ = throttle(
            record.marks,
            key,
            decision.anomalous,
            ts,
            None,
            heartbeat_ms=ctx.heartbeat_ms,
            tail_ms=ctx.tail_ms,
        )
        if send:
            signals.append(
                Signal(
                    key=key,
                    rule=rule,
                    metric=metric,
                    subject=subject,
                    district=district,
                    sensor_type=sensor_type,
                    device_id=None,
                    detector=detector.name,
                    detector_version=detector.version,
                    ts_ms=ts,
                    anomalous=decision.anomalous,
                    score=decision.score,
                    value=aggregate.mean,
                    threshold=decision.threshold,
                    reason=decision.explain(),
                )
            )
    return aggregate, signals
